"""Load the four embedded engines and print how fast each one is on this machine.

    python scripts/bench_engines.py [--threads 2] [--runs 3]

RTF = processing time / audio duration (lower is faster). The speech that VAD and STT hear is
Piper's, resampled to 16 kHz.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.base import LLM, STT, TTS, VAD, CancelToken, ChatMessage, LLMRequest, TextDelta, Usage
from engines.embedded import load_llm, load_stt, load_tts, load_vad

SHORT = "What is the capital city of France?"
PASSAGE = (
    "The old lighthouse stood at the edge of the cliff. Every night its keeper climbed the "
    "narrow stairs to light the lamp. Ships far out at sea watched for its steady beam. "
    "One winter a storm cut the island off for weeks, but the light never went out."
)


def timed(load: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    engine = load()
    return engine, time.perf_counter() - started


def speak(tts: TTS, text: str) -> np.ndarray:
    audio = np.concatenate(list(tts.synthesize(text, voice=None, speed=1.0, cancel=CancelToken())))
    count = round(len(audio) * 16_000 / tts.sample_rate)
    positions = np.arange(count) * (tts.sample_rate / 16_000)
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


def bench_vad(vad: VAD, audio: np.ndarray, runs: int) -> float:
    """Microseconds per frame."""
    n = vad.frame_samples
    frames = [audio[i : i + n] for i in range(0, len(audio) - n + 1, n)]
    results = []
    for _ in range(runs):
        vad.reset()
        started = time.perf_counter()
        for frame in frames:
            vad.probability(frame)
        results.append((time.perf_counter() - started) / len(frames) * 1e6)
    return statistics.median(results)


def bench_stt(stt: STT, audio: np.ndarray, runs: int, *, partial: bool) -> tuple[float, str]:
    """RTF and the transcript."""
    results, text = [], ""
    for _ in range(runs):
        started = time.perf_counter()
        text = stt.transcribe(audio, partial=partial).text
        results.append((time.perf_counter() - started) / (len(audio) / 16_000))
    return statistics.median(results), text


def bench_llm(llm: LLM, runs: int) -> tuple[float, float, int, str]:
    """Time to first token (s, prompt not cached), generation tokens/s, input tokens, and the
    answer."""
    firsts, rates, input_tokens, text = [], [], 0, ""
    for run in range(runs):
        # A different first token each run: llama.cpp would otherwise reuse the cached prompt.
        request = LLMRequest(
            f"Session {run}. You are a helpful voice assistant. Answer in two or three sentences.",
            (ChatMessage("user", "Tell me about lighthouses."),),
            temperature=0.0,
            max_output_tokens=128,
        )
        started = time.perf_counter()
        first = None
        pieces = []
        for event in llm.stream(request, CancelToken()):
            if isinstance(event, TextDelta):
                first = first or time.perf_counter()
                pieces.append(event.text)
            elif isinstance(event, Usage) and first is not None:
                elapsed = time.perf_counter() - first
                firsts.append(first - started)
                rates.append((event.output_tokens - 1) / elapsed if elapsed > 0 else 0.0)
                input_tokens = event.input_tokens
        text = "".join(pieces)
    return statistics.median(firsts), statistics.median(rates), input_tokens, text


def bench_tts(tts: TTS, runs: int) -> tuple[float, float, float]:
    """Time to first chunk (s), RTF, and audio seconds of :data:`PASSAGE`."""
    firsts, rtfs, seconds = [], [], 0.0
    for _ in range(runs):
        started = time.perf_counter()
        first = None
        samples = 0
        for chunk in tts.synthesize(PASSAGE, voice=None, speed=1.0, cancel=CancelToken()):
            first = first or time.perf_counter()
            samples += len(chunk)
        seconds = samples / tts.sample_rate
        firsts.append((first or time.perf_counter()) - started)
        rtfs.append((time.perf_counter() - started) / seconds)
    return statistics.median(firsts), statistics.median(rtfs), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for STT, LLM and TTS")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median shown)")
    args = parser.parse_args()

    vad, vad_load = timed(lambda: load_vad(threads=1))
    stt, stt_load = timed(lambda: load_stt(threads=args.threads))
    llm, llm_load = timed(lambda: load_llm(threads=args.threads))
    tts, tts_load = timed(lambda: load_tts(threads=args.threads))
    print(f"threads={args.threads} runs={args.runs} (medians)")
    print(
        f"load: vad {vad_load:.2f} s, stt {stt_load:.2f} s, llm {llm_load:.2f} s,"
        f" tts {tts_load:.2f} s"
    )

    short, passage = speak(tts, SHORT), speak(tts, PASSAGE)
    print(f"vad: {bench_vad(vad, passage, args.runs):.0f} µs per 32 ms frame")
    for name, audio in (("short", short), ("passage", passage)):
        for partial in (False, True):
            rtf, text = bench_stt(stt, audio, args.runs, partial=partial)
            kind = "partial" if partial else "final"
            print(f"stt {kind} {name} ({len(audio) / 16_000:.1f} s): RTF {rtf:.3f}  {text!r}")

    ttft, rate, input_tokens, text = bench_llm(llm, args.runs)
    print(
        f"llm: time to first token {ttft * 1000:.0f} ms ({input_tokens}-token prompt),"
        f" {rate:.0f} tokens/s  {text[:80]!r}"
    )
    first, rtf, seconds = bench_tts(tts, args.runs)
    print(f"tts: time to first chunk {first * 1000:.0f} ms, RTF {rtf:.3f} ({seconds:.1f} s audio)")


if __name__ == "__main__":
    main()
