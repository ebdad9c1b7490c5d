"""Session capacity: engine pipelines for voice sessions, slots for transcription sessions.

A voice session claims a whole pipeline (VAD, STT, LLM, TTS). A transcription session needs
only VAD and STT: it gets a VAD stream of its own and shares the STT of the pipelines, so one
machine holds many more transcription sessions than voice sessions.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from engines.base import LLM, STT, TTS, VAD


@attrs.define
class Pipeline:
    """One engine chain. ``index`` names it in logs.

    Each engine run in worker threads has a limiter of one: a thread holds it until its engine
    call returns, even after the session gave up on the call (``realtime.threads``), so an
    engine never runs two calls at once. ``stt_limiter`` is shared by every session that uses
    the STT (its voice session and transcription sessions)."""

    index: int
    vad: VAD
    stt: STT
    llm: LLM | None = None
    tts: TTS | None = None
    stt_limiter: trio.CapacityLimiter = attrs.Factory(lambda: trio.CapacityLimiter(1))
    llm_limiter: trio.CapacityLimiter = attrs.Factory(lambda: trio.CapacityLimiter(1))
    tts_limiter: trio.CapacityLimiter = attrs.Factory(lambda: trio.CapacityLimiter(1))

    def reset(self) -> None:
        self.vad.reset()


class PoolExhausted(Exception):
    """Every slot of this kind is in use."""


class PipelinePool:
    def __init__(self, pipelines: list[Pipeline], transcription_sessions: int = 0) -> None:
        self.pipelines = pipelines
        self._free = list(reversed(pipelines))
        self.transcription_capacity = transcription_sessions
        self.transcription_in_use = 0
        self._next_stt = 0

    @classmethod
    def build(
        cls, size: int, make: Callable[[int], Pipeline], transcription_sessions: int = 0
    ) -> PipelinePool:
        return cls([make(index) for index in range(size)], transcription_sessions)

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

    def acquire_transcription(self) -> Pipeline:
        """VAD and STT for a transcription session: a fresh VAD stream and a shared STT
        (taken from the pipelines in turn), or :class:`PoolExhausted`."""
        if self.transcription_in_use >= self.transcription_capacity or not self.pipelines:
            raise PoolExhausted
        shared = self.pipelines[self._next_stt % len(self.pipelines)]
        self._next_stt += 1
        self.transcription_in_use += 1
        return Pipeline(
            index=shared.index,
            vad=shared.vad.stream(),
            stt=shared.stt,
            stt_limiter=shared.stt_limiter,
        )

    def release_transcription(self, slot: Pipeline) -> None:
        self.transcription_in_use -= 1
