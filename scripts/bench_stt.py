"""Whisper's short encoder window against its full 30 s window: time per call and accuracy.

    python scripts/bench_stt.py [--takes 2] [--threads 2] [--min_window_s 10]

Piper speaks a set of questions and requests (its noise on, so each take differs) with 0.25 s
of silence before and 0.2 s after, as a VAD cut hands them to STT; Whisper tiny.en transcribes
each take with the full window (``min_window_s=30``, faster-whisper's own path) and with the
short window, as a final (beam 5) and as a partial hypothesis (greedy). Printed per setting:
exact transcripts (case and punctuation ignored; digits are spoken words, so "2" for "two"
counts as a miss for every setting alike), word error rate (counted as bench_transcription.py
counts it), time per call (median, p90), and how many short-window decodes looked like loops
and were done again on the full window.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engines import speak
from bench_pipeline import QUESTIONS
from bench_transcription import edit_distance, words
from bench_turns import SPLIT_SENTENCES

from engines.embedded import load_tts
from engines.whisper_stt import FULL_WINDOW_S, WhisperSTT

REQUESTS = [
    "Set a timer for ten minutes.",
    "What's the weather like in London tomorrow?",
    "Could you explain how photosynthesis works?",
    "I would like to order a large pepperoni pizza.",
    "Turn off the lights in the kitchen please.",
    "Who wrote the play Romeo and Juliet?",
    "Yes.",
    "No, thank you.",
    "So I was thinking about going on holiday next month, maybe somewhere warm like Spain or "
    "Portugal, and I wanted to ask what you would recommend for a family with two young children.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--takes", type=int, default=2, help="Piper takes of each sentence")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min_window_s", type=float, default=10.0)
    args = parser.parse_args()

    tts = load_tts(threads=args.threads)
    texts = QUESTIONS + REQUESTS + [f"{first} {second}" for first, second in SPLIT_SENTENCES]
    lead, tail = np.zeros(4_000, np.float32), np.zeros(3_200, np.float32)
    clips = [
        (text, np.concatenate([lead, speak(tts, text), tail]))
        for text in texts
        for _ in range(args.takes)
    ]
    seconds = [len(audio) / 16_000 for _, audio in clips]
    print(f"{len(clips)} clips, {min(seconds):.1f}-{max(seconds):.1f} s of audio each")
    engines = {
        "full window": WhisperSTT(threads=args.threads, min_window_s=FULL_WINDOW_S),
        f"short window (>= {args.min_window_s:g} s)": WhisperSTT(
            threads=args.threads, min_window_s=args.min_window_s
        ),
    }
    clip_audio = clips[0][1]
    for stt in engines.values():  # the first calls allocate
        stt.transcribe(clip_audio)
        stt.transcribe(clip_audio, partial=True)
    for partial in (False, True):
        print("partial hypotheses (greedy)" if partial else "finals (beam 5)")
        for name, stt in engines.items():
            stt.full_window_retries = 0
            exact = errors = reference_words = 0
            times = []
            for text, audio in clips:
                started = time.perf_counter()
                heard = stt.transcribe(audio, partial=partial).text
                times.append(time.perf_counter() - started)
                exact += words(heard) == words(text)
                errors += edit_distance(words(text), words(heard))
                reference_words += len(words(text))
            ms = np.array(times) * 1000
            print(
                f"  {name:26} exact {exact}/{len(clips)}  WER {errors / reference_words:6.1%}  "
                f"median {np.median(ms):4.0f} ms  p90 {np.percentile(ms, 90):4.0f} ms  "
                f"full-window retries {stt.full_window_retries}"
            )


if __name__ == "__main__":
    main()
