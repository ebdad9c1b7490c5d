"""A response plan from the protocol -> the request a language model engine understands."""

from __future__ import annotations

import json
from typing import Any

from engines.base import ChatMessage, ContextTruncation, FunctionTool, LLMRequest, ToolCallRequest
from protocol.effects import ResponsePlan
from protocol.items import FunctionCallItem, FunctionCallOutputItem, Item, MessageItem


def chat_messages(context: tuple[Item, ...]) -> tuple[ChatMessage, ...]:
    """Conversation items as chat turns: function calls join the assistant turn before them."""
    messages: list[ChatMessage] = []
    for item in context:
        if isinstance(item, MessageItem):
            text = item.text.strip()
            images = tuple((c.image_url, c.detail) for c in item.content if c.image_url is not None)
            if text or images:
                messages.append(ChatMessage(role=item.role, content=text, images=images))
        elif isinstance(item, FunctionCallItem):
            call = ToolCallRequest(call_id=item.call_id, name=item.name, arguments=item.arguments)
            if messages and messages[-1].role == "assistant":
                last = messages[-1]
                messages[-1] = ChatMessage(
                    role="assistant", content=last.content, tool_calls=(*last.tool_calls, call)
                )
            else:
                messages.append(ChatMessage(role="assistant", tool_calls=(call,)))
        elif isinstance(item, FunctionCallOutputItem):
            messages.append(
                ChatMessage(role="tool", content=item.output, tool_call_id=item.call_id)
            )
    return tuple(messages)


def _tool(spec: dict[str, Any]) -> FunctionTool:
    parameters = spec.get("parameters")
    return FunctionTool(
        name=spec["name"],
        description=spec.get("description", ""),
        parameters=parameters if isinstance(parameters, dict) else {},
    )


def tool_choice_name(choice: str | dict[str, Any]) -> str:
    return choice if isinstance(choice, str) else str(choice.get("name", "auto"))


def llm_request(plan: ResponsePlan) -> LLMRequest:
    return LLMRequest(
        instructions=plan.instructions.strip(),
        messages=chat_messages(plan.context),
        tools=tuple(_tool(t) for t in plan.tools),
        tool_choice=tool_choice_name(plan.tool_choice),
        max_output_tokens=plan.max_output_tokens,
        reasoning_effort=plan.reasoning_effort,
        language=plan.language,
        parallel_tool_calls=plan.parallel_tool_calls,
        truncation=ContextTruncation.from_wire(plan.truncation),
    )


def describe(request: LLMRequest) -> str:
    """A short log form of a request."""
    return json.dumps({"messages": len(request.messages), "tools": [t.name for t in request.tools]})
