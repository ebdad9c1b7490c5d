"""protocol/playout.py and the connection's WebRTC transport: the output audio buffer's events."""

from __future__ import annotations

import base64
import json

import pytest

from protocol import RealtimeConnection
from protocol import effects as fx
from protocol import inputs as ins
from protocol.errors import IllegalTransition
from protocol.playout import Playout, PlayoutState
from tests.support import pcm_ms


def kinds(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.TYPE for e in events]


def test_stopped_comes_after_the_response_is_done_and_its_audio_played_out() -> None:
    p = Playout()
    assert p.queue("resp_1", "item_1", 500) == []
    assert kinds(p.started()) == ["output_audio_buffer.started"]
    assert p.response_finished("resp_1") == []  # still playing
    assert kinds(p.drained()) == ["output_audio_buffer.stopped"]
    assert p.state is PlayoutState.IDLE and not p.active


def test_a_buffer_that_runs_dry_mid_response_has_not_stopped() -> None:
    p = Playout()
    p.queue("resp_1", "item_1", 100)
    p.started()
    assert p.drained() == [] and p.state is PlayoutState.DRY
    p.queue("resp_1", "item_1", 100)
    assert p.started() == []  # one "started" per response
    p.drained()
    assert kinds(p.response_finished("resp_1")) == ["output_audio_buffer.stopped"]


def test_clear_reports_cleared_and_what_was_heard_once_flushed() -> None:
    p = Playout()
    p.queue("resp_1", "item_1", 800)
    p.started()
    assert kinds(p.clear()) == ["output_audio_buffer.cleared"]
    assert not p.active
    assert p.response_finished("resp_1") == []  # no "stopped" after a clear
    assert p.flushed(300.0) == ("item_1", 500.0)
    assert p.clear() == []


def test_a_new_response_behind_a_playing_one_ends_the_first_and_starts_the_second() -> None:
    p = Playout()
    p.queue("resp_1", "item_1", 100)
    p.started()
    p.response_finished("resp_1")
    events = p.queue("resp_2", "item_2", 100)
    assert kinds(events) == ["output_audio_buffer.stopped", "output_audio_buffer.started"]
    assert [e.response_id for e in events] == ["resp_1", "resp_2"]


def test_an_impossible_track_report_is_a_bug() -> None:
    p = Playout()
    with pytest.raises(IllegalTransition):
        p._go("start")


def webrtc() -> RealtimeConnection:
    conn = RealtimeConnection(transport="webrtc")
    conn.start()
    return conn


def test_append_is_refused_over_webrtc() -> None:
    conn = webrtc()
    audio = base64.b64encode(pcm_ms(20)).decode()
    frame = {"type": "input_audio_buffer.append", "audio": audio, "event_id": "e1"}
    out = conn.receive_frame(json.dumps(frame))
    (error,) = out.events
    assert error.TYPE == "error" and "WebRTC" in error.message
    assert error.client_event_id == "e1"
    assert out.effects == []


def test_track_audio_joins_the_input_buffer() -> None:
    conn = webrtc()
    out = conn.feed(ins.MediaAudio(20.0))
    assert out.effects == [fx.AcceptMediaAudio(detect_speech=True)]
    assert conn.timeline_ms == 20.0


def test_answer_audio_goes_to_the_track_not_into_events() -> None:
    conn = webrtc()
    conn.receive_frame(json.dumps({"type": "response.create"}))
    (response_id,) = conn.responses
    out = conn.feed(ins.AudioOut(response_id, b"\x00\x00" * 2400, "Hello."))
    assert "response.output_audio.delta" not in kinds(out.events)
    assert "response.output_audio_transcript.delta" in kinds(out.events)
    (play,) = [e for e in out.effects if isinstance(e, fx.PlayAudio)]
    assert play.response_id == response_id and play.format == "audio/pcm"
    assert kinds(conn.feed(ins.PlayoutStarted()).events) == ["output_audio_buffer.started"]


def test_output_audio_buffer_clear_flushes_the_track_over_webrtc() -> None:
    conn = webrtc()
    conn.receive_frame(json.dumps({"type": "response.create"}))
    (response_id,) = conn.responses
    conn.feed(ins.AudioOut(response_id, b"\x00\x00" * 24_000, "Hello there."))  # 1 s queued
    conn.feed(ins.PlayoutStarted())
    conn.receive_frame(json.dumps({"type": "response.cancel"}))
    out = conn.receive_frame(json.dumps({"type": "output_audio_buffer.clear"}))
    assert kinds(out.events) == ["output_audio_buffer.cleared"]
    assert out.effects == [fx.ClearPlayout()]
    # 600 ms were still queued: the item keeps what was heard, as a truncate would
    (truncated,) = conn.feed(ins.PlayoutCleared(600.0)).events
    assert truncated.TYPE == "conversation.item.truncated" and truncated.audio_end_ms == 400


@pytest.mark.parametrize("transport", ["webrtc", "phone"])
def test_clearing_a_call_whose_line_plays_nothing_is_quietly_nothing(transport: str) -> None:
    conn = RealtimeConnection(transport=transport)
    conn.start()
    out = conn.receive_frame(json.dumps({"type": "output_audio_buffer.clear", "event_id": "c1"}))
    assert out.events == [] and out.effects == []
    conn.receive_frame(json.dumps({"type": "response.create"}))
    (response_id,) = conn.responses
    conn.feed(ins.AudioOut(response_id, b"\x00\x00" * 2400, "Hello."))
    conn.feed(ins.PlayoutStarted())
    conn.feed(ins.ResponseComplete(response_id))
    conn.feed(ins.PlayoutStopped())
    out = conn.receive_frame(json.dumps({"type": "output_audio_buffer.clear"}))
    assert out.events == [] and out.effects == []  # it has played out: nothing is cleared
