"""protocol/connection.py: the machine's API, its input-buffer table and its error rule (E1)."""

from __future__ import annotations

import base64
import json
import typing
from typing import Any

import pytest

from protocol import (
    INPUT_TRANSITIONS,
    IllegalTransition,
    InputState,
    RealtimeConnection,
    encode_server_event,
)
from protocol import inputs as ins
from tests.protocol.steps import (
    audio_input,
    message,
    session_update,
    speak_audio,
    state_of,
    text_turn,
    user_text,
    vad,
)
from tests.support import Driver, types


def test_start_sends_session_created_once() -> None:
    conn = RealtimeConnection(session_id="sess_1")
    out = conn.start()
    assert [e.TYPE for e in out.events] == ["session.created"]
    assert out.effects == []
    with pytest.raises(IllegalTransition):
        conn.start()


def test_input_transition_table() -> None:
    assert set(INPUT_TRANSITIONS) == set(InputState)
    for state, triggers in INPUT_TRANSITIONS.items():
        after_append = InputState.SPEECH if state is InputState.SPEECH else InputState.HAS_AUDIO
        assert triggers["append"] is after_append
        assert triggers["clear"] is InputState.EMPTY
    assert "commit" not in INPUT_TRANSITIONS[InputState.EMPTY]
    assert "speech_started" not in INPUT_TRANSITIONS[InputState.SPEECH]
    assert {s for s, t in INPUT_TRANSITIONS.items() if "speech_stopped" in t} == {InputState.SPEECH}


def test_input_states_follow_appends_speech_and_commits() -> None:
    d = Driver()
    assert d.conn.input_state is InputState.EMPTY
    vad(d, 320, 0.0)
    assert d.conn.input_state is InputState.HAS_AUDIO
    vad(d, 320, 0.9)
    assert d.conn.input_state is InputState.SPEECH
    d.feed(ins.VadFrame(end_ms=640 + 224, duration_ms=224, probability=0.0))
    assert d.conn.input_state is InputState.EMPTY


def test_binary_frame_is_one_invalid_event_error() -> None:
    d = Driver()
    (error,) = d.send(b"\x00\x01")
    assert error["error"]["code"] == "invalid_event"


def test_output_audio_buffer_clear_acknowledges_the_last_response() -> None:
    d = Driver()
    (error,) = d.send({"type": "output_audio_buffer.clear", "event_id": "o1"})
    assert (error["error"]["code"], error["error"]["event_id"]) == ("invalid_value", "o1")
    rid = text_turn(d)
    (cleared,) = d.send({"type": "output_audio_buffer.clear"})
    assert (cleared["type"], cleared["response_id"]) == ("output_audio_buffer.cleared", rid)


def test_non_ascii_text_is_echoed_and_encodes_as_utf8() -> None:
    d = Driver()
    events = d.send(
        '{"type":"conversation.item.create","item":{"type":"message","role":"user",'
        '"content":[{"type":"input_text","text":"h\\u00e9llo \\u2014 日本語 \\ud83d\\ude00"}]}}'
    )
    item_id = events[0]["item"]["id"]
    assert events[0]["item"]["content"][0]["text"] == "héllo — 日本語 😀"
    out = d.conn.receive_frame(
        json.dumps({"type": "conversation.item.retrieve", "item_id": item_id})
    )
    assert "héllo — 日本語 😀" in encode_server_event(out.events[0]).encode("utf-8").decode()


# --- E1: a rejected client event is one error and changes nothing ----------------------------


def busy_driver() -> tuple[Driver, str, str]:
    """A session with history, a response speaking and the user starting to speak over it."""
    d = Driver()
    session_update(
        d,
        audio=audio_input(
            transcription={"model": "whisper-1"},
            turn_detection={"type": "server_vad", "interrupt_response": False},
        ),
    )
    user_text(d, "Tell me a story.", id="item_user")
    rid = text_turn(d, "Go on.")
    speak_audio(d, rid)
    (started,) = vad(d, 320, 0.9)
    d.feed(ins.TranscriptDelta(started["item_id"], "Wait"))
    return d, rid, started["item_id"]


INVALID_FRAMES: list[tuple[Any, str]] = [
    ("not json", "invalid_json"),
    ("[1, 2]", "invalid_event"),
    ('{"type": "nope", "event_id": "x"}', "invalid_value"),
    ('{"type": "response.output_audio.delta"}', "invalid_value"),
    (b"\x00", "invalid_event"),
    ({"event_id": "x"}, "invalid_event"),
    (
        {"type": "session.update", "session": {"type": "realtime", "voice": "ash"}},
        "unknown_parameter",
    ),
    ({"type": "session.update", "session": {"instructions": "x"}}, "missing_required_parameter"),
    ({"type": "session.update", "session": {"type": "transcription"}}, "invalid_value"),
    (
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"output": {"voice": "ash"}}},
        },
        "cannot_update_voice",
    ),
    ({"type": "input_audio_buffer.append", "audio": "@@@"}, "invalid_value"),
    (
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0").decode()},
        "invalid_value",
    ),
    ({"type": "input_audio_buffer.append"}, "missing_required_parameter"),
    (
        {"type": "conversation.item.create", "item": message("user", "x", id="item_user")},
        "item_already_exists",
    ),
    (
        {
            "type": "conversation.item.create",
            "item": message("user", "x"),
            "previous_item_id": "item_nope",
        },
        "invalid_value",
    ),
    ({"type": "conversation.item.create", "item": message("tool", "x")}, "invalid_value"),
    ({"type": "conversation.item.retrieve", "item_id": "item_nope"}, "item_not_found"),
    ({"type": "conversation.item.delete", "item_id": "item_nope"}, "item_not_found"),
    (
        {
            "type": "conversation.item.truncate",
            "item_id": "item_user",
            "content_index": 0,
            "audio_end_ms": 5,
        },
        "invalid_value",
    ),
    (
        {
            "type": "conversation.item.truncate",
            "item_id": "item_user",
            "content_index": -1,
            "audio_end_ms": 5,
        },
        "integer_below_min_value",
    ),
    ({"type": "response.create"}, "conversation_already_has_active_response"),
    (
        {
            "type": "response.create",
            "response": {
                "conversation": "none",
                "input": [{"type": "item_reference", "id": "item_nope"}],
            },
        },
        "item_not_found",
    ),
    ({"type": "response.create", "response": {"modalities": ["text"]}}, "unknown_parameter"),
    ({"type": "response.cancel", "response_id": "resp_nope"}, "response_cancel_not_active"),
    ({"type": "input_audio_buffer.commit", "extra": 1}, "unknown_parameter"),
    (
        '{"type":"session.update","session":{"type":"realtime","instructions":"\\ud800"}}',
        "invalid_json",
    ),
    ('{"type":"session.update","session":{"type":"realtime","\\udfff":1}}', "invalid_json"),
    ('{"type":"response.create","response":{"metadata":{"k":"\ud800"}}}', "invalid_json"),
    (
        '{"type":"session.update","session":{"type":"realtime","tools":[{"type":"function",'
        '"name":"f","parameters":{"x":NaN}}]}}',
        "invalid_json",
    ),
    (
        '{"type":"session.update","session":{"type":"realtime","tools":[{"type":"function",'
        '"name":"f","parameters":{"x":1e999}}]}}',
        "invalid_json",
    ),
    (
        '{"type":"session.update","session":{"type":"realtime","tools":[{"type":"function",'
        '"name":"f","parameters":' + '{"a":' * 500 + "1" + "}" * 500 + "}]}}",
        "invalid_value",
    ),
]


@pytest.mark.parametrize(("frame", "code"), INVALID_FRAMES)
def test_rejected_client_event_is_one_error_and_changes_nothing(frame: Any, code: str) -> None:
    d, _, _ = busy_driver()
    before = state_of(d.conn)
    events = d.send(frame)
    assert types(events) == ["error"]
    assert events[0]["error"]["code"] == code, events[0]["error"]
    assert events[0]["error"]["type"] == "invalid_request_error"
    assert d.last_effects == []
    assert state_of(d.conn) == before
    # what encode_server_event made of it can be sent: no lone surrogate, no NaN
    json.dumps(events[0], ensure_ascii=False, allow_nan=False).encode("utf-8")


def test_the_error_echoes_the_client_event_id() -> None:
    d, _, _ = busy_driver()
    for frame in INVALID_FRAMES:
        if isinstance(frame[0], dict):
            (error,) = d.send({**frame[0], "event_id": "evt_echo"})
            assert error["error"]["event_id"] == "evt_echo", frame


def test_the_session_stays_usable_after_errors() -> None:
    d, rid, speech_item = busy_driver()
    for frame, _ in INVALID_FRAMES:
        d.send(frame)
    stopped = vad(d, 320, 0.0)
    assert stopped[0]["item_id"] == speech_item
    d.feed(ins.TranscriptDone(speech_item, "Wait a moment.", 0.3))
    ended = d.feed(ins.ResponseComplete(rid))
    assert types(ended)[-2:] == ["response.done", "response.created"]
    assert ended[-2]["response"]["status"] == "completed"
    # the user's turn, ended while the first answer spoke, gets the next answer
    assert types(d.send({"type": "response.cancel"}))[-1] == "response.done"
    assert types(d.send({"type": "response.create"})) == ["response.created"]


def test_tool_parameters_may_nest_a_reasonable_depth() -> None:
    d = Driver()
    parameters: dict[str, Any] = {"type": "string"}
    for _ in range(30):
        parameters = {"type": "object", "properties": {"x": parameters}}
    (updated,) = session_update(
        d, tools=[{"type": "function", "name": "f", "parameters": parameters}]
    )
    assert updated["session"]["tools"][0]["parameters"] == parameters


def test_every_engine_result_has_a_handler() -> None:
    results = set(typing.get_args(ins.EngineResult))
    assert ins.TurnScored in results and ins.SpeculationTranscribed in results
    assert set(RealtimeConnection._RESULT_HANDLERS) == results
