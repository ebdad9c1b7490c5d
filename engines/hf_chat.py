"""Chat with a local model in the Hugging Face layout, whichever library runs it.

:class:`LocalChatLLM` is what the transformers and mlx_lm engines share: the prompt, rendered
with the tokenizer's own chat template; the answer, decoded a token at a time and split into
text and tool calls; the token limits, cancellation and usage. An engine only turns prompt
token ids into generated token ids (:meth:`LocalChatLLM._generate`).

Tools: when the chat template renders a ``tools`` list (Qwen2.5, Llama 3.1, Hermes, ...), the
tools' JSON schemas go to the template and the model's ``<tool_call>`` blocks (or a bare JSON
call) are parsed; otherwise the tools are described in the system message exactly as for the
llama.cpp engine (:mod:`engines.chat_prompt`).
"""

from __future__ import annotations

import abc
import functools
import re
import threading
from collections.abc import Generator, Iterator
from typing import Any

import attrs

from engines.base import CancelToken, EngineError, LLMEvent, LLMRequest, TextDelta, Usage
from engines.chat_prompt import Message, chat_messages, fit_context, tool_schemas
from engines.tool_calls import ToolCallRouter, offered_tools

#: Tokens per answer when neither the request nor the engine's options set a limit.
DEFAULT_MAX_OUTPUT_TOKENS = 1024
#: Context, tokens, for a model whose config does not say (``max_position_embeddings``).
DEFAULT_N_CTX = 4096


@attrs.frozen
class Sampling:
    """How each next token is chosen."""

    temperature: float = 0.0  #: 0 = greedy: always the most likely token
    top_p: float = 1.0  #: only the most likely tokens that together hold this probability
    top_k: int = 0  #: only the k most likely tokens; 0 = no such limit
    repetition_penalty: float = 1.0  #: > 1 makes tokens already written less likely

    @classmethod
    def from_generation_config(cls, config: Any) -> Sampling:
        """What a model's ``generation_config.json`` asks for (a transformers
        ``GenerationConfig``; its defaults where the file is silent)."""

        def value(name: str, unset: float) -> float:
            setting = getattr(config, name, None)
            return unset if setting is None else float(setting)

        return cls(
            temperature=value("temperature", 1.0) if config.do_sample else 0.0,
            top_p=value("top_p", 1.0),
            top_k=int(value("top_k", 0)),
            repetition_penalty=value("repetition_penalty", 1.0),
        )

    def overridden(self, *, temperature: float | None, top_p: float | None) -> Sampling:
        """This sampling with the options that are set (not None) replaced."""
        return attrs.evolve(
            self,
            temperature=self.temperature if temperature is None else temperature,
            top_p=self.top_p if top_p is None else top_p,
        )


@attrs.frozen
class Prompt:
    text: str  #: the rendered chat template
    token_ids: tuple[int, ...]
    #: the template rendered the tools itself, so the model writes calls in its own format
    native_tools: bool


class ChatTemplate:
    """A Hugging Face tokenizer's chat template, applied to requests.

    ``tokenizer`` is a transformers tokenizer, or anything that forwards to one (mlx_lm's
    ``TokenizerWrapper``). Reasoning traces are not separated from the answer, so a template's
    thinking switch (``enable_thinking``, Qwen3) is turned off."""

    def __init__(self, tokenizer: Any, *, engine: str) -> None:
        if not tokenizer.chat_template:
            raise EngineError(
                f"{engine}: the model's tokenizer has no chat template (a base model?); "
                "use a chat or instruct model"
            )
        self._tokenizer = tokenizer

    def prompt(self, request: LLMRequest, n_ctx: int) -> Prompt:
        """The request rendered and tokenized; the oldest turns are dropped when it leaves less
        than a quarter of the ``n_ctx``-token context for the answer."""
        tools = tool_schemas(request)
        variables = template_variables(self._tokenizer.get_chat_template(tools=tools or None))
        native = bool(tools) and "tools" in variables
        options = {"enable_thinking": False} if "enable_thinking" in variables else {}
        rendered: list[str] = []

        def tokenize(messages: list[Message]) -> list[int]:
            rendered.append(
                self._tokenizer.apply_chat_template(
                    messages,
                    tools=tools if native else None,
                    add_generation_prompt=True,
                    tokenize=False,
                    **options,
                )
            )
            # The template writes every special token itself (a BOS included, if the model has
            # one), as transformers' own tokenize=True path assumes.
            return list(self._tokenizer.encode(rendered[-1], add_special_tokens=False))

        _, tokens = fit_context(
            chat_messages(request, native_tools=native), tokenize, n_ctx, request.truncation
        )
        return Prompt(text=rendered[-1], token_ids=tuple(tokens), native_tools=native)


@functools.lru_cache(maxsize=8)
def template_variables(source: str) -> frozenset[str]:
    """The names a Jinja chat template reads from its context (``messages``, ``tools``, ...).

    A template that plain Jinja cannot parse (one using a tag of transformers' own, such as
    ``{% generation %}``) is read as the set of words it mentions."""
    import jinja2
    import jinja2.meta

    environment = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
    try:
        return frozenset(jinja2.meta.find_undeclared_variables(environment.parse(source)))
    except jinja2.TemplateSyntaxError:
        return frozenset(re.findall(r"[A-Za-z_]\w*", source))


class Detokenizer:
    """Token ids in, text out, as soon as it is certain.

    A token may end inside a multi-byte character, and tokenizers decode a token differently
    at the start of a text (SentencePiece drops the leading space), so each new piece is the
    difference between decoding the last few tokens with and without the new ones; a piece
    ending in an incomplete character waits for the next token. Special tokens (end of turn,
    role markers) are left out of the text."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  #: the decoding window starts here
        self._read = 0  #: text up to here has been given out

    def add(self, token: int) -> str:
        """The text that ``token`` completes (often one word piece; may be empty)."""
        self._ids.append(token)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before) :]

    def flush(self) -> str:
        """Whatever is still held back at the end (an incomplete character decodes as U+FFFD)."""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return after[len(before) :]

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True)) if ids else ""


class LocalChatLLM(abc.ABC):
    """Streams one answer per :meth:`stream` call from a local chat model.

    Options shared by the engines: ``n_ctx``, the context in tokens the prompt and answer
    share (default: the model's ``max_position_embeddings``); ``sampling``; and
    ``max_output_tokens``, used when a request sets no limit. One model serves one stream at a
    time; a second concurrent stream waits for the first (which ends within a token of its
    cancel token being set), up to :attr:`busy_timeout_s`."""

    engine = "local LLM"
    busy_timeout_s = 5.0

    def __init__(
        self, tokenizer: Any, *, n_ctx: int, sampling: Sampling, max_output_tokens: int
    ) -> None:
        self.tokenizer = tokenizer
        self.template = ChatTemplate(tokenizer, engine=self.engine)
        self.n_ctx = n_ctx
        self.sampling = sampling
        self.max_output_tokens = max_output_tokens
        self._lock = threading.Lock()

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        """Yield a :class:`TextDelta` per decoded piece (tool-call markup and JSON are held
        back and yielded as :class:`~engines.base.ToolCall` events at the end), then one
        :class:`Usage`. Checks ``cancel`` before each token."""
        # A stream abandoned without being closed keeps the lock until it is collected; wait
        # a bounded time rather than hang a worker thread on it.
        if not self._lock.acquire(timeout=self.busy_timeout_s):
            raise EngineError(f"still generating another answer after {self.busy_timeout_s} s")
        try:
            yield from self._answer(request, cancel)
        finally:
            self._lock.release()

    def prompt(self, request: LLMRequest) -> Prompt:
        """The prompt :meth:`stream` gives the model for ``request``."""
        return self.template.prompt(request, self.n_ctx)

    def _answer(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        prompt = self.prompt(request)
        limit = min(
            request.max_output_tokens or self.max_output_tokens,
            self.n_ctx - len(prompt.token_ids),
        )
        sampling = self.sampling.overridden(temperature=request.temperature, top_p=None)
        router = ToolCallRouter(
            [t.name for t in offered_tools(request)], tagged=prompt.native_tools
        )
        detokenizer = Detokenizer(self.tokenizer)
        output_tokens = 0
        if not cancel.cancelled:
            tokens = self._generate(list(prompt.token_ids), sampling, limit, cancel)
            try:
                for token in tokens:
                    output_tokens += 1
                    text = router.feed(detokenizer.add(token))
                    if text:
                        yield TextDelta(text)
                    if cancel.cancelled:
                        break
            finally:
                tokens.close()
        truncated = output_tokens >= limit and not cancel.cancelled
        if not cancel.cancelled:
            tail = router.feed(detokenizer.flush())
            if tail:
                yield TextDelta(tail)
            rest, calls = router.finish(truncated=truncated)
            if rest:
                yield TextDelta(rest)
            yield from calls
        yield Usage(
            input_tokens=len(prompt.token_ids), output_tokens=output_tokens, truncated=truncated
        )

    @abc.abstractmethod
    def _generate(
        self, prompt: list[int], sampling: Sampling, max_tokens: int, cancel: CancelToken
    ) -> Generator[int, None, None]:
        """The ids of the tokens generated after ``prompt``, at most ``max_tokens`` and without
        the end-of-turn token, as they are generated. Generation stops soon after ``cancel`` is
        set, and at once when the iterator is closed."""
