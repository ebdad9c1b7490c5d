"""Engines whose model runs in a worker process: each implements its engine interface
(``engines.base``) by calls to an :class:`~engines.workers.supervisor.EngineWorker`, so the
server's code calls them exactly as it calls an engine in its own process."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from engines.base import (
    CancelToken,
    EngineError,
    FloatAudio,
    LLMEvent,
    LLMRequest,
    Transcript,
)

from .supervisor import EngineWorker

#: results a streaming engine may produce ahead of its consumer: one, as a generator pulled
#: by a thread with a channel of one item would
STREAM_WINDOW = 2


def _raw(audio: FloatAudio) -> bytes:
    return np.ascontiguousarray(audio, np.float32).tobytes()


class WorkerEngine:
    """What every engine in a worker has: the worker, and the attributes it reported."""

    def __init__(self, worker: EngineWorker) -> None:
        self.worker = worker

    @property
    def sample_rate(self) -> int:
        return int(self.worker.info["sample_rate"])

    def _single(
        self, method: str, options: Mapping[str, object], audio: FloatAudio, cancel: CancelToken
    ) -> object:
        results = [
            frame.meta for frame in self.worker.call(method, dict(options), cancel, _raw(audio))
        ]
        if not results:
            raise EngineError(f"the {self.worker.name} worker's call was cancelled")
        return results[0]


class WorkerSTT(WorkerEngine):
    """:class:`~engines.base.STT` in a worker."""

    def transcribe(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        partial: bool = False,
        logprobs: bool = False,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        options = {"language": language, "prompt": prompt, "partial": partial, "logprobs": logprobs}
        result = self._single("transcribe", options, audio, cancel or CancelToken())
        assert isinstance(result, Transcript)
        return result


class WorkerTurnModel(WorkerEngine):
    """:class:`~engines.base.TurnModel` in a worker."""

    def probability(self, audio: FloatAudio) -> float:
        result = self._single("probability", {}, audio, CancelToken())
        assert isinstance(result, float)
        return result


class WorkerLLM(WorkerEngine):
    """:class:`~engines.base.LLM` in a worker: its events stream as the worker makes them."""

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        for frame in self.worker.call("stream", {"request": request}, cancel, window=STREAM_WINDOW):
            yield frame.meta


class WorkerTTS(WorkerEngine):
    """:class:`~engines.base.TTS` in a worker: each chunk crosses as raw float32 samples."""

    def voices(self) -> Sequence[str]:
        return tuple(self.worker.info.get("voices", ()))

    def synthesize(
        self, text: str, *, voice: str | None, speed: float, cancel: CancelToken
    ) -> Iterator[FloatAudio]:
        options = {"text": text, "voice": voice, "speed": speed}
        for frame in self.worker.call("synthesize", options, cancel, window=STREAM_WINDOW):
            yield np.frombuffer(frame.raw, np.float32)
