"""Running blocking engine calls in worker threads, cancellably."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import trio

from engines.base import CancelToken, EngineError

T = TypeVar("T")


async def stream_in_thread(
    make_iterator: Callable[[], Iterator[T]],
    on_item: Callable[[T], Awaitable[None]],
    token: CancelToken,
    *,
    item_timeout_s: float,
    buffer: int = 8,
) -> None:
    """Iterate a blocking engine iterator in a worker thread; await ``on_item`` for each item.

    The worker stops at its next item once ``token`` is cancelled (and when this task is
    cancelled, which cancels the token). A wait longer than ``item_timeout_s`` for one item
    is an :class:`EngineError`.
    """
    send, receive = trio.open_memory_channel[T](buffer)
    stop = CancelToken()  # this call is over: the worker returns at its next item

    def work() -> None:
        for item in make_iterator():
            if token.cancelled or stop.cancelled:
                return
            try:
                trio.from_thread.run(send.send, item)
            except (trio.Cancelled, trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the consumer is gone; the engine stops via the token
            if token.cancelled or stop.cancelled:
                return

    async def run_worker() -> None:
        async with send:
            await trio.to_thread.run_sync(work)

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
                        stop.cancel()
                        raise EngineError(f"engine produced nothing for {item_timeout_s:.0f} s")
                    await on_item(item)
    finally:
        stop.cancel()
