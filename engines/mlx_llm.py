"""A local chat model on Apple's MLX with mlx_lm: any model mlx_lm can load (``mlx-community``
conversions, or a Hugging Face directory with safetensors weights), by hub id or local directory
(``pip install -e '.[mlx]'``).

MLX runs on its default device: the GPU of an Apple-silicon Mac, the CPU elsewhere (``mlx[cpu]``
on Linux); it offers no thread setting. ``mlx_lm.stream_generate`` is a generator, so it runs
in the stream's own thread: closing it stops generation. It evaluates the next token before it
hands out the current one, so a cancel costs at most that one token.
"""

from __future__ import annotations

import importlib
from collections.abc import Generator
from typing import Any, cast

from engines.base import CancelToken, EngineError, MissingDependency
from engines.hf_chat import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    DEFAULT_N_CTX,
    LocalChatLLM,
    Sampling,
)

ENGINE = "mlx_lm LLM"
EXTRA = "mlx"


class MlxLLM(LocalChatLLM):
    """A model loaded with ``mlx_lm.load``.

    ``model``: a hub id (from the local Hugging Face cache when offline) or a directory.
    ``temperature`` and ``top_p``: the sampling when a request sets none (default: the model's
    ``generation_config.json``, as transformers reads it; temperature 0 is greedy)."""

    engine = ENGINE

    def __init__(
        self,
        *,
        model: str,
        n_ctx: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    ) -> None:
        try:
            import mlx.core as mx
            import mlx_lm
            import mlx_lm.sample_utils
            import transformers

            # the module, which the package's own generate() function hides
            generation = importlib.import_module("mlx_lm.generate")
        except ImportError as error:
            raise MissingDependency(
                ENGINE, EXTRA, f"the mlx and mlx-lm packages ({error})"
            ) from error
        self._mx = mx
        self._mlx_lm = mlx_lm
        self._generation_module = _thread_safe_generation_stream(mx, generation)
        self._sample_utils = mlx_lm.sample_utils
        try:
            loaded = mlx_lm.load(model, return_config=True)
            self._model, self._wrapper, config = cast(tuple[Any, Any, dict[str, Any]], loaded)
        except (OSError, ValueError) as error:
            raise EngineError(
                f"{ENGINE}: cannot load {model!r} (a model directory with safetensors weights, "
                f"or a Hugging Face hub id in the local cache when offline): {error}"
            ) from error
        self.model_name = model
        self._vocabulary = len(self._wrapper.get_vocab())
        try:
            generation_config = transformers.GenerationConfig.from_pretrained(model)
        except OSError:  # no generation_config.json: transformers' defaults, as it would use
            generation_config = transformers.GenerationConfig()
        super().__init__(
            self._wrapper,
            n_ctx=n_ctx or config.get("max_position_embeddings") or DEFAULT_N_CTX,
            sampling=Sampling.from_generation_config(generation_config).overridden(
                temperature=temperature, top_p=top_p
            ),
            max_output_tokens=max_output_tokens,
        )

    def _generate(
        self, prompt: list[int], sampling: Sampling, max_tokens: int, cancel: CancelToken
    ) -> Generator[int, None, None]:
        sampler = self._sample_utils.make_sampler(
            temp=sampling.temperature,
            top_p=sampling.top_p,
            # mlx_lm rejects a top_k outside (0, vocabulary size); outside it, it changes nothing
            top_k=sampling.top_k if 0 < sampling.top_k < self._vocabulary else 0,
        )
        processors = self._sample_utils.make_logits_processors(
            repetition_penalty=sampling.repetition_penalty
            if sampling.repetition_penalty != 1.0
            else None
        )
        # The thread's default stream is the generation stream for the whole loop: mlx_lm
        # evaluates some arrays outside its own stream context, and a thread that has run no
        # MLX code yet has no default stream on the GPU.
        with self._mx.stream(self._generation_module.generation_stream):
            responses = self._mlx_lm.stream_generate(
                self._model,
                self._wrapper,
                prompt,
                max_tokens=max_tokens,
                sampler=sampler,
                logits_processors=processors,
            )
            try:
                for response in responses:
                    # Each response brings one token; the last says why generation ended, and
                    # when that was the end-of-turn token, its token is that one.
                    if response.finish_reason == "stop":
                        return
                    yield response.token
            finally:
                responses.close()


def _thread_safe_generation_stream(mx: Any, generation: Any) -> Any:
    """``generation`` (``mlx_lm.generate``), with a generation stream every thread can use.

    Since MLX 0.31.2 a stream belongs to the thread that made it. mlx_lm before 0.31.3 makes
    its generation stream when it is imported, so generating in any other thread (a server's
    worker threads) fails with "There is no Stream(...) in current thread". A thread-local
    stream, which later mlx_lm versions use, works in every thread."""
    stream = generation.generation_stream
    if hasattr(mx, "new_thread_local_stream") and not isinstance(stream, mx.ThreadLocalStream):
        generation.generation_stream = mx.new_thread_local_stream(stream.device)
    return generation
