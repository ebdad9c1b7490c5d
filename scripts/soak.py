"""A long soak of the live server: does its memory stay flat while sessions come and go?

The real server (``realtime.serve``) runs in this process with the zero-cost engines of
``bench_server.py`` and one pipeline per client slot; the clients run in a subprocess (this script
with ``--client``), so the RSS sampled from ``/proc/self/status`` is the server's alone. Each of
``--sessions`` client slots opens a session, turns on input transcription, speaks
``--turns-per-session`` turns in real time (1 s of tone, then 0.8 s of silence, in 20 ms appends)
and waits for each answer, closes, and opens the next session, until ``--minutes`` have passed.
Every server event is validated with the openai SDK's types and ``SequenceChecker``.

Prints progress every ``--report-s`` seconds, then: sessions, turns, events, errors (error events,
failed checks, timeouts, refusals), the server's RSS idle before, under load and idle after,
RSS per active session, and RSS growth per hour (the least-squares slope of the RSS samples after
the first minute or fifth of the run, and over its last half). ``--python-heap`` also traces the
Python heap, which tells a leak of objects from memory the allocator keeps. Figures are printed,
never asserted.

Usage: ``python scripts/soak.py [--minutes 10] [--sessions 4] [--turns-per-session 5]``.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_server import HOST, _lines, zero_cost_pool

from protocol.invariants import SequenceChecker
from realtime import AppSettings, Metrics
from realtime.server import serve_on_free_port
from tests.support import validate_with_sdk

CHUNK_MS = 20
TONE_MS, SILENCE_MS = 1000, 800  #: one spoken turn
ANSWER_TIMEOUT_S = 10.0
TRANSCRIBED = {
    "type": "session.update",
    "session": {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}},
}


def rss_mb() -> float:
    """This process's resident set size, MB (``VmRSS`` of ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def rss_after_trim() -> float | None:
    """RSS once glibc has returned its free pages (what it keeps is not leaked), or None."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return None  # not glibc
    return rss_mb()


def traced_mb() -> float:
    """The Python heap that ``tracemalloc`` traces now, MB (0 when it is not tracing)."""
    return tracemalloc.get_traced_memory()[0] / 2**20


# --- client side (the subprocess) ------------------------------------------------------------


def turn_pcm() -> bytes:
    """One turn as 24 kHz PCM16: a 300 Hz tone, then digital silence."""
    n = 24 * TONE_MS
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(n) / 24_000)
    return (tone * 32767).astype("<i2").tobytes() + b"\x00\x00" * (24 * SILENCE_MS)


class SoakSession:
    """One session's client: a reader that checks and counts every event, and a speaker."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.checker = SequenceChecker()
        self.events = self.errors = self.answered = 0
        self.problems: list[str] = []
        self._answer = trio.Event()

    async def read(self) -> None:
        try:
            while True:
                event = json.loads(await self.ws.get_message())
                self.events += 1
                try:
                    validate_with_sdk(event)
                    self.checker.check(event)
                except Exception as exc:
                    self.problems.append(f"{event.get('type')}: {exc}"[:300])
                if event["type"] == "error":
                    self.errors += 1
                    self.problems.append(f"error event: {event['error']}"[:300])
                elif event["type"] == "response.done":
                    self.answered += 1
                    self._answer.set()
        except trio_websocket.ConnectionClosed as closed:
            if closed.reason.code not in (1000, 1001):
                self.problems.append(f"closed by the server: {closed.reason}")

    async def turn(self, pcm: bytes) -> bool:
        """Speak one turn in real time; whether its answer ended in time."""
        self._answer = trio.Event()
        step = 48 * CHUNK_MS
        began = trio.current_time()
        for index, offset in enumerate(range(0, len(pcm), step)):
            await trio.sleep_until(began + index * CHUNK_MS / 1000)
            audio = base64.b64encode(pcm[offset : offset + step]).decode()
            await self.ws.send_message(
                json.dumps({"type": "input_audio_buffer.append", "audio": audio})
            )
        with trio.move_on_after(ANSWER_TIMEOUT_S):
            await self._answer.wait()
            return True
        self.problems.append(f"no response.done within {ANSWER_TIMEOUT_S:.0f} s of a turn")
        return False


async def one_session(url: str, turns: int, deadline: float, pcm: bytes) -> dict[str, Any]:
    async with trio_websocket.open_websocket_url(url) as ws:
        session = SoakSession(ws)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.read)
            await ws.send_message(json.dumps(TRANSCRIBED))
            spoken = 0
            while spoken < turns and trio.current_time() < deadline:
                spoken += 1
                if not await session.turn(pcm):
                    break
            nursery.cancel_scope.cancel()
    return {
        "turns": spoken,
        "answered": session.answered,
        "events": session.events,
        "errors": session.errors,
        "problems": session.problems[:5],
        "problem_count": len(session.problems),
    }


async def client_main(config: dict[str, Any]) -> None:
    deadline = trio.current_time() + config["seconds"]
    pcm = turn_pcm()

    async def slot() -> None:
        while trio.current_time() < deadline:
            try:
                result = await one_session(config["url"], config["turns"], deadline, pcm)
            except (OSError, trio_websocket.HandshakeError) as exc:
                result = {
                    "turns": 0,
                    "answered": 0,
                    "events": 0,
                    "errors": 1,
                    "problems": [f"could not connect: {exc!r}"],
                    "problem_count": 1,
                }
                await trio.sleep(1)
            print(json.dumps(result), flush=True)

    async with trio.open_nursery() as nursery:
        for _ in range(config["sessions"]):
            nursery.start_soon(slot)


# --- server side (this process) --------------------------------------------------------------


class Totals:
    def __init__(self) -> None:
        self.sessions = self.turns = self.answered = self.events = self.errors = 0
        self.problem_count = 0
        self.problems: list[str] = []  #: the first few of each session

    def add(self, result: dict[str, Any]) -> None:
        self.sessions += 1
        self.turns += result["turns"]
        self.answered += result["answered"]
        self.events += result["events"]
        self.errors += result["errors"] + (result["turns"] - result["answered"])
        self.problems += result["problems"]
        self.problem_count += result["problem_count"]

    def line(self) -> str:
        return (
            f"{self.sessions} sessions, {self.turns} turns ({self.answered} answered), "
            f"{self.events} events, {self.errors} errors, {self.problem_count} problems"
        )


def growth_per_hour(samples: list[tuple[float, float]], skip_s: float) -> float:
    """MB per hour: the least-squares slope of (seconds, MB) samples taken after ``skip_s``."""
    steady = [(t, mb) for t, mb in samples if t >= skip_s]
    if len(steady) < 3:
        return float("nan")
    t, mb = np.array(steady).T
    return float(np.polyfit(t, mb, 1)[0] * 3600)


async def soak(args: argparse.Namespace) -> None:
    pool = zero_cost_pool(args.sessions)
    metrics = Metrics()
    shutdown = trio.Event()
    totals = Totals()
    seconds = args.minutes * 60
    samples: list[tuple[float, float]] = []  #: (seconds into the run, RSS MB)
    heap: list[tuple[float, float]] = []  #: (seconds into the run, traced Python heap MB)
    if args.python_heap:
        tracemalloc.start()
    print(
        f"soak: {args.sessions} sessions at once, {args.turns_per_session} turns each, "
        f"{args.minutes:g} min; zero-cost engines, server pid {os.getpid()}",
        flush=True,
    )
    async with trio.open_nursery() as nursery:
        port = await serve_on_free_port(
            nursery, pool, AppSettings(), shutdown=shutdown, host=HOST, metrics=metrics
        )
        gc.collect()
        idle_before, heap_before = rss_mb(), traced_mb()
        config = {
            "url": f"ws://{HOST}:{port}/v1/realtime?model=gpt-realtime",
            "sessions": args.sessions,
            "turns": args.turns_per_session,
            "seconds": seconds,
        }
        command = [sys.executable, os.path.abspath(__file__), "--client", json.dumps(config)]
        began = time.monotonic()

        async def sample() -> None:
            next_report = args.report_s
            while True:
                elapsed = time.monotonic() - began
                samples.append((elapsed, rss_mb()))
                if args.python_heap:
                    heap.append((elapsed, traced_mb()))
                if elapsed >= next_report:
                    next_report += args.report_s
                    print(
                        f"[{elapsed:6.0f} s] {totals.line()}; RSS {samples[-1][1]:.1f} MB, "
                        f"{metrics.active_sessions} sessions active",
                        flush=True,
                    )
                await trio.sleep(args.sample_s)

        nursery.start_soon(sample)
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
        assert process.stdout is not None
        try:
            async with process.stdout:
                async for line in _lines(process.stdout):
                    if line.startswith("{"):
                        totals.add(json.loads(line))
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
        elapsed = time.monotonic() - began
        loaded = [mb for t, mb in samples]
        with trio.move_on_after(5):
            while metrics.active_sessions:
                await trio.sleep(0.05)
        gc.collect()
        idle_after, heap_after = rss_mb(), traced_mb()
        trimmed = rss_after_trim()
        shutdown.set()
        nursery.cancel_scope.cancel()

    under_load = float(np.median(loaded)) if loaded else float("nan")
    skip = min(60.0, elapsed / 5)
    print(f"\n{elapsed / 60:.1f} min, client exit {process.returncode}: {totals.line()}")
    print(
        f"server: {metrics.sessions_total} sessions, {metrics.sessions_refused} refused, "
        f"{metrics.turns} responses, {metrics.engine_errors} engine errors, "
        f"{metrics.protocol_errors} protocol errors"
    )
    print(
        f"RSS: {idle_before:.1f} MB idle before, {under_load:.1f} MB median under load "
        f"(peak {max(loaded, default=float('nan')):.1f}), {idle_after:.1f} MB idle after"
        + (f" ({trimmed:.1f} MB once malloc_trim gave free pages back)" if trimmed else "")
    )
    per_session = (under_load - idle_before) / args.sessions
    print(f"RSS per active session: {per_session:.2f} MB at most (allocator warm-up included)")
    print(
        f"RSS growth: {growth_per_hour(samples, skip):+.1f} MB/hour under load after the first "
        f"{skip:.0f} s, {growth_per_hour(samples, elapsed / 2):+.1f} MB/hour over the last half "
        f"({len(samples)} samples); {idle_after - idle_before:+.1f} MB idle after vs before"
    )
    if heap:
        print(
            f"Python heap (tracemalloc): {heap_before:.1f} MB idle before, "
            f"{np.median([mb for _, mb in heap]):.1f} MB median under load, "
            f"{heap_after:.1f} MB idle after"
        )
    for problem in totals.problems[:10]:
        print(f"  problem: {problem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sessions", type=int, default=4, help="sessions at once (= pipelines)")
    parser.add_argument("--turns-per-session", type=int, default=5)
    parser.add_argument("--sample-s", type=float, default=2.0, help="RSS sampling interval")
    parser.add_argument("--report-s", type=float, default=60.0, help="progress line interval")
    parser.add_argument(
        "--python-heap",
        action="store_true",
        help="also trace the Python heap (tracemalloc; slower) to tell a leak from the allocator",
    )
    parser.add_argument("--client", help=argparse.SUPPRESS)  # the subprocess side, as JSON
    args = parser.parse_args()
    if args.client:
        trio.run(client_main, json.loads(args.client))
    else:
        trio.run(soak, args)


if __name__ == "__main__":
    main()
