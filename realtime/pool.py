"""Session capacity: engine pipelines for voice sessions, slots for transcription sessions.

A voice session claims a whole pipeline (VAD, STT, LLM, TTS, and the turn model when there
is one). A transcription session needs only VAD and STT (and the turn model): it gets a VAD
stream of its own and shares the STT of the pipelines, so one machine holds many more
transcription sessions than voice sessions.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from engines.base import LLM, STT, TTS, VAD, TurnModel
from engines.workers import EngineWorker, WorkerLLM, WorkerSTT, WorkerTTS, WorkerTurnModel


@attrs.frozen
class LimiterStatistics:
    borrowed_tokens: int
    total_tokens: int
    tasks_waiting: int  #: live and speculative waiters together
    speculative_waiting: int


class EngineLimiter:
    """One call at a time on an engine, live calls before speculative ones.

    It is the ``limiter`` of ``trio.to_thread.run_sync`` (``acquire_on_behalf_of`` /
    ``release_on_behalf_of``), like a ``trio.CapacityLimiter(1)``. :attr:`speculative` is the
    same engine as speculative work sees it: a speculative call gets the engine only when no
    live call is waiting for it, so speculation never delays the live pipeline by more than
    the one call already under way. Each kind is served first come, first served.
    """

    def __init__(self) -> None:
        self._holder: object | None = None
        self._live = trio.lowlevel.ParkingLot()
        self._speculative_lot = trio.lowlevel.ParkingLot()
        self._borrowers: dict[trio.lowlevel.Task, object] = {}  # parked tasks' borrowers
        self.speculative = SpeculativeLimiter(self)

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await self._acquire(borrower, speculative=False)

    async def _acquire(self, borrower: object, *, speculative: bool) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        free = self._holder is None and not self._live
        if free and (not speculative or not self._speculative_lot):
            self._holder = borrower
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        task = trio.lowlevel.current_task()
        self._borrowers[task] = borrower
        try:
            await (self._speculative_lot if speculative else self._live).park()
        except trio.Cancelled:
            self._borrowers.pop(task, None)
            raise

    def release_on_behalf_of(self, borrower: object) -> None:
        if self._holder is not borrower:
            raise RuntimeError("this borrower does not hold the engine")
        self._holder = None
        for lot in (self._live, self._speculative_lot):
            if lot:
                (task,) = lot.unpark(count=1)
                self._holder = self._borrowers.pop(task)
                return

    def statistics(self) -> LimiterStatistics:
        return LimiterStatistics(
            borrowed_tokens=int(self._holder is not None),
            total_tokens=1,
            tasks_waiting=len(self._live) + len(self._speculative_lot),
            speculative_waiting=len(self._speculative_lot),
        )


@attrs.frozen(eq=False)
class SpeculativeLimiter:
    """:class:`EngineLimiter` as speculative work uses it (a ``to_thread`` limiter too)."""

    engine: EngineLimiter

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await self.engine._acquire(borrower, speculative=True)

    def release_on_behalf_of(self, borrower: object) -> None:
        self.engine.release_on_behalf_of(borrower)


@attrs.define
class Pipeline:
    """One engine chain. ``index`` names it in logs.

    Each engine run in worker threads has a limiter of one (:class:`EngineLimiter`): a thread
    holds it until its engine call returns, even after the session gave up on the call
    (``realtime.threads``), so an engine never runs two calls at once. ``stt_limiter`` and the
    turn model's are shared by every session that uses them (its voice session and
    transcription sessions). ``turn_model``: scores ``semantic_vad`` pauses; None when its model
    file is not installed (``semantic_vad`` then ends turns on fixed silence windows).
    ``workers``: the worker processes its engines run in (none when they run in-process)."""

    index: int
    vad: VAD
    stt: STT
    llm: LLM | None = None
    tts: TTS | None = None
    turn_model: TurnModel | None = None
    stt_limiter: EngineLimiter = attrs.Factory(EngineLimiter)
    llm_limiter: EngineLimiter = attrs.Factory(EngineLimiter)
    tts_limiter: EngineLimiter = attrs.Factory(EngineLimiter)
    turn_limiter: EngineLimiter = attrs.Factory(EngineLimiter)
    workers: tuple[EngineWorker, ...] = ()

    @classmethod
    def of_workers(
        cls,
        index: int,
        vad: VAD,
        stt: EngineWorker,
        llm: EngineWorker,
        tts: EngineWorker,
        turn_model: EngineWorker | None = None,
    ) -> Pipeline:
        """A pipeline whose STT, LLM and TTS (and turn model) run in these started workers,
        behind the engines' own interfaces; the VAD runs in this process."""
        return cls(
            index=index,
            vad=vad,
            stt=WorkerSTT(stt),
            llm=WorkerLLM(llm),
            tts=WorkerTTS(tts),
            turn_model=None if turn_model is None else WorkerTurnModel(turn_model),
            workers=(stt, llm, tts, *(() if turn_model is None else (turn_model,))),
        )

    def reset(self) -> None:
        self.vad.reset()

    @property
    def healthy(self) -> bool:
        """Every worker of its engines is up and not dying again and again."""
        return all(worker.healthy for worker in self.workers)


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

    @property
    def healthy(self) -> int:
        """Pipelines whose engines are all up."""
        return sum(pipeline.healthy for pipeline in self.pipelines)

    @property
    def free_healthy(self) -> int:
        """Pipelines a new voice session would get now: free, their engines up."""
        return sum(pipeline.healthy for pipeline in self._free)

    def workers(self) -> list[EngineWorker]:
        """Every engine worker of the pool, each once (some serve several pipelines)."""
        unique: dict[int, EngineWorker] = {}
        for pipeline in self.pipelines:
            unique.update((id(worker), worker) for worker in pipeline.workers)
        return list(unique.values())

    def close(self) -> None:
        """Stop the engine workers."""
        for worker in self.workers():
            worker.close()

    def acquire(self) -> Pipeline:
        """A free pipeline whose engines are healthy, or :class:`PoolExhausted`; give it back
        with :meth:`release`."""
        for position in range(len(self._free) - 1, -1, -1):
            if self._free[position].healthy:
                return self._free.pop(position)
        raise PoolExhausted

    def release(self, pipeline: Pipeline) -> None:
        pipeline.reset()
        self._free.append(pipeline)

    def acquire_transcription(self) -> Pipeline:
        """VAD and STT for a transcription session: a fresh VAD stream and a shared STT and
        turn model (taken from the pipelines in turn), or :class:`PoolExhausted`."""
        healthy = [pipeline for pipeline in self.pipelines if pipeline.healthy]
        if self.transcription_in_use >= self.transcription_capacity or not healthy:
            raise PoolExhausted
        shared = healthy[self._next_stt % len(healthy)]
        self._next_stt += 1
        self.transcription_in_use += 1
        return Pipeline(
            index=shared.index,
            vad=shared.vad.stream(),
            stt=shared.stt,
            stt_limiter=shared.stt_limiter,
            turn_model=shared.turn_model,
            turn_limiter=shared.turn_limiter,
            workers=shared.workers,
        )

    def release_transcription(self, slot: Pipeline) -> None:
        self.transcription_in_use -= 1
