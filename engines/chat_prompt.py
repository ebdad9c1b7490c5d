"""An :class:`~engines.base.LLMRequest` as plain chat messages for a small local model.

Small instruct models know only system/user/assistant turns, so tools are described in the
system message, past calls are written as the JSON the model is asked to produce, and tool
results come back as user turns."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from engines.base import ChatMessage, FunctionTool, LLMRequest, ToolCallRequest
from engines.tool_calls import must_call, offered_tools

Message = dict[str, str]


def chat_messages(request: LLMRequest) -> list[Message]:
    """System message (instructions + tools) followed by the history; consecutive turns of one
    role are merged, since many chat templates insist that roles alternate."""
    messages: list[Message] = []
    system = system_prompt(request)
    if system:
        messages.append({"role": "system", "content": system})
    tool_names = _tool_names_by_call_id(request.messages)
    for message in request.messages:
        _append(messages, _render(message, tool_names))
    return messages


def system_prompt(request: LLMRequest) -> str:
    tools = offered_tools(request)
    parts = [request.instructions.strip()] if request.instructions.strip() else []
    if tools:
        parts.append(describe_tools(tools, required=must_call(request)))
    return "\n\n".join(parts)


def describe_tools(tools: Sequence[FunctionTool], *, required: bool) -> str:
    lines = ["You can call these functions:"]
    lines += [_describe(tool) for tool in tools]
    lines.append(
        "To call a function, reply with only this JSON and nothing else: "
        '{"name": "<function name>", "arguments": {"<argument>": <value>}}'
    )
    if required:
        lines.append("You must call a function now.")
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
    try:
        arguments: Any = json.loads(call.arguments) if call.arguments.strip() else {}
    except json.JSONDecodeError:
        arguments = call.arguments
    return json.dumps({"name": call.name, "arguments": arguments})


def _render(message: ChatMessage, tool_names: dict[str, str]) -> Message:
    if message.role == "tool":
        name = tool_names.get(message.tool_call_id or "", "the function")
        return {"role": "user", "content": f"Result of {name}: {message.content}"}
    content = message.content
    if message.tool_calls:
        content = "\n".join([content, *(render_call(c) for c in message.tool_calls)]).strip()
    return {"role": message.role, "content": content}


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
