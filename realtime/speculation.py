"""A speculation as the I/O shell runs it: the work started at a pause and what it holds.

When speculation starts and when what it produced stands are the protocol machine's rules
(``protocol/speculation.py``). Here is the shell's side: the session's speculation task
transcribes the span and, when a response would follow, runs the response pipeline with its
results going to :attr:`SpeculativeWork.results` instead of the machine. Nothing held
reaches the client: a cancelled speculation is dropped whole. When the machine starts the
turn's response from it, the response's task replays the held results under the response's
id and follows the rest as the still-running work produces them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import trio

from engines.base import CancelToken, Transcript
from protocol import inputs as ins
from protocol.effects import StartSpeculation, TranscribeEarly

from .outbox import SlowClient, single_cause
from .pool import EngineLimiter
from .ports import Feed

if TYPE_CHECKING:
    from .generation import ResponseGenerator
    from .transcription import Transcriber

log = logging.getLogger("realtime.session")
#: one debug line per speculation: used or wasted (scripts/bench_turns.py counts them)
speculation_log = logging.getLogger("realtime.session.speculation")


class EarlyTranscript:
    """The task of one :class:`~protocol.effects.TranscribeEarly`: the turn so far, being
    transcribed before its pause. The machine decides when one starts, when it is dropped,
    and which speculation takes it (``StartSpeculation.early_id``)."""

    def __init__(self, request: TranscribeEarly) -> None:
        self.request = request
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.result: tuple[Transcript, float] | None = None  #: the transcript, engine seconds

    @property
    def id(self) -> str:
        return self.request.early_id

    def cancel(self) -> None:
        self.scope.cancel()


class SpeculativeWork:
    """The work and the held results of one ``StartSpeculation``.

    ``samples``: the span's 16 kHz audio, cut when the speculation was asked for.
    """

    def __init__(self, request: StartSpeculation, samples: object) -> None:
        self.request = request
        self.samples = samples
        self.scope = trio.CancelScope()
        self.token = CancelToken()
        self.transcript: Transcript | None = None
        self.stt_seconds = 0.0  #: what the engine took for the transcript
        #: set once the transcription is over, with a transcript or without one
        self.transcribed = trio.Event()
        #: a commit takes the transcript: its transcription goes on even if the rest is dropped
        self.transcript_claimed = False
        self.response_wanted = request.plan is not None
        #: the response's results in order, with the speculation's id in place of a response id
        self.results: list[ins.EngineResult] = []
        self.finished = False
        self.failure: BaseException | None = None
        self.released = trio.Event()
        self._changed = trio.Event()
        #: the transcript started before the pause that this speculation takes, if any
        self.early: EarlyTranscript | None = None

    @property
    def id(self) -> str:
        return self.request.speculation_id

    @property
    def held(self) -> bool:
        """Not released to a response yet: its engine calls yield to live ones."""
        return not self.released.is_set()

    @property
    def usable(self) -> bool:
        """Whether a response can be built from it."""
        return self.response_wanted and self.failure is None

    def limiter(self, engine: EngineLimiter) -> object:
        """The ``to_thread`` limiter of ``engine`` for this speculation's next call."""
        return engine.speculative if self.held else engine

    async def hold(self, result: ins.EngineResult) -> None:
        """The response pipeline's ``emit`` while speculating (and after release: the
        response's task follows the list)."""
        self.results.append(result)
        self._notify()

    def finish(self, failure: BaseException | None) -> None:
        """The work is over (``failure``: why the response could not be completed)."""
        self.finished, self.failure = True, failure
        self._notify()

    async def changed(self) -> None:
        """Wait for the next result or for the end of the work."""
        await self._changed.wait()

    def release(self) -> None:
        """A response takes over: the work goes on as live work."""
        self.released.set()

    def cancel(self) -> None:
        """Stop the work; nothing it made or makes will be used."""
        self.response_wanted = False
        self.token.cancel()
        self.scope.cancel()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


def engine_limiter(engine: EngineLimiter, held: SpeculativeWork | None) -> Any:
    """The ``to_thread`` limiter for a call of ``engine`` made for ``held`` (None: live)."""
    return engine if held is None else held.limiter(engine)


class SpeculationTasks:
    """The speculations of one session and the early transcripts they may take: the work
    runs in tasks of the session's nursery until the machine uses it or drops it."""

    def __init__(
        self,
        session_id: str,
        transcriber: Transcriber,
        generator: ResponseGenerator,
        feed: Feed,
    ) -> None:
        self.session_id = session_id
        self.transcriber = transcriber
        self.generator = generator
        self.feed = feed
        self._running: dict[str, SpeculativeWork] = {}
        self._early: EarlyTranscript | None = None

    # --- early transcripts -------------------------------------------------------------------

    def transcribe_early(
        self, nursery: trio.Nursery, request: TranscribeEarly, samples: np.ndarray
    ) -> None:
        if self._early is not None:
            self._early.cancel()  # (the machine dropped it already; never both at once)
        self._early = early = EarlyTranscript(request)
        nursery.start_soon(self._early_transcript_task, early, samples)

    def cancel_early(self, early_id: str) -> None:
        if self._early is not None and self._early.id == early_id:
            self._early.cancel()
            self._early = None

    async def _early_transcript_task(self, early: EarlyTranscript, samples: np.ndarray) -> None:
        with early.scope:
            try:
                early.result = await self.transcriber.transcribe(
                    samples, speculative=True, options=early.request.transcription
                )
            except Exception:
                log.warning("session %s: early transcription failed", self.session_id)
        early.done.set()

    # --- speculations ------------------------------------------------------------------------

    def start(self, nursery: trio.Nursery, request: StartSpeculation, samples: np.ndarray) -> None:
        speculation = SpeculativeWork(request, samples)
        early = self._early
        if early is not None and early.id == request.early_id:
            speculation.early, self._early = early, None
            speculation_log.debug(
                "session %s: %s early transcript", self.session_id, request.speculation_id
            )
        self._running[request.speculation_id] = speculation
        nursery.start_soon(self._speculation_task, speculation)

    def cancel(self, speculation_id: str) -> None:
        speculation = self._running.pop(speculation_id, None)
        if speculation is not None:
            self._drop(speculation)

    def cancel_all(self) -> None:
        for speculation in self._running.values():
            speculation.cancel()

    def claim_transcript(self, speculation_id: str | None) -> SpeculativeWork | None:
        """A commit takes the transcript of ``speculation_id`` (None: no speculation's)."""
        speculation = self._running.get(speculation_id or "")
        if speculation is None:
            return None
        speculation.transcript_claimed = True
        if speculation.request.plan is None:  # its transcript was all it was for
            del self._running[speculation.id]
            speculation_log.debug("session %s: %s transcript used", self.session_id, speculation.id)
        return speculation

    def take_for_response(self, speculation_id: str | None) -> SpeculativeWork | None:
        """The held work a starting response continues, if it is still usable."""
        speculation = self._running.pop(speculation_id or "", None)
        if speculation is not None and not speculation.usable:
            self._drop(speculation)
            return None
        return speculation

    async def transcribed(self, item_id: str) -> None:
        """Wait until every speculation on the speech ``item_id`` has its transcript."""
        for speculation in list(self._running.values()):
            if speculation.request.item_id == item_id:
                await speculation.transcribed.wait()

    def _drop(self, speculation: SpeculativeWork) -> None:
        """The machine wants nothing more of ``speculation`` than, perhaps, its transcript."""
        if speculation.transcript_claimed:
            speculation_log.debug("session %s: %s transcript used", self.session_id, speculation.id)
            if not speculation.transcribed.is_set():
                speculation.response_wanted = False  # a commit still waits for the transcript
                return
        else:
            speculation_log.debug("session %s: %s wasted", self.session_id, speculation.id)
        speculation.cancel()

    async def _speculation_task(self, speculation: SpeculativeWork) -> None:
        """Transcribe the span, tell the machine, then generate the response into the hold."""
        request = speculation.request
        failure: BaseException | None = None
        try:
            with speculation.scope:
                try:
                    early = speculation.early
                    if early is not None:
                        await early.done.wait()
                    if early is not None and early.result is not None:
                        result, took = early.result
                    else:
                        result, took = await self.transcriber.transcribe(
                            speculation.samples,
                            speculation,
                            options=request.transcription,
                        )
                except Exception:
                    log.warning("session %s: speculative transcription failed", self.session_id)
                    return  # the commit transcribes its segment itself
                speculation.transcript, speculation.stt_seconds = result, took
                transcript = result.text.strip()
                await self.feed(ins.SpeculationTranscribed(request.speculation_id, transcript))
                speculation.transcribed.set()
                if not speculation.response_wanted:
                    return
                try:
                    await self.generator.generate(
                        request.speculation_id,
                        request.response_plan(transcript),
                        speculation.token,
                        speculation.hold,
                        speculation,
                    )
                except Exception as exc:
                    failure = single_cause(exc)
                    if isinstance(failure, SlowClient):
                        raise failure from None
                    if speculation.held:
                        log.warning(
                            "session %s: speculative response failed (%s); it starts anew",
                            self.session_id,
                            failure,
                        )
        finally:
            speculation.transcribed.set()
            complete = any(isinstance(r, ins.ResponseComplete) for r in speculation.results)
            if failure is None and speculation.response_wanted and not complete:
                failure = RuntimeError("the speculative response stopped before it completed")
            speculation.finish(failure)
