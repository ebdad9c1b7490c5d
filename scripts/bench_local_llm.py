"""Time to first token and tokens/s of the local LLM engines (transformers, mlx_lm).

    python scripts/bench_local_llm.py [--model DIR_OR_HUB_ID] [--tokens 256] [--runs 3]
                                      [--threads 2] [--engines transformers,mlx_lm]

Without ``--model`` it builds the random tiny model of ``scripts/tiny_llm.py`` (Qwen2-shaped,
hidden size 64, 2 layers) in a temporary directory: its figures measure the engines' own
overhead per token, not what a real model does. Next to each engine, its library's own loop
(``model.generate``; ``mlx_lm.stream_generate``) is timed on the same prompt, so the cost of
streaming through the engine (prompt rendering, decoding, tool-call routing, the generate
thread's handoff) shows. One warm-up answer per engine is not counted.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.base import CancelToken, ChatMessage, LLMRequest, TextDelta, Usage
from engines.hf_chat import LocalChatLLM
from scripts.tiny_llm import build_tiny_chat_model

INSTRUCTIONS = "You are a helpful voice assistant. Answer in two or three short sentences."
QUESTION = "Tell me about lighthouses, and why their lights flash in different patterns."


def request(tokens: int) -> LLMRequest:
    return LLMRequest(
        INSTRUCTIONS,
        (ChatMessage("user", QUESTION),),
        temperature=0.0,
        max_output_tokens=tokens,
    )


Timing = tuple[float, float, int]  #: seconds to the first token, seconds after it, tokens


def timed(tokens: Iterator[object]) -> Timing:
    started = time.perf_counter()
    first = last = started
    count = 0
    for _ in tokens:
        last = time.perf_counter()
        if count == 0:
            first = last
        count += 1
    return first - started, last - first, count


def engine_answer(llm: LocalChatLLM, tokens: int) -> Timing:
    """One answer through the engine, from the call to its first text delta and on to its
    usage (some of the random model's tokens are incomplete characters, which no delta shows,
    so the token count is the usage's)."""
    started = time.perf_counter()
    first = None
    for event in llm.stream(request(tokens), CancelToken()):
        if isinstance(event, TextDelta) and first is None:
            first = time.perf_counter()
        elif isinstance(event, Usage):
            if first is None or event.output_tokens < tokens:
                raise SystemExit(f"the model ended its answer after {event.output_tokens} tokens")
            return first - started, time.perf_counter() - first, event.output_tokens
    raise SystemExit("the engine gave no usage")


def transformers_answer(llm: Any, tokens: int) -> Timing:
    """``model.generate`` alone, greedy, with a streamer that notes when each token comes."""
    import torch

    arrivals: list[float] = []

    class Arrivals:
        def put(self, value: Any) -> None:
            if value.dim() == 1:  # the first call brings the prompt
                arrivals.append(time.perf_counter())

        def end(self) -> None:
            pass

    ids = torch.tensor([list(llm.prompt(request(tokens)).token_ids)], device=llm._model.device)
    started = time.perf_counter()
    with llm._threads():
        llm._model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            streamer=Arrivals(),
            pad_token_id=llm._pad_id,
        )
    return arrivals[0] - started, arrivals[-1] - arrivals[0], len(arrivals)


def mlx_answer(llm: Any, tokens: int) -> Timing:
    """``mlx_lm.stream_generate`` alone, greedy."""
    prompt = list(llm.prompt(request(tokens)).token_ids)
    with llm._mx.stream(llm._generation_module.generation_stream):
        return timed(
            llm._mlx_lm.stream_generate(llm._model, llm._wrapper, prompt, max_tokens=tokens)
        )


def measure(answer: Callable[[], Timing], runs: int) -> tuple[float, float]:
    """Median time to first token (ms) and tokens/s after it, over ``runs`` after a warm-up."""
    answer()
    firsts, rates = [], []
    for _ in range(runs):
        first, rest, count = answer()
        firsts.append(first * 1000)
        rates.append((count - 1) / rest if rest > 0 else 0.0)
    return statistics.median(firsts), statistics.median(rates)


def load(engine: str, model: str, threads: int) -> tuple[LocalChatLLM, float]:
    started = time.perf_counter()
    llm: LocalChatLLM
    if engine == "transformers":
        from engines.transformers_llm import TransformersLLM

        llm = TransformersLLM(model=model, threads=threads)
    else:
        from engines.mlx_llm import MlxLLM

        llm = MlxLLM(model=model)
    return llm, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model directory or hub id (default: tiny, random)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per answer")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median shown)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (transformers)")
    parser.add_argument("--engines", default="transformers,mlx_lm", help="comma-separated")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or str(build_tiny_chat_model(Path(scratch) / "tiny", reply=None))
        print(f"model {args.model or 'tiny random (hidden 64, 2 layers)'}: {args.tokens} tokens")
        print(f"per answer, threads={args.threads}, medians of {args.runs} runs")
        for engine in args.engines.split(","):
            llm, seconds = load(engine, model, args.threads)
            prompt_tokens = len(llm.prompt(request(args.tokens)).token_ids)
            device = getattr(llm, "device", "default device")
            print(f"{engine} ({device}): loaded in {seconds:.2f} s, {prompt_tokens}-token prompt")
            library = transformers_answer if engine == "transformers" else mlx_answer
            for label, answer in (("engine stream", engine_answer), ("library loop ", library)):
                ttft, rate = measure(functools.partial(answer, llm, args.tokens), args.runs)
                print(f"  {label}: first token {ttft:6.1f} ms, {rate:7.0f} tokens/s")


if __name__ == "__main__":
    main()
