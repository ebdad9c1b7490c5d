"""Tool calls in the text a local model writes.

A model without a tool-call format of its own is told (see :mod:`engines.chat_prompt`) to answer
a call with nothing but JSON, ``{"name": ..., "arguments": {...}}``. While the output streams,
:class:`ToolCallRouter` holds back anything that may be such JSON and streams everything else as
text at once; at the end, :func:`parse_tool_calls` decides. Output that is not exactly a set of
valid calls to offered tools is text, shown to the user as written.

A model whose chat template defines tools (Qwen2/Hermes style) writes each call in a
``<tool_call>...</tool_call>`` block, possibly after some text. With ``tagged=True`` the router
also takes such blocks from anywhere in the output, never shows their markup, and treats a block
that is not a valid call as the model's error (:class:`~engines.base.EngineError`).
"""

from __future__ import annotations

import enum
import json
import logging
import re
import secrets
from collections.abc import Collection
from typing import Any

from engines.base import EngineError, FunctionTool, LLMRequest, ToolCall

log = logging.getLogger(__name__)

#: The tags around one call in the Hermes format (Qwen2, Qwen2.5, Hermes, SmolLM).
TAG_OPEN, TAG_CLOSE = "<tool_call>", "</tool_call>"
#: How a bare call (JSON, or JSON in a code fence) can begin.
BARE_OPENERS = ("{", "[", "```")
#: How an output that may be a tool call can begin (JSON, a code fence, Hermes/SmolLM tags).
OPENERS = (*BARE_OPENERS, TAG_OPEN)
#: Characters of an invalid call quoted in the error that reports it.
QUOTED_CHARS = 200

_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)
_TAGS = re.compile(r"</?tool_call>")


def offered_tools(request: LLMRequest) -> tuple[FunctionTool, ...]:
    """The tools the model may call under ``request.tool_choice``."""
    if request.tool_choice == "none":
        return ()
    if request.tool_choice in ("auto", "required"):
        return request.tools
    return tuple(t for t in request.tools if t.name == request.tool_choice)


def must_call(request: LLMRequest) -> bool:
    """Whether ``tool_choice`` obliges the model to call a tool ("required" or a name)."""
    return request.tool_choice != "auto" and bool(offered_tools(request))


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def tool_call_schema(tools: Collection[FunctionTool]) -> dict[str, Any]:
    """JSON Schema of one call to any of ``tools``, for constrained decoding."""
    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool.name},
                "arguments": tool.parameters or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for tool in tools
    ]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def parse_tool_calls(text: str, tool_names: Collection[str]) -> tuple[ToolCall, ...] | None:
    """The calls in a complete model output, or ``None`` when it is not only calls to
    ``tool_names``: invalid or partial JSON, an unknown name, arguments that are not an object,
    or anything else written around the JSON."""
    body = _TAGS.sub("", text).strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        return _calls(body, tool_names)
    except ValueError:
        return None


def _calls(body: str, tool_names: Collection[str]) -> tuple[ToolCall, ...]:
    """The calls that make up ``body``; ValueError saying why when it is anything else."""
    calls: list[ToolCall] = []
    for value in _json_values(body):
        for item in value if isinstance(value, list) else [value]:
            calls.append(_tool_call(item, tool_names))
    if not calls:
        raise ValueError("no call in it")
    return tuple(calls)


def _json_values(body: str) -> list[Any]:
    """The JSON values that make up ``body`` (one per line is how small models list several
    calls); ValueError when anything else is there."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = 0
    while position < len(body):
        try:
            value, position = decoder.raw_decode(body, position)
        except json.JSONDecodeError as error:
            raise ValueError(f"not JSON at character {error.pos}: {error.msg}") from error
        values.append(value)
        while position < len(body) and body[position] in " \t\r\n,":
            position += 1
    return values


def _tool_call(item: Any, tool_names: Collection[str]) -> ToolCall:
    if not isinstance(item, dict):
        raise ValueError("a call must be a JSON object")
    if isinstance(item.get("function"), dict):  # {"type": "function", "function": {...}}
        item = item["function"]
    name = item.get("name")
    arguments = item.get("arguments", item.get("parameters", {}))
    if not isinstance(name, str):
        raise ValueError("the call has no function name")
    if name not in tool_names:
        raise ValueError(f"{name!r} is not an offered function")
    if isinstance(arguments, str):  # arguments given as JSON text, as the OpenAI wire does
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as error:
            raise ValueError(f"the arguments are not JSON: {error.msg}") from error
    if not isinstance(arguments, dict):
        raise ValueError("the arguments are not a JSON object")
    return ToolCall(call_id=new_call_id(), name=name, arguments=json.dumps(arguments))


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is the beginning of ``tag``."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class _Route(enum.Enum):
    UNDECIDED = "undecided"  #: only whitespace, or a prefix of an opener, so far
    TEXT = "text"  #: streaming through
    HELD = "held"  #: began like a bare call; decided at the end


class ToolCallRouter:
    """Splits a streamed output into text to show now and tool calls parsed at the end.

    Leading whitespace is dropped. With no ``tool_names`` every output is text. With
    ``tagged=True`` (the model's chat template defines Hermes-style calls), ``<tool_call>``
    blocks anywhere in the output are calls: :meth:`feed` raises :class:`EngineError` for a
    block that is not a valid call to an offered function."""

    def __init__(self, tool_names: Collection[str], *, tagged: bool = False) -> None:
        self._tool_names = frozenset(tool_names)
        self._tagged = tagged and bool(self._tool_names)
        self._openers = BARE_OPENERS if self._tagged else OPENERS
        self._route = _Route.UNDECIDED
        self._held = ""
        self._in_block = False  #: tagged: ``_held`` is the inside of an open block
        self._after_block = False  #: tagged: whitespace that follows a block is dropped
        self._calls: list[ToolCall] = []

    def feed(self, piece: str) -> str:
        """Take the next piece of output; return the text that may be shown now."""
        if self._route is _Route.TEXT:
            return self._scan(piece) if self._tagged else piece
        self._held += piece
        if self._route is _Route.HELD:
            return ""
        start = self._held.lstrip()
        if not start:
            return ""
        if self._tool_names:
            if start.startswith(self._openers):
                self._route = _Route.HELD
                return ""
            if any(opener.startswith(start) for opener in self._openers):
                return ""
        self._route = _Route.TEXT
        self._held = ""
        return self._scan(start) if self._tagged else start

    def finish(self, *, truncated: bool = False) -> tuple[str, tuple[ToolCall, ...]]:
        """At the end of the output: the text still to show, and the tool calls.

        ``truncated``: the output was cut off at the token limit. A tagged block left open is
        a call if its JSON is complete; otherwise it is the model's error, unless the limit cut
        it short, in which case it is dropped (the answer is incomplete either way)."""
        held, self._held = self._held, ""
        if self._in_block:
            self._in_block = False
            try:
                self._calls += _calls(held.strip(), self._tool_names)
            except ValueError as error:
                if not truncated:
                    raise _invalid_call(TAG_OPEN + held, error) from error
                log.info("dropped a tool call cut off at the token limit: %.80s", held)
            return "", tuple(self._calls)
        held = held.strip() if self._route is not _Route.TEXT else held
        if self._route is _Route.TEXT or not held:
            return held, tuple(self._calls)
        calls = parse_tool_calls(held, self._tool_names)
        return ("", calls) if calls else (held, ())

    def _scan(self, piece: str) -> str:
        """Tagged text: what may be shown of it now. A block's markup and JSON are never shown;
        a possible beginning of ``<tool_call>`` is held until the next piece decides it."""
        self._held += piece
        shown = ""
        while True:
            if self._in_block:
                end = self._held.find(TAG_CLOSE)
                if end < 0:
                    return shown
                block, self._held = self._held[:end], self._held[end + len(TAG_CLOSE) :]
                try:
                    self._calls += _calls(block.strip(), self._tool_names)
                except ValueError as error:
                    raise _invalid_call(TAG_OPEN + block + TAG_CLOSE, error) from error
                self._in_block, self._after_block = False, True
            if self._after_block:
                self._held = self._held.lstrip()
                if not self._held:
                    return shown
                self._after_block = False
            start = self._held.find(TAG_OPEN)
            if start < 0:
                keep = _partial_tag(self._held, TAG_OPEN)
                cut = len(self._held) - keep
                shown, self._held = shown + self._held[:cut], self._held[cut:]
                return shown
            shown += self._held[:start]
            self._held = self._held[start + len(TAG_OPEN) :]
            self._in_block = True


def _invalid_call(block: str, error: ValueError) -> EngineError:
    quoted = block if len(block) <= QUOTED_CHARS else block[:QUOTED_CHARS] + "..."
    return EngineError(f"the model wrote an invalid tool call ({error}): {quoted}")
