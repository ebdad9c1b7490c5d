"""A session's input audio as the engines hear it: one timeline at 16 kHz, and the VAD's
framing of it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from engines.base import VAD
from protocol import inputs as ins

from . import audio

ENGINE_RATE = 16_000  #: the input timeline's rate, shared by VAD and STT
MAX_BUFFERED_INPUT_S = 600  #: uncommitted input audio kept at most (oldest dropped first)


class InputTimeline:
    """The session's input audio at 16 kHz, addressed in ms since the session began."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._base = 0  # absolute sample index of the first stored sample
        self.total = 0  # samples appended since the session began

    def append(self, samples: np.ndarray) -> None:
        self._chunks.append(samples)
        self.total += len(samples)
        stored = self.total - self._base
        limit = MAX_BUFFERED_INPUT_S * ENGINE_RATE
        if stored > 2 * limit:
            self.drop_before((self.total - limit) * 1000 // ENGINE_RATE)

    def _stored(self) -> np.ndarray:
        if len(self._chunks) != 1:
            joined = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
            self._chunks = [joined]
        return self._chunks[0]

    def slice(self, start_ms: int, end_ms: int) -> np.ndarray:
        start = max(start_ms * ENGINE_RATE // 1000 - self._base, 0)
        end = max(end_ms * ENGINE_RATE // 1000 - self._base, 0)
        return self._stored()[start:end].copy()

    def drop_before(self, ms: int) -> None:
        cut = ms * ENGINE_RATE // 1000 - self._base
        if cut <= 0:
            return
        stored = self._stored()
        self._chunks = [stored[cut:]]
        self._base += min(cut, len(stored))


class InputAudio:
    """The session's input audio on its way to the engines: wire audio resampled to
    ``ENGINE_RATE``, kept in the :class:`InputTimeline` (cut by the machine's commits and
    clears, in the machine's ms), and framed for the VAD, whose scores go to the machine as
    ``VadFrame`` results. The machine keeps the protocol's clock of the buffer
    (``timeline_ms``); the ``end_ms`` of each frame is where the VAD stands in this audio."""

    def __init__(self, vad: VAD) -> None:
        self.vad = vad
        self.timeline = InputTimeline()
        self._resampler: tuple[str, audio.StreamingResampler] | None = None
        self._vad_pending = np.zeros(0, np.float32)
        self._vad_position = 0  # samples consumed by the VAD
        #: a WebRTC call's latest track audio, announced to the machine as ``MediaAudio``
        self.media_samples = np.zeros(0, np.float32)

    def decode(self, data: bytes, fmt: str) -> np.ndarray:
        """Wire audio of ``fmt`` as float32 samples at ``ENGINE_RATE`` (one resampler per
        format, carried across appends)."""
        if self._resampler is None or self._resampler[0] != fmt:
            self._resampler = (fmt, audio.StreamingResampler(audio.WIRE_RATE[fmt], ENGINE_RATE))
        return self._resampler[1](audio.decode(data, fmt))

    def ingest(self, samples: np.ndarray, detect_speech: bool) -> Iterator[ins.VadFrame]:
        """Add ``samples`` to the timeline; with ``detect_speech``, the VAD frames they
        complete, each scored as it is taken."""
        self.timeline.append(samples)
        if detect_speech:
            return self._frames(samples)
        self._vad_position = self.timeline.total
        self._vad_pending = np.zeros(0, np.float32)
        return iter(())

    def _frames(self, samples: np.ndarray) -> Iterator[ins.VadFrame]:
        size = self.vad.frame_samples
        pending = (
            np.concatenate([self._vad_pending, samples]) if len(self._vad_pending) else samples
        )
        offset = 0
        while len(pending) - offset >= size:
            frame = pending[offset : offset + size]
            offset += size
            self._vad_position += size
            yield ins.VadFrame(
                end_ms=self._vad_position * 1000 // ENGINE_RATE,
                duration_ms=size * 1000 // ENGINE_RATE,
                probability=self.vad.probability(frame),
            )
        self._vad_pending = pending[offset:].copy()

    def clear(self) -> None:
        """``input_audio_buffer.clear``: the stored audio goes."""
        self.timeline.drop_before(self.timeline.total * 1000 // ENGINE_RATE)
