"""One asyncio event loop, in one worker thread, for every WebRTC peer of the server.

The WebRTC stack (aiortc) is asyncio code; the rest of the server is Trio. All peers share one
loop in one thread, started in the server's nursery, and the two sides talk only through the
three bridges here: :meth:`RtcLoop.call` (Trio awaits a coroutine run in the loop),
:meth:`RtcLoop.post` (Trio starts a function in the loop without waiting) and
:meth:`RtcLoop.to_trio` (the loop hands a function to Trio without waiting).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import outcome
import trio

log = logging.getLogger("realtime.rtc")

T = TypeVar("T")


class RtcLoopClosed(Exception):
    """The WebRTC loop stopped before the work asked of it finished."""


class RtcLoop:
    """The shared asyncio loop; :meth:`run` it in a nursery with ``nursery.start``."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        #: called in the loop before it stops (closing the peers), newest first
        self._on_close: list[Callable[[], Awaitable[None]]] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._loop.is_closed():
            raise RtcLoopClosed()
        return self._loop

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the loop's thread until cancelled, then close the peers and stop it."""
        self._token = trio.lowlevel.current_trio_token()
        loop = asyncio.new_event_loop()
        ready = trio.Event()

        def thread_main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(self._token.run_sync_soon, ready.set)  # type: ignore[union-attr]
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        async with trio.open_nursery() as nursery:
            # the thread stops only when the loop does: never abandon it
            nursery.start_soon(lambda: trio.to_thread.run_sync(thread_main))
            await ready.wait()
            self._loop = loop
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                loop.call_soon_threadsafe(lambda: loop.create_task(self._stop(loop)))
                self._loop = None

    async def _stop(self, loop: asyncio.AbstractEventLoop) -> None:
        for close in reversed(list(self._on_close)):
            try:
                await asyncio.wait_for(close(), timeout=2.0)
            except Exception:
                log.exception("closing a WebRTC peer failed")
        # what the peers leave running (transports winding down) ends before the loop does
        rest = [t for t in asyncio.all_tasks(loop) if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.wait(rest, timeout=2.0) if rest else None
        loop.stop()

    def on_close(self, close: Callable[[], Awaitable[None]]) -> Callable[[], None]:
        """Run ``close()`` in the loop when it stops; returns the function that forgets it."""
        self._on_close.append(close)
        return lambda: self._on_close.remove(close) if close in self._on_close else None

    async def call(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``function(*args)`` run in the loop. Cancelling the caller cancels it there."""
        loop, token = self.loop, self._token
        assert token is not None
        done = trio.Event()
        result: list[outcome.Outcome[T]] = []
        futures: list[asyncio.Future[T]] = []

        def finished(future: asyncio.Future[T]) -> None:
            if future.cancelled():
                result.append(outcome.Error(RtcLoopClosed()))
            elif (error := future.exception()) is not None:
                result.append(outcome.Error(error))
            else:
                result.append(outcome.Value(future.result()))
            token.run_sync_soon(done.set)

        def start() -> None:
            future = asyncio.ensure_future(function(*args))
            futures.append(future)
            future.add_done_callback(finished)

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # closed since the check above
            raise RtcLoopClosed() from None
        try:
            await done.wait()
        except trio.Cancelled:
            if not loop.is_closed():
                loop.call_soon_threadsafe(lambda: [f.cancel() for f in futures])
            raise
        return result[0].unwrap()

    def post(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` in the loop soon; errors are logged there. Dropped once
        the loop has stopped (the server is shutting down)."""
        try:
            self.loop.call_soon_threadsafe(function, *args)
        except (RtcLoopClosed, RuntimeError):
            pass

    def to_trio(self, function: Callable[..., Any], *args: Any) -> None:
        """From the loop: run ``function(*args)`` in Trio soon. It must not block; what it
        raises is logged and dropped, since it would otherwise end the Trio run."""
        token = self._token
        if token is None:
            return

        def guarded() -> None:
            try:
                function(*args)
            except Exception:
                log.exception("a WebRTC callback failed")

        try:
            token.run_sync_soon(guarded)
        except trio.RunFinishedError:
            pass
