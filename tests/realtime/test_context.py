"""realtime/context.py: a response plan as the request an LLM engine takes."""

from __future__ import annotations

import attrs

from engines.base import ContextTruncation
from protocol import events as ev
from protocol.items import Content, MessageItem
from protocol.response_plan import plan_response
from protocol.session import SessionConfig
from realtime.context import llm_request


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
