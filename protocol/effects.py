"""What the machine asks the I/O shell to do. Effects are instructions, never events."""

from __future__ import annotations

from typing import Any

import attrs

from .items import Item


@attrs.frozen
class AppendInputAudio:
    """Decoded client audio to add to the input timeline (and run through the VAD)."""

    audio: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    format: str  #: "audio/pcm" (24 kHz PCM16), "audio/pcmu" or "audio/pcma" (8 kHz)
    #: feed the audio to the VAD (turn detection is on)
    detect_speech: bool


@attrs.frozen
class ClearInputAudio:
    """Drop the uncommitted input audio (and any live transcription of it)."""


@attrs.frozen
class TranscribeLive:
    """Speech started: produce partial transcripts of ``item_id`` from ``start_ms`` on."""

    item_id: str
    start_ms: int


@attrs.frozen
class CommitInputAudio:
    """Cut ``[start_ms, end_ms)`` of the input timeline into ``item_id`` and transcribe it."""

    item_id: str
    start_ms: int
    end_ms: int
    language: str | None
    prompt: str | None


@attrs.frozen
class TranscribeItemAudio:
    """Transcribe the audio a client put in an ``input_audio`` item."""

    item_id: str
    audio: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    format: str
    language: str | None
    prompt: str | None


@attrs.frozen
class ResponsePlan:
    """Everything a response's pipeline needs, frozen at the moment it starts."""

    instructions: str
    context: tuple[Item, ...]
    tools: tuple[dict[str, Any], ...]
    tool_choice: str | dict[str, Any]
    output_modalities: tuple[str, ...]
    max_output_tokens: int | None
    voice: str
    speed: float
    output_format: str
    reasoning_effort: str | None = None


@attrs.frozen
class StartResponse:
    response_id: str
    plan: ResponsePlan


@attrs.frozen
class CancelResponse:
    """Stop the response's work now; anything it still produces is dropped by the machine."""

    response_id: str
    reason: str


Effect = (
    AppendInputAudio
    | ClearInputAudio
    | TranscribeLive
    | CommitInputAudio
    | TranscribeItemAudio
    | StartResponse
    | CancelResponse
)
