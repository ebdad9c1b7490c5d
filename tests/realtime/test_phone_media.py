"""realtime/phone_media.py on trio's mock clock: pacing, marks, playout reports and clear."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import trio
import trio.testing

from protocol import inputs as ins
from realtime.phone import PhoneCall
from realtime.phone_media import FRAME, LEAD_S, LINE_RATE, MARK_EVERY, MARK_GRACE_S, PhoneMedia


class RecordingLine:
    """A line that records what is sent, with the (mock) time it was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str, object]] = []

    def send_media(self, ulaw: bytes) -> None:
        self.sent.append((trio.current_time(), "media", len(ulaw)))

    def send_mark(self, name: str) -> None:
        self.sent.append((trio.current_time(), "mark", name))

    def send_clear(self) -> None:
        self.sent.append((trio.current_time(), "clear", None))

    def of(self, kind: str) -> list[tuple[float, str, object]]:
        return [entry for entry in self.sent if entry[1] == kind]


def reports(call: PhoneCall) -> list[object]:
    out = []
    while True:
        try:
            out.append(call.reports_receive.receive_nowait())
        except trio.WouldBlock:
            return out


def run(body) -> None:  # type: ignore[no-untyped-def]
    trio.run(body, clock=trio.testing.MockClock(autojump_threshold=0))


@asynccontextmanager
async def pacing() -> AsyncIterator[tuple[PhoneCall, PhoneMedia, RecordingLine]]:
    """A call's media pacing onto a recording line while the block runs."""
    call = PhoneCall("rtc_test", "test", [])
    media, line = PhoneMedia(call), RecordingLine()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(media.pace, line)
        yield call, media, line
        nursery.cancel_scope.cancel()


def seconds(s: float) -> np.ndarray:
    return np.full(int(s * LINE_RATE), 0.1, np.float32)


def test_audio_goes_out_in_20_ms_frames_paced_a_little_ahead_of_the_ear() -> None:
    async def body() -> None:
        async with pacing() as (call, media, line):
            start = trio.current_time()
            media.play(seconds(1.0))
            await trio.sleep(2.0)
        frames = line.of("media")
        assert [size for _, _, size in frames] == [FRAME] * 50
        # each frame leaves no earlier than LEAD_S before the caller would hear it
        for index, (at, _, _) in enumerate(frames):
            assert at - start >= index * 0.02 - LEAD_S - 1e-9
            assert at - start <= index * 0.02
        assert reports(call) == [ins.PlayoutStarted()]
        marks = [name for _, _, name in line.of("mark")]
        assert marks[-1] == f"0:{LINE_RATE}"  # the end of the burst is marked
        assert all(int(str(n).split(":")[1]) % MARK_EVERY == 0 for n in marks[:-1])

    run(body)


def test_playout_stops_when_the_last_mark_comes_back() -> None:
    async def body() -> None:
        async with pacing() as (call, media, line):
            media.play(seconds(0.2))
            await trio.sleep(0.5)
            names = [str(name) for _, _, name in line.of("mark")]
            for name in names[:-1]:
                media.marked(name)
            assert reports(call) == [ins.PlayoutStarted()]  # not all played yet
            media.marked(names[-1])
            assert reports(call) == [ins.PlayoutStopped()]

    run(body)


def test_clear_counts_what_the_caller_did_not_hear_and_ignores_the_cleared_marks() -> None:
    async def body() -> None:
        async with pacing() as (call, media, line):
            media.play(seconds(2.0))
            await trio.sleep(0.5)
            names = [str(name) for _, _, name in line.of("mark")]
            media.marked(names[3])  # the caller heard up to the fourth mark
            heard = int(names[3].split(":")[1])
            dropped = await media.clear()
            assert dropped == 2 * LINE_RATE - heard
            assert line.sent[-1][1] == "clear"
            sent_before = len(line.of("media"))
            for name in names:  # the provider returns the marks still in its buffer
                media.marked(name)
            assert reports(call) == [ins.PlayoutStarted()]  # no "stopped" from stale marks
            # the next answer goes out at once: the provider's buffer is empty after a clear
            cleared_at = trio.current_time()
            media.play(seconds(0.1))
            await trio.sleep(0.01)
            new_frames = line.of("media")[sent_before:]
            at_once = [f for f in new_frames if f[0] - cleared_at < 1e-6]
            assert len(at_once) == round(LEAD_S / 0.02) + 1  # the lead is refilled at once
            assert str(line.of("mark")[-1][2]).startswith("1:")
            await trio.sleep(0.5)
            assert len(line.of("media")) == sent_before + 5  # nothing of the cleared audio

    run(body)


def test_a_line_that_echoes_no_marks_does_not_leave_the_playout_open() -> None:
    async def body() -> None:
        async with pacing() as (call, media, _):
            media.play(seconds(0.5))
            await trio.sleep(0.5 + MARK_GRACE_S - 0.2)
            assert reports(call) == [ins.PlayoutStarted()]
            await trio.sleep(0.3)
            assert reports(call) == [ins.PlayoutStopped()]
            assert await media.clear() == 0  # nothing left unheard

    run(body)


def test_a_stream_that_stops_taking_audio_ends_its_call() -> None:
    from realtime.phone_stream import OUTGOING_QUEUE, StreamLine
    from realtime.twilio import Twilio

    async def body() -> None:
        stuck: list[bool] = []
        blocked = trio.Event()

        async def send(message: dict[str, object]) -> None:
            blocked.set()
            await trio.sleep_forever()  # the provider stopped reading

        line = StreamLine(Twilio(None), send, "MZ1", lambda: stuck.append(True))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(line.pump)
            line.send_media(b"\xff" * FRAME)
            await blocked.wait()
            for _ in range(OUTGOING_QUEUE):
                line.send_media(b"\xff" * FRAME)
            assert stuck == []
            line.send_media(b"\xff" * FRAME)
            assert stuck == [True] and line.closed
            line.send_mark("0:160")  # nothing more is queued, nothing raises
            nursery.cancel_scope.cancel()

    run(body)
