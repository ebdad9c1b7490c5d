"""Language models behind OpenAI's HTTP APIs, reached with the official ``openai`` client.

:class:`ResponsesLLM` speaks the Responses API (OpenAI itself). :class:`ChatCompletionsLLM`
speaks Chat Completions, which every OpenAI-compatible server offers (vLLM, llama.cpp's
``llama-server``, Ollama, Hugging Face inference providers). Both stream, put the request's
history, tools and limits on the wire, and turn every remote failure into an
:class:`~engines.base.EngineError`.

The client retries a request only before its stream has begun (connection errors, 408, 409,
429 and 5xx answers), so a retry never repeats a token already yielded. A cancelled stream is
closed at once, which drops the HTTP connection and so tells the server to stop generating; a
worker blocked on a silent server sees the cancel when the next event arrives or the read
timeout expires, whichever is first.
"""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs
import openai

from engines.base import (
    CancelToken,
    ChatMessage,
    EngineError,
    FunctionTool,
    LLMEvent,
    LLMRequest,
    TextDelta,
    ToolCall,
    Usage,
)
from engines.openai_client import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_S, ApiClient
from engines.tool_calls import new_call_id

log = logging.getLogger(__name__)

DEFAULT_RESPONSES_MODEL = "gpt-4.1-mini"
#: The Responses API refuses a ``max_output_tokens`` below 16; smaller limits are raised to it.
RESPONSES_MIN_OUTPUT_TOKENS = 16
#: What a tool without a parameter schema is sent with (both APIs insist on an object schema).
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


class _RemoteLLM(abc.ABC):
    """What both engines share: the client, the request settings, and turning failures into
    :class:`EngineError`.

    Options: ``model``; ``api_key``; ``base_url`` (default ``$OPENAI_BASE_URL`` or OpenAI's);
    ``timeout_s``, the longest wait for the server's next bytes; ``max_retries`` of a request
    that failed before streaming; and ``temperature``, ``max_output_tokens`` and
    ``reasoning_effort``, used when a request does not set its own (None = the server's
    default)."""

    engine = "remote LLM"
    default_model: str | None = None

    def __init__(
        self,
        *,
        model: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        reasoning_effort: str | None = None,
    ) -> None:
        model = model or self.default_model
        if not model:
            raise EngineError(f"the {self.engine} needs the served model's name (--llm_model)")
        self.model = model
        self.timeout_s = timeout_s
        self.temperature = temperature
        self.max_output_tokens = max_output_tokens
        self.reasoning_effort = reasoning_effort
        self.api = ApiClient(
            self.engine,
            model=model,
            api_key=self._api_key(api_key or os.environ.get("OPENAI_API_KEY")),
            base_url=base_url,
            timeout_s=timeout_s,
            max_retries=max_retries,
        )
        self.client, self.base_url = self.api.openai, self.api.base_url

    @abc.abstractmethod
    def _api_key(self, key: str | None) -> str:
        """The key to send, given the one configured (None when there is none)."""

    def _settings(self, request: LLMRequest) -> dict[str, Any]:
        """The request's output limit, temperature and reasoning effort, falling back to the
        engine's own; unset ones are left out so the server's defaults apply."""
        settings = {
            "max_output_tokens": request.max_output_tokens or self.max_output_tokens,
            "temperature": self.temperature if request.temperature is None else request.temperature,
            "reasoning_effort": request.reasoning_effort or self.reasoning_effort,
        }
        return {key: value for key, value in settings.items() if value is not None}

    @contextmanager
    def _streaming(
        self, create: Callable[[], openai.Stream[Any]], cancel: CancelToken
    ) -> Iterator[Iterator[Any]]:
        """Open a stream; yield its events until it ends or ``cancel`` is set. The stream is
        closed on the way out, however that happens."""
        if cancel.cancelled:
            yield iter(())
            return
        try:
            stream = create()
        except openai.OpenAIError as error:
            raise EngineError(self.api.failure(error)) from error
        with stream:
            yield self._until_cancelled(stream, cancel)

    def _until_cancelled(self, stream: openai.Stream[Any], cancel: CancelToken) -> Iterator[Any]:
        events = iter(stream)
        while not cancel.cancelled:
            try:
                event = next(events)
            except StopIteration:
                return
            except openai.OpenAIError as error:
                raise EngineError(self.api.failure(error)) from error
            if cancel.cancelled:  # set while this thread waited for the event
                return
            yield event


def _tool_call(call_id: str | None, name: str, arguments: str | None) -> ToolCall:
    # Some servers leave out the id or send "" for a call without arguments.
    return ToolCall(call_id=call_id or new_call_id(), name=name, arguments=arguments or "{}")


# --- Responses API ---------------------------------------------------------------------------


class ResponsesLLM(_RemoteLLM):
    """The OpenAI Responses API (``POST /v1/responses``), streamed.

    Needs an API key (``api_key`` or ``$OPENAI_API_KEY``). Nothing is stored on OpenAI's side
    (``store=False``): every request carries the whole history."""

    engine = "OpenAI Responses LLM"
    default_model = DEFAULT_RESPONSES_MODEL

    def _api_key(self, key: str | None) -> str:
        if not key:
            raise EngineError(
                f"the {self.engine} needs an API key: set OPENAI_API_KEY or pass --llm_api_key"
            )
        return key

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        """Yield text deltas as they arrive (a refusal is text too), each function call once
        its arguments are complete, then one :class:`Usage`."""
        usage: Usage | None = None
        arguments = self.arguments(request)
        with self._streaming(lambda: self.client.responses.create(**arguments), cancel) as events:
            # The stream is read to its end after the last event so that the connection
            # goes back to the client's pool for the next turn.
            for event in events:
                if event.type in ("response.output_text.delta", "response.refusal.delta"):
                    if event.delta:
                        yield TextDelta(event.delta)
                elif event.type == "response.output_item.done":
                    if event.item.type == "function_call":
                        yield _tool_call(event.item.call_id, event.item.name, event.item.arguments)
                elif event.type in ("response.completed", "response.incomplete"):
                    usage = _responses_usage(event.response)
                elif event.type == "response.failed":
                    error = event.response.error
                    detail = error.message if error is not None else "no detail"
                    raise EngineError(f"{self.engine}: the response failed: {detail}")
                elif event.type == "error":
                    raise EngineError(f"{self.engine}: {event.message}")
        if cancel.cancelled:
            return
        if usage is None:
            raise EngineError(f"{self.engine}: the stream ended before the response did")
        yield usage

    def arguments(self, request: LLMRequest) -> dict[str, Any]:
        """The keyword arguments of ``responses.create`` for ``request``."""
        arguments: dict[str, Any] = {
            "model": self.model,
            "input": responses_input(request.messages),
            "store": False,
            "stream": True,
        }
        if request.instructions:
            arguments["instructions"] = request.instructions
        if request.tools:
            arguments["tools"] = [_responses_tool(tool) for tool in request.tools]
            arguments["tool_choice"] = _tool_choice(
                request.tool_choice, lambda name: {"type": "function", "name": name}
            )
            if request.parallel_tool_calls is not None:
                arguments["parallel_tool_calls"] = request.parallel_tool_calls
        settings = self._settings(request)
        if "max_output_tokens" in settings:
            arguments["max_output_tokens"] = max(
                settings["max_output_tokens"], RESPONSES_MIN_OUTPUT_TOKENS
            )
        if "temperature" in settings:
            arguments["temperature"] = settings["temperature"]
        if "reasoning_effort" in settings:
            arguments["reasoning"] = {"effort": settings["reasoning_effort"]}
        return arguments


def responses_input(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The history as Responses input items: messages, ``function_call`` items for the calls
    an assistant turn made, ``function_call_output`` items for their results."""
    items: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.tool_call_id or "",
                    "output": message.content,
                }
            )
            continue
        if message.images:
            parts: list[dict[str, Any]] = [{"type": "input_text", "text": message.content}]
            parts += [
                {"type": "input_image", "image_url": url, "detail": detail}
                for url, detail in message.images
            ]
            items.append({"type": "message", "role": message.role, "content": parts})
        elif message.content:
            items.append({"type": "message", "role": message.role, "content": message.content})
        items += [
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            }
            for call in message.tool_calls
        ]
    return items


def _responses_tool(tool: FunctionTool) -> dict[str, Any]:
    # Not strict: a Realtime session's tool schemas need not meet strict mode's rules.
    spec: dict[str, Any] = {
        "type": "function",
        "name": tool.name,
        "parameters": tool.parameters or NO_PARAMETERS,
        "strict": False,
    }
    if tool.description:
        spec["description"] = tool.description
    return spec


def _responses_usage(response: Any) -> Usage:
    reason = getattr(response.incomplete_details, "reason", None)
    truncated = response.status == "incomplete" and reason == "max_output_tokens"
    usage = response.usage
    if usage is None:
        return Usage(input_tokens=0, output_tokens=0, truncated=truncated)
    return Usage(usage.input_tokens, usage.output_tokens, truncated=truncated)


def _tool_choice(choice: str, named: Callable[[str], dict[str, Any]]) -> str | dict[str, Any]:
    """``auto`` / ``none`` / ``required`` as they are; a function's name as the API's object
    that forces it, which ``named`` builds."""
    return choice if choice in ("auto", "none", "required") else named(choice)


# --- Chat Completions ------------------------------------------------------------------------


@attrs.define
class _CallParts:
    """A tool call whose pieces are still streaming in."""

    call_id: str = ""
    name: str = ""
    arguments: list[str] = attrs.Factory(list)


class ChatCompletionsLLM(_RemoteLLM):
    """Any OpenAI-compatible ``POST /v1/chat/completions``, streamed.

    ``model`` is required (the served model's name). Many local servers need no key: without
    ``api_key`` or ``$OPENAI_API_KEY`` the client sends ``none``. The output limit goes out as
    ``max_tokens``, which vLLM, llama.cpp and Ollama all read."""

    engine = "Chat Completions LLM"
    _told_no_usage = False  #: whether the log says yet that the server sends no usage

    def _api_key(self, key: str | None) -> str:
        return key or "none"

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        """Yield text deltas as they arrive, the tool calls (assembled from their streamed
        pieces) when the choice finishes, then one :class:`Usage`."""
        calls: dict[int, _CallParts] = {}
        usage: Any = None
        truncated = False
        arguments = self.arguments(request)
        create = self.client.chat.completions.create
        with self._streaming(lambda: create(**arguments), cancel) as chunks:
            for chunk in chunks:
                usage = getattr(chunk, "usage", None) or usage
                for choice in chunk.choices or ():
                    delta = choice.delta
                    if delta is not None:
                        if delta.content:
                            yield TextDelta(delta.content)
                        for piece in delta.tool_calls or ():
                            _add_piece(calls, piece)
                    if choice.finish_reason:
                        truncated = truncated or choice.finish_reason == "length"
                        yield from self._finished_calls(calls)
        if cancel.cancelled:
            return
        yield from self._finished_calls(calls)  # a server that sent no finish_reason
        if usage is None and not self._told_no_usage:
            self._told_no_usage = True
            log.info("%s: %s sends no usage; counting 0 tokens", self.engine, self.base_url)
        yield Usage(
            input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            output_tokens=getattr(usage, "completion_tokens", 0) or 0,
            truncated=truncated,
        )

    def _finished_calls(self, calls: dict[int, _CallParts]) -> Iterator[ToolCall]:
        for index in sorted(calls):
            parts = calls[index]
            if parts.name:
                yield _tool_call(parts.call_id, parts.name, "".join(parts.arguments))
            else:
                log.warning("%s: dropped a tool call without a name", self.engine)
        calls.clear()

    def arguments(self, request: LLMRequest) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for ``request``."""
        arguments: dict[str, Any] = {
            "model": self.model,
            "messages": chat_completions_messages(request),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            arguments["tools"] = [_chat_tool(tool) for tool in request.tools]
            arguments["tool_choice"] = _tool_choice(
                request.tool_choice, lambda name: {"type": "function", "function": {"name": name}}
            )
            if request.parallel_tool_calls is not None:
                arguments["parallel_tool_calls"] = request.parallel_tool_calls
        settings = self._settings(request)
        if "max_output_tokens" in settings:
            arguments["max_tokens"] = settings["max_output_tokens"]
        for key in ("temperature", "reasoning_effort"):
            if key in settings:
                arguments[key] = settings[key]
        return arguments


def chat_completions_messages(request: LLMRequest) -> list[dict[str, Any]]:
    """Instructions as the system message, then the history: assistant turns with their
    ``tool_calls``, function results as ``tool`` messages."""
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    for message in request.messages:
        if message.role == "tool":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": message.tool_call_id or "",
                    "content": message.content,
                }
            )
        elif message.tool_calls:
            messages.append(
                {
                    "role": "assistant",
                    "content": message.content or None,
                    "tool_calls": [
                        {
                            "id": call.call_id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        }
                        for call in message.tool_calls
                    ],
                }
            )
        elif message.images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
            parts += [
                {"type": "image_url", "image_url": {"url": url, "detail": detail}}
                for url, detail in message.images
            ]
            messages.append({"role": message.role, "content": parts})
        else:
            messages.append({"role": message.role, "content": message.content})
    return messages


def _chat_tool(tool: FunctionTool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters or NO_PARAMETERS}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _add_piece(calls: dict[int, _CallParts], piece: Any) -> None:
    """Fold one streamed tool-call piece into ``calls``, keyed by its ``index``. A piece
    without an index (some servers) continues the last call unless it brings a new id."""
    index = getattr(piece, "index", None)
    if index is None:
        index = max(calls) if calls and not piece.id else len(calls)
    parts = calls.setdefault(index, _CallParts())
    if piece.id:
        parts.call_id = piece.id
    function = piece.function
    if function is not None:
        if function.name:
            parts.name = function.name
        if function.arguments:
            parts.arguments.append(function.arguments)
