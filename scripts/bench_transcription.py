"""How many concurrent transcription sessions one server holds on the embedded engines.

Starts the real server as a subprocess (``python -m realtime`` with its default embedded engines:
Silero VAD, Whisper tiny.en behind one lock per pipeline), synthesises a set of spoken sentences
with Piper (two of them at speed 0.9 and 1.1), and for each K in ``--sessions`` opens K
concurrent ``?intent=transcription`` sessions (trio-websocket clients in this process). Each
session streams the whole set in real time -- 20 ms ``input_audio_buffer.append`` chunks of
24 kHz PCM16, 0.7-1.0 s of silence between sentences -- starting from a different sentence and
after a different lead-in of silence, so that sessions do not speak in lockstep. Server VAD cuts
the turns; live transcription sends deltas while the user speaks.

Figures per K (all times are client receipt times of server events):

- delta latency, per segment (VAD turn): from ``input_audio_buffer.speech_started`` to the
  segment's first ``...input_audio_transcription.delta`` ("first"), and between successive
  deltas of the segment, the last being the one that comes with the final ("gap"); "all" pools
  both: how long a user watching the captions waits for the next words. The server sends words
  only when two partial hypotheses, taken every 500 ms of audio, agree on them, so "first" can't
  be below ~1 s plus two STT calls even on an idle server, and p90 of "all" is dominated by it;
  "gap" shows the caption cadence once text flows.
- final latency: ``input_audio_buffer.speech_stopped`` -> ``...transcription.completed`` of the
  same item (the VAD's 200 ms of silence are before speech_stopped, not in this figure).
- WER of the finals: per session, the finals in order against the sentences in order (word
  edit distance, case and punctuation ignored), summed over sessions; VAD splits and merges of
  sentences therefore cost nothing. Piper samples noise (VITS), so each run records slightly
  different audio and WER moves by a few points between runs; the rounds of a run share it.
- missing: segments whose final never came (within ``--drain-s`` after the audio), and
  ``failed`` ones; CPU: the server process's and this client's CPU time over the round, in %
  of one core.

Rounds stop after the first K whose p90 delta latency ("all") exceeds ``--stop-delta-p90`` or
whose p90 final latency exceeds ``--stop-final-p90`` (finals lag badly), or that lost a final.
A short warm-up session runs first and is not counted. Figures are printed, never asserted.

Usage: ``python scripts/bench_transcription.py [--sessions 1,2,3,4,6,8] [--utterances 10]
[--pipelines 1] [--server-arg=--enable_live_transcription=false] [--drain-s 15] [--verbose]``
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import platform
import random
import re
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import trio
import trio_websocket

# the repository root: the venv's editable install maps ``realtime`` as a namespace package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.base import CancelToken
from engines.embedded import load_tts
from realtime.audio import StreamingResampler, encode

HOST = "127.0.0.1"
WIRE_RATE = 24_000  #: audio/pcm, the session's default input format
CHUNK_MS = 20  #: audio per input_audio_buffer.append
CHUNK_BYTES = WIRE_RATE * 2 * CHUNK_MS // 1000
LEAD_IN_MS = (300, 2_500)  #: silence before a session's first sentence, drawn per session
PAUSE_MS = (700, 1_000)  #: silence between sentences, drawn per pause
TAIL_MS = 1_200  #: silence after the last sentence, so the VAD closes its turn
#: (sentence, Piper speed): ten different sentences, two said slower or faster; American
#: spellings and no numbers, so that WER counts recognition errors, not spelling variants
SENTENCES: list[tuple[str, float]] = [
    ("What is the capital of France?", 1.0),
    ("Please remind me to call my sister tomorrow morning.", 1.0),
    ("The quick brown fox jumps over the lazy dog.", 0.9),
    ("How many minutes are there in three hours?", 1.0),
    ("I would like to book a table for two at seven o'clock.", 1.0),
    ("Turn off the lights in the living room.", 1.0),
    ("My favorite color has always been green.", 1.1),
    ("Can you play some quiet music while I read?", 1.0),
    ("The train to London leaves from the north platform.", 1.0),
    ("Thank you very much for your help today.", 1.0),
]
SPEECH_STARTED = "input_audio_buffer.speech_started"
SPEECH_STOPPED = "input_audio_buffer.speech_stopped"
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"
FAILED = "conversation.item.input_audio_transcription.failed"
SEGMENT_EVENTS = (SPEECH_STARTED, SPEECH_STOPPED, DELTA, COMPLETED, FAILED)


# --- the recording ---------------------------------------------------------------------------


@attrs.frozen
class Utterance:
    text: str
    pcm: bytes  #: 24 kHz PCM16


def synthesise(count: int) -> list[Utterance]:
    """The first ``count`` sentences of :data:`SENTENCES` (cycled), spoken by Piper."""
    tts = load_tts()
    utterances = []
    for index in range(count):
        text, speed = SENTENCES[index % len(SENTENCES)]
        chunks = tts.synthesize(text, voice=None, speed=speed, cancel=CancelToken())
        samples = StreamingResampler(tts.sample_rate, WIRE_RATE)(np.concatenate(list(chunks)))
        utterances.append(Utterance(text, encode(samples, "audio/pcm")))
    return utterances


def silence(ms: int) -> bytes:
    return b"\x00\x00" * (WIRE_RATE * ms // 1000)


def session_recording(utterances: list[Utterance], index: int) -> tuple[bytes, list[str]]:
    """Session ``index``'s stream: its own lead-in, the sentences starting from number
    ``index``, its own pauses; and the sentences' texts in the order spoken."""
    rng = random.Random(index)
    order = utterances[index % len(utterances) :] + utterances[: index % len(utterances)]
    parts = [silence(rng.randint(*LEAD_IN_MS))]
    for n, utterance in enumerate(order):
        if n:
            parts.append(silence(rng.randint(*PAUSE_MS)))
        parts.append(utterance.pcm)
    parts.append(silence(TAIL_MS))
    return b"".join(parts), [u.text for u in order]


# --- one client session ----------------------------------------------------------------------


@attrs.define
class Segment:
    """One VAD turn as the client saw it; times are ``trio.current_time()`` at receipt."""

    started: float | None = None
    stopped: float | None = None
    completed: float | None = None
    deltas: list[float] = attrs.Factory(list)
    transcript: str | None = None
    failed: bool = False


@attrs.define
class SessionResult:
    references: list[str]
    segments: dict[str, Segment] = attrs.Factory(dict)  #: by item_id, in order of speech start
    errors: list[str] = attrs.Factory(list)

    def on_event(self, event: dict[str, Any], at: float) -> None:
        kind = event["type"]
        if kind == "error":
            self.errors.append(f"{event['error'].get('code')}: {event['error'].get('message')}")
            return
        item_id = event.get("item_id")
        if item_id is None or kind not in SEGMENT_EVENTS:
            return
        segment = self.segments.setdefault(item_id, Segment())
        if kind == SPEECH_STARTED:
            segment.started = at
        elif kind == SPEECH_STOPPED:
            segment.stopped = at
        elif kind == DELTA:
            segment.deltas.append(at)
        elif kind == COMPLETED:
            segment.completed, segment.transcript = at, event["transcript"]
        else:
            segment.completed, segment.failed = at, True

    def settled(self) -> bool:
        """Every turn the VAD closed has its final (or its failure)."""
        return all(s.completed is not None for s in self.segments.values() if s.stopped)


async def run_session(url: str, pcm: bytes, references: list[str], drain_s: float) -> SessionResult:
    """Streams ``pcm`` in real time, then waits up to ``drain_s`` for outstanding finals."""
    result = SessionResult(references)
    async with trio_websocket.open_websocket_url(url + "?intent=transcription") as ws:
        created = json.loads(await ws.get_message())
        if created["type"] != "session.created":
            raise RuntimeError(f"session refused: {created}")

        async def receive() -> None:
            while True:
                try:
                    message = await ws.get_message()
                except trio_websocket.ConnectionClosed:
                    return
                result.on_event(json.loads(message), trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            started = trio.current_time()
            for n, i in enumerate(range(0, len(pcm), CHUNK_BYTES)):
                await trio.sleep_until(started + n * CHUNK_MS / 1000)
                audio = base64.b64encode(pcm[i : i + CHUNK_BYTES]).decode()
                await ws.send_message(
                    json.dumps({"type": "input_audio_buffer.append", "audio": audio})
                )
            with trio.move_on_after(drain_s):
                while not result.settled():
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    return result


# --- figures ---------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split()


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Word-level Levenshtein distance: substitutions + deletions + insertions."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def p50_p90(values: list[float]) -> str:
    if not values:
        return "      -      -"
    return f"{statistics.median(values) * 1000:6.0f} {percentile(values, 0.9) * 1000:6.0f}"


@attrs.frozen
class Round:
    sessions: int
    first: list[float]
    gaps: list[float]
    finals: list[float]
    word_errors: int
    reference_words: int
    segments: int
    missing: int
    failed: int
    errors: list[str]
    server_cpu: float | None  #: % of one core
    client_cpu: float  #: % of one core

    @property
    def deltas(self) -> list[float]:
        return self.first + self.gaps

    @property
    def wer(self) -> float:
        return self.word_errors / max(1, self.reference_words)


def summarise(results: list[SessionResult], server_cpu: float | None, client_cpu: float) -> Round:
    first: list[float] = []
    gaps: list[float] = []
    finals: list[float] = []
    word_errors = reference_words = segments = missing = failed = 0
    errors: list[str] = []
    for result in results:
        errors += result.errors
        for segment in result.segments.values():
            if segment.started is None:
                continue
            segments += 1
            if segment.deltas:
                first.append(segment.deltas[0] - segment.started)
                gaps += [b - a for a, b in itertools.pairwise(segment.deltas)]
            if segment.failed:
                failed += 1
            elif segment.completed is None:
                missing += 1
            elif segment.stopped is not None:
                finals.append(segment.completed - segment.stopped)
        reference = words(" ".join(result.references))
        hypothesis = words(" ".join(s.transcript or "" for s in result.segments.values()))
        word_errors += edit_distance(reference, hypothesis)
        reference_words += len(reference)
    return Round(
        len(results),
        first,
        gaps,
        finals,
        word_errors,
        reference_words,
        segments,
        missing,
        failed,
        errors,
        server_cpu,
        client_cpu,
    )


HEADER = (
    "   K | delta first p50 p90 | gap p50 p90 | all p50 p90 | final p50 p90 |   WER "
    "| segs miss fail | CPU server client"
)


def row(r: Round) -> str:
    server = "   -" if r.server_cpu is None else f"{r.server_cpu:4.0f}"
    return (
        f"{r.sessions:4d} |       {p50_p90(r.first)} |{p50_p90(r.gaps)} |{p50_p90(r.deltas)} "
        f"|  {p50_p90(r.finals)} | {r.wer * 100:4.1f}% | {r.segments:4d} {r.missing:4d} "
        f"{r.failed:4d} |    {server}%  {r.client_cpu:4.0f}%"
    )


# --- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid``, all threads (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def wait_for_server(server: subprocess.Popen[bytes], port: int, timeout_s: float) -> None:
    with trio.fail_after(timeout_s):
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited with status {server.returncode}")
            try:
                stream = await trio.open_tcp_stream(HOST, port)
            except OSError:
                await trio.sleep(0.2)
                continue
            await stream.aclose()
            return


async def run_round(
    url: str, utterances: list[Utterance], k: int, drain_s: float, server_pid: int
) -> Round:
    results: list[SessionResult] = []

    async def one(index: int) -> None:
        pcm, references = session_recording(utterances, index)
        results.append(await run_session(url, pcm, references, drain_s))

    server_before, client_before = process_cpu_s(server_pid), client_cpu_s()
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        for index in range(k):
            nursery.start_soon(one, index)
    elapsed = time.monotonic() - started
    server_after = process_cpu_s(server_pid)
    server_cpu = (
        None
        if server_before is None or server_after is None
        else 100 * (server_after - server_before) / elapsed
    )
    client_cpu = 100 * (client_cpu_s() - client_before) / elapsed
    return summarise(results, server_cpu, client_cpu)


def held(rounds: list[Round], figures: str) -> int:
    """The largest K up to which every round's p90 of ``figures`` stayed under 1 s."""
    n = 0
    for result in rounds:
        values = getattr(result, figures)
        if not values or percentile(values, 0.9) >= 1.0:
            break
        n = result.sessions
    return n


async def bench(args: argparse.Namespace, url: str, server: subprocess.Popen[bytes]) -> None:
    utterances = synthesise(args.utterances)
    speech_s = sum(len(u.pcm) for u in utterances) / (2 * WIRE_RATE)
    stream_s = len(session_recording(utterances, 0)[0]) / (2 * WIRE_RATE)
    print(
        f"{len(utterances)} utterances, {speech_s:.1f} s of speech; each session streams "
        f"~{stream_s:.0f} s in real time (20 ms appends, 24 kHz PCM16)"
    )
    await wait_for_server(server, args.port, timeout_s=180)
    await run_round(url, utterances[:1], 1, args.drain_s, server.pid)  # warm-up
    print("times in ms (client receipt of server events); CPU in % of one core\n" + HEADER)
    rounds: list[Round] = []
    for k in args.sessions:
        result = await run_round(url, utterances, k, args.drain_s, server.pid)
        rounds.append(result)
        print(row(result), flush=True)
        for error in sorted(set(result.errors)):
            print(f"       error event: {error}")
        if args.verbose:
            ms = [round(d * 1000) for d in sorted(result.deltas)]
            print(f"       K={k} delta latencies, sorted (ms): {ms}")
        too_slow = result.deltas and percentile(result.deltas, 0.9) > args.stop_delta_p90
        finals_lag = result.finals and percentile(result.finals, 0.9) > args.stop_final_p90
        if too_slow or finals_lag or result.missing:
            break
    print(f"sessions held at p90 gap between deltas < 1 s: {held(rounds, 'gaps')}")
    print(f"sessions held at p90 final latency < 1 s: {held(rounds, 'finals')}")
    print(f"sessions held at p90 delta latency < 1 s: {held(rounds, 'deltas')}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sessions",
        type=lambda text: [int(k) for k in text.split(",")],
        default=[1, 2, 3, 4, 6, 8],
        help="concurrent session counts, one round each, in order",
    )
    parser.add_argument("--utterances", type=int, default=10, help="sentences per session (cycled)")
    parser.add_argument("--pipelines", type=int, default=1, help="the server's --num_pipelines")
    parser.add_argument(
        "--drain-s", type=float, default=15.0, help="wait for outstanding finals at most this"
    )
    parser.add_argument(
        "--stop-delta-p90", type=float, default=6.0, help="last round above this, seconds"
    )
    parser.add_argument(
        "--stop-final-p90", type=float, default=3.0, help="last round above this, seconds"
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="one more flag for python -m realtime (repeatable), e.g. "
        "--server-arg=--enable_live_transcription=false",
    )
    parser.add_argument("--verbose", action="store_true", help="print the server's log too")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    args.port = free_port()
    command = [
        sys.executable,
        "-m",
        "realtime",
        "--ws_host",
        HOST,
        "--ws_port",
        str(args.port),
        "--num_pipelines",
        str(args.pipelines),
        "--num_transcription_sessions",
        str(max(args.sessions)),
        "--log_level",
        "info" if args.verbose else "warning",
        *args.server_arg,
    ]
    print(
        f"bench_transcription: {os.cpu_count()} CPUs, {platform.machine()}, Python "
        f"{platform.python_version()}; server: {' '.join(command[1:])}"
    )
    server = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1])
    try:
        trio.run(bench, args, f"ws://{HOST}:{args.port}/v1/realtime", server)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
