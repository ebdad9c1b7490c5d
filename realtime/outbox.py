"""The server events waiting for a session's client, in the order the machine produced them."""

from __future__ import annotations

from collections import deque
from typing import Any

import trio


class SlowClient(Exception):
    """The client stopped reading; the session ends instead of buffering without bound."""


class Outbox:
    """Encoded server events in machine order, bounded by back-pressure on their producers.

    Producers put frames without waiting (so no task can reorder another's events), then wait
    for room when more than ``high_water`` frames are queued. A producer kept waiting longer
    than ``send_timeout_s`` means the client stopped reading: :class:`SlowClient`.
    """

    def __init__(self, high_water: int, send_timeout_s: float) -> None:
        self._frames: deque[str] = deque()
        self._high_water = high_water
        self._send_timeout_s = send_timeout_s
        self._readable = trio.lowlevel.ParkingLot()  # the pump waits here for frames
        self._room = trio.lowlevel.ParkingLot()  # producers wait here for room
        self._emptied = trio.lowlevel.ParkingLot()  # drain() waits here for the last frame
        self._sending = False

    def put(self, frame: str) -> None:
        self._frames.append(frame)
        self._readable.unpark_all()

    async def wait_for_room(self) -> None:
        if len(self._frames) <= self._high_water:
            return
        with trio.move_on_after(self._send_timeout_s) as waited:
            while len(self._frames) > self._high_water:
                await self._room.park()
        if waited.cancelled_caught:
            raise SlowClient

    async def pump(self, send: Any) -> None:
        """Send frames to the client in order, forever (run it in the connection's nursery)."""
        while True:
            while not self._frames:
                await self._readable.park()
            frame = self._frames.popleft()
            if len(self._frames) <= self._high_water:
                self._room.unpark_all()
            self._sending = True
            await send(frame)
            self._sending = False
            if not self._frames:
                self._room.unpark_all()
                self._emptied.unpark_all()

    @property
    def empty(self) -> bool:
        return not self._frames and not self._sending

    async def drain(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until every queued frame was handed to the client."""
        with trio.move_on_after(timeout_s):
            while not self.empty:
                await self._emptied.park()

    def __len__(self) -> int:
        return len(self._frames)


def single_cause(error: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (a nursery's wrapping):
    a :class:`SlowClient` raised in a task is found this way."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
