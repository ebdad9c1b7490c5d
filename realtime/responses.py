"""A session's responses as the shell runs them: one task per response, each in its own
cancel scope, so ``response.cancel`` and barge-in are ``cancel_scope.cancel()``.

A response starts on the machine's ``StartResponse``: from the engines, or from the work a
speculation holds for it (its held results replayed under the response's id, then followed
as the still-running work produces them). Its results go to the machine as they come; an
engine failure ends it as ``failed`` (``response.done``, then ``error``), and the session
goes on.

A response's MCP calls (``CallMcpTool``) run as tasks of their own, from the moment the
machine asks, beside the model if it is still generating; a response whose approved calls come
first runs its model on ``ContinueResponse``. Every task of a response is in the response's
cancel scopes: a cancel stops the model, the calls and the follow-up together.
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
        #: the running tasks of each response (its model, its MCP calls): their cancel scopes
        #: and the tokens that stop their engine calls
        self._running: dict[str, list[tuple[trio.CancelScope, CancelToken]]] = {}
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
        """Start the response's model task; from ``speculation``'s held work when that is
        still usable (it failed: the engines start anew). A response whose approved calls come
        first starts with them (``call``) and its model later (``continue_round``)."""
        self.metrics.turns += 1
        response_id = effect.response_id
        if speculation is not None and speculation.usable:
            speculation_log.debug("session %s: %s used", self.session_id, speculation.id)
            scope = trio.CancelScope()
            self._running.setdefault(response_id, []).append((scope, speculation.token))
            nursery.start_soon(self._held_response_task, response_id, speculation, scope)
            return
        if effect.run_model:
            self.continue_round(nursery, fx.ContinueResponse(response_id, effect.plan))

    def continue_round(self, nursery: trio.Nursery, effect: fx.ContinueResponse) -> None:
        """A model round of the response, with ``effect.plan``."""
        entry = self._track(effect.response_id)
        nursery.start_soon(self._response_task, effect.response_id, effect.plan, entry)

    def call(self, nursery: trio.Nursery, effect: fx.CallMcpTool) -> None:
        """An MCP call of the response, made now, in a task of its own."""
        entry = self._track(effect.response_id)
        nursery.start_soon(self._call_task, effect, entry)

    def cancel(self, response_id: str, reason: str) -> None:
        if reason == "turn_detected":
            self.metrics.barge_ins += 1
        else:
            self.metrics.responses_cancelled += 1
        for scope, token in self._running.get(response_id, ()):
            token.cancel()
            scope.cancel()

    def cancel_all(self) -> None:
        for entries in self._running.values():
            for scope, token in entries:
                token.cancel()
                scope.cancel()

    async def wait_all_ended(self) -> None:
        while self._running:
            await self._ended.park()

    def _track(self, response_id: str) -> tuple[trio.CancelScope, CancelToken]:
        entry = (trio.CancelScope(), CancelToken())
        self._running.setdefault(response_id, []).append(entry)
        return entry

    def _ended_now(self, response_id: str, entry: tuple[trio.CancelScope, CancelToken]) -> None:
        entries = self._running.get(response_id, [])
        if entry in entries:
            entries.remove(entry)
        if not entries:
            self._running.pop(response_id, None)
        self._ended.unpark_all()

    async def _call_task(
        self, effect: fx.CallMcpTool, entry: tuple[trio.CancelScope, CancelToken]
    ) -> None:
        """Make the call; its answer to the machine (a cancelled call answers nothing: the
        machine ended it when it cancelled the response)."""
        scope, _ = entry
        try:
            with scope:
                result = await self.mcp.call(effect)
                await self.feed(result)
        finally:
            self._ended_now(effect.response_id, entry)

    async def _response_task(
        self,
        response_id: str,
        plan: ResponsePlan,
        entry: tuple[trio.CancelScope, CancelToken],
    ) -> None:
        """One model round of the response."""
        scope, token = entry
        started = time.monotonic()
        try:
            with scope:
                try:
                    emit = self._live_output(started)
                    await self.generator.generate(response_id, plan, token, emit)
                except Exception as exc:
                    cause = single_cause(exc)
                    if isinstance(cause, SlowClient):
                        raise cause from None  # the client's doing, not the engines': it ends
                    await self._failed(response_id, cause)
        finally:
            token.cancel()
            self._ended_now(response_id, entry)
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
        finally:
            speculation.cancel()
            self._ended_now(response_id, (scope, speculation.token))
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
