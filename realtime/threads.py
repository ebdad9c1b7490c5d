"""Running blocking engine calls in worker threads, cancellably and within a time bound.

A thread can't be killed. A call that is cancelled or overruns its time bound cancels its
token and is abandoned at once, so no session ever waits on a stuck engine; the abandoned
thread keeps its engine's ``limiter`` (a ``trio.CapacityLimiter(1)``) until it really returns,
so the engine never runs two calls at once, and a later call waits for it (within its own bound)
instead of piling up threads behind it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import trio

from engines.base import CancelToken, EngineError

T = TypeVar("T")


async def call_in_thread(
    call: Callable[[], T],
    token: CancelToken,
    *,
    limiter: trio.CapacityLimiter,
    timeout_s: float,
    what: str,
) -> T:
    """``call()`` in a worker thread holding ``limiter``. No result within ``timeout_s``
    (waiting for the engine included) is an :class:`EngineError`; then, and when this task is
    cancelled, ``token`` is cancelled and the thread abandoned."""
    try:
        with trio.move_on_after(timeout_s):
            return await trio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=limiter)
    finally:
        token.cancel()
    raise EngineError(f"{what} gave no result within {timeout_s:g} s")


async def stream_in_thread(
    make_iterator: Callable[[], Iterator[T]],
    on_item: Callable[[T], Awaitable[None]],
    token: CancelToken,
    *,
    limiter: trio.CapacityLimiter,
    item_timeout_s: float,
    buffer: int = 8,
) -> None:
    """Iterate a blocking engine iterator in a worker thread holding ``limiter``; await
    ``on_item`` for each item.

    The worker stops at its next item once ``token`` is cancelled (and when this task is
    cancelled, which cancels the token). A wait longer than ``item_timeout_s`` for one item
    (waiting for the engine included) is an :class:`EngineError`.
    """
    send, receive = trio.open_memory_channel[T](buffer)
    stop = CancelToken()  # this call is over: the worker returns at its next item

    def work() -> None:
        for item in make_iterator():
            if token.cancelled or stop.cancelled:
                return
            try:
                trio.from_thread.run(send.send, item)
            except (
                trio.Cancelled,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                trio.RunFinishedError,
            ):
                return  # the consumer is gone; the engine stops via the token
            if token.cancelled or stop.cancelled:
                return

    async def run_worker() -> None:
        async with send:
            await trio.to_thread.run_sync(work, abandon_on_cancel=True, limiter=limiter)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_worker)
            async with receive:
                while True:
                    with trio.move_on_after(item_timeout_s) as waited:
                        try:
                            item = await receive.receive()
                        except trio.EndOfChannel:
                            return
                    if waited.cancelled_caught:
                        raise EngineError(f"engine produced nothing for {item_timeout_s:g} s")
                    await on_item(item)
    finally:
        stop.cancel()
