"""A session's responses as the shell runs them: one task per response, each in its own
cancel scope, so ``response.cancel`` and barge-in are ``cancel_scope.cancel()``.

A response starts on the machine's ``StartResponse``: from the engines, or from the work a
speculation holds for it (its held results replayed under the response's id, then followed
as the still-running work produces them). Its results go to the machine as they come; an
engine failure ends it as ``failed`` (``response.done``, then ``error``), and the session
goes on.

A response that called MCP tools goes on in the same task once the model has finished: the
machine's ``CallMcpTool`` effects for it are made (together, each result fed back as it
comes), then its ``ContinueResponse`` runs the model again, until the machine asks for nothing
more. So a cancel stops the calls and the rounds with the rest of the response.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import attrs
import trio

from engines.base import CancelToken, EngineError, EngineFailed
from protocol import effects as fx
from protocol import inputs as ins
from protocol.effects import ResponsePlan

from .generation import ResponseGenerator
from .mcp_session import McpConnections
from .metrics import Metrics
from .outbox import SlowClient, single_cause
from .ports import Feed
from .speculation import SpeculativeWork, speculation_log

log = logging.getLogger("realtime.session")


def _code(failure: BaseException) -> str:
    """The ``error.code`` of a response that ``failure`` ended: the engine's own
    (``engine_failed`` for a worker that died), else ``engine_error``."""
    return failure.code if isinstance(failure, EngineError) else EngineError.code


class ResponseTasks:
    """The running responses of one session."""

    def __init__(
        self,
        session_id: str,
        metrics: Metrics,
        generator: ResponseGenerator,
        feed: Feed,
        mcp: McpConnections,
    ) -> None:
        self.session_id = session_id
        self.metrics = metrics
        self.generator = generator
        self.feed = feed
        self.mcp = mcp
        self._running: dict[str, tuple[trio.CancelScope, CancelToken]] = {}
        #: what the machine asked of a running response after its model round: MCP calls to
        #: make, then the plan of its next round
        self._mail: dict[str, list[fx.CallMcpTool | fx.ContinueResponse]] = {}
        self._ended = trio.lowlevel.ParkingLot()  # a response task's entry went
        #: when the VAD last ended a user turn; the next response's first audio measures from it
        self._turn_ended_at: float | None = None

    def turn_ended(self) -> None:
        """The user's turn ended now (``input_audio_buffer.speech_stopped`` was sent)."""
        self._turn_ended_at = time.monotonic()

    def start(
        self,
        nursery: trio.Nursery,
        effect: fx.StartResponse,
        speculation: SpeculativeWork | None,
    ) -> None:
        """Start the response's task; from ``speculation``'s held work when that is still
        usable (it failed: the engines start anew)."""
        self.metrics.turns += 1
        response_id = effect.response_id
        self._mail[response_id] = []
        if speculation is not None and speculation.usable:
            speculation_log.debug("session %s: %s used", self.session_id, speculation.id)
            scope = trio.CancelScope()
            self._running[response_id] = (scope, speculation.token)
            nursery.start_soon(self._held_response_task, response_id, speculation, scope)
            return
        scope, token = trio.CancelScope(), CancelToken()
        self._running[response_id] = (scope, token)
        plan = effect.plan if effect.run_model else None
        nursery.start_soon(self._response_task, response_id, plan, scope, token)

    def deliver(self, effect: fx.CallMcpTool | fx.ContinueResponse) -> None:
        """A call to make or a round to run, for the response's task once its model is done."""
        mail = self._mail.get(effect.response_id)
        if mail is not None:
            mail.append(effect)

    def cancel(self, response_id: str, reason: str) -> None:
        if reason == "turn_detected":
            self.metrics.barge_ins += 1
        else:
            self.metrics.responses_cancelled += 1
        entry = self._running.get(response_id)
        if entry is not None:
            scope, token = entry
            token.cancel()
            scope.cancel()

    def cancel_all(self) -> None:
        for scope, token in self._running.values():
            token.cancel()
            scope.cancel()

    async def wait_all_ended(self) -> None:
        while self._running:
            await self._ended.park()

    def _ended_now(self, response_id: str) -> None:
        self._running.pop(response_id, None)
        self._mail.pop(response_id, None)
        self._ended.unpark_all()

    async def _follow_up(
        self,
        response_id: str,
        token: CancelToken,
        emit: Callable[[ins.EngineResult], Awaitable[None]],
    ) -> None:
        """The response's MCP calls and the model rounds after them, while the machine asks."""
        while mail := self._mail.get(response_id):
            self._mail[response_id] = []
            calls = [m for m in mail if isinstance(m, fx.CallMcpTool)]
            if calls:
                async with trio.open_nursery() as nursery:
                    for call in calls:
                        nursery.start_soon(self._call_tool, call)
                continue
            rounds = [m for m in mail if isinstance(m, fx.ContinueResponse)]
            await self.generator.generate(response_id, rounds[-1].plan, token, emit)

    async def _call_tool(self, call: fx.CallMcpTool) -> None:
        await self.feed(await self.mcp.call(call))

    async def _response_task(
        self,
        response_id: str,
        plan: ResponsePlan | None,
        scope: trio.CancelScope,
        token: CancelToken,
    ) -> None:
        """The response's model round (``plan``; None: its approved calls come first) and
        what follows it."""
        started = time.monotonic()
        try:
            with scope:
                try:
                    emit = self._live_output(started)
                    if plan is not None:
                        await self.generator.generate(response_id, plan, token, emit)
                    await self._follow_up(response_id, token, emit)
                except Exception as exc:
                    cause = single_cause(exc)
                    if isinstance(cause, SlowClient):
                        raise cause from None  # the client's doing, not the engines': it ends
                    await self._failed(response_id, cause)
        finally:
            token.cancel()
            self._ended_now(response_id)
        self._log_end(response_id, started, scope, "")

    async def _held_response_task(
        self, response_id: str, speculation: SpeculativeWork, scope: trio.CancelScope
    ) -> None:
        """A response from a speculation: replay what it holds, then follow it to its end."""
        started = time.monotonic()
        try:
            with scope:
                speculation.release()
                emit = self._live_output(started)
                sent = 0
                while True:
                    while sent < len(speculation.results):
                        result = speculation.results[sent]
                        sent += 1
                        await emit(attrs.evolve(result, response_id=response_id))
                    if speculation.finished:
                        break
                    await speculation.changed()
                if speculation.failure is not None:
                    await self._failed(response_id, speculation.failure)
                else:
                    try:
                        await self._follow_up(response_id, speculation.token, emit)
                    except Exception as exc:
                        cause = single_cause(exc)
                        if isinstance(cause, SlowClient):
                            raise cause from None
                        await self._failed(response_id, cause)
        finally:
            speculation.cancel()
            self._ended_now(response_id)
        self._log_end(response_id, started, scope, " (started at a pause)")

    def _log_end(self, response_id: str, started: float, scope: trio.CancelScope, how: str) -> None:
        log.info(
            "session %s: response %s ended after %.2f s%s%s",
            self.session_id,
            response_id,
            time.monotonic() - started,
            " (cancelled)" if scope.cancelled_caught else "",
            how,
        )

    async def _failed(self, response_id: str, failure: BaseException) -> None:
        """Count, log and report (``response.done`` failed, then ``error``) an engine failure
        that ended a response. A worker's death is one line (its supervisor logged how it
        died); anything else is logged with its traceback."""
        self.metrics.engine_errors += 1
        if isinstance(failure, EngineFailed):
            log.error("session %s: response %s failed: %s", self.session_id, response_id, failure)
        else:
            log.error(
                "session %s: response %s failed",
                self.session_id,
                response_id,
                exc_info=(type(failure), failure, failure.__traceback__),
            )
        message = str(failure) or type(failure).__name__
        await self.feed(ins.ResponseFailed(response_id, message, _code(failure)))

    def _live_output(self, started: float) -> Callable[[ins.EngineResult], Awaitable[None]]:
        """A response's ``emit``: its results go to the machine (and so to the client); the
        first audio is timed from the response's start and from the end of the user's turn."""
        turn_ended_at = self._turn_ended_at
        self._turn_ended_at = None
        first_audio = True

        async def emit(result: ins.EngineResult) -> None:
            nonlocal first_audio
            if first_audio and isinstance(result, ins.AudioOut) and result.audio:
                first_audio = False
                now = time.monotonic()
                self.metrics.time_to_first_audio.observe(now - started)
                if turn_ended_at is not None:
                    self.metrics.end_of_turn_to_first_audio.observe(now - turn_ended_at)
            await self.feed(result)

        return emit
