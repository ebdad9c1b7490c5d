"""realtime/context.py: a response plan as the request an LLM engine takes."""

from __future__ import annotations

import attrs

from engines.base import ContextTruncation
from protocol import events as ev
from protocol.items import Content, MessageItem
from protocol.mcp_config import McpFunction, McpServerConfig
from protocol.mcp_items import McpApprovalRequestItem, McpApprovalResponseItem, McpCallItem
from protocol.response_plan import plan_response
from protocol.session import SessionConfig
from realtime.context import chat_messages, llm_request


def test_the_request_carries_the_plans_instructions_context_and_language() -> None:
    session = SessionConfig.initial("sess_1", "gpt-realtime", 0, "alloy")
    question = MessageItem(
        id="item_1", role="user", content=(Content("input_text", text="Capital of Germany?"),)
    )
    plan = attrs.evolve(plan_response(session, ev.ResponseParams()), context=(question,))
    request = llm_request(plan)
    assert request.instructions == session.instructions.strip()
    assert [(m.role, m.content) for m in request.messages] == [("user", "Capital of Germany?")]
    assert request.language == "en"
    assert llm_request(attrs.evolve(plan, language="fr")).language == "fr"
    assert request.truncation == ContextTruncation()  # the session's default, "auto"
    cut = {"type": "retention_ratio", "retention_ratio": 0.5}
    assert llm_request(attrs.evolve(plan, truncation=cut)).truncation.retention_ratio == 0.5


def test_images_of_a_user_message_reach_the_request() -> None:
    session = SessionConfig.initial("sess_1", "gpt-realtime", 0, "alloy")
    item = MessageItem(
        id="item_1",
        role="user",
        content=(
            Content("input_text", text="What is this?"),
            Content("input_image", image_url="data:image/png;base64,AAAA", detail="low"),
        ),
    )
    plan = attrs.evolve(plan_response(session, ev.ResponseParams()), context=(item,))
    (message,) = llm_request(plan).messages
    assert (message.content, message.images) == (
        "What is this?",
        (("data:image/png;base64,AAAA", "low"),),
    )


def test_mcp_calls_of_one_turn_are_one_assistant_turn_then_their_results() -> None:
    question = MessageItem(id="item_1", role="user", content=(Content("input_text", text="Hi"),))
    calls = (
        McpCallItem(
            id="item_2", server_label="home", name="forecast", arguments="{}", output="Sun"
        ),
        McpCallItem(
            id="item_3",
            server_label="office",
            name="forecast",
            arguments="{}",
            error={"type": "tool_execution_error", "message": "offline"},
        ),
    )
    request = McpApprovalRequestItem(
        id="item_4", server_label="home", name="forecast", arguments='{"city":"Oslo"}'
    )
    denial = McpApprovalResponseItem(
        id="item_5", approval_request_id="item_4", approve=False, reason="no"
    )
    home = McpServerConfig(label="home", url="http://127.0.0.1:9/a")
    office = McpServerConfig(label="office", url="http://127.0.0.1:9/b")
    functions = tuple(
        McpFunction(f"{s.label}__forecast", s, "forecast", "", {}, False) for s in (home, office)
    )
    messages = chat_messages((question, *calls, request, denial), functions)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "tool", "tool"]
    assert [c.name for c in messages[1].tool_calls] == [
        "home__forecast",
        "office__forecast",
        "home__forecast",
    ]
    assert [m.tool_call_id for m in messages[2:]] == ["item_2", "item_3", "item_4"]
    assert messages[2].content == "Sun"
    assert "tool_execution_error" in messages[3].content and "offline" in messages[3].content
    assert "declined" in messages[4].content and "no" in messages[4].content
