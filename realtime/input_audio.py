"""A session's input audio as the engines hear it: one timeline at 16 kHz."""

from __future__ import annotations

import numpy as np

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
