"""Remote MCP tools in the protocol machine: listing, calls, rounds, approvals, cancels and the
validation of ``type: "mcp"`` tools. Every event is validated against the SDK's union and the
sequence checker by the Driver."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol import effects as fx
from protocol import inputs as ins
from protocol.mcp_config import MAX_TOOL_ROUNDS
from tests.protocol.steps import (
    Wire,
    create_item,
    created_id,
    effects_of,
    response_create,
    session_update,
    speak_audio,
    start_of,
    state_of,
    text_turn,
)
from tests.support import Driver, types

URL = "http://127.0.0.1:9/mcp"
FORECAST = {
    "name": "forecast",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    "description": "The forecast for a city",
    "annotations": {"readOnlyHint": True},
}
ADD = {
    "name": "add",
    "input_schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
    "description": "Add",
    "annotations": None,
}


def mcp_tool(label: str = "weather", url: str = URL, **fields: Any) -> Wire:
    return {"type": "mcp", "server_label": label, "server_url": url, **fields}


def listed_session(*tools: Wire, listed: tuple[dict[str, Any], ...] = (FORECAST,)) -> Driver:
    """A session whose MCP servers (``tools``) all listed ``listed``."""
    d = Driver()
    session_update(d, tools=list(tools))
    for listing in effects_of(d, fx.ListMcpTools):
        d.feed(ins.McpToolsListed(listing.item_id, listed))
    return d


def error_of(events: list[Wire]) -> dict[str, Any]:
    (error,) = [e["error"] for e in events if e["type"] == "error"]
    return dict(error)


# --- listing -------------------------------------------------------------------------------


def test_listing_events_and_item_and_the_secrets_stay_out_of_the_echo() -> None:
    d = Driver()
    tool = mcp_tool(authorization="sekrit-token", headers={"X-Key": "sekrit-header"})
    events = session_update(d, tools=[tool], event_id="evt_1")
    assert types(events) == [
        "session.updated",
        "conversation.item.added",
        "mcp_list_tools.in_progress",
    ]
    assert "sekrit" not in json.dumps(events)
    echoed = events[0]["session"]["tools"][0]
    assert (echoed["type"], echoed["server_label"], echoed["server_url"]) == ("mcp", "weather", URL)
    item = events[1]["item"]
    assert (item["type"], item["server_label"], item["tools"]) == ("mcp_list_tools", "weather", [])
    assert events[2]["item_id"] == item["id"]
    (listing,) = d.last_effects
    assert isinstance(listing, fx.ListMcpTools)
    assert listing.server.authorization == "sekrit-token"
    assert dict(listing.server.headers) == {"X-Key": "sekrit-header"}
    assert "sekrit" not in repr(listing)

    done = d.feed(ins.McpToolsListed(listing.item_id, (FORECAST,)))
    assert types(done) == ["conversation.item.done", "mcp_list_tools.completed"]
    assert done[0]["item"]["tools"] == [FORECAST]
    # the same configuration again lists nothing anew
    assert types(session_update(d, tools=[tool])) == ["session.updated"]
    assert not d.last_effects


def test_a_server_that_cannot_be_listed_fails_with_an_error_and_the_session_goes_on() -> None:
    d = Driver()
    session_update(d, tools=[mcp_tool(), {"type": "function", "name": "lookup"}])
    listing = d.effect(fx.ListMcpTools)
    events = d.feed(ins.McpToolsListFailed(listing.item_id, "connection refused"))
    assert types(events) == ["conversation.item.done", "mcp_list_tools.failed", "error"]
    error = error_of(events)
    assert error["type"] == "server_error"
    assert error["code"] == "mcp_list_tools_failed"
    assert "weather" in error["message"] and "connection refused" in error["message"]
    rid = text_turn(d)
    plan = start_of(d, rid).plan
    assert plan.mcp_functions == ()
    assert [t["name"] for t in plan.tools] == ["lookup"]
    # a later session.update tries the failed server again
    session_update(d, tools=[mcp_tool()])
    assert isinstance(d.effect(fx.ListMcpTools), fx.ListMcpTools)


def test_a_response_waits_for_its_servers_listing() -> None:
    d = Driver()
    session_update(d, tools=[mcp_tool()])
    listing = d.effect(fx.ListMcpTools)
    create_item(
        d, {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    )
    rid = created_id(response_create(d))
    assert not effects_of(d, fx.StartResponse)
    d.feed(ins.McpToolsListed(listing.item_id, (FORECAST,)))
    (function,) = start_of(d, rid).plan.mcp_functions
    assert (function.function_name, function.name, function.read_only) == (
        "forecast",
        "forecast",
        True,
    )


def test_a_server_no_tool_names_any_more_is_closed() -> None:
    d = listed_session(mcp_tool())
    (listing,) = effects_of(d, fx.ListMcpTools)
    key = listing.server.key
    session_update(d, tools=[])
    assert d.last_effects == [fx.CloseMcpServer(key)]


# --- calls and rounds ----------------------------------------------------------------------


def call_forecast(d: Driver, rid: str, call_id: str = "call_1") -> list[Wire]:
    return d.feed(ins.ToolCallOut(rid, call_id, "forecast", '{"city":"Oslo"}'))


def test_a_call_is_made_reported_and_the_model_goes_on_in_the_same_response() -> None:
    d = listed_session(mcp_tool(require_approval="never"))
    rid = text_turn(d, "Weather in Oslo?")
    events = call_forecast(d, rid)
    assert types(events) == [
        "response.output_item.added",
        "conversation.item.added",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
    ]
    item = events[0]["item"]
    assert (item["type"], item["server_label"], item["name"]) == ("mcp_call", "weather", "forecast")
    call = d.effect(fx.CallMcpTool)
    assert (call.response_id, call.item_id, call.name, call.arguments) == (
        rid,
        item["id"],
        "forecast",
        '{"city":"Oslo"}',
    )
    assert d.feed(ins.ResponseComplete(rid)) == []  # the call still runs: no response.done

    events = d.feed(ins.McpCallDone(rid, call.item_id, output="Sunny, 21 degrees"))
    assert types(events) == [
        "response.mcp_call.completed",
        "conversation.item.done",
        "response.output_item.done",
    ]
    assert events[-1]["item"]["output"] == "Sunny, 21 degrees"
    assert events[-1]["item"]["error"] is None
    round_two = d.effect(fx.ContinueResponse)
    assert round_two.response_id == rid
    assert [i.type for i in round_two.plan.context][-2:] == ["message", "mcp_call"]
    assert round_two.plan.context[-1].output == "Sunny, 21 degrees"

    events = speak_audio(d, rid, ("It is sunny.",)) + d.feed(ins.ResponseComplete(rid))
    assert events[0]["output_index"] == 1
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert [o["type"] for o in done["output"]] == ["mcp_call", "message"]


def test_a_failing_tool_is_reported_and_the_model_is_told() -> None:
    d = listed_session(mcp_tool(require_approval="never"))
    rid = text_turn(d)
    call_forecast(d, rid)
    call = d.effect(fx.CallMcpTool)
    d.feed(ins.ResponseComplete(rid))
    error = {"type": "tool_execution_error", "message": "the sensor is offline"}
    events = d.feed(ins.McpCallDone(rid, call.item_id, error=error))
    assert types(events) == [
        "response.mcp_call.failed",
        "conversation.item.done",
        "response.output_item.done",
    ]
    assert events[-1]["item"]["error"] == error
    assert events[-1]["item"]["output"] is None
    context = d.effect(fx.ContinueResponse).plan.context
    assert context[-1].error == error


def test_two_servers_offer_tools_of_the_same_name_under_their_labels() -> None:
    d = listed_session(
        mcp_tool("home", "http://127.0.0.1:9/a", require_approval="never"),
        mcp_tool("office", "http://127.0.0.1:9/b", require_approval="never"),
        listed=(FORECAST, ADD),
    )
    rid = text_turn(d)
    functions = start_of(d, rid).plan.mcp_functions
    assert sorted(f.function_name for f in functions) == [
        "home__add",
        "home__forecast",
        "office__add",
        "office__forecast",
    ]
    d.feed(ins.ToolCallOut(rid, "c1", "home__forecast", '{"city":"Oslo"}'))
    d.feed(ins.ToolCallOut(rid, "c2", "office__add", '{"a":1}'))
    calls = effects_of(d, fx.CallMcpTool)
    assert [(c.server.label, c.name) for c in calls] == [("home", "forecast"), ("office", "add")]
    d.feed(ins.ResponseComplete(rid))
    assert d.feed(ins.McpCallDone(rid, calls[1].item_id, output="2"))[-1]["item"]["output"] == "2"
    assert not effects_of(d, fx.ContinueResponse)  # the other call still runs
    d.feed(ins.McpCallDone(rid, calls[0].item_id, output="Sunny"))
    context = d.effect(fx.ContinueResponse).plan.context
    assert [(i.server_label, i.output) for i in context if i.type == "mcp_call"] == [
        ("home", "Sunny"),
        ("office", "2"),
    ]


def test_cancel_during_a_call_abandons_it_as_failed() -> None:
    d = listed_session(mcp_tool(require_approval="never"))
    rid = text_turn(d)
    call_forecast(d, rid)
    call = d.effect(fx.CallMcpTool)
    events = d.send({"type": "response.cancel"})
    assert fx.CancelResponse(rid, "client_cancelled") in d.last_effects
    d.feed(ins.ResponseComplete(rid))  # the task's last word, if it comes, is stale
    events += d.feed(ins.McpCallDone(rid, call.item_id, output="late"))
    failed = [e for e in d.log if e["type"] == "response.mcp_call.failed"]
    assert [e["item_id"] for e in failed] == [call.item_id]
    (done,) = [e for e in d.log if e["type"] == "response.done"]
    assert done["response"]["status"] == "cancelled"
    (item,) = done["response"]["output"]
    assert item["output"] is None and item["error"]["type"] == "protocol_error"
    assert not effects_of(d, fx.ContinueResponse)


def test_tool_rounds_are_bounded_and_the_last_round_gets_no_tools() -> None:
    d = listed_session(mcp_tool(require_approval="never"))
    rid = text_turn(d)
    for round_ in range(MAX_TOOL_ROUNDS):
        call_forecast(d, rid, f"call_{round_}")
        call = d.effect(fx.CallMcpTool)
        d.feed(ins.ResponseComplete(rid))
        d.feed(ins.McpCallDone(rid, call.item_id, output="Sunny"))
        plan = d.effect(fx.ContinueResponse).plan
    assert plan.tool_choice == "none"
    events = speak_audio(d, rid, ("Sunny.",)) + d.feed(ins.ResponseComplete(rid))
    assert events[-1]["response"]["status"] == "completed"


# --- approvals -----------------------------------------------------------------------------


def requested_approval(d: Driver) -> tuple[str, str]:
    """The model calls ``forecast`` in a response; returns (response id, request item id)."""
    rid = text_turn(d)
    events = call_forecast(d, rid)
    assert types(events) == [
        "response.output_item.added",
        "conversation.item.added",
        "conversation.item.done",
        "response.output_item.done",
    ]
    request = events[-1]["item"]
    assert (request["type"], request["server_label"], request["name"]) == (
        "mcp_approval_request",
        "weather",
        "forecast",
    )
    assert request["arguments"] == '{"city":"Oslo"}'
    assert not effects_of(d, fx.CallMcpTool)
    done = d.feed(ins.ResponseComplete(rid))
    assert done[-1]["response"]["status"] == "completed"
    return rid, request["id"]


def approve(d: Driver, request_id: str, approve: bool, **extra: Any) -> list[Wire]:
    item = {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": approve}
    return create_item(d, {**item, **extra})


def test_an_approved_call_is_made_first_in_the_response_the_server_starts() -> None:
    d = listed_session(mcp_tool(require_approval="always"))
    _, request_id = requested_approval(d)
    events = approve(d, request_id, True)
    assert types(events)[:2] == ["conversation.item.added", "conversation.item.done"]
    rid = created_id(events)
    start = start_of(d, rid)
    assert not start.run_model
    call = d.effect(fx.CallMcpTool)
    assert (call.response_id, call.name) == (rid, "forecast")
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert added[0]["item"]["approval_request_id"] == request_id
    d.feed(ins.McpCallDone(rid, call.item_id, output="Sunny"))
    assert d.effect(fx.ContinueResponse).response_id == rid
    speak_audio(d, rid, ("Sunny.",))
    d.feed(ins.ResponseComplete(rid))
    # the approval is used once: a later response makes no call of it
    later = text_turn(d)
    assert not [c for c in effects_of(d, fx.CallMcpTool) if c.response_id == later]
    assert start_of(d, later).run_model


def test_a_denied_call_is_not_made_and_the_model_is_told() -> None:
    d = listed_session(mcp_tool(require_approval="always"))
    _, request_id = requested_approval(d)
    events = approve(d, request_id, False, reason="not now")
    rid = created_id(events)
    start = start_of(d, rid)
    assert start.run_model
    assert not effects_of(d, fx.CallMcpTool)
    (answer,) = [i for i in start.plan.context if i.type == "mcp_approval_response"]
    assert (answer.approve, answer.reason) == (False, "not now")


def test_the_per_tool_filter_asks_only_for_the_tools_it_names() -> None:
    rule = {"always": {"tool_names": ["add"]}, "never": {"read_only": True}}
    d = listed_session(mcp_tool(require_approval=rule), listed=(FORECAST, ADD))
    rid = text_turn(d)
    call_forecast(d, rid)
    assert len(effects_of(d, fx.CallMcpTool)) == 1
    events = d.feed(ins.ToolCallOut(rid, "c2", "add", '{"a":1}'))
    assert events[-1]["item"]["type"] == "mcp_approval_request"
    assert len(effects_of(d, fx.CallMcpTool)) == 1


def test_an_approval_during_a_response_is_answered_after_it() -> None:
    d = listed_session(mcp_tool(require_approval="always"))
    _, request_id = requested_approval(d)
    busy = text_turn(d, "Another question")
    events = approve(d, request_id, True)
    assert "response.created" not in types(events)
    events = speak_audio(d, busy, ("Sure.",)) + d.feed(ins.ResponseComplete(busy))
    rid = created_id(events)
    assert not start_of(d, rid).run_model
    assert d.effect(fx.CallMcpTool).response_id == rid


@pytest.mark.parametrize(
    ("item", "code"),
    [
        ({"approval_request_id": "item_nope", "approve": True}, "invalid_value"),
        ({"approve": True}, "missing_required_parameter"),
        ({"approval_request_id": "x", "approve": "yes"}, "invalid_value"),
    ],
)
def test_bad_approval_responses_are_refused_and_change_nothing(item: Wire, code: str) -> None:
    d = listed_session(mcp_tool(require_approval="always"))
    requested_approval(d)
    before = state_of(d.conn)
    events = create_item(d, {"type": "mcp_approval_response", **item}, event_id="evt_9")
    error = error_of(events)
    assert (error["type"], error["code"], error["event_id"]) == (
        "invalid_request_error",
        code,
        "evt_9",
    )
    assert state_of(d.conn) == before


def test_an_approval_is_answered_once() -> None:
    d = listed_session(mcp_tool(require_approval="always"))
    _, request_id = requested_approval(d)
    rid = created_id(approve(d, request_id, False))
    speak_audio(d, rid, ("OK.",))
    d.feed(ins.ResponseComplete(rid))
    error = error_of(approve(d, request_id, True))
    assert error["code"] == "invalid_value" and "already answered" in error["message"]


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tools", "param", "text"),
    [
        ([{"type": "mcp", "server_url": URL}], "session.tools[0].server_label", ""),
        ([mcp_tool(url="ftp://example.org/mcp")], "session.tools[0].server_url", "http"),
        ([{"type": "mcp", "server_label": "x"}], "session.tools[0].server_url", "server_url"),
        (
            [mcp_tool(connector_id="connector_gmail")],
            "session.tools[0].connector_id",
            "server_url",
        ),
        (
            [mcp_tool(), mcp_tool(url="http://127.0.0.1:9/b")],
            "session.tools[1].server_label",
            "Duplicate",
        ),
        ([mcp_tool(require_approval="sometimes")], "session.tools[0].require_approval", ""),
        ([mcp_tool(allowed_tools="forecast")], "session.tools[0].allowed_tools", ""),
        ([mcp_tool(headers={"X": 1})], "session.tools[0].headers.X", ""),
    ],
)
def test_bad_mcp_tools_are_refused_with_the_param(tools: list[Wire], param: str, text: str) -> None:
    d = Driver()
    before = state_of(d.conn)
    events = session_update(d, tools=tools, event_id="evt_5")
    error = error_of(events)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert error["event_id"] == "evt_5"
    assert text in error["message"]
    assert state_of(d.conn) == before
    assert not d.last_effects


def test_a_refused_tool_never_echoes_its_secrets() -> None:
    d = Driver()
    bad = mcp_tool(url="ftp://example.org", authorization="sekrit", headers={"K": "sekrit"})
    events = session_update(d, tools=[bad])
    assert error_of(events)["type"] == "invalid_request_error"
    assert "sekrit" not in json.dumps(events)


def test_tool_choice_may_name_an_mcp_server_of_the_session() -> None:
    d = listed_session(mcp_tool(require_approval="never"))
    choice = {"type": "mcp", "server_label": "weather", "name": "forecast"}
    assert types(session_update(d, tool_choice=choice)) == ["session.updated"]
    error = error_of(session_update(d, tool_choice={"type": "mcp", "server_label": "nope"}))
    assert error["param"] == "session.tool_choice.server_label"
    assert "nope" in error["message"]


def test_a_response_create_may_bring_its_own_mcp_server() -> None:
    d = Driver()
    create_item(
        d, {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    )
    events = response_create(d, tools=[mcp_tool("calendar", require_approval="never")])
    rid = created_id(events)
    listing = d.effect(fx.ListMcpTools)
    assert listing.server.label == "calendar"
    assert not effects_of(d, fx.StartResponse)
    d.feed(ins.McpToolsListed(listing.item_id, (ADD,)))
    (function,) = start_of(d, rid).plan.mcp_functions
    assert function.server.label == "calendar"
    speak_audio(d, rid, ("Hi.",))
    d.feed(ins.ResponseComplete(rid))
    assert fx.CloseMcpServer(listing.server.key) in d.last_effects


@pytest.mark.parametrize(
    "choice", ["required", {"type": "mcp", "server_label": "weather", "name": "forecast"}]
)
def test_a_forced_tool_choice_holds_for_the_first_round_only(choice: Any) -> None:
    d = listed_session(mcp_tool(require_approval="never"))
    rid = text_turn(d, tool_choice=choice)
    assert start_of(d, rid).plan.tool_choice == choice
    call_forecast(d, rid)
    call = d.effect(fx.CallMcpTool)
    d.feed(ins.ResponseComplete(rid))
    d.feed(ins.McpCallDone(rid, call.item_id, output="Sunny"))
    assert d.effect(fx.ContinueResponse).plan.tool_choice == "auto"
