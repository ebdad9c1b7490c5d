"""The remote LLM engines against a real local HTTP server, through the real ``openai`` client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
import trio
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from engines import embedded
from engines.base import (
    LLM,
    CancelToken,
    ChatMessage,
    EngineError,
    FunctionTool,
    LLMRequest,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    Usage,
)
from engines.openai_llm import (
    ChatCompletionsLLM,
    ResponsesLLM,
    chat_completions_messages,
    responses_input,
)
from realtime import Pipeline, PipelinePool
from realtime.cli import build_llm, parse_args
from tests.engines.openai_server import STALL, ChatScript, FakeOpenAIServer, Reply, ResponsesScript
from tests.realtime.fakes import FakeSTT, FakeTTS, FakeVAD
from tests.realtime.harness import Client, connect, live_server

WEATHER = FunctionTool(
    "get_weather",
    description="Weather of a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
HELLO = LLMRequest("Be brief.", (ChatMessage("user", "Hi"),))
#: a turn after a function call and its result, with every request option set
HISTORY = LLMRequest(
    instructions="Answer in one sentence.",
    messages=(
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage(
            "assistant",
            "Let me look.",
            tool_calls=(ToolCallRequest("call_1", "get_weather", '{"city": "Paris"}'),),
        ),
        ChatMessage("tool", '{"sky": "sunny"}', tool_call_id="call_1"),
        ChatMessage("assistant", "It is sunny."),
        ChatMessage("user", "And tomorrow?"),
    ),
    tools=(WEATHER,),
    tool_choice="get_weather",
    max_output_tokens=64,
    temperature=0.2,
    reasoning_effort="low",
)


@attrs.frozen
class Api:
    """One of the two APIs: its script builder, and its engine aimed at the fake server."""

    script: ResponsesScript | ChatScript
    engine_class: Callable[..., Any]
    options: dict[str, Any]

    def engine(self, **options: Any) -> Any:
        return self.engine_class(**{**self.options, "max_retries": 0, **options})


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def responses_api(server: FakeOpenAIServer) -> Api:
    options = {"api_key": "sk-test", "base_url": server.base_url, "model": "gpt-test"}
    return Api(ResponsesScript(), ResponsesLLM, options)


def chat_api(server: FakeOpenAIServer) -> Api:
    return Api(
        ChatScript(), ChatCompletionsLLM, {"base_url": server.base_url, "model": "test-model"}
    )


@pytest.fixture(params=["responses", "chat_completions"])
def api(request: pytest.FixtureRequest, server: FakeOpenAIServer) -> Api:
    return responses_api(server) if request.param == "responses" else chat_api(server)


def run(llm: LLM, request: LLMRequest = HELLO) -> tuple[str, list[ToolCall], Usage]:
    events = list(llm.stream(request, CancelToken()))
    usage = events[-1]
    assert isinstance(usage, Usage)
    assert not any(isinstance(e, Usage) for e in events[:-1])
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    return text, [e for e in events if isinstance(e, ToolCall)], usage


# --- both APIs -------------------------------------------------------------------------------


def test_the_scripted_events_are_what_the_sdk_parses() -> None:
    responses, chat = ResponsesScript(), ChatScript()
    calls = [("call_a", "get_weather", ['{"city"', ': "Paris"}'])]
    events = TypeAdapter(ResponseStreamEvent)
    for step in [
        *responses.start(),
        *responses.text("Hi"),
        *responses.tool_calls(*calls),
        *responses.end(1, 2),
        *responses.end(1, 2, truncated=True),
        *responses.failed("boom"),
        *responses.error("boom"),
    ]:
        assert isinstance(step, dict)
        events.validate_python({**step, "sequence_number": 0})
    for step in [*chat.start(), *chat.text("Hi"), *chat.tool_calls(*calls), *chat.end(1, 2)]:
        ChatCompletionChunk.model_validate(step)


def test_engines_are_llms(api: Api) -> None:
    assert isinstance(api.engine(), LLM)


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_tool_choice_modes_go_as_they_are(api: Api, choice: str) -> None:
    request = attrs.evolve(HISTORY, tool_choice=choice)
    assert api.engine().arguments(request)["tool_choice"] == choice


@pytest.mark.parametrize("parallel", [True, False])
def test_parallel_tool_calls_goes_with_the_tools(api: Api, parallel: bool) -> None:
    request = attrs.evolve(HISTORY, parallel_tool_calls=parallel)
    assert api.engine().arguments(request)["parallel_tool_calls"] is parallel
    assert "parallel_tool_calls" not in api.engine().arguments(HISTORY)  # not set: not sent


def test_no_tools_sends_no_tool_choice(api: Api) -> None:
    request = attrs.evolve(HISTORY, tools=(), tool_choice="required")
    assert {"tools", "tool_choice"}.isdisjoint(api.engine().arguments(request))


def test_text_streams_before_the_server_finishes(api: Api, server: FakeOpenAIServer) -> None:
    s = api.script
    gate = threading.Event()  # the server holds the rest of the answer until it is set
    server.script([*s.start(), *s.text("Hel"), gate, *s.text("lo", " there."), *s.end(12, 3)])
    stream = api.engine().stream(HELLO, CancelToken())
    assert next(stream) == TextDelta("Hel")
    assert not server.finished.is_set()
    gate.set()
    rest = list(stream)
    assert server.finished.is_set()
    assert rest == [TextDelta("lo"), TextDelta(" there."), Usage(12, 3)]


def test_truncation_at_the_output_limit_is_reported(api: Api, server: FakeOpenAIServer) -> None:
    s = api.script
    server.script([*s.start(), *s.text("One two"), *s.end(9, 16, truncated=True)])
    assert run(api.engine()) == ("One two", [], Usage(9, 16, truncated=True))


def test_a_tool_call_with_streamed_arguments(api: Api, server: FakeOpenAIServer) -> None:
    s = api.script
    call = ("call_a", "get_weather", ['{"ci', 'ty": "Pa', 'ris"}'])
    server.script([*s.start(), *s.tool_calls(call), *s.end(20, 7)])
    text, calls, usage = run(api.engine(), HISTORY)
    assert (text, usage) == ("", Usage(20, 7))
    assert calls == [ToolCall("call_a", "get_weather", '{"city": "Paris"}')]


def test_parallel_tool_calls_come_in_order(api: Api, server: FakeOpenAIServer) -> None:
    s = api.script
    calls = [
        ("call_a", "get_weather", ['{"city": ', '"Paris"}']),
        ("call_b", "get_weather", ['{"city": "Rome"}']),
        ("call_c", "get_time", []),
    ]
    server.script([*s.start(), *s.text("Checking."), *s.tool_calls(*calls), *s.end(20, 30)])
    text, got, _ = run(api.engine(), HISTORY)
    assert text == "Checking."
    assert got == [
        ToolCall("call_a", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_b", "get_weather", '{"city": "Rome"}'),
        ToolCall("call_c", "get_time", "{}"),
    ]


def test_an_error_event_mid_stream_is_an_engine_error(api: Api, server: FakeOpenAIServer) -> None:
    s = api.script
    server.script([*s.start(), *s.text("Hi"), *s.error("out of memory")])
    stream = api.engine().stream(HELLO, CancelToken())
    assert next(stream) == TextDelta("Hi")
    with pytest.raises(EngineError, match="out of memory"):
        next(stream)


def test_an_http_error_status_is_an_engine_error(api: Api, server: FakeOpenAIServer) -> None:
    server.script(Reply(status=404, error="The model `gpt-test` does not exist"))
    with pytest.raises(EngineError, match=r"HTTP 404: The model `gpt-test` does not exist"):
        run(api.engine())


def test_a_server_error_before_the_first_token_is_retried(
    api: Api, server: FakeOpenAIServer
) -> None:
    s = api.script
    server.script(
        Reply(status=503, error="overloaded", headers=(("retry-after-ms", "10"),)),
        [*s.start(), *s.text("Hi."), *s.end(5, 1)],
    )
    assert run(api.engine(max_retries=1)) == ("Hi.", [], Usage(5, 1))
    assert len(server.received) == 2


def test_an_unreachable_server_is_an_engine_error(api: Api) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    engine = api.engine(base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(EngineError, match=f"127.0.0.1:{port}/v1: connection failed"):
        run(engine)


def test_a_server_that_stalls_mid_stream_fails_after_the_timeout(
    api: Api, server: FakeOpenAIServer
) -> None:
    s = api.script
    server.script([*s.start(), *s.text("Hel"), STALL])
    stream = api.engine(timeout_s=0.5).stream(HELLO, CancelToken())
    assert next(stream) == TextDelta("Hel")
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"nothing received for 0.5 s"):
        next(stream)
    assert time.monotonic() - started >= 0.45  # it did wait for the timeout
    assert server.disconnected.wait(2), "the stalled connection was not closed"


def test_cancel_mid_stream_stops_at_the_next_event_and_closes_the_connection(
    api: Api, server: FakeOpenAIServer
) -> None:
    s = api.script
    words = [step for word in ("one", " two", " three", " four") for step in (0.3, *s.text(word))]
    server.script([*s.start(), *s.text("zero"), *words, *s.end(5, 5)])
    cancel = CancelToken()
    stream = api.engine().stream(HELLO, cancel)
    assert next(stream) == TextDelta("zero")
    # Cancelled while the worker waits for the next event: that event is the last it reads.
    threading.Timer(0.1, cancel.cancel).start()
    assert list(stream) == []  # nothing after the cancel, though " one" came 0.2 s later
    assert server.disconnected.wait(2), "the server never saw the connection close"
    assert not server.finished.is_set()


def test_a_stream_cancelled_before_it_starts_sends_no_request(
    api: Api, server: FakeOpenAIServer
) -> None:
    cancel = CancelToken()
    cancel.cancel()
    assert list(api.engine().stream(HELLO, cancel)) == []
    assert server.received == []


# --- Responses API ---------------------------------------------------------------------------


def test_responses_request_carries_history_tools_and_limits(server: FakeOpenAIServer) -> None:
    s = ResponsesScript()
    server.script([*s.start(), *s.text("Rain."), *s.end(40, 2)])
    run(responses_api(server).engine(), HISTORY)
    (received,) = server.received
    assert received.path == "/v1/responses"
    assert received.headers["authorization"] == "Bearer sk-test"
    body = received.body
    assert body["model"] == "gpt-test"
    assert body["stream"] is True
    assert body["store"] is False
    assert body["instructions"] == "Answer in one sentence."
    assert body["input"] == [
        {"type": "message", "role": "user", "content": "Weather in Paris?"},
        {"type": "message", "role": "assistant", "content": "Let me look."},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": '{"sky": "sunny"}'},
        {"type": "message", "role": "assistant", "content": "It is sunny."},
        {"type": "message", "role": "user", "content": "And tomorrow?"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather of a city.",
            "parameters": WEATHER.parameters,
            "strict": False,
        }
    ]
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert body["max_output_tokens"] == 64
    assert body["temperature"] == 0.2
    assert body["reasoning"] == {"effort": "low"}


def test_responses_request_leaves_unset_options_to_the_server(server: FakeOpenAIServer) -> None:
    body = responses_api(server).engine().arguments(LLMRequest("", (ChatMessage("user", "Hi"),)))
    assert body.keys() == {"model", "input", "store", "stream"}


def test_responses_output_limit_is_raised_to_the_api_minimum(server: FakeOpenAIServer) -> None:
    request = attrs.evolve(HELLO, max_output_tokens=5)
    assert responses_api(server).engine().arguments(request)["max_output_tokens"] == 16


def test_responses_engine_defaults_apply_when_the_request_sets_none(
    server: FakeOpenAIServer,
) -> None:
    engine = responses_api(server).engine(
        temperature=0.7, max_output_tokens=300, reasoning_effort="minimal"
    )
    body = engine.arguments(HELLO)
    assert (body["temperature"], body["max_output_tokens"], body["reasoning"]) == (
        0.7,
        300,
        {"effort": "minimal"},
    )
    assert engine.arguments(attrs.evolve(HELLO, temperature=0.0))["temperature"] == 0.0


def test_responses_failed_event_is_an_engine_error(server: FakeOpenAIServer) -> None:
    s = ResponsesScript()
    server.script([*s.start(), *s.text("Hi"), *s.failed("The server had an error")])
    with pytest.raises(EngineError, match="the response failed: The server had an error"):
        run(responses_api(server).engine())


def test_responses_stream_that_ends_without_a_response_is_an_engine_error(
    server: FakeOpenAIServer,
) -> None:
    s = ResponsesScript()
    server.script([*s.start(), *s.text("Hi")])
    with pytest.raises(EngineError, match="ended before the response did"):
        run(responses_api(server).engine())


def test_responses_without_an_api_key_fails_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EngineError, match=r"set OPENAI_API_KEY or pass --llm_api_key"):
        ResponsesLLM()


def test_responses_key_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, server: FakeOpenAIServer
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    s = ResponsesScript()
    server.script([*s.start(), *s.end(1, 0)])
    run(ResponsesLLM(base_url=server.base_url))
    assert server.received[0].headers["authorization"] == "Bearer sk-from-env"
    assert server.received[0].body["model"] == "gpt-4.1-mini"


# --- Chat Completions ------------------------------------------------------------------------


def test_chat_request_carries_history_tools_and_limits(server: FakeOpenAIServer) -> None:
    s = ChatScript()
    server.script([*s.start(), *s.text("Rain."), *s.end(40, 2)])
    run(chat_api(server).engine(), HISTORY)
    (received,) = server.received
    assert received.path == "/v1/chat/completions"
    body = received.body
    assert body["model"] == "test-model"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city.",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["max_tokens"] == 64
    assert body["temperature"] == 0.2
    assert body["reasoning_effort"] == "low"


def test_chat_assistant_turn_with_only_calls_has_null_content(server: FakeOpenAIServer) -> None:
    call = ToolCallRequest("call_1", "get_time", "{}")
    request = LLMRequest("", (ChatMessage("user", "Time?"), ChatMessage("assistant", "", (call,))))
    messages = chat_api(server).engine().arguments(request)["messages"]
    assert messages[1]["content"] is None


def test_chat_pieces_of_parallel_calls_are_assembled_by_index(server: FakeOpenAIServer) -> None:
    s = ChatScript()
    server.script(
        [
            *s.start(),
            s.tool_piece(0, id="call_a", function={"name": "get_weather", "arguments": ""}),
            s.tool_piece(1, id="call_b", function={"name": "get_weather", "arguments": '{"ci'}),
            s.tool_piece(0, function={"arguments": '{"city": "Paris"}'}),
            s.tool_piece(1, function={"arguments": 'ty": "Rome"}'}),
            s.chunk({}, finish_reason="tool_calls"),
            *s.end(3, 4)[1:],
        ]
    )
    _, calls, usage = run(chat_api(server).engine())
    assert calls == [
        ToolCall("call_a", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_b", "get_weather", '{"city": "Rome"}'),
    ]
    assert usage == Usage(3, 4)


def test_chat_calls_without_index_or_id_still_assemble(server: FakeOpenAIServer) -> None:
    s = ChatScript()
    server.script(
        [
            s.tool_piece(None, function={"name": "get_weather", "arguments": '{"city": '}),
            s.tool_piece(None, function={"arguments": '"Oslo"}'}),
            *s.end(3, 4),
        ]
    )
    _, (call,), _ = run(chat_api(server).engine())
    assert (call.name, call.arguments) == ("get_weather", '{"city": "Oslo"}')
    assert call.call_id.startswith("call_")


def test_chat_calls_are_yielded_when_the_choice_finishes(server: FakeOpenAIServer) -> None:
    s = ChatScript()
    call = ("call_a", "get_time", ["{}"])
    server.script([*s.tool_calls(call), s.chunk({}, finish_reason="tool_calls"), 0.5])
    stream = chat_api(server).engine().stream(HELLO, CancelToken())
    assert next(stream) == ToolCall("call_a", "get_time", "{}")
    assert not server.finished.is_set()
    assert list(stream) == [Usage(0, 0)]


def test_chat_without_usage_counts_zero_tokens(server: FakeOpenAIServer) -> None:
    s = ChatScript()
    server.script([*s.start(), *s.text("Hi."), *s.end(0, 0, usage=False)])
    assert run(chat_api(server).engine()) == ("Hi.", [], Usage(0, 0))


def test_chat_without_a_key_sends_none(
    monkeypatch: pytest.MonkeyPatch, server: FakeOpenAIServer
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    s = ChatScript()
    server.script([*s.start(), *s.end(1, 0)])
    run(chat_api(server).engine())
    assert server.received[0].headers["authorization"] == "Bearer none"


def test_chat_without_a_model_fails_at_construction() -> None:
    with pytest.raises(EngineError, match="--llm_model"):
        ChatCompletionsLLM(base_url="http://127.0.0.1:1/v1")


# --- the command line and the server ---------------------------------------------------------


def test_cli_builds_the_chosen_remote_llm(server: FakeOpenAIServer) -> None:
    args = parse_args(
        [
            "--llm=chat_completions",
            f"--llm_base_url={server.base_url}",
            "--llm_model=served-model",
            "--llm_timeout_s=5",
            "--llm_max_tokens=100",
        ]
    )
    llm = build_llm(args, threads=1)
    assert isinstance(llm, ChatCompletionsLLM)
    assert (llm.model, llm.base_url, llm.timeout_s) == ("served-model", server.base_url, 5.0)
    body = llm.arguments(HELLO)
    assert body["max_tokens"] == 100
    assert "temperature" not in body


def test_cli_keeps_the_embedded_llm_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "load_llm", lambda **options: options)
    options = build_llm(parse_args([]), threads=2)
    assert (options["temperature"], options["max_output_tokens"]) == (0.2, 256)
    options = build_llm(parse_args(["--llm_temperature=0"]), threads=2)
    assert options["temperature"] == 0.0


def test_cli_without_an_api_key_stops_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(SystemExit, match="set OPENAI_API_KEY or pass --llm_api_key"):
        build_llm(parse_args(["--llm=openai"]), threads=1)


def test_a_text_turn_through_the_server_with_the_chat_completions_llm(
    server: FakeOpenAIServer,
) -> None:
    s = ChatScript()
    server.script([*s.start(), *s.text("Hello", " from", " vLLM."), *s.end(21, 3)])
    llm = ChatCompletionsLLM(base_url=server.base_url, model="served-model")
    pool = PipelinePool([Pipeline(0, FakeVAD(), FakeSTT(), llm, FakeTTS())], 1)

    async def turn(url_server: Any) -> list[dict[str, Any]]:
        async with connect(url_server) as ws:
            client = Client(ws)
            await client.next()
            await client.send(
                {
                    "type": "session.update",
                    "session": {
                        "type": "realtime",
                        "output_modalities": ["text"],
                        "instructions": "Be brief.",
                    },
                }
            )
            await client.until("session.updated")
            await client.send(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "Say hello"}],
                    },
                }
            )
            await client.send({"type": "response.create"})
            return await client.until("response.done")

    with live_server(pool) as live:
        events = trio.run(turn, live)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "Hello from vLLM."
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert (done["usage"]["input_tokens"], done["usage"]["output_tokens"]) == (21, 3)
    assert server.received[0].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]


def test_images_go_to_both_apis_as_image_parts() -> None:
    image = ("data:image/png;base64,AAAA", "low")
    request = LLMRequest("", (ChatMessage("user", "What is this?", images=(image,)),))
    assert responses_input(request.messages) == [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": image[0], "detail": "low"},
            ],
        }
    ]
    assert chat_completions_messages(request) == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": image[0], "detail": "low"}},
            ],
        }
    ]
