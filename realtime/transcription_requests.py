"""What a session's transcription task is asked to do, in the order it is asked."""

from __future__ import annotations

import attrs

from engines.base import FloatAudio
from protocol.effects import TranscriptionOptions

from .speculation import SpeculativeWork


@attrs.frozen
class PartialTranscription:
    """A live hypothesis of the growing segment ``item_id``."""

    item_id: str
    samples: FloatAudio  #: 16 kHz


@attrs.frozen
class FinalTranscription:
    """The transcript of a committed segment (or of an ``input_audio`` item)."""

    item_id: str
    samples: FloatAudio  #: 16 kHz
    transcription: TranscriptionOptions


@attrs.frozen
class HeldTranscription:
    """A committed segment whose transcript a speculation makes (``samples``: the segment,
    for its duration, and transcribed if the speculation ends without a transcript)."""

    item_id: str
    speculation: SpeculativeWork
    samples: FloatAudio  #: 16 kHz
    transcription: TranscriptionOptions


TranscriptionRequest = PartialTranscription | FinalTranscription | HeldTranscription
