import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engines.base import EngineError, FunctionTool, LLMRequest
from engines.tool_calls import (
    ToolCallRouter,
    must_call,
    new_call_id,
    offered_tools,
    parse_tool_calls,
    tool_call_schema,
)

NAMES = {"get_weather", "set_timer"}


def route(pieces: list[str], names: set[str] = NAMES) -> tuple[list[str], str, tuple]:
    router = ToolCallRouter(names)
    shown = [router.feed(p) for p in pieces]
    rest, calls = router.finish()
    return shown, rest, calls


def split_at(text: str, cuts: list[int]) -> list[str]:
    """``text`` cut into pieces at the positions ``cuts`` (taken modulo its length)."""
    bounds = [0, *sorted({c % (len(text) + 1) for c in cuts}), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def test_valid_call_is_parsed_with_arguments_as_json_text():
    (call,) = parse_tool_calls('{"name": "get_weather", "arguments": {"city": "Paris"}}', NAMES)
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id.startswith("call_")


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        '<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_call>',
        '  {"name": "get_weather", "parameters": {"city": "Paris"}}\n',
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
        '{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}',
    ],
)
def test_common_wrappings_of_a_call_are_accepted(text):
    (call,) = parse_tool_calls(text, NAMES)
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})


def test_several_calls_one_per_line_are_all_returned():
    text = (
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
        '{"name": "set_timer", "arguments": {"minutes": 5}}'
    )
    calls = parse_tool_calls(text, NAMES)
    assert [c.name for c in calls] == ["get_weather", "set_timer"]
    assert len({c.call_id for c in calls}) == 2


def test_missing_arguments_mean_an_empty_object():
    (call,) = parse_tool_calls('{"name": "set_timer"}', NAMES)
    assert call.arguments == "{}"


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris"}',  # partial: cut off
        '{"name": "get_weather", "arguments": {city: Paris}}',  # invalid JSON
        '{"name": "launch_rocket", "arguments": {}}',  # unknown tool
        '{"name": "get_weather", "arguments": ["Paris"]}',  # arguments not an object
        '{"name": "get_weather", "arguments": "not json"}',
        '{"arguments": {"city": "Paris"}}',  # no name
        '{"name": "get_weather", "arguments": {}} and then some words',  # text around it
        "[]",
        '"get_weather"',
        "The weather in Paris is sunny.",
        "",
    ],
)
def test_anything_but_valid_calls_to_offered_tools_is_not_a_call(text):
    assert parse_tool_calls(text, NAMES) is None


def test_one_bad_call_among_several_makes_the_whole_output_text():
    text = '{"name": "get_weather", "arguments": {}}\n{"name": "nope", "arguments": {}}'
    assert parse_tool_calls(text, NAMES) is None


def test_router_streams_plain_text_at_once_without_leading_whitespace():
    shown, rest, calls = route(["  ", " The", " weather", " is nice."])
    assert shown == ["", "The", " weather", " is nice."]
    assert (rest, calls) == ("", ())


def test_router_holds_back_a_streamed_call_and_returns_it_at_the_end():
    pieces = ['{"', "name", '": "', "set", "_timer", '", "arguments": {"minutes": 3}}']
    shown, rest, calls = route(pieces)
    assert all(s == "" for s in shown)
    assert rest == ""
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("set_timer", {"minutes": 3})]


def test_router_releases_held_output_as_text_when_it_is_not_a_valid_call():
    shown, rest, calls = route(['{"name": "launch_rocket",', ' "arguments": {}}'])
    assert shown == ["", ""]
    assert rest == '{"name": "launch_rocket", "arguments": {}}'
    assert calls == ()


def test_router_releases_a_truncated_call_as_text():
    _, rest, calls = route(['{"name": "get_weather", "argu'])
    assert (rest, calls) == ('{"name": "get_weather", "argu', ())


def test_router_waits_on_a_prefix_of_an_opener_then_streams_text():
    shown, rest, _ = route(["<", "b>hello"])
    assert shown == ["", "<b>hello"]
    assert rest == ""


def test_router_recognises_a_tagged_call_split_across_pieces():
    pieces = [
        "<tool",
        '_call>{"name": "get_weather", "arguments": {"city": "Rome"}}',
        "</tool_call>",
    ]
    shown, rest, calls = route(pieces)
    assert shown == ["", "", ""]
    assert rest == ""
    assert calls[0].name == "get_weather"


def test_router_without_tools_streams_json_looking_text():
    shown, rest, calls = route(['{"name": "get_weather"}'], names=set())
    assert shown == ['{"name": "get_weather"}']
    assert (rest, calls) == ("", ())


def test_router_with_empty_output_has_nothing_to_show():
    assert route([]) == ([], "", ())


def test_offered_tools_follow_tool_choice():
    tools = (FunctionTool("get_weather"), FunctionTool("set_timer"))

    def request(choice: str) -> LLMRequest:
        return LLMRequest(instructions="", messages=(), tools=tools, tool_choice=choice)

    assert offered_tools(request("auto")) == tools
    assert offered_tools(request("required")) == tools
    assert offered_tools(request("none")) == ()
    assert offered_tools(request("set_timer")) == (tools[1],)
    assert offered_tools(request("unknown")) == ()
    assert [must_call(request(c)) for c in ("auto", "required", "none", "set_timer")] == [
        False,
        True,
        False,
        True,
    ]


def test_schema_pins_the_name_and_uses_the_tool_parameters():
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    one = tool_call_schema([FunctionTool("get_weather", parameters=params)])
    assert one["properties"]["name"] == {"const": "get_weather"}
    assert one["properties"]["arguments"] == params
    both = tool_call_schema([FunctionTool("get_weather"), FunctionTool("set_timer")])
    assert [v["properties"]["name"]["const"] for v in both["anyOf"]] == ["get_weather", "set_timer"]


def test_call_ids_are_unique_and_prefixed():
    ids = {new_call_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("call_") and len(i) > 10 for i in ids)


@given(st.lists(st.integers(min_value=0), max_size=8), st.sampled_from(["", "  ", "\n"]))
def test_router_finds_a_call_however_the_stream_is_split(cuts, lead):
    text = lead + '<tool_call>[{"name": "set_timer", "arguments": {"minutes": 7}}]</tool_call>'
    shown, rest, calls = route(split_at(text, cuts))
    assert "".join(shown) == rest == ""
    assert [(c.name, c.arguments) for c in calls] == [("set_timer", '{"minutes": 7}')]


@given(st.text(max_size=60), st.lists(st.integers(min_value=0), max_size=8))
def test_router_shows_all_non_call_output_exactly_once(text, cuts):
    shown, rest, calls = route(split_at(text, cuts))
    if calls:
        return
    streamed = "".join(shown)
    # Streamed text keeps the model's words as they came; held text is released stripped.
    assert streamed + rest in (text.lstrip(), text.strip())


def route_tagged(pieces: list[str], truncated: bool = False) -> tuple[list[str], str, tuple]:
    router = ToolCallRouter(NAMES, tagged=True)
    shown = [router.feed(p) for p in pieces]
    rest, calls = router.finish(truncated=truncated)
    return shown, rest, calls


WEATHER_BLOCK = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'


def test_tagged_router_streams_text_before_a_call_and_hides_the_block():
    shown, rest, calls = route_tagged(["Let me", " check.\n", WEATHER_BLOCK[:7], WEATHER_BLOCK[7:]])
    assert "".join(shown) + rest == "Let me check.\n"
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Rome"})]


def test_tagged_router_drops_whitespace_between_and_after_blocks():
    timer = '<tool_call>{"name": "set_timer", "arguments": {"minutes": 1}}</tool_call>'
    shown, rest, calls = route_tagged([WEATHER_BLOCK, "\n", timer, "\n\n"])
    assert "".join(shown) + rest == ""
    assert [c.name for c in calls] == ["get_weather", "set_timer"]


def test_tagged_router_releases_a_lookalike_of_the_tag_as_text():
    shown, rest, calls = route_tagged(["Use <tool", "s> wisely <"])
    assert "".join(shown) + rest == "Use <tools> wisely <"
    assert calls == ()


def test_tagged_router_still_takes_a_bare_json_call():
    shown, rest, calls = route_tagged(['{"name": "set_timer", "arguments": {"minutes": 2}}'])
    assert "".join(shown) + rest == ""
    assert [c.name for c in calls] == ["set_timer"]


@pytest.mark.parametrize(
    ("block", "reason"),
    [
        ('{"name": "get_weather", "arguments": {city: "Rome"}}', "not JSON"),
        ('{"name": "launch_rocket", "arguments": {}}', "'launch_rocket' is not an offered"),
        ('{"name": "get_weather", "arguments": [1]}', "the arguments are not a JSON object"),
        ("", "no call"),
    ],
)
def test_tagged_router_reports_an_invalid_block_as_an_engine_error(block, reason):
    router = ToolCallRouter(NAMES, tagged=True)
    router.feed("One moment.")
    with pytest.raises(EngineError, match=f"invalid tool call \\({reason}"):
        router.feed(f"<tool_call>{block}</tool_call>")


def test_tagged_router_drops_a_block_cut_off_by_the_token_limit():
    shown, rest, calls = route_tagged(["Sure.", '<tool_call>{"name": "get_weather", "argu'], True)
    assert ("".join(shown), rest, calls) == ("Sure.", "", ())


def test_tagged_router_reports_a_block_left_open_by_the_model():
    router = ToolCallRouter(NAMES, tagged=True)
    router.feed('<tool_call>{"name": "get_weather", "argu')
    with pytest.raises(EngineError, match="invalid tool call"):
        router.finish()


def test_tagged_router_accepts_a_complete_call_without_its_closing_tag():
    _, rest, calls = route_tagged(['<tool_call>{"name": "set_timer", "arguments": {}}\n'])
    assert rest == ""
    assert [c.name for c in calls] == ["set_timer"]


def test_tagged_router_without_tools_shows_the_markup_as_text():
    router = ToolCallRouter(set(), tagged=True)
    assert router.feed(WEATHER_BLOCK) == WEATHER_BLOCK


@given(st.lists(st.integers(min_value=0), max_size=8))
def test_tagged_router_finds_text_and_calls_however_the_stream_is_split(cuts):
    text = f"It is 3 < 4. {WEATHER_BLOCK}\nDone <3"
    shown, rest, calls = route_tagged(split_at(text, cuts))
    assert "".join(shown) + rest == "It is 3 < 4. Done <3"
    assert [c.name for c in calls] == ["get_weather"]
