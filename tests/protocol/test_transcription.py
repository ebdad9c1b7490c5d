"""Transcription sessions: the GA ``type: "transcription"`` session shape, events and errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol import inputs as ins
from protocol.effects import (
    CommitInputAudio,
    QuietLiveTranscription,
    StartResponse,
    TranscribeLive,
)
from protocol.turns import PARTIAL_QUIET_MS
from tests.protocol.steps import SILENCE, SPEECH
from tests.support import TRACES, Driver, pcm_ms, types

USER_TURN = [
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.added",
    "conversation.item.done",
]


def transcription_driver(**session: Any) -> Driver:
    d = Driver(session_type="transcription")
    if session:
        update(d, **session)
    return d


def update(d: Driver, **session: Any) -> list[dict[str, Any]]:
    return d.send({"type": "session.update", "session": {"type": "transcription", **session}})


def recorded_transcription_session() -> dict[str, Any]:
    """The ``session.created`` of a transcription session recorded from OpenAI (trace T3)."""
    for line in (TRACES / "openai_realtime_ws_probe_capture.txt").read_text().splitlines():
        if '"type":"session.created"' in line and '"transcription"' in line:
            return json.loads(line[line.index("{") :])["session"]
    raise AssertionError("no recorded transcription session.created")


def speak(d: Driver, ms: int, probability: float) -> list[dict[str, Any]]:
    start = int(d.conn.timeline_ms)
    d.append(pcm_ms(ms))
    return d.vad(start, start + ms, probability)


def test_session_created_has_the_recorded_transcription_shape() -> None:
    d = transcription_driver()
    session = d.log[0]["session"]
    recorded = recorded_transcription_session()
    assert set(session) == set(recorded)
    for key in ("type", "object", "include"):
        assert session[key] == recorded[key]
    assert session["audio"] == recorded["audio"]


def test_update_configures_transcription_like_the_recorded_session() -> None:
    d = transcription_driver()
    (updated,) = update(
        d,
        audio={
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "gpt-4o-mini-transcribe"},
                "turn_detection": {"type": "server_vad"},
            }
        },
    )
    audio_in = updated["session"]["audio"]["input"]
    assert audio_in["transcription"] == {
        "model": "gpt-4o-mini-transcribe",
        "language": None,
        "prompt": None,
    }
    assert audio_in["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 200,
    }
    assert "output" not in updated["session"]["audio"]


@pytest.mark.parametrize(
    ("session", "param"),
    [
        ({"model": "gpt-realtime"}, "session.model"),
        ({"instructions": "Be brief."}, "session.instructions"),
        ({"tools": []}, "session.tools"),
        ({"tool_choice": "auto"}, "session.tool_choice"),
        ({"output_modalities": ["text"]}, "session.output_modalities"),
        ({"audio": {"output": {"voice": "ash"}}}, "session.audio.output"),
    ],
)
def test_realtime_only_fields_are_unknown_parameters(session: dict[str, Any], param: str) -> None:
    d = transcription_driver()
    (error,) = update(d, **session)
    assert (error["error"]["code"], error["error"]["param"]) == ("unknown_parameter", param)


def test_the_session_type_cannot_change() -> None:
    d = transcription_driver()
    (error,) = d.send({"type": "session.update", "session": {"type": "realtime"}})
    assert error["error"]["param"] == "session.type"
    realtime = Driver()
    (error,) = realtime.send({"type": "session.update", "session": {"type": "transcription"}})
    assert error["error"]["param"] == "session.type"


@pytest.mark.parametrize(
    "event",
    [
        {"type": "response.create"},
        {"type": "response.cancel"},
        {"type": "conversation.item.retrieve", "item_id": "item_1"},
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": []},
        },
        {"type": "output_audio_buffer.clear"},
    ],
)
def test_conversation_and_response_events_are_refused(event: dict[str, Any]) -> None:
    d = transcription_driver()
    (error,) = d.send({**event, "event_id": "e1"})
    assert (error["error"]["code"], error["error"]["param"], error["error"]["event_id"]) == (
        "invalid_value",
        "type",
        "e1",
    )
    assert len(d.conn.conversation) == 0 and d.conn.responses == {}


def test_a_spoken_segment_is_transcribed_without_any_response() -> None:
    d = transcription_driver()
    started = speak(d, 320, SPEECH)
    assert types(started) == ["input_audio_buffer.speech_started"]
    item_id = started[0]["item_id"]
    # transcription runs even though audio.input.transcription was never set
    assert [e.item_id for e in d.effects if isinstance(e, TranscribeLive)] == [item_id]
    d.feed(ins.TranscriptDelta(item_id, "Hello"))
    assert types(speak(d, 320, SILENCE)) == USER_TURN
    commit = next(e for e in d.effects if isinstance(e, CommitInputAudio))
    assert commit.item_id == item_id
    done = d.feed(ins.TranscriptDone(item_id, "Hello there.", 0.64))
    assert [(e["type"], e.get("delta")) for e in done] == [
        ("conversation.item.input_audio_transcription.delta", " there."),
        ("conversation.item.input_audio_transcription.completed", None),
    ]
    assert done[-1]["usage"] == {"type": "duration", "seconds": 0.64}
    assert "logprobs" not in done[-1]
    assert not [e for e in d.effects if isinstance(e, StartResponse)]
    assert "response.created" not in types(d.log)


def test_manual_commit_when_turn_detection_is_off() -> None:
    d = transcription_driver(audio={"input": {"turn_detection": None}})
    d.append(pcm_ms(400))
    committed = d.send({"type": "input_audio_buffer.commit"})
    assert types(committed) == USER_TURN[1:]
    item_id = committed[0]["item_id"]
    failed = d.feed(ins.TranscriptFailed(item_id, "engine down"))
    assert types(failed) == ["conversation.item.input_audio_transcription.failed"]
    assert failed[0]["error"]["message"] == "engine down"


def test_logprobs_are_sent_only_when_included() -> None:
    logprobs = ({"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},)
    for include, expected in ((None, None), (["item.input_audio_transcription.logprobs"], 1)):
        d = transcription_driver(include=include, audio={"input": {"turn_detection": None}})
        d.append(pcm_ms(200))
        item_id = d.send({"type": "input_audio_buffer.commit"})[0]["item_id"]
        (completed,) = d.feed(ins.TranscriptDone(item_id, "", 0.2, logprobs=logprobs))
        if expected is None:
            assert "logprobs" not in completed
        else:
            assert completed["logprobs"] == [dict(logprobs[0])]


def test_session_defaults_apply_to_transcription_sessions() -> None:
    d = Driver(
        session_type="transcription",
        session_defaults={
            "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.7}}}
        },
    )
    assert d.log[0]["session"]["audio"]["input"]["turn_detection"]["threshold"] == 0.7


def test_live_hypotheses_send_only_the_words_two_of_them_agree_on() -> None:
    d = transcription_driver()
    item_id = speak(d, 320, SPEECH)[0]["item_id"]
    assert d.feed(ins.PartialHypothesis(item_id, "What is")) == []
    (first,) = d.feed(ins.PartialHypothesis(item_id, "What is the"))
    assert (first["type"], first["delta"]) == (
        "conversation.item.input_audio_transcription.delta",
        "What is",
    )
    assert d.feed(ins.PartialHypothesis(item_id, "What is a")) == []  # "the" was revised
    (second,) = d.feed(ins.PartialHypothesis(item_id, "What is a weather"))
    assert second["delta"] == " a"
    assert d.feed(ins.PartialHypothesis("item_unknown", "Hello there")) == []


def test_partials_are_held_back_while_the_speaker_is_quiet() -> None:
    d = transcription_driver()
    item_id = speak(d, 320, SPEECH)[0]["item_id"]
    speak(d, PARTIAL_QUIET_MS - 32, SILENCE)
    assert [e for e in d.effects if isinstance(e, QuietLiveTranscription)] == []
    speak(d, 32, SILENCE)
    speak(d, 32, SPEECH)  # one speech frame: the silence is over
    assert [e for e in d.effects if isinstance(e, QuietLiveTranscription)] == [
        QuietLiveTranscription(item_id, True),
        QuietLiveTranscription(item_id, False),
    ]
