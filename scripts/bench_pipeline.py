"""Spoken turns through the live server on the embedded engines: the latency a user feels.

Starts the real server in this process on the embedded offline engines (Silero VAD, Whisper
tiny.en, SmolLM2-135M, Piper), synthesises spoken questions with Piper, and streams them over
the WebSocket in real time (20 ms appends of 24 kHz PCM16, then silence, as a microphone
would). Prints, over the turns:

- end of turn (the VAD's decision, server side) -> first audio delta, and the same from the
  client's receipt of ``speech_stopped`` to its receipt of the first audio delta;
- the stages: final STT, LLM first output, TTS first chunk;
- barge-in: interrupting speech is streamed while an answer plays; the time from the first
  interrupting audio sent to the cancelled ``response.done`` received, and to the last audio
  delta of the interrupted answer.

Each run is made twice by default (``--engines inprocess,workers``): with the engines in the
server's process, and with STT, LLM, TTS and the turn model in worker processes as
``python -m realtime`` runs them, so the two blocks of figures give the cost of the process
boundary on real engines.

Usage: ``python scripts/bench_pipeline.py [--turns 10] [--barge-ins 5]
[--engines inprocess,workers]``
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.base import CancelToken
from engines.smart_turn import load_turn_model
from realtime import AppSettings, Metrics, Pipeline, PipelinePool, SessionOptions
from realtime.audio import StreamingResampler, encode
from realtime.cli import build_pipeline, build_worker_pool, session_defaults
from realtime.cli import parse_args as parse_cli_args
from realtime.server import serve_on_free_port

QUESTIONS = [
    "What is the capital of France?",
    "Can you tell me a fun fact about the ocean?",
    "How many days are there in a week?",
    "What colour is the sky on a clear day?",
    "Please suggest a name for a small black cat.",
    "What should I cook for dinner tonight?",
    "Why do leaves change colour in autumn?",
    "What is two plus two?",
    "Tell me something about the moon.",
    "Which is bigger, an elephant or a mouse?",
]
INTERRUPTION = "Wait, stop, let me ask something else."
#: a question whose answer is still being generated when the interruption comes
LONG_ANSWER = "Tell me a long story about a brave knight and a friendly dragon."
CHUNK_MS = 20
CHUNK_BYTES = 48 * CHUNK_MS  # 24 kHz PCM16


def speech(pipeline: Pipeline, text: str) -> bytes:
    tts = pipeline.tts
    assert tts is not None
    audio = np.concatenate(list(tts.synthesize(text, voice=None, speed=1.0, cancel=CancelToken())))
    return encode(StreamingResampler(tts.sample_rate, 24_000)(audio), "audio/pcm")


def quantiles(values: list[float]) -> str:
    if not values:
        return "(no samples)"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return (
        f"n={len(values):3d}  p50 {statistics.median(values) * 1000:7.0f} ms  "
        f"p90 {p90 * 1000:7.0f} ms  max {ordered[-1] * 1000:7.0f} ms"
    )


class Talker:
    """One client streaming audio in real time and watching what comes back."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.got_event = trio.Event()

    async def read(self) -> None:
        while True:
            try:
                event = json.loads(await self.ws.get_message())
            except trio_websocket.ConnectionClosed:
                return
            self.events.append((time.perf_counter(), event))
            if event["type"] == "error":
                print("server error:", event["error"], file=sys.stderr)
            self.got_event.set()
            self.got_event = trio.Event()

    async def stream(self, pcm: bytes) -> float:
        """Send ``pcm`` at real-time pace; returns when its first chunk left."""
        first = time.perf_counter()
        next_at = first
        for i in range(0, len(pcm), CHUNK_BYTES):
            chunk = base64.b64encode(pcm[i : i + CHUNK_BYTES]).decode()
            await self.ws.send_message(
                json.dumps({"type": "input_audio_buffer.append", "audio": chunk})
            )
            next_at += CHUNK_MS / 1000
            await trio.sleep(max(0.0, next_at - time.perf_counter()))
        return first

    def first(self, kind: str, after: float, **match: Any) -> tuple[float, dict[str, Any]] | None:
        for at, event in self.events:
            if at >= after and event["type"] == kind:
                if all(event.get(k) == v for k, v in match.items()):
                    return at, event
        return None

    def done_of(self, response_id: str) -> tuple[float, dict[str, Any]] | None:
        for at, event in self.events:
            if event["type"] == "response.done" and event["response"]["id"] == response_id:
                return at, event
        return None

    async def silence_until(self, kind: str, after: float, timeout: float = 60.0) -> float:
        """Stream silence (as an open microphone does) until an event of ``kind`` arrives."""
        deadline = time.perf_counter() + timeout
        silence = b"\x00" * CHUNK_BYTES * 5
        while self.first(kind, after) is None:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no {kind} within {timeout} s")
            await self.stream(silence)
        found = self.first(kind, after)
        assert found is not None
        return found[0]


async def run(args: argparse.Namespace, pipeline: Pipeline, placement: str) -> None:
    pool = PipelinePool([pipeline])
    engines = pipeline
    metrics = Metrics()
    # the sessions `python -m realtime` serves with these flags
    cli = parse_cli_args(args.server_flags.split())
    settings = AppSettings(
        session=SessionOptions(session_defaults=session_defaults(cli), speculative=cli.speculative)
    )
    questions = [speech(engines, q) for q in QUESTIONS]
    interruption = speech(engines, INTERRUPTION)
    long_question = speech(engines, LONG_ANSWER)
    turn_client: list[float] = []
    barge_done: list[float] = []
    barge_last_audio: list[float] = []
    async with trio.open_nursery() as nursery:
        shutdown = trio.Event()
        port = await serve_on_free_port(
            nursery, pool, settings, shutdown=shutdown, graceful_timeout_s=10.0, metrics=metrics
        )
        url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
        async with trio_websocket.open_websocket_url(url) as ws:
            talker = Talker(ws)
            nursery.start_soon(talker.read)
            await ws.send_message(
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {
                            "type": "realtime",
                            "audio": {"input": {"transcription": {"model": "whisper-1"}}},
                        },
                    }
                )
            )
            await talker.stream(b"\x00" * CHUNK_BYTES * 25)  # a moment of room tone
            for turn in range(args.turns):
                question = questions[turn % len(questions)]
                started = await talker.stream(question)
                await talker.silence_until("response.done", started)
                stopped = talker.first("input_audio_buffer.speech_stopped", started)
                audio = talker.first("response.output_audio.delta", started)
                if stopped and audio:
                    turn_client.append(audio[0] - stopped[0])
                answer = talker.first("response.done", started)
                transcript = talker.first(
                    "conversation.item.input_audio_transcription.completed", started
                )
                if args.verbose and answer:
                    output = answer[1]["response"]["output"]
                    said = output[0]["content"][0].get("transcript") if output else ""
                    heard = transcript[1]["transcript"] if transcript else "?"
                    print(f"turn {turn + 1}: heard {heard!r} -> answered {said!r}")
            # long answers, so that the interruption comes while the answer is being generated
            await ws.send_message(
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {
                            "type": "realtime",
                            "instructions": "You are a storyteller. Tell long, detailed stories.",
                        },
                    }
                )
            )
            for _ in range(args.barge_ins):
                started = await talker.stream(long_question)
                await talker.silence_until("response.output_audio.delta", started)
                await talker.stream(b"\x00" * CHUNK_BYTES * 5)  # 100 ms of the answer plays
                interrupt_at = await talker.stream(interruption)
                answering = [
                    e["response"]["id"]
                    for at, e in talker.events
                    if e["type"] == "response.created" and started <= at < interrupt_at
                ][-1]
                while (ended := talker.done_of(answering)) is None:
                    await talker.stream(b"\x00" * CHUNK_BYTES * 5)
                done_at, done_event = ended
                if done_at < interrupt_at or done_event["response"]["status"] != "cancelled":
                    print("the answer ended before the interruption; not counted")
                    continue
                barge_done.append(done_at - interrupt_at)
                deltas = [
                    at
                    for at, e in talker.events
                    if e["type"] == "response.output_audio.delta" and e["response_id"] == answering
                ]
                barge_last_audio.append(max(deltas) - interrupt_at)
                if args.verbose:
                    print(f"barge-in: cancelled after {barge_done[-1] * 1000:.0f} ms")
                await talker.silence_until("response.done", done_at + 1e-6)

        shutdown.set()

    print(
        f"bench_pipeline: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.machine()}; embedded engines {placement}; {args.turns} turns, "
        f"{args.barge_ins} barge-ins"
    )
    print("end of turn -> first audio delta")
    print(
        "  server (VAD decision -> delta queued)   ",
        quantiles(list(metrics.end_of_turn_to_first_audio.recent)),
    )
    print("  client (speech_stopped -> delta received)", quantiles(turn_client))
    print("stages (server)")
    print("  STT final transcript                    ", quantiles(list(metrics.stt_seconds.recent)))
    print(
        "  LLM first output after start            ",
        quantiles(list(metrics.llm_first_token_seconds.recent)),
    )
    print(
        "  TTS first chunk of a piece              ",
        quantiles(list(metrics.tts_first_chunk_seconds.recent)),
    )
    print(
        "  response start -> first audio           ",
        quantiles(list(metrics.time_to_first_audio.recent)),
    )
    print("barge-in (client: first interrupting audio sent ->)")
    print("  cancelled response.done received       ", quantiles(barge_done))
    print("  last audio delta of the answer received ", quantiles(barge_last_audio))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10, help="spoken question turns")
    parser.add_argument("--barge-ins", type=int, default=5, help="interrupted answers")
    parser.add_argument("--verbose", action="store_true", help="print each turn's exchange")
    parser.add_argument(
        "--engines",
        type=lambda s: s.split(","),
        default=["inprocess", "workers"],
        help="where the engines run, comma-separated: inprocess, workers",
    )
    parser.add_argument(
        "--server-flags",
        default="",
        help="flags of `python -m realtime` for the engines and sessions, e.g. "
        "'--llm_temperature 0' (the same answers in both runs, so the same speech to time)",
    )
    args = parser.parse_args()
    # the engines exactly as `python -m realtime` builds them with these flags
    cli = parse_cli_args(args.server_flags.split())
    for placement in args.engines:
        if placement == "workers":
            pool = build_worker_pool(cli, transcription_sessions=0)
            try:
                trio.run(run, args, pool.pipelines[0], "in worker processes")
            finally:
                pool.close()
        else:
            turn_model = load_turn_model(cli.turn_model_path)
            trio.run(run, args, build_pipeline(cli, 0, turn_model), "in the server's process")
        print(flush=True)


if __name__ == "__main__":
    main()
