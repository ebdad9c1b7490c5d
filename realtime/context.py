"""A response plan from the protocol -> the request a language model engine understands."""

from __future__ import annotations

import json
from typing import Any

from engines.base import ChatMessage, ContextTruncation, FunctionTool, LLMRequest, ToolCallRequest
from protocol.effects import ResponsePlan
from protocol.items import FunctionCallItem, FunctionCallOutputItem, Item, MessageItem
from protocol.mcp_config import McpFunction
from protocol.mcp_items import McpApprovalRequestItem, McpApprovalResponseItem, McpCallItem


def chat_messages(
    context: tuple[Item, ...], functions: tuple[McpFunction, ...] = ()
) -> tuple[ChatMessage, ...]:
    """Conversation items as chat turns: function calls join the assistant turn before them.

    An MCP call is a function call (named as ``functions`` offer its tool) followed by its
    output or error; an approval request is a call whose result is the client's answer (a
    denial, or a wait for one), unless the approved call itself follows in the context."""
    messages: list[ChatMessage] = []
    names = {(f.server.label, f.name): f.function_name for f in functions}
    answers = {i.approval_request_id: i for i in context if isinstance(i, McpApprovalResponseItem)}
    called = {i.approval_request_id for i in context if isinstance(i, McpCallItem)}

    def add_call(request: ToolCallRequest) -> None:
        if messages and messages[-1].role == "assistant":
            last = messages[-1]
            messages[-1] = ChatMessage(
                role="assistant", content=last.content, tool_calls=(*last.tool_calls, request)
            )
        else:
            messages.append(ChatMessage(role="assistant", tool_calls=(request,)))

    #: results of MCP calls of the assistant turn so far: they follow all its calls
    results: list[ChatMessage] = []

    def call(call_id: str, name: str, arguments: str, result: str) -> None:
        add_call(ToolCallRequest(call_id=call_id, name=name, arguments=arguments))
        results.append(ChatMessage(role="tool", content=result, tool_call_id=call_id))

    for item in context:
        if not isinstance(item, McpCallItem | McpApprovalRequestItem | FunctionCallItem):
            messages.extend(results)
            results.clear()
        if isinstance(item, MessageItem):
            text = item.text.strip()
            images = tuple((c.image_url, c.detail) for c in item.content if c.image_url is not None)
            if text or images:
                messages.append(ChatMessage(role=item.role, content=text, images=images))
        elif isinstance(item, FunctionCallItem):
            add_call(
                ToolCallRequest(call_id=item.call_id, name=item.name, arguments=item.arguments)
            )
        elif isinstance(item, FunctionCallOutputItem):
            messages.append(
                ChatMessage(role="tool", content=item.output, tool_call_id=item.call_id)
            )
        elif isinstance(item, McpCallItem):
            name = names.get((item.server_label, item.name), item.name)
            call(item.id, name, item.arguments, mcp_result(item))
        elif isinstance(item, McpApprovalRequestItem) and item.id not in called:
            name = names.get((item.server_label, item.name), item.name)
            answer = answers.get(item.id)
            if answer is None:
                result = "Waiting for the user to approve this call; it has not been made."
            elif answer.approve:
                result = "The user approved this call; it has not been made yet."
            else:
                result = "The user declined this call, so it was not made." + (
                    f" Their reason: {answer.reason}" if answer.reason else ""
                )
            call(item.id, name, item.arguments, result)
    return (*messages, *results)


def mcp_result(item: McpCallItem) -> str:
    """What the model reads of an MCP call's result."""
    if item.error is None:
        return item.output or ""
    return f"The tool call failed ({item.error.get('type')}): {item.error.get('message', '')}"


def _tool(spec: dict[str, Any]) -> FunctionTool:
    parameters = spec.get("parameters")
    return FunctionTool(
        name=spec["name"],
        description=spec.get("description", ""),
        parameters=parameters if isinstance(parameters, dict) else {},
    )


def tool_choice_name(choice: str | dict[str, Any]) -> str:
    return choice if isinstance(choice, str) else str(choice.get("name", "auto"))


def _offered(plan: ResponsePlan) -> tuple[tuple[FunctionTool, ...], str]:
    """The functions the model is offered and its ``tool_choice``: function tools and MCP
    tools alike; a choice that forces an MCP server offers that server's tools alone (and
    its one tool, when it names one)."""
    mcp = tuple(
        FunctionTool(name=f.function_name, description=f.description, parameters=f.input_schema)
        for f in plan.mcp_functions
    )
    choice = plan.tool_choice
    if isinstance(choice, dict) and choice.get("type") == "mcp":
        label, name = choice["server_label"], choice.get("name")
        forced = [
            f
            for f in plan.mcp_functions
            if f.server.label == label and (name is None or f.name == name)
        ]
        if not forced:
            return tuple(_tool(t) for t in plan.tools) + mcp, "auto"
        tools = tuple(t for t in mcp if t.name in {f.function_name for f in forced})
        return tools, forced[0].function_name if len(forced) == 1 else "required"
    return tuple(_tool(t) for t in plan.tools) + mcp, tool_choice_name(choice)


def llm_request(plan: ResponsePlan) -> LLMRequest:
    tools, tool_choice = _offered(plan)
    return LLMRequest(
        instructions=plan.instructions.strip(),
        messages=chat_messages(plan.context, plan.mcp_functions),
        tools=tools,
        tool_choice=tool_choice,
        max_output_tokens=plan.max_output_tokens,
        reasoning_effort=plan.reasoning_effort,
        language=plan.language,
        parallel_tool_calls=plan.parallel_tool_calls,
        truncation=ContextTruncation.from_wire(plan.truncation),
    )


def describe(request: LLMRequest) -> str:
    """A short log form of a request."""
    return json.dumps({"messages": len(request.messages), "tools": [t.name for t in request.tools]})
