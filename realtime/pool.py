"""The pool of engine pipelines: one claimed per session, returned however the session ends."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from engines.base import LLM, STT, TTS, VAD


@attrs.define
class Pipeline:
    """One isolated engine chain. ``index`` names it in logs."""

    index: int
    vad: VAD
    stt: STT
    llm: LLM
    tts: TTS

    def reset(self) -> None:
        self.vad.reset()


class PoolExhausted(Exception):
    """Every pipeline is in use."""


class PipelinePool:
    def __init__(self, pipelines: list[Pipeline]) -> None:
        self.pipelines = pipelines
        self._free = list(reversed(pipelines))

    @classmethod
    def build(cls, size: int, make: Callable[[int], Pipeline]) -> PipelinePool:
        return cls([make(index) for index in range(size)])

    @property
    def size(self) -> int:
        return len(self.pipelines)

    @property
    def in_use(self) -> int:
        return len(self.pipelines) - len(self._free)

    def acquire(self) -> Pipeline:
        """A free pipeline, or :class:`PoolExhausted`; give it back with :meth:`release`."""
        if not self._free:
            raise PoolExhausted
        return self._free.pop()

    def release(self, pipeline: Pipeline) -> None:
        pipeline.reset()
        self._free.append(pipeline)
