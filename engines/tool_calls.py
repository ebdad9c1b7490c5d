"""Tool calling for local models that have no native tool-call format.

The model is told (see :mod:`engines.chat_prompt`) to answer a call with nothing but JSON,
``{"name": ..., "arguments": {...}}``. While the output streams, :class:`ToolCallRouter` holds
back anything that may be such JSON and streams everything else as text at once; at the end,
:func:`parse_tool_calls` decides. Output that is not exactly a set of valid calls to offered
tools is text, shown to the user as written.
"""

from __future__ import annotations

import enum
import json
import re
import secrets
from collections.abc import Collection
from typing import Any

from engines.base import FunctionTool, LLMRequest, ToolCall

#: How an output that may be a tool call can begin (JSON, a code fence, Hermes/SmolLM tags).
OPENERS = ("{", "[", "```", "<tool_call>")

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
    values = _json_values(body)
    if not values:
        return None
    calls: list[ToolCall] = []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            call = _tool_call(item, tool_names)
            if call is None:
                return None
            calls.append(call)
    return tuple(calls) or None


def _json_values(body: str) -> list[Any] | None:
    """The JSON values that make up ``body`` (one per line is how small models list several
    calls), or ``None`` when anything else is there."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = 0
    while position < len(body):
        try:
            value, position = decoder.raw_decode(body, position)
        except json.JSONDecodeError:
            return None
        values.append(value)
        while position < len(body) and body[position] in " \t\r\n,":
            position += 1
    return values


def _tool_call(item: Any, tool_names: Collection[str]) -> ToolCall | None:
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("function"), dict):  # {"type": "function", "function": {...}}
        item = item["function"]
    name = item.get("name")
    arguments = item.get("arguments", item.get("parameters", {}))
    if not isinstance(name, str) or name not in tool_names:
        return None
    if isinstance(arguments, str):  # arguments given as JSON text, as the OpenAI wire does
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(call_id=new_call_id(), name=name, arguments=json.dumps(arguments))


class _Route(enum.Enum):
    UNDECIDED = "undecided"  #: only whitespace, or a prefix of an opener, so far
    TEXT = "text"  #: streaming through
    HELD = "held"  #: began like a tool call; decided at the end


class ToolCallRouter:
    """Splits a streamed output into text to show now and tool calls parsed at the end.

    Leading whitespace is dropped. With no ``tool_names`` every output is text."""

    def __init__(self, tool_names: Collection[str]) -> None:
        self._tool_names = frozenset(tool_names)
        self._route = _Route.UNDECIDED
        self._held = ""

    def feed(self, piece: str) -> str:
        """Take the next piece of output; return the text that may be shown now."""
        if self._route is _Route.TEXT:
            return piece
        self._held += piece
        if self._route is _Route.HELD:
            return ""
        start = self._held.lstrip()
        if not start:
            return ""
        if self._tool_names:
            if start.startswith(OPENERS):
                self._route = _Route.HELD
                return ""
            if any(opener.startswith(start) for opener in OPENERS):
                return ""
        self._route = _Route.TEXT
        self._held = ""
        return start

    def finish(self) -> tuple[str, tuple[ToolCall, ...]]:
        """At the end of the output: the text still to show, and the tool calls."""
        held, self._held = self._held.strip(), ""
        if self._route is _Route.TEXT or not held:
            return "", ()
        calls = parse_tool_calls(held, self._tool_names)
        return ("", calls) if calls else (held, ())
