"""An :class:`~engines.base.LLMRequest` as chat messages for a local model's chat template.

Small instruct models know only system/user/assistant turns, so by default tools are described
in the system message, past calls are written as the JSON the model is asked to produce, and
tool results come back as user turns. A chat template that renders tools itself gets the
messages in the structured form Hugging Face templates take instead (``native_tools=True``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from engines.base import (
    ChatMessage,
    ContextTruncation,
    EngineError,
    FunctionTool,
    LLMRequest,
    ToolCallRequest,
    UnsupportedInput,
)
from engines.tool_calls import must_call, offered_tools

#: One chat message as chat templates take it: ``role`` and ``content``, and with
#: ``native_tools`` also ``tool_calls`` (assistant) or ``tool_call_id`` and ``name`` (tool).
Message = dict[str, Any]

MUST_CALL = "You must call a function now."

#: languages by ISO 639-1 code, as a system prompt names them
LANGUAGE_NAMES = {
    "ar": "Arabic",
    "cs": "Czech",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "fi": "Finnish",
    "fr": "French",
    "he": "Hebrew",
    "hi": "Hindi",
    "hu": "Hungarian",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sv": "Swedish",
    "th": "Thai",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "vi": "Vietnamese",
    "zh": "Chinese",
}


def answer_in(language: str) -> str:
    """The system prompt's line that keeps a small model in the session's language: asked
    about Germany, a small model otherwise drifts into German (``scripts/bench_quality.py``
    measures it)."""
    name = LANGUAGE_NAMES.get(language.split("-")[0].lower(), language)
    return (
        f"Write your answer in plain {name} words, even when the question is about another country."
    )


def chat_messages(request: LLMRequest, *, native_tools: bool = False) -> list[Message]:
    """System message followed by the history; consecutive turns of one role are merged, since
    many chat templates insist that roles alternate.

    By default the system message holds the instructions and describes the tools. With
    ``native_tools`` it holds the instructions only (the template lists the tools, see
    :func:`tool_schemas`), past calls stay structured and each tool result is a ``tool`` turn."""
    if any(message.images for message in request.messages):
        raise UnsupportedInput(
            "this LLM takes no images: an input_image reaches only the openai and "
            "chat_completions LLMs (with a model that reads images)"
        )
    messages: list[Message] = []
    system = system_prompt(request, describe=not native_tools)
    if system:
        messages.append({"role": "system", "content": system})
    tool_names = _tool_names_by_call_id(request.messages)
    for message in request.messages:
        if native_tools:
            _append_native(messages, _render_native(message, tool_names))
        else:
            _append(messages, _render(message, tool_names))
    return messages


def system_prompt(request: LLMRequest, *, describe: bool = True) -> str:
    """The instructions and the language to answer in, then what the model is told about
    the tools: a description of them (``describe``), or only that it must call one when
    ``tool_choice`` says so."""
    tools = offered_tools(request)
    parts = [request.instructions.strip()] if request.instructions.strip() else []
    if request.language:
        parts.append(answer_in(request.language))
    if tools and describe:
        parts.append(describe_tools(tools, required=must_call(request)))
    elif must_call(request):
        parts.append(MUST_CALL)
    return "\n\n".join(parts)


def tool_schemas(request: LLMRequest) -> list[dict[str, Any]]:
    """The offered tools as the JSON schemas Hugging Face chat templates take (``tools=``)."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters or {"type": "object", "properties": {}},
            },
        }
        for tool in offered_tools(request)
    ]


def fit_context(
    messages: list[Message],
    tokenize: Callable[[list[Message]], list[int]],
    n_ctx: int,
    truncation: ContextTruncation | None = None,
) -> tuple[list[Message], list[int]]:
    """The messages that fit, and their tokens: when the prompt leaves less than a quarter of
    the ``n_ctx``-token context for the answer, the oldest turns after the system message are
    dropped (a tool result with the call before it). An :class:`EngineError` when even the
    system message and the last turn do not fit.

    ``truncation`` (the session's): ``disabled`` refuses to drop anything (an
    :class:`EngineError` instead); ``retention_ratio`` also drops once the conversation after
    the system message passes ``post_instructions`` tokens, and then down to
    ``retention_ratio`` of the limit it passed."""
    truncation = truncation or ContextTruncation()
    messages = list(messages)
    budget = n_ctx * 3 // 4
    tokens = tokenize(messages)
    limit = budget
    instructions = 0  # tokens of the system message: counted only where the ratio needs them
    if truncation.mode == "retention_ratio":
        system = [m for m in messages[:1] if m["role"] == "system"]
        instructions = len(tokenize(system)) if system else 0
        if truncation.post_instructions is not None:
            limit = min(budget, instructions + truncation.post_instructions)
    if len(tokens) <= limit:
        return messages, tokens
    if truncation.mode == "disabled":
        raise EngineError(
            f"the prompt takes {len(tokens)} tokens of a {n_ctx}-token context, and the "
            "session's truncation is disabled"
        )
    target = limit
    if truncation.mode == "retention_ratio":
        target = instructions + int((limit - instructions) * truncation.retention_ratio)
    while len(tokens) > target:
        oldest = next((i for i, m in enumerate(messages) if m["role"] != "system"), None)
        if oldest is None or oldest == len(messages) - 1:
            if len(tokens) <= limit:
                break  # the last turn alone passes the retention target: keep it
            raise EngineError(f"the prompt takes {len(tokens)} tokens of a {n_ctx}-token context")
        del messages[oldest]
        while oldest < len(messages) - 1 and messages[oldest]["role"] == "tool":
            del messages[oldest]
        tokens = tokenize(messages)
    return messages, tokens


def describe_tools(tools: Sequence[FunctionTool], *, required: bool) -> str:
    lines = ["You can call these functions:"]
    lines += [_describe(tool) for tool in tools]
    lines.append(
        "To call a function, reply with only this JSON and nothing else: "
        '{"name": "<function name>", "arguments": {"<argument>": <value>}}'
    )
    if required:
        lines.append(MUST_CALL)
    else:
        lines.append("If no function is needed, answer in plain text.")
    return "\n".join(lines)


def _describe(tool: FunctionTool) -> str:
    line = f"- {tool.name}"
    if tool.description:
        line += f": {tool.description.strip()}"
    properties: dict[str, Any] = tool.parameters.get("properties", {})
    required = set(tool.parameters.get("required", ()))
    arguments = []
    for name, schema in properties.items():
        kind = schema.get("type", "any") if isinstance(schema, dict) else "any"
        detail = f"{name} ({kind}{', required' if name in required else ''})"
        if isinstance(schema, dict) and schema.get("description"):
            detail += f" - {schema['description']}"
        if isinstance(schema, dict) and schema.get("enum"):
            detail += f", one of {json.dumps(schema['enum'])}"
        arguments.append(detail)
    if arguments:
        line += "\n  arguments: " + "; ".join(arguments)
    return line


def render_call(call: ToolCallRequest) -> str:
    """A past call, in the format the model is told to use."""
    return json.dumps({"name": call.name, "arguments": _arguments(call)})


def _arguments(call: ToolCallRequest) -> Any:
    """The call's arguments as a JSON value (the text itself when it is not JSON)."""
    try:
        return json.loads(call.arguments) if call.arguments.strip() else {}
    except json.JSONDecodeError:
        return call.arguments


def _render(message: ChatMessage, tool_names: dict[str, str]) -> Message:
    if message.role == "tool":
        name = tool_names.get(message.tool_call_id or "", "the function")
        return {"role": "user", "content": f"Result of {name}: {message.content}"}
    content = message.content
    if message.tool_calls:
        content = "\n".join([content, *(render_call(c) for c in message.tool_calls)]).strip()
    return {"role": message.role, "content": content}


def _render_native(message: ChatMessage, tool_names: dict[str, str]) -> Message:
    if message.role == "tool":
        call_id = message.tool_call_id or ""
        return {
            "role": "tool",
            "content": message.content,
            "tool_call_id": call_id,
            "name": tool_names.get(call_id, ""),
        }
    rendered: Message = {"role": message.role, "content": message.content}
    if message.tool_calls:
        rendered["tool_calls"] = [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments(call)},
            }
            for call in message.tool_calls
        ]
    return rendered


def _append_native(messages: list[Message], message: Message) -> None:
    """Like :func:`_append`, but tool results stay one turn each and merged assistant turns
    keep all their calls."""
    previous = messages[-1] if messages else None
    if previous is None or previous["role"] != message["role"] or message["role"] == "tool":
        messages.append(message)
        return
    merged = {
        **previous,
        "content": "\n\n".join(filter(None, [previous["content"], message["content"]])),
    }
    calls = [*previous.get("tool_calls", ()), *message.get("tool_calls", ())]
    if calls:
        merged["tool_calls"] = calls
    messages[-1] = merged


def _append(messages: list[Message], message: Message) -> None:
    if messages and messages[-1]["role"] == message["role"]:
        previous = messages[-1]["content"]
        messages[-1] = {
            "role": message["role"],
            "content": f"{previous}\n\n{message['content']}" if previous else message["content"],
        }
    else:
        messages.append(message)


def _tool_names_by_call_id(history: Sequence[ChatMessage]) -> dict[str, str]:
    return {call.call_id: call.name for m in history for call in m.tool_calls}
