"""What ``noise_reduction`` does to the word error rate of the STT, on noisy speech.

Sentences spoken by the embedded Piper voice, with noise added at each ``--snr`` (dB) of each
``--noise`` kind (``white``; ``hum``: 50 Hz mains hum and harmonics over a little hiss;
``babble``: several other sentences mixed together, people talking in the room), transcribed by
the STT the server runs (``--server-flags``; none: the embedded Whisper) as they are, and after
``realtime.noise.denoise`` as a session's ``near_field`` and ``far_field`` noise reduction runs
it. Prints the word error rate of each over all sentences.

Usage: ``python scripts/bench_noise.py [--noise white,hum,babble] [--snr 10,5,0]``.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.base import CancelToken
from engines.choice import build_stt, build_tts
from engines.embedded import default_threads
from realtime.audio import StreamingResampler
from realtime.cli import parse_args
from realtime.input_audio import ENGINE_RATE
from realtime.noise import denoise

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please book a table for four people at seven tonight.",
    "What is the weather going to be like in Berlin tomorrow?",
    "Turn off the lights in the kitchen and lock the front door.",
    "My flight to Chicago was delayed by almost three hours.",
    "Can you remind me to call my sister on Sunday afternoon?",
    "The meeting has been moved to the second floor conference room.",
    "I would like to order a large pizza with mushrooms and olives.",
    "How many tablespoons of sugar go into this cake recipe?",
    "Send an email to the team saying the report is finished.",
    "The train to the airport leaves every fifteen minutes.",
    "Remember to water the plants before you leave on vacation.",
)


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()


def errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """Word edit distance and reference length."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[len(hyp)], len(ref)


def noise(kind: str, length: int, rng: np.random.Generator, others: list[np.ndarray]) -> np.ndarray:
    hiss = rng.standard_normal(length).astype(np.float32)
    if kind == "white":
        return hiss
    if kind == "hum":
        t = np.arange(length) / ENGINE_RATE
        hum = np.sin(2 * np.pi * 50 * t) + 0.5 * np.sin(2 * np.pi * 150 * t)
        return (hum + 0.2 * hiss).astype(np.float32)
    if kind == "babble":
        mix = np.zeros(length, np.float32)
        for other in rng.choice(len(others), 4, replace=False):
            voice = np.resize(others[other], length)
            mix += np.roll(voice, int(rng.integers(length)))
        return mix
    raise SystemExit(f"unknown noise {kind!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-flags", default="", help="python -m realtime's flags, quoted")
    parser.add_argument("--noise", default="white,hum,babble")
    parser.add_argument("--snr", default="10,5,0")
    args = parser.parse_args()
    flags = parse_args(shlex.split(args.server_flags))
    threads = int(flags.threads or default_threads())
    stt, tts = build_stt(flags, threads), build_tts(flags, threads)
    speech = []
    for sentence in SENTENCES:
        chunks = tts.synthesize(sentence, voice=None, speed=1.0, cancel=CancelToken())
        audio = StreamingResampler(tts.sample_rate, ENGINE_RATE)(np.concatenate(list(chunks)))
        pad = np.zeros(ENGINE_RATE // 2, np.float32)
        speech.append(np.concatenate([pad, audio.astype(np.float32), pad]))
    total_words = sum(len(words(s)) for s in SENTENCES)
    print(f"bench_noise: stt={flags.stt}, {len(SENTENCES)} sentences, {total_words} words")
    print(f"{'noise':8} {'snr dB':>6} {'as sent':>9} {'near_field':>11} {'far_field':>10}")
    rng = np.random.default_rng(1)
    denoise_s = 0.0
    for kind in args.noise.split(","):
        for snr in (float(x) for x in args.snr.split(",")):
            totals = {"plain": [0, 0], "near_field": [0, 0], "far_field": [0, 0]}
            for sentence, clean in zip(SENTENCES, speech, strict=True):
                added = noise(kind, len(clean), rng, speech)
                gain = np.sqrt(np.mean(clean**2) / (np.mean(added**2) * 10 ** (snr / 10)))
                noisy = (clean + gain * added).astype(np.float32)
                noisy /= max(1.0, float(np.abs(noisy).max()))
                for name in totals:
                    audio = noisy
                    if name != "plain":
                        began = time.perf_counter()
                        audio = denoise(noisy, name, 1.0)
                        denoise_s += time.perf_counter() - began
                    e, n = errors(sentence, stt.transcribe(audio).text)
                    totals[name][0] += e
                    totals[name][1] += n
            rates = [100 * e / n for e, n in totals.values()]
            print(
                f"{kind:8} {snr:6.0f} {rates[0]:8.1f}% {rates[1]:10.1f}% {rates[2]:9.1f}%",
                flush=True,
            )
    audio_s = (
        sum(len(s) for s in speech)
        / ENGINE_RATE
        * len(args.noise.split(","))
        * len(args.snr.split(","))
        * 2
    )
    print(f"denoising: {1000 * denoise_s / audio_s:.1f} ms per second of audio")


if __name__ == "__main__":
    main()
