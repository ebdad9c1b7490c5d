"""Load the production STT and TTS engines (Parakeet TDT, Qwen3-TTS) and print how fast each
call is on this machine.

    python scripts/bench_production_engines.py [--stt_model M] [--tts_model M]
        [--device auto] [--threads 2] [--runs 5]

Without ``--stt_model`` / ``--tts_model`` it builds the tiny random-weight stand-ins the tests
use (in a temporary directory), which time the engines' own code paths rather than the real
networks. The STT hears noise: its figures are speed only. RTF = processing time / audio
duration (lower is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.base import CancelToken
from engines.torch_runtime import install_torchaudio_shim

SENTENCE = "The old lighthouse stood at the edge of the cliff, and its keeper lit the lamp."


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def median_ms(call: Callable[[], Any], runs: int) -> float:
    return statistics.median(timed(call)[1] for _ in range(runs)) * 1000


def bench_stt(stt: Any, runs: int) -> None:
    rng = np.random.default_rng(0)
    for seconds in (2.0, 5.0, 10.0):
        audio = (0.1 * rng.standard_normal(int(16_000 * seconds))).astype(np.float32)
        stt.transcribe(audio)  # first call of a length builds decoder state
        final = median_ms(lambda a=audio: stt.transcribe(a), runs)
        partial = median_ms(lambda a=audio: stt.transcribe(a, partial=True), runs)
        scored = median_ms(lambda a=audio: stt.transcribe(a, logprobs=True), runs)
        batch = median_ms(lambda a=audio: stt.transcribe_batch([a] * 4), runs)
        print(
            f"stt {seconds:4.1f} s: final {final:7.1f} ms (RTF {final / 1000 / seconds:.3f}),"
            f" partial {partial:7.1f} ms, with logprobs {scored:7.1f} ms,"
            f" batch of 4 {batch:7.1f} ms"
        )


def bench_tts(tts: Any, runs: int) -> None:
    firsts, totals, seconds, chunk_counts = [], [], [], []
    for _ in range(runs):
        started = time.perf_counter()
        first = None
        samples = chunks = 0
        for chunk in tts.synthesize(SENTENCE, voice=None, speed=1.0, cancel=CancelToken()):
            first = first or time.perf_counter()
            samples += len(chunk)
            chunks += 1
        totals.append(time.perf_counter() - started)
        firsts.append((first or time.perf_counter()) - started)
        seconds.append(samples / tts.sample_rate)
        chunk_counts.append(chunks)
    total, audio = statistics.median(totals), statistics.median(seconds)
    print(
        f"tts: first chunk {statistics.median(firsts) * 1000:.0f} ms, whole utterance"
        f" {total * 1000:.0f} ms for {audio:.2f} s of audio in {statistics.median(chunk_counts)}"
        f" chunks (RTF {total / audio:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stt_model", help="Parakeet hub id or .nemo path (default: tiny)")
    parser.add_argument("--tts_model", help="Qwen3-TTS hub id or directory (default: tiny)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per engine")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median shown)")
    args = parser.parse_args()
    if args.stt_model is None or args.tts_model is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")

    install_torchaudio_shim()
    _, nemo_import = timed(lambda: __import__("nemo.collections.asr"))
    _, qwen_import = timed(lambda: __import__("qwen_tts"))
    print(f"import: nemo.collections.asr {nemo_import:.2f} s, qwen_tts {qwen_import:.2f} s")

    from engines.parakeet_stt import ParakeetSTT
    from engines.qwen_tts import QwenTTS

    with tempfile.TemporaryDirectory() as scratch:
        from tests.engines.tiny_production_models import tiny_parakeet, tiny_qwen3_tts

        stt_model = args.stt_model or tiny_parakeet(Path(scratch, "parakeet"))
        tts_model = args.tts_model or tiny_qwen3_tts(Path(scratch, "qwen3_tts"))
        options = {"device": args.device, "threads": args.threads}
        stt, stt_load = timed(lambda: ParakeetSTT(model=stt_model, **options))
        tts, tts_load = timed(lambda: QwenTTS(model=tts_model, **options))
    print(
        f"load: stt {stt_load:.2f} s on {stt.device} ({Path(str(stt_model)).name}),"
        f" tts {tts_load:.2f} s on {tts.device} ({Path(str(tts_model)).name})"
    )
    print(f"threads={args.threads} runs={args.runs} (medians)")
    bench_stt(stt, args.runs)
    bench_tts(tts, args.runs)


if __name__ == "__main__":
    main()
