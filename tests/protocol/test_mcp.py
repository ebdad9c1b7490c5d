"""Remote MCP tools in the protocol machine: listing, calls, approvals, cancels and the
validation of ``type: "mcp"`` tools. Every event is validated against the SDK's union and the
sequence checker by the Driver."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol import effects as fx
from protocol import inputs as ins
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
    user_text,
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


def test_a_call_is_made_and_reported_and_the_response_ends_once_it_answered() -> None:
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
    call = d.effect(fx.CallMcpTool)  # made at once, while the model may still be generating
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
        "response.done",
    ]
    assert events[2]["item"]["output"] == "Sunny, 21 degrees"
    assert events[2]["item"]["error"] is None
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert [o["type"] for o in done["output"]] == ["mcp_call"]
    assert not effects_of(d, fx.ContinueResponse)  # the model goes on when the client asks

    later = created_id(response_create(d))
    context = start_of(d, later).plan.context
    assert [i.type for i in context][-2:] == ["message", "mcp_call"]
    assert context[-1].output == "Sunny, 21 degrees"


def test_a_call_that_answers_before_the_model_finishes_ends_with_the_model() -> None:
    d = listed_session(mcp_tool(require_approval="never"))
    rid = text_turn(d)
    events = speak_audio(d, rid, ("Let me look.",)) + call_forecast(d, rid)
    call = d.effect(fx.CallMcpTool)
    events += d.feed(ins.McpCallDone(rid, call.item_id, output="Sunny"))
    assert "response.done" not in types(events)
    events = speak_audio(d, rid, (" One moment.",)) + d.feed(ins.ResponseComplete(rid))
    done = events[-1]["response"]
    assert [o["type"] for o in done["output"]] == ["message", "mcp_call", "message"]


def test_a_failing_tool_is_reported_and_the_model_is_told_next() -> None:
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
        "response.done",
    ]
    assert events[2]["item"]["error"] == error
    assert events[2]["item"]["output"] is None
    context = start_of(d, created_id(response_create(d))).plan.context
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
    events = d.feed(ins.McpCallDone(rid, calls[1].item_id, output="2"))
    assert events[-1]["item"]["output"] == "2"
    assert "response.done" not in types(events)  # the other call still runs
    events = d.feed(ins.McpCallDone(rid, calls[0].item_id, output="Sunny"))
    output = events[-1]["response"]["output"]
    assert [(i["server_label"], i["output"]) for i in output] == [
        ("home", "Sunny"),
        ("office", "2"),
    ]


def test_cancel_during_a_call_abandons_it_as_failed() -> None:
    d = listed_session(mcp_tool(require_approval="never"))
    rid = text_turn(d)
    call_forecast(d, rid)
    call = d.effect(fx.CallMcpTool)
    d.feed(ins.ResponseComplete(rid))
    d.send({"type": "response.cancel"})
    assert fx.CancelResponse(rid, "client_cancelled") in d.last_effects
    assert d.feed(ins.McpCallDone(rid, call.item_id, output="late")) == []  # stale
    failed = [e for e in d.log if e["type"] == "response.mcp_call.failed"]
    assert [e["item_id"] for e in failed] == [call.item_id]
    (done,) = [e for e in d.log if e["type"] == "response.done"]
    assert done["response"]["status"] == "cancelled"
    (item,) = done["response"]["output"]
    assert item["output"] is None and item["error"]["type"] == "protocol_error"


# --- approvals -----------------------------------------------------------------------------


def requested_approval(d: Driver) -> tuple[str, str]:
    """The model calls ``forecast`` in a response and finishes; returns (response id, request
    item id). The response waits for the client's answer."""
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
    assert d.feed(ins.ResponseComplete(rid)) == []  # no response.done while it waits
    return rid, request["id"]


def approve(d: Driver, request_id: str, approve: bool, **extra: Any) -> list[Wire]:
    item = {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": approve}
    return create_item(d, {**item, **extra})


def test_an_approved_call_is_made_by_the_response_that_asked() -> None:
    d = listed_session(mcp_tool(require_approval="always"))
    rid, request_id = requested_approval(d)
    events = approve(d, request_id, True)
    assert types(events) == [
        "conversation.item.added",
        "conversation.item.done",
        "response.output_item.added",
        "conversation.item.added",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
    ]
    assert events[2]["item"]["approval_request_id"] == request_id
    assert events[5]["response_id"] == rid
    call = d.effect(fx.CallMcpTool)
    assert (call.response_id, call.name) == (rid, "forecast")
    events = d.feed(ins.McpCallDone(rid, call.item_id, output="Sunny"))
    assert types(events)[-1] == "response.done"
    output = events[-1]["response"]["output"]
    assert [o["type"] for o in output] == ["mcp_approval_request", "mcp_call"]
    # the approval is used once: a later response makes no call of it
    later = text_turn(d)
    assert start_of(d, later).run_model
    assert not [c for c in effects_of(d, fx.CallMcpTool) if c.response_id == later]


def test_a_denied_call_is_not_made_and_the_model_reads_the_denial_next() -> None:
    d = listed_session(mcp_tool(require_approval="always"))
    _, request_id = requested_approval(d)
    events = approve(d, request_id, False, reason="not now")
    assert types(events)[-1] == "response.done"
    assert events[-1]["response"]["status"] == "completed"
    assert not effects_of(d, fx.CallMcpTool)
    later = created_id(response_create(d))
    (answer,) = [i for i in start_of(d, later).plan.context if i.type == "mcp_approval_response"]
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


def test_an_approval_whose_response_was_cancelled_gets_a_response_that_only_calls() -> None:
    d = listed_session(mcp_tool(require_approval="always"))
    _, request_id = requested_approval(d)
    d.send({"type": "response.cancel"})
    events = approve(d, request_id, True)
    rid = created_id(events)
    assert not start_of(d, rid).run_model
    call = d.effect(fx.CallMcpTool)
    assert call.response_id == rid
    events = d.feed(ins.McpCallDone(rid, call.item_id, output="Sunny"))
    assert types(events)[-1] == "response.done"
    assert not effects_of(d, fx.ContinueResponse)


def test_an_approval_answered_while_another_response_runs_goes_first_in_the_next() -> None:
    d = listed_session(mcp_tool(require_approval="always"))
    _, request_id = requested_approval(d)
    d.send({"type": "response.cancel"})
    busy = text_turn(d, "Another question")
    assert "response.created" not in types(approve(d, request_id, True))
    events = speak_audio(d, busy, ("Sure.",)) + d.feed(ins.ResponseComplete(busy))
    assert "response.created" not in types(events)  # nothing starts by itself meanwhile
    rid = created_id(response_create(d))
    assert not start_of(d, rid).run_model  # the approved call first
    call = d.effect(fx.CallMcpTool)
    d.feed(ins.McpCallDone(rid, call.item_id, output="Sunny"))
    plan = d.effect(fx.ContinueResponse).plan  # then the model, with the result
    assert plan.context[-1].type == "mcp_call" and plan.context[-1].output == "Sunny"


def test_a_new_approval_rule_holds_for_the_next_call() -> None:
    d = listed_session(mcp_tool(require_approval="never"))
    session_update(d, tools=[mcp_tool(require_approval="always")])
    assert not effects_of(d, fx.ListMcpTools)[1:]  # the same server: no new listing
    rid = text_turn(d)
    events = call_forecast(d, rid)
    assert events[-1]["item"]["type"] == "mcp_approval_request"
    assert not effects_of(d, fx.CallMcpTool)


def test_an_approval_for_a_responses_own_server_calls_that_server() -> None:
    d = Driver()
    own = mcp_tool("calendar", "http://127.0.0.1:9/cal", require_approval="always")
    user_text(d, "Hi")
    rid = created_id(response_create(d, tools=[own]))
    d.feed(ins.McpToolsListed(d.effect(fx.ListMcpTools).item_id, (FORECAST,)))
    events = call_forecast(d, rid)
    request_id = events[-1]["item"]["id"]
    d.feed(ins.ResponseComplete(rid))
    d.send({"type": "response.cancel"})  # the response that asked is gone
    later = created_id(approve(d, request_id, True))
    call = d.effect(fx.CallMcpTool)
    assert (call.response_id, call.server.label, call.server.url) == (
        later,
        "calendar",
        "http://127.0.0.1:9/cal",
    )


def test_a_round_cut_at_max_output_tokens_ends_incomplete_after_its_calls() -> None:
    d = listed_session(mcp_tool(require_approval="never"))
    rid = text_turn(d, max_output_tokens=5)
    call_forecast(d, rid)
    call = d.effect(fx.CallMcpTool)
    d.feed(ins.ResponseComplete(rid, 10, 5, truncated=True))
    events = d.feed(ins.McpCallDone(rid, call.item_id, output="Sunny"))
    done = events[-1]["response"]
    assert done["status"] == "incomplete"
    assert done["status_details"]["reason"] == "max_output_tokens"


def test_a_listing_dropped_before_it_ended_ends_its_item() -> None:
    d = Driver()
    session_update(d, tools=[mcp_tool()])
    listing = d.effect(fx.ListMcpTools)
    events = session_update(d, tools=[])
    assert types(events) == ["session.updated", "conversation.item.done", "mcp_list_tools.failed"]
    assert events[1]["item"]["id"] == listing.item_id
    assert d.last_effects == [fx.CloseMcpServer(listing.server.key)]
    assert d.feed(ins.McpToolsListed(listing.item_id, (FORECAST,))) == []  # late: ignored


def test_function_names_stay_unique_after_cleaning() -> None:
    odd = (
        {**FORECAST, "name": "look.up"},
        {**FORECAST, "name": "look up"},
    )
    d = Driver()
    session_update(
        d, tools=[mcp_tool(require_approval="never"), {"type": "function", "name": "look_up"}]
    )
    d.feed(ins.McpToolsListed(d.effect(fx.ListMcpTools).item_id, odd))
    rid = text_turn(d)
    names = [f.function_name for f in start_of(d, rid).plan.mcp_functions]
    assert len(set(names)) == 2 and "look_up" not in names
    assert all(n.startswith("weather__look_up") for n in names)


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
    approve(d, request_id, False)
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


def test_a_server_connected_only_for_an_approved_call_is_closed_after_it() -> None:
    d = Driver()
    own = mcp_tool("calendar", "http://127.0.0.1:9/cal", require_approval="always")
    user_text(d, "Hi")
    rid = created_id(response_create(d, tools=[own]))
    listing = d.effect(fx.ListMcpTools)
    d.feed(ins.McpToolsListed(listing.item_id, (FORECAST,)))
    request_id = call_forecast(d, rid)[-1]["item"]["id"]
    d.feed(ins.ResponseComplete(rid))
    d.send({"type": "response.cancel"})  # its server is closed with it
    assert fx.CloseMcpServer(listing.server.key) in d.last_effects
    later = created_id(approve(d, request_id, True))
    call = d.effect(fx.CallMcpTool)
    events = d.feed(ins.McpCallDone(later, call.item_id, output="Sunny"))
    assert types(events)[-1] == "response.done"
    assert d.last_effects == [fx.CloseMcpServer(listing.server.key)]
