"""Hypothesis drives RealtimeConnection with random interleavings of client events and engine
results, checking the protocol's invariants after every step.

Every emitted event is validated with the openai SDK's ``RealtimeServerEvent`` union and fed to
``SequenceChecker`` (by the Driver), must encode as UTF-8 JSON without NaN, and a client event
that is refused is exactly one ``error`` event that changes no state. Engine results follow the
I/O shell's rules (output only for started responses, in their modality; VAD frames only over
appended audio) but also arrive late, for responses and items that are gone.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from protocol import Output, encode_server_event
from protocol import inputs as ins
from protocol.effects import CallMcpTool, ListMcpTools, StartResponse
from protocol.session import BYTES_PER_MS
from tests.protocol.steps import message, state_of
from tests.support import TRACES, Driver, types

FUZZ_SETTINGS = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

TOOL = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}
MCP_URL = "http://127.0.0.1:9/mcp"
MCP_TOOL = {"type": "mcp", "server_label": "weather", "server_url": MCP_URL}
MCP_LISTED = (
    {"name": "forecast", "input_schema": {"type": "object"}, "annotations": {"readOnlyHint": True}},
    {"name": "get_time", "input_schema": {"type": "object"}},
)

SESSION_PATCHES: list[dict[str, Any]] = [
    {"instructions": "Be brief."},
    {"output_modalities": ["text"]},
    {"output_modalities": ["audio"]},
    {"audio": {"input": {"turn_detection": None}}},
    {"audio": {"input": {"turn_detection": {"type": "server_vad"}}}},
    {
        "audio": {
            "input": {
                "turn_detection": {
                    "type": "server_vad",
                    "interrupt_response": False,
                    "create_response": False,
                }
            }
        }
    },
    {"audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}},
    {"audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}}},
    {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}},
    {"audio": {"input": {"transcription": {"model": "whisper-1", "language": "en"}}}},
    {"audio": {"input": {"transcription": None}}},
    {"audio": {"input": {"format": {"type": "audio/pcmu"}}}},
    {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}},
    {"audio": {"output": {"voice": "ash"}}},
    {"audio": {"output": {"format": {"type": "audio/pcma"}, "speed": 1.2}}},
    {"tools": [TOOL], "tool_choice": "auto"},
    {"tools": []},
    {"tools": [{**MCP_TOOL, "require_approval": "never"}]},
    {"tools": [TOOL, MCP_TOOL]},  # approvals always (the default)
    {"tools": [{**MCP_TOOL, "require_approval": {"never": {"read_only": True}}}]},
    {"tools": [MCP_TOOL, {**MCP_TOOL, "server_label": "office", "server_url": MCP_URL + "2"}]},
    {"tool_choice": {"type": "mcp", "server_label": "weather"}},
    {"tracing": "auto"},
    # refused: some always, some only in some states
    {"tracing": {"workflow_name": "other"}},
    {"bogus": 1},
    {"max_output_tokens": 0},
    {"type": "transcription"},
    {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
]
PROBABILITIES = (0.0, 0.2, 0.45, 0.9)
UNKNOWN_ID = "item_unknown"


def draw_mostly(data: st.DataObject, current: list[str], stale: list[str]) -> str:
    """An id of something current, or now and then (and when there is none) a stale one."""
    if current and data.draw(st.integers(0, 3)):
        return data.draw(st.sampled_from(current))
    return data.draw(st.sampled_from(stale))


def check_sendable(output: Output) -> None:
    """What the shell will send must be UTF-8 JSON without NaN/Infinity."""
    for event in output.events:
        text = encode_server_event(event)
        text.encode("utf-8")
        json.loads(text, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise AssertionError(f"{name} in a server event")


class CheckedDriver(Driver):
    """The Driver (SDK validation + SequenceChecker) plus the sendability check."""

    def _take(self, output: Any) -> list[dict[str, Any]]:
        check_sendable(output)
        return super()._take(output)


def send_checked(d: Driver, frame: Any) -> list[dict[str, Any]]:
    """One client frame: valid handling, or exactly one error that changes nothing."""
    before = state_of(d.conn)
    events = d.send(frame)
    if "error" in types(events):
        assert types(events) == ["error"], types(events)
        assert events[0]["error"]["type"] == "invalid_request_error"
        assert d.last_effects == []
        assert state_of(d.conn) == before
    return events


class ProtocolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.d = CheckedDriver()
        self.vad_ms = 0  #: end of the last VAD frame fed
        self.stale_items: list[str] = [UNKNOWN_ID]

    # --- views of the machine --------------------------------------------------------------

    @property
    def conn(self) -> Any:
        return self.d.conn

    def started(self) -> dict[str, StartResponse]:
        """Responses the shell is generating now, by id."""
        return {
            e.response_id: e
            for e in self.d.effects
            if isinstance(e, StartResponse) and e.response_id in self.conn.responses
        }

    def stale_responses(self) -> list[str]:
        done = [e["response"]["id"] for e in self.d.log if e["type"] == "response.done"]
        return done or ["resp_unknown"]

    def pending_in_order(self) -> list[str]:
        """Items awaiting transcripts, in conversation order (ids are random: never sort them,
        or a replayed example would pick a different item)."""
        pending = self.conn.pending_transcripts
        return [item.id for item in self.conn.conversation if item.id in pending]

    def item_ids(self) -> list[str]:
        return [item.id for item in self.conn.conversation] + self.stale_items

    def send(self, frame: Any) -> list[dict[str, Any]]:
        events = send_checked(self.d, frame)
        self.stale_items += [
            e["item_id"] for e in events if e["type"] == "conversation.item.deleted"
        ]
        return events

    # --- client events ----------------------------------------------------------------------

    @rule(patch=st.sampled_from(SESSION_PATCHES))
    def session_update(self, patch: dict[str, Any]) -> None:
        self.send({"type": "session.update", "session": {"type": "realtime", **patch}})

    @rule(ms=st.sampled_from([0, 10, 20, 32, 100, 320]), odd=st.booleans())
    def append(self, ms: int, odd: bool) -> None:
        audio = b"\0" * (ms * BYTES_PER_MS[self.conn.session.input_format] + odd)
        self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()})

    @rule(kind=st.sampled_from(["input_audio_buffer.commit", "input_audio_buffer.clear"]))
    def buffer(self, kind: str) -> None:
        self.send({"type": kind, "event_id": "fuzz_buffer"})

    @rule(data=st.data())
    def create_item(self, data: st.DataObject) -> None:
        kind = data.draw(
            st.sampled_from(
                ["user", "assistant", "audio", "call_output", "known_id", "speech_id", "approval"]
            )
        )
        item: dict[str, Any]
        if kind == "audio":
            audio = base64.b64encode(b"\0" * 4800).decode()
            item = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": audio}],
            }
        elif kind == "call_output":
            item = {"type": "function_call_output", "call_id": "call_1", "output": "{}"}
        elif kind == "known_id":
            item = message("user", "again", id=data.draw(st.sampled_from(self.item_ids())))
        elif kind == "speech_id":
            item = message("user", "mine", id=self.conn.speech_item_id or UNKNOWN_ID)
        elif kind == "approval":
            requests = [i.id for i in self.conn.conversation if i.type == "mcp_approval_request"]
            item = {
                "type": "mcp_approval_response",
                "approval_request_id": draw_mostly(data, requests, [UNKNOWN_ID]),
                "approve": data.draw(st.booleans()),
            }
        else:
            item = message(kind, "Hello")
        event: dict[str, Any] = {"type": "conversation.item.create", "item": item}
        if data.draw(st.booleans()):
            event["previous_item_id"] = data.draw(st.sampled_from(["root", *self.item_ids()]))
        self.send(event)

    @rule(data=st.data(), kind=st.sampled_from(["retrieve", "delete", "truncate"]))
    def address_item(self, data: st.DataObject, kind: str) -> None:
        event = {
            "type": f"conversation.item.{kind}",
            "item_id": data.draw(st.sampled_from(self.item_ids())),
        }
        if kind == "truncate":
            event["content_index"] = data.draw(st.sampled_from([0, 1]))
            event["audio_end_ms"] = data.draw(st.integers(0, 2000))
        self.send(event)

    def streaming(self) -> list[str]:
        """The assistant items being streamed now."""
        return [r.open_item_id for r in self.conn.responses.values() if r.open_item_id]

    @precondition(lambda self: bool(self.streaming()))
    @rule(data=st.data())
    def truncate_while_streaming(self, data: st.DataObject) -> None:
        """The client stops playing an answer that is still being generated and sent."""
        streaming = self.streaming()
        event = {
            "type": "conversation.item.truncate",
            "item_id": data.draw(st.sampled_from(streaming)),
            "content_index": 0,
            "audio_end_ms": data.draw(st.integers(0, 2000)),
        }
        events = self.send(event)
        assert [e["type"] for e in events] in (["conversation.item.truncated"], ["error"])

    @rule(data=st.data())
    def response_create(self, data: st.DataObject) -> None:
        response = data.draw(
            st.sampled_from(
                [
                    None,
                    {"output_modalities": ["text"]},
                    {"conversation": "none", "output_modalities": ["text"]},
                    {"conversation": "none", "metadata": {"k": "v"}},
                    {"max_output_tokens": 5, "instructions": "Short."},
                    {"input": [{"type": "item_reference", "id": "ref"}, message("user", "x")]},
                    {"tools": [{**MCP_TOOL, "server_label": "once", "require_approval": "never"}]},
                ]
            )
        )
        if response and "input" in response:
            response = copy.deepcopy(response)
            response["input"][0]["id"] = data.draw(st.sampled_from(self.item_ids()))
            response["conversation"] = data.draw(st.sampled_from(["auto", "none"]))
        event: dict[str, Any] = {"type": "response.create", "event_id": "fuzz_create"}
        if response is not None:
            event["response"] = response
        self.send(event)

    @rule(text=st.sampled_from(["What time is it?", "Hi"]))
    def text_turn(self, text: str) -> None:
        """What most clients do: a user message, then response.create."""
        self.send({"type": "conversation.item.create", "item": message("user", text)})
        self.send({"type": "response.create"})

    @rule(data=st.data())
    def response_cancel(self, data: st.DataObject) -> None:
        choices = [None, *self.conn.responses, *self.stale_responses()]
        response_id = data.draw(st.sampled_from(choices))
        event: dict[str, Any] = {"type": "response.cancel"}
        if response_id is not None:
            event["response_id"] = response_id
        self.send(event)

    @rule(
        frame=st.text(max_size=40)
        | st.binary(max_size=8)
        | st.just('{"type":"output_audio_buffer.clear"}')
    )
    def other_frame(self, frame: str | bytes) -> None:
        self.send(frame)

    # --- engine results ---------------------------------------------------------------------

    @rule(ms=st.sampled_from([320, 160, 96, 32]), probability=st.sampled_from(PROBABILITIES))
    def speak(self, ms: int, probability: float) -> None:
        """The microphone: audio appended, then the VAD over it in 32 ms frames (over all audio
        appended so far, even what was cleared since: those frames come late)."""
        audio = b"\0" * (ms * BYTES_PER_MS[self.conn.session.input_format])
        self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()})
        while (end := min(self.vad_ms + 32, math.floor(self.conn.timeline_ms))) > self.vad_ms:
            self.d.feed(ins.VadFrame(end, end - self.vad_ms, probability))
            self.vad_ms = end

    @rule(data=st.data(), kind=st.sampled_from(["delta", "done", "failed"]))
    def transcript(self, data: st.DataObject, kind: str) -> None:
        live = [self.conn.speech_item_id] if self.conn.speech_item_id else []
        item_id = draw_mostly(data, [*self.pending_in_order(), *live], self.stale_items)
        if kind == "delta":
            self.d.feed(
                ins.TranscriptDelta(item_id, data.draw(st.sampled_from(["Hi", " you", ""])))
            )
        elif kind == "done":
            self.d.feed(ins.TranscriptDone(item_id, "Hi you there", 1.25))
        else:
            self.d.feed(ins.TranscriptFailed(item_id, "no speech"))

    def engine_response_id(self, data: st.DataObject) -> tuple[str, bool]:
        """A response whose model runs now (or one long gone), and whether it speaks: the
        shell feeds a response's model output only while a round of its model runs."""
        started = self.started()
        running = [rid for rid in started if self.conn.responses[rid].model_running]
        response_id = draw_mostly(data, running, self.stale_responses())
        plan = started[response_id].plan if response_id in started else None
        return response_id, plan is None or "audio" in plan.output_modalities

    @rule(
        data=st.data(),
        kinds=st.lists(st.sampled_from(["out", "tool", "mcp"]), min_size=1, max_size=4),
    )
    def response_output(self, data: st.DataObject, kinds: list[str]) -> None:
        response_id, speaks = self.engine_response_id(data)
        for kind in kinds:
            if kind == "tool":
                self.d.feed(ins.ToolCallOut(response_id, "call_1", "get_time", '{"tz":"UTC"}'))
            elif kind == "mcp":
                name = data.draw(st.sampled_from(["forecast", "weather__get_time", "office__x"]))
                self.d.feed(ins.ToolCallOut(response_id, "call_2", name, '{"city":"Oslo"}'))
            elif speaks:
                chunk = b"\0" * data.draw(st.sampled_from([480, 0, 960]))
                transcript = data.draw(st.sampled_from(["Hi ", ""]))
                self.d.feed(ins.AudioOut(response_id, chunk, transcript))
            else:
                self.d.feed(ins.TextOut(response_id, data.draw(st.sampled_from(["Hi ", ""]))))

    @rule(data=st.data(), end=st.sampled_from(["complete", "truncated", "failed"]))
    def response_end(self, data: st.DataObject, end: str) -> None:
        response_id, _ = self.engine_response_id(data)
        if end == "failed":
            self.d.feed(ins.ResponseFailed(response_id, "engine crashed"))
        else:
            self.d.feed(ins.ResponseComplete(response_id, 10, 3, truncated=end == "truncated"))

    @rule(data=st.data(), listed=st.booleans())
    def mcp_listing(self, data: st.DataObject, listed: bool) -> None:
        """An MCP server's listing ends (or one that was replaced or closed, late)."""
        listing = [li.item_id for li in self.conn.mcp_listings.values() if li.status == "listing"]
        ended = [e.item_id for e in self.d.effects if isinstance(e, ListMcpTools)]
        item_id = draw_mostly(data, listing, [*ended, UNKNOWN_ID])
        if listed:
            self.d.feed(ins.McpToolsListed(item_id, MCP_LISTED))
        else:
            self.d.feed(ins.McpToolsListFailed(item_id, "connection refused"))

    @rule(data=st.data(), approval=st.sampled_from(["never", "always"]))
    def mcp_turn(self, data: st.DataObject, approval: str) -> None:
        """A session with an MCP server, its tools listed, then a question whose answer calls
        a tool (or asks to), when the response could start."""
        tool = {**MCP_TOOL, "require_approval": approval}
        self.send({"type": "session.update", "session": {"type": "realtime", "tools": [tool]}})
        self.mcp_listing(data, listed=True)
        before = set(self.started())
        self.text_turn("What is the forecast?")
        for response_id in set(self.started()) - before:
            self.d.feed(ins.ToolCallOut(response_id, "call_3", "forecast", '{"city":"Oslo"}'))
            if data.draw(st.booleans()):
                self.d.feed(ins.ResponseComplete(response_id, 10, 3))

    def mcp_calls(self, in_flight: bool) -> list[tuple[str, str]]:
        """(response id, item id) of the MCP calls asked for: in flight, or all of them."""
        return [
            (e.response_id, e.item_id)
            for e in self.d.effects
            if isinstance(e, CallMcpTool)
            and (
                not in_flight
                or e.item_id in getattr(self.conn.responses.get(e.response_id), "mcp_in_flight", {})
            )
        ]

    @precondition(lambda self: bool(self.mcp_calls(in_flight=True)))
    @rule(data=st.data(), ok=st.booleans(), late=st.booleans())
    def mcp_call_done(self, data: st.DataObject, ok: bool, late: bool) -> None:
        """An MCP call answers: one in flight, or (``late``) any, maybe of an ended response."""
        calls = self.mcp_calls(in_flight=not late)
        response_id, item_id = data.draw(st.sampled_from(calls))
        if ok:
            self.d.feed(ins.McpCallDone(response_id, item_id, output="Sunny"))
        else:
            error = {"type": "tool_execution_error", "message": "offline"}
            self.d.feed(ins.McpCallDone(response_id, item_id, error=error))

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def checker_and_machine_agree_on_active_responses(self) -> None:
        assert set(self.d.checker.active) == set(self.conn.responses)
        default = [rid for rid, run in self.conn.responses.items() if run.conversation is not None]
        assert default == ([self.conn.default_response_id] if self.conn.default_response_id else [])

    def teardown(self) -> None:
        # cancelling may start the answer to a turn that ended meanwhile: cancel that too
        for _ in range(len(self.conn.responses) + 1):
            for response_id in list(self.conn.responses):
                events = self.send({"type": "response.cancel", "response_id": response_id})
                assert "response.done" in types(events)
        assert self.d.checker.created == self.d.checker.finished
        assert self.conn.responses == {}


TestProtocolMachine = ProtocolMachine.TestCase
TestProtocolMachine.settings = FUZZ_SETTINGS


# --- frames from outside the protocol --------------------------------------------------------

#: strings over every code point, lone UTF-16 surrogates (``\ud800``) often among them
any_text = st.text(
    st.characters(codec=None, categories=None) | st.characters(categories=["Cs"]), max_size=12
)
#: values that are JSON to Python but cannot be echoed back as JSON text on the wire
unsendable = st.sampled_from(["\ud800", "a\udfffb", math.nan, math.inf, -math.inf])
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(any_text | st.sampled_from(["type", "event_id"]), children, max_size=4)
    ),
    max_leaves=20,
)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


#: deeper than free-form JSON (tool parameters) may nest, shallower than the parser's limit
too_deep = st.builds(nested, st.integers(60, 400))


def busy_driver() -> Driver:
    """Items, a speaking response and speech in progress: most events have something to act on."""
    d = CheckedDriver()
    d.send({"type": "conversation.item.create", "item": message("user", "Hi", id="item_a")})
    d.send({"type": "response.create"})
    (start,) = [e for e in d.effects if isinstance(e, StartResponse)]
    d.feed(ins.AudioOut(start.response_id, b"\0" * 960, "Hello"))
    d.append(b"\0" * 48 * 320)
    d.vad(0, 320, 0.9)
    return d


def receive_anything(frame: str | bytes) -> None:
    d = busy_driver()
    send_checked(d, frame)


@FUZZ_SETTINGS
@given(st.text(st.characters(codec=None, categories=None), max_size=200) | st.binary(max_size=64))
def test_arbitrary_text_or_bytes_never_raise(frame: str | bytes) -> None:
    receive_anything(frame)


@FUZZ_SETTINGS
@given(json_values, st.booleans())
def test_arbitrary_json_is_one_error_or_valid_handling(value: Any, ascii_only: bool) -> None:
    receive_anything(json.dumps(value, ensure_ascii=ascii_only))


def client_examples() -> list[dict[str, Any]]:
    """Valid client events: one of every type, shaped as clients send them."""
    audio = base64.b64encode(b"\0" * 960).decode()
    return [
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "x",
                "tools": [TOOL],
                "audio": {
                    "input": {
                        "turn_detection": {"type": "semantic_vad"},
                        "transcription": {"model": "m"},
                    },
                    "output": {"voice": "alloy", "speed": 1.0},
                },
            },
        },
        {"type": "input_audio_buffer.append", "audio": audio, "event_id": "e1"},
        {"type": "input_audio_buffer.commit"},
        {"type": "input_audio_buffer.clear"},
        {"type": "output_audio_buffer.clear"},
        {
            "type": "conversation.item.create",
            "item": message("user", "x"),
            "previous_item_id": "item_a",
        },
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": audio}],
            },
        },
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "c", "output": "1"},
        },
        {"type": "conversation.item.retrieve", "item_id": "item_a"},
        {"type": "conversation.item.delete", "item_id": "item_a"},
        {
            "type": "conversation.item.truncate",
            "item_id": "item_a",
            "content_index": 0,
            "audio_end_ms": 10,
        },
        {
            "type": "response.create",
            "response": {
                "conversation": "none",
                "output_modalities": ["text"],
                "input": [{"type": "item_reference", "id": "item_a"}],
                "metadata": {"k": "v"},
                "max_output_tokens": 10,
            },
        },
        {"type": "response.cancel"},
    ]


def official_client_examples() -> list[dict[str, Any]]:
    examples = json.loads((TRACES / "openapi_ga_event_examples.json").read_text())
    found = []
    for entry in examples["client_events"].values():
        if isinstance(entry["example"], dict):
            found.append(entry["example"])
    return found


def paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path inside a JSON value."""
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*path, index))
    return found


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    event = copy.deepcopy(draw(st.sampled_from(client_examples() + official_client_examples())))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(event)))
        if not path:
            continue
        parent = event
        for key in path[:-1]:
            parent = parent[key]
        how = draw(st.sampled_from(["delete", "replace", "add", "wrap"]))
        if how == "delete":
            del parent[path[-1]]
        elif how == "replace":
            parent[path[-1]] = draw(json_values | unsendable | too_deep)
        elif how == "wrap":
            parent[path[-1]] = [parent[path[-1]]]
        elif isinstance(parent, dict):
            parent[draw(any_text)] = draw(json_values)
    return event


@FUZZ_SETTINGS
@given(mutated_events())
def test_mutated_valid_events_are_one_error_or_valid_handling(event: dict[str, Any]) -> None:
    receive_anything(json.dumps(event))
