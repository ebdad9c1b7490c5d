"""A local chat model on Hugging Face transformers (PyTorch): any causal LM with a chat template,
by hub id or local directory (``pip install -e '.[transformers]'``).

``model.generate`` blocks until the whole answer is written and reports each token through a
streamer callback, and a Python generator cannot yield from inside a callback. So ``generate``
runs in a helper thread that each stream starts and joins before it ends, however it ends; a
:class:`TokenHandoff` streamer passes the tokens to the stream one at a time, and ``generate``
waits in it until the stream asks for the next token: it runs at most one token ahead of the
reader, which overlaps computing the next token with handing out the last one. A stopping
criterion ends ``generate`` at its next token once the cancel token is set or the stream is
closed, so a cancelled answer costs at most the one token being computed. (A decoding loop of
our own would need no thread, but would repeat what ``generate`` does for each architecture:
caches, positions, logits processors, the model's generation config.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import nullcontext
from typing import Any

from engines.base import CancelToken, EngineError
from engines.hf_chat import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    DEFAULT_N_CTX,
    LocalChatLLM,
    Sampling,
)
from engines.torch_runtime import import_library, resolve_device, torch_threads

ENGINE = "transformers LLM"
EXTRA = "transformers"
DTYPES = ("auto", "float32", "float16", "bfloat16")
#: What ``dtype="auto"`` means on each device: half precision where the hardware is fast at it.
AUTO_DTYPE = {"cpu": "float32", "cuda": "bfloat16", "mps": "float16"}


class TransformersLLM(LocalChatLLM):
    """A causal LM loaded with ``AutoTokenizer`` and ``AutoModelForCausalLM``.

    ``model``: a hub id (from the local Hugging Face cache when offline) or a directory.
    ``device``: ``auto`` (CUDA, else an Apple GPU, else the CPU), ``cpu``, ``cuda`` or ``mps``.
    ``dtype``: ``auto`` (float32 on the CPU, bfloat16 on CUDA, float16 on an Apple GPU),
    ``float32``, ``float16`` or ``bfloat16``. ``threads``: CPU threads for each generation
    (default: torch's). ``temperature`` and ``top_p``: the sampling when a request sets none
    (default: the model's ``generation_config.json``; temperature 0 is greedy)."""

    engine = ENGINE

    def __init__(
        self,
        *,
        model: str,
        device: str = "auto",
        dtype: str = "auto",
        threads: int | None = None,
        n_ctx: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    ) -> None:
        transformers = import_library(ENGINE, EXTRA, "transformers", "transformers")
        import torch

        self._torch = torch
        self.device = llm_device(torch, device)
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.dtype = AUTO_DTYPE[self.device] if dtype == "auto" else dtype
        self.threads = threads
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(model)
            with self._threads():
                self._model = transformers.AutoModelForCausalLM.from_pretrained(
                    model, dtype=getattr(torch, self.dtype), device_map=self.device
                ).eval()
        except (OSError, ValueError) as error:
            raise EngineError(
                f"{ENGINE}: cannot load {model!r} (a model directory, or a Hugging Face hub "
                f"id in the local cache when offline): {error}"
            ) from error
        self.model_name = model
        config = self._model.generation_config
        self._end_ids = _end_of_turn_ids(config.eos_token_id, tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.pad_token_id
        self._pad_id = pad if pad is not None else min(self._end_ids)
        super().__init__(
            tokenizer,
            n_ctx=n_ctx
            or int(getattr(self._model.config, "max_position_embeddings", DEFAULT_N_CTX)),
            sampling=Sampling.from_generation_config(config).overridden(
                temperature=temperature, top_p=top_p
            ),
            max_output_tokens=max_output_tokens,
        )

    def _generate(
        self, prompt: list[int], sampling: Sampling, max_tokens: int, cancel: CancelToken
    ) -> Generator[int, None, None]:
        torch = self._torch
        handoff = TokenHandoff()
        input_ids = torch.tensor([prompt], device=self._model.device)
        stop = _StopWhen(torch, lambda: cancel.cancelled or handoff.closed)
        settings = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": max_tokens,
            "streamer": handoff,
            "stopping_criteria": [stop],
            "eos_token_id": sorted(self._end_ids),
            "pad_token_id": self._pad_id,
            **_sampling_arguments(sampling),
        }

        def generate() -> None:
            with self._threads():
                self._model.generate(**settings)

        worker = threading.Thread(
            target=handoff.run, args=(generate,), name="transformers-generate", daemon=True
        )
        worker.start()
        try:
            for token in handoff:
                if token in self._end_ids:
                    return
                yield token
        finally:
            handoff.close()
            worker.join()

    def _threads(self) -> Any:
        return nullcontext() if self.threads is None else torch_threads(self._torch, self.threads)


def llm_device(torch: Any, device: str) -> str:
    """The device ``device`` names; ``auto`` is CUDA, else an Apple GPU, else the CPU (an LLM
    runs well on an Apple GPU, unlike some speech models, which is why this prefers it)."""
    if device == "auto" and not torch.cuda.is_available() and torch.backends.mps.is_available():
        return "mps"
    return str(resolve_device(torch, device))


def _end_of_turn_ids(*ids: int | list[int] | None) -> frozenset[int]:
    found: set[int] = set()
    for value in ids:
        if isinstance(value, int):
            found.add(value)
        elif value:
            found.update(value)
    if not found:
        raise EngineError(f"{ENGINE}: the model defines no end-of-turn (eos) token")
    return frozenset(found)


def _sampling_arguments(sampling: Sampling) -> dict[str, Any]:
    """``generate`` keyword arguments for ``sampling``; every one is given, so none falls back
    to the model's generation config."""
    if sampling.temperature <= 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {
        "do_sample": True,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k or None,
        "repetition_penalty": sampling.repetition_penalty,
    }


class _StopWhen:
    """A ``generate`` stopping criterion: stop every sequence once ``stopped()`` is true."""

    def __init__(self, torch: Any, stopped: Callable[[], bool]) -> None:
        self._torch = torch
        self._stopped = stopped

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        return self._torch.full(
            (input_ids.shape[0],), self._stopped(), dtype=self._torch.bool, device=input_ids.device
        )


class TokenHandoff:
    """A ``generate`` streamer that hands generated token ids to one reader, one at a time.

    ``generate`` calls :meth:`put` from the thread that :meth:`run` runs it in; the reader
    iterates this object. :meth:`put` returns only once the reader has asked for a token, so
    ``generate`` is never more than one token ahead of it. After :meth:`close` (the reader is
    done) :meth:`put` returns at once and :attr:`closed` tells the stopping criterion to end
    ``generate``. What ``generate`` raises is raised to the reader."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._wanted = False  #: the reader waits for a token
        self._token: int | None = None  #: handed over, not yet taken
        self._finished = False  #: generate returned or raised
        self._error: BaseException | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def run(self, generate: Callable[[], None]) -> None:
        """Run ``generate`` (in the calling thread) and tell the reader when it is over."""
        error: BaseException | None = None
        try:
            generate()
        except BaseException as raised:  # handed to the reader, which raises it
            error = raised
        with self._condition:
            self._finished, self._error = True, error
            self._condition.notify_all()

    def put(self, value: Any) -> None:
        """``generate``'s callback: the prompt (2-D, ignored), then each new token (1-D)."""
        if value.dim() > 1:
            return
        with self._condition:
            self._condition.wait_for(lambda: self._wanted or self._closed)
            if self._closed:
                return
            self._wanted = False
            self._token = int(value.reshape(-1)[0])
            self._condition.notify_all()

    def end(self) -> None:
        """``generate``'s end callback; the end is signalled when :meth:`run` returns."""

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        with self._condition:
            self._wanted = True
            self._condition.notify_all()
            self._condition.wait_for(lambda: self._token is not None or self._finished)
            self._wanted = False
            if self._token is not None:
                token, self._token = self._token, None
                return token
            if self._error is not None:
                raise self._error
            raise StopIteration
