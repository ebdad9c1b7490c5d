"""How many streaming sessions one replica holds, and what a load balancer in front adds.

    python scripts/bench_capacity.py [--sessions 2,4,6,8,12,16,24,32] [--seconds 12]
                                     [--lb-sessions 8]

Zero-cost engines (``bench_server.py``'s: an energy VAD, a fixed transcript, a short reply, a
tone per word), so the figures are the server's own: hypercorn, the session runners, the
protocol machines. Each replica is ``python scripts/bench_capacity.py --serve PORT`` in a
process of its own; the clients are this process (one Trio loop), on the same machine.

1. **Capacity.** N sessions each stream 20 ms ``input_audio_buffer.append`` chunks of silence
   in real time (so every session costs what a live microphone costs) and, every 2 s, send
   ``response.create``. The server event latency is, at the client, ``response.create`` sent
   -> ``response.created`` received: how long a client event waits behind everything else the
   replica does. Per N: p50 / p99 of that latency and of first audio (``response.create`` ->
   first ``response.output_audio.delta``), and whether p99 stays under 20 ms. The clients
   share the two cores with the replica: the figures are a floor of what a replica with its
   own cores holds.
2. **The balancer's overhead.** ``--lb-sessions`` sessions (half the capacity of two replicas)
   on two replicas, directly and through HAProxy with ``deploy/haproxy/haproxy.cfg`` (its
   replica list replaced): first audio p50 / p99 both ways. Skipped, saying so, without the
   ``haproxy`` binary.

First, the machine's floor: the round trip of a bare WebSocket echo server pinged every
20 ms, which no server on this machine can beat. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.bench_server import HOST, SILENCE, frame_type, zero_cost_pool
from scripts.bench_transcription import free_port

ROOT = Path(__file__).resolve().parents[1]
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
CHUNK_S = 0.02
ASK_EVERY_S = 2.0
WARMUP_S = 2.0
TARGET_MS = 20.0


# --- a replica -------------------------------------------------------------------------------


def serve(port: int, pipelines: int) -> None:
    """A replica with ``pipelines`` zero-cost pipelines on ``port`` until terminated."""
    from realtime import AppSettings
    from realtime.server import serve_until_signal

    trio.run(
        lambda: serve_until_signal(
            zero_cost_pool(pipelines),
            AppSettings(),
            host=HOST,
            port=port,
            graceful_timeout_s=1.0,
        )
    )


@contextmanager
def replicas(count: int, pipelines: int) -> Any:
    """``count`` replica processes; yields their ports once each answers ``/ready``."""
    ports = [free_port() for _ in range(count)]
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), "--pipelines", str(pipelines)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for port, process in zip(ports, processes, strict=True):
            wait_ready(f"http://{HOST}:{port}/ready", process)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} never answered 200")
        time.sleep(0.1)


def haproxy_config(text: str, addresses: Sequence[str], bind: str) -> str:
    """``deploy/haproxy/haproxy.cfg``'s ``text`` with each replica list holding
    ``addresses`` (host:port), each line as the list's first line has it, and the frontend
    bound to ``bind``."""
    out, rest = [], text
    while "    # --- replicas" in rest:
        head, rest = rest.split("    # --- replicas", 1)
        block, rest = rest.split("    # --- end of replicas ---\n", 1)
        comment, first = block.split("\n")[:2]
        fields = first.split()  # server NAME ADDRESS OPTIONS...
        stem, options = fields[1].rstrip("0123456789"), " ".join(fields[3:])
        lines = "".join(
            f"    server {stem}{i} {address} {options}\n" for i, address in enumerate(addresses, 1)
        )
        out.append(head + "    # --- replicas" + comment + "\n" + lines)
        out.append("    # --- end of replicas ---\n")
    text = "".join(out) + rest
    assert "bind :8765" in text
    return text.replace("bind :8765", f"bind {bind}")


@contextmanager
def haproxy(ports: Sequence[int]) -> Any:
    """HAProxy with the shipped configuration in front of ``ports``; yields its port."""
    binary = shutil.which("haproxy")
    assert binary is not None
    port = free_port()
    text = haproxy_config(
        HAPROXY_CONFIG.read_text(), [f"{HOST}:{p}" for p in ports], f"{HOST}:{port}"
    ).replace("    log global\n", "")
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as config:
        config.write(text)
        config.flush()
        process = subprocess.Popen(
            [binary, "-db", "-f", config.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(f"http://{HOST}:{port}/ready", process)
            time.sleep(1.5)  # every replica health-checked
            yield port
        finally:
            process.terminate()
            process.wait(10)


# --- clients ---------------------------------------------------------------------------------


class Session:
    """One client: streams silence in real time, asks for a response every ``ASK_EVERY_S``."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.asked: float | None = None
        self.created_ms: list[float] = []
        self.first_audio_ms: list[float] = []
        self.errors = 0
        self._audio_seen = True

    async def read(self, record_from: float) -> None:
        while True:
            try:
                frame = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            now = time.perf_counter()
            kind = frame_type(frame)
            if self.asked is None or now < record_from:
                if kind == "error":
                    self.errors += 1
                continue
            if kind == "response.created":
                self.created_ms.append((now - self.asked) * 1000)
            elif kind == "response.output_audio.delta" and not self._audio_seen:
                self._audio_seen = True
                self.first_audio_ms.append((now - self.asked) * 1000)
            elif kind == "error":
                self.errors += 1

    async def stream(self, seconds: float, offset_s: float) -> None:
        started = trio.current_time()
        next_ask = started + offset_s
        chunk = 0
        while trio.current_time() - started < seconds:
            chunk += 1
            await trio.sleep_until(started + chunk * CHUNK_S)
            await self.ws.send_message(SILENCE)
            if trio.current_time() >= next_ask:
                next_ask += ASK_EVERY_S
                self.asked, self._audio_seen = time.perf_counter(), False
                await self.ws.send_message('{"type":"response.create"}')


async def run_sessions(url: str, count: int, seconds: float) -> list[Session]:
    sessions: list[Session] = []
    record_from = time.perf_counter() + WARMUP_S
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            ws = await trio_websocket.connect_websocket_url(
                nursery, url + "?model=gpt-realtime", max_message_size=2**24
            )
            session = Session(ws)
            sessions.append(session)
            nursery.start_soon(session.read, record_from)
        async with trio.open_nursery() as streams:
            for index, session in enumerate(sessions):
                streams.start_soon(session.stream, seconds, ASK_EVERY_S * index / count)
        for session in sessions:
            await session.ws.aclose()
    return sessions


def percentiles(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def summary(sessions: list[Session]) -> tuple[tuple[float, float], tuple[float, float], int, int]:
    created = [v for s in sessions for v in s.created_ms]
    audio = [v for s in sessions for v in s.first_audio_ms]
    return percentiles(created), percentiles(audio), len(created), sum(s.errors for s in sessions)


# --- phases ----------------------------------------------------------------------------------


async def _echo(request: trio_websocket.WebSocketRequest) -> None:
    ws = await request.accept()
    while True:
        try:
            await ws.send_message(await ws.get_message())
        except trio_websocket.ConnectionClosed:
            return


def echo_server(port: int) -> None:
    trio.run(lambda: trio_websocket.serve_websocket(_echo, HOST, port, ssl_context=None))


def floor(seconds: float) -> None:
    """The machine's own round trip: a WebSocket echo server that does nothing else, pinged
    every 20 ms (what a client event costs before the server does any work)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--echo", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def ping() -> list[float]:
        for _ in range(100):
            try:
                async with trio_websocket.open_websocket_url(f"ws://{HOST}:{port}/") as ws:
                    rtts = []
                    end = trio.current_time() + seconds
                    while trio.current_time() < end:
                        await trio.sleep(CHUNK_S)
                        sent = time.perf_counter()
                        await ws.send_message("x")
                        await ws.get_message()
                        rtts.append((time.perf_counter() - sent) * 1000)
                    return rtts
            except (OSError, trio_websocket.HandshakeError):  # not listening yet
                await trio.sleep(0.1)
        raise SystemExit("the echo server never listened")

    try:
        p50, p99 = percentiles(trio.run(ping))
    finally:
        process.terminate()
        process.wait(10)
    print(
        f"\n0. The machine's floor: a bare WebSocket echo round trip every 20 ms: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )


def capacity(counts: Sequence[int], seconds: float) -> None:
    print("\n1. One replica: response.create -> response.created (server event latency), and")
    print("   -> first audio, while every session streams silence in real time")
    print("   sessions   created p50 / p99 ms   first audio p50 / p99 ms   asks  errors  p99<20ms")
    held = 0
    for count in counts:
        with replicas(1, count) as (port,):
            sessions = trio.run(run_sessions, f"ws://{HOST}:{port}/v1/realtime", count, seconds)
        (c50, c99), (a50, a99), asks, errors = summary(sessions)
        ok = c99 < TARGET_MS and errors == 0
        held = max(held, count) if ok else held
        print(
            f"   {count:8d}   {c50:8.1f} / {c99:7.1f}      {a50:8.1f} / {a99:7.1f}"
            f"        {asks:5d}  {errors:6d}  {'yes' if ok else 'no'}"
        )
        if errors or c99 > 5 * TARGET_MS:
            break
    print(f"   the most sessions held with p99 < {TARGET_MS:.0f} ms: {held}")


def balancer_overhead(count: int, seconds: float) -> None:
    print(f"\n2. Two replicas, {count} sessions: first audio directly and through HAProxy")
    if shutil.which("haproxy") is None:
        print("   skipped: no haproxy binary (Debian: apt-get install haproxy)")
        return
    with replicas(2, count) as ports:
        half = count // 2
        direct: list[Session] = []

        async def both() -> None:
            async with trio.open_nursery() as nursery:
                for port, share in ((ports[0], half), (ports[1], count - half)):

                    async def one(port: int = port, share: int = share) -> None:
                        url = f"ws://{HOST}:{port}/v1/realtime"
                        direct.extend(await run_sessions(url, share, seconds))

                    nursery.start_soon(one)

        trio.run(both)
        with haproxy(ports) as lb:
            through = trio.run(run_sessions, f"ws://{HOST}:{lb}/v1/realtime", count, seconds)
    for label, sessions in (("directly", direct), ("through HAProxy", through)):
        _, (a50, a99), asks, errors = summary(sessions)
        print(
            f"   {label:16s} first audio p50 {a50:6.1f} ms  p99 {a99:6.1f} ms"
            f"  ({asks} asks, {errors} errors)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="2,4,6,8,12,16,24,32")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--lb-sessions", type=int, default=8)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--echo", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pipelines", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.pipelines)
        return
    if args.echo:
        echo_server(args.echo)
        return
    print(
        f"bench_capacity: {os.cpu_count()} CPUs, {platform.machine()}, Python "
        f"{platform.python_version()}, {args.seconds:g} s per step ({WARMUP_S:g} s warm-up)"
    )
    floor(min(args.seconds, 6.0))
    capacity([int(n) for n in args.sessions.split(",")], args.seconds)
    balancer_overhead(args.lb_sessions, args.seconds)


if __name__ == "__main__":
    main()
