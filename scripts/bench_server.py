"""What the live server adds on top of its engines: turn latency, barge-in latency, CPU per session.

The real server (``realtime.serve``: hypercorn, quart-trio, the session runner and the protocol
machine) runs in this process on 127.0.0.1 with engines that cost nothing (defined below); the
clients are trio-websocket connections run by this same script in a subprocess (``--client``),
so the server has its event loop and its CPU time to itself. Figures are printed, never asserted.

1. End of turn -> first audio: the client streams 20 ms ``input_audio_buffer.append`` chunks
   (24 kHz PCM16) at real-time pace: tone, then silence until the reply. Server side, from the
   moment ``input_audio_buffer.speech_stopped`` is put in the session's outbox (right after the
   machine's VAD decision) to the moment the reply's first ``response.output_audio.delta`` is;
   client side, from receiving the one to receiving the other. Target: p50 < 5 ms, p99 < 20 ms.
2. Barge-in: while a ~1 s reply streams (the LLM and TTS sleep a little per word), the client
   speaks. Server side, from the session reader's receipt of the append whose audio makes the
   VAD fire to the ``response.done`` (status ``cancelled``) being put in the outbox: barge-in
   latency = VAD detection time (speech audio the turn logic needs, ``MIN_SPEECH_MS``) + this.
   Target: < 10 ms.
3. CPU: N sessions stream ``--seconds`` of audio each (20 % speech, so replies happen) in
   ``--chunk-ms`` appends at ``--speedup`` times real time; the server process's CPU time (all
   threads) between the client's start and end marks, as % of one core per second of input audio
   per session, and per append. Target: < 2 %. The cost is mostly per append, and an append after
   an idle gap costs more than one in a busy loop (cold caches: the first line printed says what
   one Trio wake-up costs here), so a faster pace or more sessions give lower figures. After
   each row, the same clients against hypercorn alone, configured as the server configures it,
   with an app that drops every message: the floor the transport sets under the figure.

Every phase runs twice by default (``--engines inprocess,workers``): with the engines in the
server's process, and with the STT, LLM and TTS in worker processes as the server runs them
(``engines.workers``), so the rows side by side give the cost of the process boundary. The CPU
rows add the workers' CPU time (from ``/proc``) to the server's.

Usage: ``python scripts/bench_server.py [--turns 50] [--seconds 25] [--speedup 1]
[--sessions 1,4] [--chunk-ms 20] [--engines inprocess,workers] [--profile]``.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import functools
import io
import json
import os
import platform
import pstats
import random
import resource
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import trio
import trio_websocket
from hypercorn.trio import serve as hypercorn_serve

# the repository root: the venv's editable install maps ``realtime`` as a namespace package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import realtime.endpoint
from engines.base import (
    CancelToken,
    FloatAudio,
    LLMEvent,
    LLMRequest,
    TextDelta,
    Transcript,
    Usage,
)
from engines.workers import EngineWorker, start_all
from protocol.effects import AppendInputAudio, StartResponse
from protocol.turns import MIN_SPEECH_MS
from realtime import AppSettings, Metrics, Pipeline, PipelinePool
from realtime.input_audio import ENGINE_RATE
from realtime.outbox import Outbox
from realtime.server import hypercorn_config, serve_on_free_port
from realtime.session import SessionRunner

HOST = "127.0.0.1"
CHUNK_MS = 20  #: audio per input_audio_buffer.append
WIRE_RATE = 24_000  #: audio/pcm, the session's default input format
SPEECH_MS = 160  #: the user's utterance in the latency phases (the turn logic needs 64 ms)
WARMUP_TURNS = 2  #: first turns of a phase left out of its figures (thread start-up)
CYCLE_MS, SPEECH_IN_CYCLE_MS = 5_000, 1_000  #: CPU phase: 1 s of speech every 5 s
SLOW_WORD_S, SLOW_CHUNK_S = 0.04, 0.01  #: barge-in phase: a reply lasts ~1 s

#: both processes read the same clock, so server and client moments can be subtracted
SHARED_CLOCK = "CLOCK_MONOTONIC" in time.get_clock_info("perf_counter").implementation

APPEND_PREFIX = '{"type":"input_audio_buffer.append"'
SPEECH_STOPPED = "input_audio_buffer.speech_stopped"
AUDIO_DELTA = "response.output_audio.delta"
RESPONSE_CREATED, RESPONSE_DONE = "response.created", "response.done"
CANCELLED = "response.done:cancelled"

SHORT_REPLY = "Sure. It is nine o'clock."
LONG_REPLY = (
    "Okay. Let me think about that for a moment, and then I will give you a long and careful "
    "answer that takes about a second to say."
)


# --- zero-cost engines -----------------------------------------------------------------------


class EnergyVAD:
    """Speech probability from a frame's mean energy: a tone is speech, digital silence is not."""

    sample_rate = ENGINE_RATE
    frame_samples = 512  #: 32 ms at 16 kHz, as Silero
    full_energy = 0.02**2  #: mean square at and above which the probability is 1

    def probability(self, frame: FloatAudio) -> float:
        energy = float(np.dot(frame, frame)) / len(frame)
        return min(1.0, energy / self.full_energy)

    def reset(self) -> None:
        pass

    def stream(self) -> EnergyVAD:
        return EnergyVAD()


class FixedSTT:
    """Hears the same words in any audio."""

    sample_rate = ENGINE_RATE

    def transcribe(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        partial: bool = False,
        logprobs: bool = False,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        return Transcript("what time is it", len(audio) / self.sample_rate)


class WordsLLM:
    """Streams ``reply`` word by word (after ``word_s`` each), then its usage."""

    def __init__(self, reply: str, word_s: float = 0.0) -> None:
        self.words = reply.split(" ")
        self.word_s = word_s

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        for index, word in enumerate(self.words):
            if cancel.cancelled:
                return
            if self.word_s:
                time.sleep(self.word_s)
            yield TextDelta(word if index == 0 else " " + word)
        yield Usage(input_tokens=len(request.messages), output_tokens=len(self.words))


class ToneTTS:
    """One 40 ms chunk of a 220 Hz tone per word (after ``chunk_s`` each), at 22.05 kHz."""

    sample_rate = 22_050

    def __init__(self, chunk_s: float = 0.0) -> None:
        self.chunk_s = chunk_s
        n = self.sample_rate * 40 // 1000
        tone = 0.2 * np.sin(2 * np.pi * 220 * np.arange(n) / self.sample_rate)
        self._chunk = tone.astype(np.float32)

    def voices(self) -> Sequence[str]:
        return ("tone",)

    def synthesize(
        self, text: str, *, voice: str | None, speed: float, cancel: CancelToken
    ) -> Iterator[FloatAudio]:
        for _ in text.split():
            if cancel.cancelled:
                return
            if self.chunk_s:
                time.sleep(self.chunk_s)
            yield self._chunk


def zero_cost_pool(size: int, *, slow: bool = False, workers: bool = False) -> PipelinePool:
    """``size`` pipelines; ``slow`` ones speak a ~1 s reply, the others a short one at once.
    ``workers``: the STT, LLM and TTS each in a worker process (close the pool after)."""
    llm = (
        functools.partial(WordsLLM, LONG_REPLY, SLOW_WORD_S)
        if slow
        else (functools.partial(WordsLLM, SHORT_REPLY))
    )
    tts = functools.partial(ToneTTS, SLOW_CHUNK_S if slow else 0.0)
    if not workers:
        return PipelinePool(
            [
                Pipeline(index=index, vad=EnergyVAD(), stt=FixedSTT(), llm=llm(), tts=tts())
                for index in range(size)
            ]
        )
    # a worker builds its engine from an importable name, not this script's __main__
    from scripts import bench_server as importable

    llm = functools.partial(importable.WordsLLM, *llm.args)
    tts = functools.partial(importable.ToneTTS, *tts.args)
    chains = [
        (
            EngineWorker(f"pipeline {i} stt", importable.FixedSTT),
            EngineWorker(f"pipeline {i} llm", llm),
            EngineWorker(f"pipeline {i} tts", tts),
        )
        for i in range(size)
    ]
    start_all([worker for chain in chains for worker in chain])
    return PipelinePool(
        [Pipeline.of_workers(i, EnergyVAD(), *chain) for i, chain in enumerate(chains)]
    )


def workers_cpu_seconds(pool: PipelinePool) -> float:
    """User + system CPU time of the pool's worker processes so far (Linux ``/proc``)."""
    total = 0
    for worker in pool.workers():
        try:
            fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


# --- timing server events (used on both sides) -----------------------------------------------


def frame_type(frame: str | bytes) -> str:
    """The ``type`` of an encoded event, without parsing the (audio-sized) rest of it."""
    text = frame.decode() if isinstance(frame, bytes) else frame
    if text.startswith('{"type":"'):
        return text[9 : text.index('"', 9)]
    return str(json.loads(text)["type"])


class FrameClock:
    """Counts server events and times the moments the latency figures are made of."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        #: (speech_stopped, first audio delta after it), seconds on ``time.perf_counter``
        self.end_of_turn: list[tuple[float, float]] = []
        self.cancelled: list[float] = []  #: times of response.done with status cancelled
        self._stopped_at: float | None = None

    def on_frame(self, frame: str | bytes, at: float) -> None:
        kind = frame_type(frame)
        self.counts[kind] += 1
        if kind == SPEECH_STOPPED:
            self._stopped_at = at
        elif kind == AUDIO_DELTA and self._stopped_at is not None:
            self.end_of_turn.append((self._stopped_at, at))
            self._stopped_at = None
        elif kind == RESPONSE_DONE and json.loads(frame)["response"]["status"] == "cancelled":
            self.counts[CANCELLED] += 1
            self.cancelled.append(at)


# --- server-side probes ----------------------------------------------------------------------


class ArrivalPort:
    """The session's event port, noting when each append frame reaches the session's reader."""

    def __init__(self, port: Any, arrivals: deque[float]) -> None:
        self._port = port
        self._arrivals = arrivals

    async def receive(self) -> str | bytes:
        frame = await self._port.receive()
        if isinstance(frame, str) and frame.startswith(APPEND_PREFIX):
            self._arrivals.append(time.perf_counter())
        return frame


class ProbedOutbox(Outbox):
    """An outbox that times the frames put in it (once its runner gives it a clock)."""

    clock: FrameClock | None = None

    def put(self, frame: str) -> None:
        super().put(frame)
        if self.clock is not None:
            self.clock.on_frame(frame, time.perf_counter())


class ProbedRunner(SessionRunner):
    """A session runner that keeps the timings of its session in ``probed`` (a class list)."""

    probed: list[ProbedRunner] = []

    def __init__(self, port: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(port, *args, **kwargs)
        self.clock = FrameClock()
        self.arrivals: deque[float] = deque()  # appends received, audio not yet handled
        self.port = ArrivalPort(port, self.arrivals)
        if isinstance(self.outbox, ProbedOutbox):
            self.outbox.clock = self.clock
        self.appended_ms = 0  # input audio through the resampler and VAD
        self.response_starts: list[float] = []
        #: (append received, audio handling began, response.done cancelled put, timeline ms)
        self.barge_ins: list[tuple[float, float, float, int]] = []
        self.probed.append(self)

    async def _carry_out(self, effect: Any) -> None:
        if isinstance(effect, StartResponse):
            self.response_starts.append(time.perf_counter())
        if not isinstance(effect, AppendInputAudio):
            await super()._carry_out(effect)
            return
        received = self.arrivals.popleft()  # one AppendInputAudio per append frame, in order
        taken = time.perf_counter()
        cancelled = len(self.clock.cancelled)
        await super()._carry_out(effect)
        self.appended_ms += len(effect.audio) * 1000 // (2 * WIRE_RATE)
        if len(self.clock.cancelled) > cancelled:
            self.barge_ins.append((received, taken, self.clock.cancelled[-1], self.appended_ms))


@contextmanager
def probes() -> Iterator[list[ProbedRunner]]:
    """Sessions started meanwhile are probed; yields the list their runners are added to."""
    saved = realtime.endpoint.SessionRunner, realtime.endpoint.Outbox
    ProbedRunner.probed = []
    realtime.endpoint.SessionRunner, realtime.endpoint.Outbox = ProbedRunner, ProbedOutbox  # type: ignore[misc]
    try:
        yield ProbedRunner.probed
    finally:
        realtime.endpoint.SessionRunner, realtime.endpoint.Outbox = saved  # type: ignore[misc]


# --- server side: one server per phase, its clients in a subprocess --------------------------


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    pending = b""
    while chunk := await stream.receive_some():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode()


async def discard_everything(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that opens a WebSocket the way the server does (``session.created`` first)
    and drops every message: what hypercorn and wsproto alone cost per append."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "websocket" or (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps({"type": "session.created"})})
    while (await receive())["type"] == "websocket.receive":
        pass


async def serve_discarding(nursery: trio.Nursery, shutdown: trio.Event) -> int:
    """:func:`discard_everything` on hypercorn, configured as the server configures it; the
    port."""
    config = hypercorn_config(HOST, 0, graceful_timeout_s=1.0)
    serve = functools.partial(
        hypercorn_serve, discard_everything, config, shutdown_trigger=shutdown.wait
    )
    addresses = await nursery.start(serve)
    return int(addresses[0].rsplit(":", 1)[1])


async def run_phase(
    pool: PipelinePool | None,
    client: dict[str, Any],
    on_mark: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Serve ``pool`` (None: :func:`discard_everything`) while this script's ``--client`` runs
    ``client``; the client's result. The pool's engine workers are closed after."""
    try:
        return await _run_phase(pool, client, on_mark)
    finally:
        if pool is not None:
            pool.close()


async def _run_phase(
    pool: PipelinePool | None,
    client: dict[str, Any],
    on_mark: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        if pool is None:
            port = await serve_discarding(nursery, shutdown)
        else:
            port = await serve_on_free_port(
                nursery, pool, AppSettings(), shutdown=shutdown, host=HOST, metrics=Metrics()
            )
        client = {**client, "url": f"ws://{HOST}:{port}/v1/realtime?model=gpt-realtime"}
        command = [sys.executable, os.path.abspath(__file__), "--client", json.dumps(client)]
        result: dict[str, Any] = {}
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
        assert process.stdout is not None
        try:
            async with process.stdout:
                async for line in _lines(process.stdout):
                    if line.startswith("{"):
                        result = json.loads(line)
                    elif on_mark is not None:
                        on_mark(line)
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
        shutdown.set()
    if process.returncode != 0 or not result:
        raise RuntimeError(f"the {client['phase']} client failed (exit {process.returncode})")
    return result


def _ms(seconds: Sequence[float]) -> np.ndarray:
    return np.asarray(seconds, dtype=float) * 1000.0


def row(label: str, values_ms: np.ndarray, target: str = "") -> str:
    if not len(values_ms):
        return f"{label:<56} {0:>4}  (no samples)"
    p50, p90, p99 = np.percentile(values_ms, [50, 90, 99])
    return (
        f"{label:<56} {len(values_ms):>4} {p50:>8.2f} {p90:>8.2f} {p99:>8.2f} "
        f"{values_ms.max():>8.2f}  {target}"
    )


async def bench_end_of_turn(turns: int, workers: bool) -> list[str]:
    with probes() as runners:
        client = await run_phase(
            zero_cost_pool(1, workers=workers), {"phase": "turns", "turns": turns}
        )
    (runner,) = runners
    pairs = runner.clock.end_of_turn[WARMUP_TURNS:]
    starts = np.asarray(runner.response_starts)
    stt_hop, reply_hop = [], []
    for stopped, audio in pairs:
        index = int(np.searchsorted(starts, stopped))
        if index < len(starts) and starts[index] <= audio:
            stt_hop.append(starts[index] - stopped)
            reply_hop.append(audio - starts[index])
    seen = client["end_of_turn"][WARMUP_TURNS:]
    lines = [
        row(
            "end of turn -> first audio delta (server)",
            _ms([a - s for s, a in pairs]),
            "p50 < 5, p99 < 20",
        ),
        row("  speech_stopped -> StartResponse carried out", _ms(stt_hop), "(STT round trip)"),
        row(
            "  StartResponse -> first audio delta",
            _ms(reply_hop),
            "(LLM, TTS workers)" if workers else "(LLM, TTS threads)",
        ),
        row("end of turn -> first audio delta (client)", _ms([a - s for s, a in seen])),
    ]
    if SHARED_CLOCK and len(seen) == len(pairs):
        delivery = [
            client_a - server_a for (_, server_a), (_, client_a) in zip(pairs, seen, strict=True)
        ]
        lines.append(row("  first audio delta: outbox -> client receipt", _ms(delivery)))
    return lines


async def bench_barge_in(turns: int, seed: int, workers: bool) -> list[str]:
    with probes() as runners:
        client = await run_phase(
            zero_cost_pool(1, slow=True, workers=workers),
            {"phase": "barge_in", "turns": turns, "seed": seed},
        )
    (runner,) = runners
    server = runner.barge_ins[WARMUP_TURNS:]
    x = _ms([done - received for received, _, done, _ in server])
    queued = _ms([taken - received for received, taken, _, _ in server])
    # join the client's barge-ins to the server's by the append that made the VAD fire
    fired = {timeline_ms: (received, done) for received, _, done, timeline_ms in server}
    detection, seen, inbound, outbound = [], [], [], []
    for record in client["barge_ins"]:
        for sent_at, timeline_ms in record["sends"]:
            if timeline_ms in fired:
                received, done = fired[timeline_ms]
                detection.append(timeline_ms - record["speech_start_ms"])
                seen.append(record["done_at"] - sent_at)
                inbound.append(received - sent_at)
                outbound.append(record["done_at"] - done)
                break
    detection_ms = np.asarray(detection, dtype=float)
    lines = [
        row("barge-in: trigger append -> cancelled done (server)", x, "X < 10"),
        row("  append received -> its audio handled", queued),
        row("barge-in: trigger append sent -> done received (client)", _ms(seen)),
        *(
            [
                row("  client send -> session reader receipt", _ms(inbound)),
                row("  outbox -> client receipt", _ms(outbound)),
            ]
            if SHARED_CLOCK
            else []
        ),
        row(
            "VAD detection: speech audio before it fires (ms)",
            detection_ms,
            f"MIN_SPEECH_MS={MIN_SPEECH_MS}, VAD frame 32 ms, append {CHUNK_MS} ms",
        ),
    ]
    if len(x) and len(detection_ms):
        lines.append(
            f"=> barge-in latency = VAD detection time ({np.median(detection_ms):.0f} ms of "
            f"speech, median) + {np.median(x):.2f} ms (p50; p99 {np.percentile(x, 99):.2f} ms)"
            f"; responses missed: {client['missed']}"
        )
    return lines


async def bench_cpu(
    sessions: int,
    seconds: float,
    speedup: float,
    chunk_ms: int,
    profile: bool,
    transport_only: bool = False,
    workers: bool = False,
) -> tuple[str, str | None]:
    """One row of the CPU table; ``transport_only``: against :func:`discard_everything`;
    ``workers``: the engines in worker processes, whose CPU counts with the server's."""
    marks: dict[str, tuple[float, float, float, float]] = {}
    profiler = cProfile.Profile(time.thread_time) if profile else None  # CPU, not wall
    pool = None if transport_only else zero_cost_pool(sessions, workers=workers)

    def on_mark(mark: str) -> None:
        # process CPU (all threads), this (the Trio) thread's CPU, wall time, workers' CPU
        worker_cpu = 0.0 if pool is None else workers_cpu_seconds(pool)
        marks[mark] = (time.process_time(), time.thread_time(), time.perf_counter(), worker_cpu)
        if profiler is not None:
            (profiler.enable if mark == "START" else profiler.disable)()

    client = await run_phase(
        pool,
        {
            "phase": "cpu",
            "sessions": sessions,
            "seconds": seconds,
            "speedup": speedup,
            "chunk_ms": chunk_ms,
        },
        on_mark,
    )
    worker_cpu = marks["END"][3] - marks["START"][3]
    server_cpu = marks["END"][0] - marks["START"][0]
    cpu = server_cpu + worker_cpu
    trio_thread = marks["END"][1] - marks["START"][1]
    wall = marks["END"][2] - marks["START"][2]
    per_session_second = cpu / (sessions * seconds) * 100
    per_append = cpu / (sessions * seconds * 1000 / chunk_ms) * 1e6
    line = (
        f"{sessions:>8} {seconds:>9.0f} {wall:>7.1f} {cpu:>9.2f} {trio_thread:>11.2f} "
        f"{max(0.0, server_cpu - trio_thread):>8.2f} {per_append:>11.0f} "
        f"{per_session_second:>10.2f} % "
        f"{worker_cpu:>10.2f} {client['cpu_s']:>10.2f} {client['responses']:>9}  "
        + (
            "(hypercorn + wsproto alone)"
            if transport_only
            else "engine workers"
            if workers
            else "engines in-process"
        )
    )
    report = None
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        report = (
            f"cProfile (CPU time) of the server's Trio thread, {sessions} session(s):\n"
            f"{out.getvalue()}"
        )
    return line, report


async def wake_cost(idle_s: float, wakes: int = 100) -> float:
    """CPU µs one ``trio.sleep(idle_s)`` costs: the floor under every append of a lone session."""
    started = time.thread_time()
    for _ in range(wakes):
        await trio.sleep(idle_s)
    return (time.thread_time() - started) / wakes * 1e6


async def bench(args: argparse.Namespace) -> None:
    versions = ", ".join(
        f"{name} {version(name)}" for name in ("trio", "trio-websocket", "hypercorn", "wsproto")
    )
    print(
        f"bench_server: {os.cpu_count()} CPUs, Python {platform.python_version()}, {versions}, "
        f"{platform.machine()} {platform.system()}; zero-cost engines, clients in a subprocess"
    )
    print(
        f"one Trio wake-up costs {await wake_cost(0.0):.1f} µs of CPU back to back and "
        f"{await wake_cost(CHUNK_MS / 1000):.0f} µs after {CHUNK_MS} ms idle on this machine"
    )
    turns = args.turns + WARMUP_TURNS
    for placement in args.engines:
        workers = placement == "workers"
        where = "STT, LLM, TTS in worker processes" if workers else "engines in the server"
        print(f"\nlatency, ms ({args.turns} turns each, real-time pace; {where})")
        print(f"{'':<56} {'n':>4} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  target")
        for line in await bench_end_of_turn(turns, workers):
            print(line, flush=True)
        for line in await bench_barge_in(turns, args.seed, workers):
            print(line, flush=True)
    print(
        f"\nCPU of the server process per second of input audio per session "
        f"({args.speedup:g}x real time, {args.chunk_ms} ms appends, "
        f"{SPEECH_IN_CYCLE_MS * 100 // CYCLE_MS} % speech)"
    )
    print(
        f"{'sessions':>8} {'audio s':>9} {'wall s':>7} {'server s':>9} {'trio thread':>11} "
        f"{'threads':>8} {'µs/append':>11} {'% core/s':>12} {'engine ws':>10} {'client s':>10}"
        f" {'responses':>9}  engines"
    )
    reports = []
    for sessions in args.sessions:
        for placement in args.engines:
            line, report = await bench_cpu(
                sessions,
                args.seconds,
                args.speedup,
                args.chunk_ms,
                args.profile,
                workers=placement == "workers",
            )
            print(line, flush=True)
            if report:
                reports.append(report)
        if not args.no_transport_floor:
            line, _ = await bench_cpu(
                sessions, args.seconds, args.speedup, args.chunk_ms, False, transport_only=True
            )
            print(line, flush=True)
    for report in reports:
        print(f"\n{report}")


# --- client side (run by the server side in a subprocess) ------------------------------------


def append_frame(pcm: bytes) -> str:
    return f'{APPEND_PREFIX},"audio":"{base64.b64encode(pcm).decode("ascii")}"}}'


def _tone(ms: int) -> bytes:
    """``ms`` (a multiple of 10: whole periods, so chunks join without clicks) of 300 Hz."""
    t = np.arange(WIRE_RATE * ms // 1000) / WIRE_RATE
    return (0.3 * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


def _silence(ms: int) -> bytes:
    return bytes(2 * WIRE_RATE * ms // 1000)


TONE, SILENCE = append_frame(_tone(CHUNK_MS)), append_frame(_silence(CHUNK_MS))


class ClientSession:
    """One client connection streaming audio at ``speedup`` times real time."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, speedup: float) -> None:
        self.ws = ws
        self.clock = FrameClock()
        self.sent_ms = 0  #: audio sent so far: the server's input timeline
        self.speedup = speedup
        self._next_send = trio.current_time()

    async def read(self) -> None:
        while True:
            try:
                frame = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            self.clock.on_frame(frame, time.perf_counter())

    async def send(self, frame: str, ms: int = CHUNK_MS) -> float:
        """Send a chunk of ``ms`` of audio when it would be ready; when it was sent."""
        self._next_send = max(self._next_send + ms / 1000 / self.speedup, trio.current_time() - 0.1)
        await trio.sleep_until(self._next_send)
        sent_at = time.perf_counter()
        await self.ws.send_message(frame)
        self.sent_ms += ms
        return sent_at

    async def stream(self, frame: str, until: Callable[[], bool], limit_ms: int = 10_000) -> None:
        """Send ``frame`` chunks until ``until()`` holds; the server has ``limit_ms`` to answer."""
        for _ in range(limit_ms // CHUNK_MS):
            if until():
                return
            await self.send(frame)
        raise RuntimeError(f"no answer after {limit_ms} ms of audio: {dict(self.clock.counts)}")

    async def speak(self, ms: int = SPEECH_MS) -> None:
        """Tone for ``ms``, then silence until the server says the turn ended."""
        stopped = self.clock.counts[SPEECH_STOPPED]
        for _ in range(ms // CHUNK_MS):
            await self.send(TONE)
        await self.stream(SILENCE, lambda: self.clock.counts[SPEECH_STOPPED] > stopped)


async def client_turns(sessions: list[ClientSession], config: dict[str, Any]) -> dict[str, Any]:
    (session,) = sessions
    for turn in range(1, config["turns"] + 1):
        await session.speak()
        await session.stream(SILENCE, lambda t=turn: session.clock.counts[RESPONSE_DONE] >= t)
    return {"end_of_turn": session.clock.end_of_turn}


async def client_barge_in(sessions: list[ClientSession], config: dict[str, Any]) -> dict[str, Any]:
    (session,) = sessions
    clock, rng = session.clock, random.Random(config["seed"])
    records, missed = [], 0
    await session.speak()
    for _ in range(config["turns"]):
        # the reply to the last utterance is playing: speak over it after 100-300 ms
        answered = len(clock.end_of_turn)
        await session.stream(SILENCE, lambda n=answered: len(clock.end_of_turn) > n)
        for _ in range(rng.randrange(100, 300, CHUNK_MS) // CHUNK_MS):
            await session.send(SILENCE)
        speech_start_ms, cancelled, sends = session.sent_ms, clock.counts[CANCELLED], []
        while clock.counts[CANCELLED] == cancelled and len(sends) * CHUNK_MS < 1000:
            sends.append((await session.send(TONE), session.sent_ms))
        if clock.counts[CANCELLED] > cancelled:
            records.append(
                {"speech_start_ms": speech_start_ms, "sends": sends, "done_at": clock.cancelled[-1]}
            )
        else:
            missed += 1  # the reply had ended before the user spoke
        await session.speak(max(0, SPEECH_MS - len(sends) * CHUNK_MS))
    return {"barge_ins": records, "missed": missed}


async def client_cpu(sessions: list[ClientSession], config: dict[str, Any]) -> dict[str, Any]:
    chunk_ms = config["chunk_ms"]
    chunks = int(config["seconds"] * 1000) // chunk_ms
    tone, silence = append_frame(_tone(chunk_ms)), append_frame(_silence(chunk_ms))

    async def talk(session: ClientSession, offset_ms: int) -> None:
        for index in range(chunks):
            in_speech = (index * chunk_ms + offset_ms) % CYCLE_MS < SPEECH_IN_CYCLE_MS
            await session.send(tone if in_speech else silence, chunk_ms)

    def replying() -> bool:
        return any(
            s.clock.counts[RESPONSE_CREATED] > s.clock.counts[RESPONSE_DONE] for s in sessions
        )

    started = resource.getrusage(resource.RUSAGE_SELF)
    print("START", flush=True)
    async with trio.open_nursery() as nursery:
        for index, session in enumerate(sessions):
            # speech starts at a different moment in each session, after at least 1 s of silence
            offset = CYCLE_MS - 1000 - index * (CYCLE_MS - 2000) // len(sessions)
            nursery.start_soon(talk, session, offset)
    with trio.move_on_after(5):
        while replying():
            await trio.sleep(0.005)
    print("END", flush=True)
    ended = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ended.ru_utime + ended.ru_stime - started.ru_utime - started.ru_stime
    responses = sum(s.clock.counts[RESPONSE_DONE] for s in sessions)
    return {"cpu_s": cpu, "responses": responses}


CLIENT_PHASES: dict[str, Callable[[list[ClientSession], dict[str, Any]], Awaitable[Any]]] = {
    "turns": client_turns,
    "barge_in": client_barge_in,
    "cpu": client_cpu,
}


async def client_main(config: dict[str, Any]) -> None:
    speedup = config.get("speedup", 1.0)
    async with AsyncExitStack() as stack:
        sessions = []
        for _ in range(config.get("sessions", 1)):
            ws = await stack.enter_async_context(trio_websocket.open_websocket_url(config["url"]))
            if frame_type(await ws.get_message()) != "session.created":
                raise RuntimeError("the server did not open with session.created")
            sessions.append(ClientSession(ws, speedup))
        async with trio.open_nursery() as nursery:
            for session in sessions:
                nursery.start_soon(session.read)
            result = await CLIENT_PHASES[config["phase"]](sessions, config)
            nursery.cancel_scope.cancel()
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=50, help="measured turns per latency phase")
    parser.add_argument("--seconds", type=float, default=25, help="input audio per session, CPU")
    parser.add_argument("--speedup", type=float, default=1, help="CPU phase pace (x real time)")
    parser.add_argument(
        "--sessions",
        type=lambda s: [int(n) for n in s.split(",")],
        default=[1, 4],
        help="concurrent sessions of the CPU runs, comma-separated",
    )
    parser.add_argument(
        "--chunk-ms", type=int, default=CHUNK_MS, help="CPU phase append size (multiple of 10)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the CPU runs' server")
    parser.add_argument(
        "--no-transport-floor",
        action="store_true",
        help="skip the CPU rows of hypercorn + wsproto alone (an app that drops every message)",
    )
    parser.add_argument(
        "--engines",
        type=lambda s: s.split(","),
        default=["inprocess", "workers"],
        help="where the engines run, comma-separated: inprocess, workers",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--client", help=argparse.SUPPRESS)  # the subprocess side, as JSON
    args = parser.parse_args()
    if args.chunk_ms <= 0 or args.chunk_ms % 10:
        parser.error("--chunk-ms must be a positive multiple of 10")
    if args.client:
        trio.run(client_main, json.loads(args.client))
    else:
        trio.run(bench, args)


if __name__ == "__main__":
    main()
