"""A phone call's transport: key presses (DTMF) and the call's own audio."""

from __future__ import annotations

import base64
import json

import pytest

from protocol import RealtimeConnection, encode_server_event
from protocol import inputs as ins
from tests.support import pcm_ms, validate_with_sdk


def phone() -> RealtimeConnection:
    conn = RealtimeConnection(transport="phone")
    conn.start()
    return conn


@pytest.mark.parametrize("key", list("0123456789*#ABCD"))
def test_a_key_press_is_told_to_the_client_as_openai_does(key: str) -> None:
    conn = phone()
    (event,) = conn.feed(ins.DtmfReceived(key, 1_765_000_000)).events
    wire = json.loads(encode_server_event(event))
    validate_with_sdk(wire)
    assert wire["type"] == "input_audio_buffer.dtmf_event_received"
    assert (wire["event"], wire["received_at"]) == (key, 1_765_000_000)
    assert wire["event_id"]


@pytest.mark.parametrize("key", ["", "E", "12", "%", "a"])
def test_anything_but_a_keypad_key_is_dropped(key: str) -> None:
    out = phone().feed(ins.DtmfReceived(key, 1))
    assert out.events == [] and out.effects == []


def test_a_key_press_changes_no_other_state() -> None:
    conn = phone()
    conn.receive_frame(json.dumps({"type": "response.create"}))
    before = (conn.input_state, dict(conn.responses), conn.timeline_ms)
    conn.feed(ins.DtmfReceived("1", 1))
    assert (conn.input_state, dict(conn.responses), conn.timeline_ms) == before


def test_a_phone_call_plays_its_own_audio_like_a_webrtc_call() -> None:
    conn = phone()
    assert conn.playout is not None
    audio = base64.b64encode(pcm_ms(20)).decode()
    (error,) = conn.receive_frame(
        json.dumps({"type": "input_audio_buffer.append", "audio": audio})
    ).events
    assert error.TYPE == "error" and "phone line" in error.message


def test_an_unknown_transport_is_a_bug() -> None:
    with pytest.raises(ValueError):
        RealtimeConnection(transport="carrier-pigeon")
