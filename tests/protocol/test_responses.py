"""protocol/responses.py: the phase table and the exact ladder of events a response streams."""

from __future__ import annotations

import base64

import pytest

from protocol import RESPONSE_TRANSITIONS, IllegalTransition, Phase
from protocol import events as ev
from protocol import inputs as ins
from protocol.effects import ResponsePlan
from protocol.responses import ResponseRun
from tests.protocol.steps import (
    audio_input,
    created_id,
    response_create,
    session_update,
    speak_audio,
    start_of,
    text_turn,
    user_text,
)
from tests.support import Driver, pcm_ms, types

AUDIO_PART_OPEN = [
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
]
AUDIO_PART_CLOSE = [
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "conversation.item.done",
    "response.output_item.done",
]
TEXT_PART_CLOSE = [
    "response.output_text.done",
    "response.content_part.done",
    "conversation.item.done",
    "response.output_item.done",
]


def plan(**overrides: object) -> ResponsePlan:
    fields: dict[str, object] = {
        "instructions": "",
        "context": (),
        "tools": (),
        "tool_choice": "auto",
        "output_modalities": ("audio",),
        "max_output_tokens": None,
        "voice": "alloy",
        "speed": 1.0,
        "output_format": "audio/pcm",
    }
    return ResponsePlan(**{**fields, **overrides})  # type: ignore[arg-type]


def out_of_band_run() -> ResponseRun:
    return ResponseRun("resp_1", plan(), conversation=None, conversation_id=None, metadata=None)


# --- the phase table -------------------------------------------------------------------------


def test_phase_table_ends_in_done_with_no_way_out() -> None:
    assert RESPONSE_TRANSITIONS[Phase.DONE] == {}
    for phase, triggers in RESPONSE_TRANSITIONS.items():
        if phase is not Phase.DONE:
            assert {"cancel", "fail"} <= triggers.keys()


def test_output_before_start_is_an_illegal_transition() -> None:
    run = out_of_band_run()
    with pytest.raises(IllegalTransition, match="'output' is not allowed in phase waiting_input"):
        run.text("x")


def test_nothing_is_accepted_after_done() -> None:
    run = out_of_band_run()
    run.start()
    run.complete(truncated=False)
    assert run.is_done
    for attempt in (lambda: run.text("x"), lambda: run.cancel("x"), lambda: run.start()):
        with pytest.raises(IllegalTransition):
            attempt()


def test_output_for_a_response_still_waiting_is_refused_by_the_machine() -> None:
    d = Driver()
    d.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": base64.b64encode(b"\0\0").decode()}],
            },
        }
    )
    rid = d.send({"type": "response.create"})[-1]["response"]["id"]
    with pytest.raises(IllegalTransition, match="before it started"):
        d.feed(ins.AudioOut(rid, pcm_ms(20), "x"))


def test_text_inside_an_audio_message_is_an_illegal_transition() -> None:
    d = Driver()
    rid = text_turn(d)
    speak_audio(d, rid, ("Hi",))
    with pytest.raises(IllegalTransition, match="text output inside its open audio message"):
        d.feed(ins.TextOut(rid, "x"))


def test_audio_inside_a_text_message_is_an_illegal_transition() -> None:
    d = Driver()
    rid = text_turn(d, output_modalities=["text"])
    d.feed(ins.TextOut(rid, "Hi"))
    with pytest.raises(IllegalTransition, match="audio output inside its open text message"):
        d.feed(ins.AudioOut(rid, pcm_ms(20), "x"))


# --- ladders ---------------------------------------------------------------------------------


def test_audio_response_ladder() -> None:
    d = Driver()
    rid = text_turn(d)
    events = speak_audio(d, rid, ("Hi", " there."))
    assert types(events) == [
        *AUDIO_PART_OPEN,
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
    ]
    assert events[2]["part"] == {"type": "audio", "transcript": ""}
    assert base64.b64decode(events[4]["delta"]) == pcm_ms(20)
    done = d.feed(ins.ResponseComplete(rid, input_tokens=12, output_tokens=3))
    assert types(done) == [*AUDIO_PART_CLOSE, "response.done"]
    assert done[1]["transcript"] == "Hi there."
    assert done[2]["part"] == {"type": "audio", "transcript": "Hi there."}
    response = done[-1]["response"]
    assert (response["status"], response["status_details"]) == ("completed", None)
    assert response["output"] == [
        {
            "id": events[0]["item"]["id"],
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_audio", "transcript": "Hi there."}],
        }
    ]
    assert response["usage"]["input_tokens"] == 12
    assert response["usage"]["output_tokens"] == 3
    assert response["usage"]["total_tokens"] == 15


def test_audio_without_new_transcript_sends_only_the_audio_delta() -> None:
    d = Driver()
    rid = text_turn(d)
    speak_audio(d, rid, ("Hi",))
    assert types(d.feed(ins.AudioOut(rid, pcm_ms(20)))) == ["response.output_audio.delta"]


def test_text_response_ladder() -> None:
    d = Driver()
    rid = text_turn(d, output_modalities=["text"])
    events = d.feed(ins.TextOut(rid, "Hi")) + d.feed(ins.TextOut(rid, " there."))
    assert types(events) == [
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
    ]
    assert events[2]["part"] == {"type": "text", "text": ""}
    done = d.feed(ins.ResponseComplete(rid))
    assert types(done) == [*TEXT_PART_CLOSE, "response.done"]
    assert done[0]["text"] == "Hi there."
    assert done[-1]["response"]["output"][0]["content"] == [
        {"type": "output_text", "text": "Hi there."}
    ]


def test_tool_call_ladder_is_emitted_whole() -> None:
    d = Driver()
    rid = text_turn(d)
    events = d.feed(ins.ToolCallOut(rid, "call_7", "get_weather", '{"city":"Oslo"}'))
    assert types(events) == [
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "conversation.item.done",
        "response.output_item.done",
    ]
    assert events[0]["item"] == {
        "id": events[0]["item"]["id"],
        "type": "function_call",
        "status": "in_progress",
        "call_id": "call_7",
        "name": "get_weather",
        "arguments": "",
    }
    assert (events[3]["name"], events[3]["arguments"]) == ("get_weather", '{"city":"Oslo"}')
    assert events[-1]["item"]["status"] == "completed"
    assert events[-1]["item"]["arguments"] == '{"city":"Oslo"}'


def test_tool_call_without_arguments_or_call_id_gets_a_call_id_and_no_delta() -> None:
    d = Driver()
    rid = text_turn(d)
    events = d.feed(ins.ToolCallOut(rid, "", "ping", ""))
    assert "response.function_call_arguments.delta" not in types(events)
    assert events[0]["item"]["call_id"].startswith("call_")


def test_speech_then_tool_call_then_speech_are_three_output_items() -> None:
    d = Driver()
    rid = text_turn(d)
    events = speak_audio(d, rid, ("Let me check.",))
    events += d.feed(ins.ToolCallOut(rid, "call_1", "lookup", "{}"))
    events += speak_audio(d, rid, ("Done.",))
    events += d.feed(ins.ResponseComplete(rid))
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [
        (0, "message"),
        (1, "function_call"),
        (2, "message"),
    ]
    output = events[-1]["response"]["output"]
    assert [i["type"] for i in output] == ["message", "function_call", "message"]
    assert output[2]["content"][0]["transcript"] == "Done."


def test_truncated_generation_ends_incomplete_for_max_output_tokens() -> None:
    d = Driver()
    rid = text_turn(d, max_output_tokens=5)
    assert d.log[-1]["response"]["max_output_tokens"] == 5
    speak_audio(d, rid, ("One two",))
    done = d.feed(ins.ResponseComplete(rid, 10, 5, truncated=True))
    response = done[-1]["response"]
    assert (response["status"], response["status_details"]) == (
        "incomplete",
        {"type": "incomplete", "reason": "max_output_tokens"},
    )
    assert response["output"][0]["status"] == "incomplete"
    assert done[-2]["item"]["status"] == "incomplete"


def test_failed_response_is_done_failed_then_a_server_error() -> None:
    d = Driver()
    rid = text_turn(d)
    speak_audio(d, rid, ("Hel",))
    events = d.feed(ins.ResponseFailed(rid, "the TTS engine crashed", code="tts_error"))
    assert types(events) == [*AUDIO_PART_CLOSE, "response.done", "error"]
    response = events[-2]["response"]
    assert response["status"] == "failed"
    assert response["status_details"] == {
        "type": "failed",
        "error": {"type": "server_error", "code": "tts_error", "message": "the TTS engine crashed"},
    }
    assert events[-1]["error"]["type"] == "server_error"
    assert events[-1]["error"]["code"] == "tts_error"
    assert rid in events[-1]["error"]["message"]
    assert d.conn.default_response_id is None


def test_a_response_that_waits_can_fail() -> None:
    d = Driver()
    d.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": base64.b64encode(b"\0\0").decode()}],
            },
        }
    )
    rid = d.send({"type": "response.create"})[-1]["response"]["id"]
    events = d.feed(ins.ResponseFailed(rid, "no"))
    assert types(events) == ["response.done", "error"]
    assert events[0]["response"]["output"] == []


def test_response_created_describes_the_plan() -> None:
    d = Driver()
    session_update(d, audio={"output": {"voice": "marin"}})
    d.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "x"}],
            },
        }
    )
    (created,) = d.send(
        {
            "type": "response.create",
            "response": {"metadata": {"topic": "weather"}, "audio": {"output": {"voice": "cedar"}}},
        }
    )
    response = created["response"]
    assert response == {
        "object": "realtime.response",
        "id": response["id"],
        "status": "in_progress",
        "status_details": None,
        "output": [],
        "conversation_id": d.conn.conversation_id,
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "cedar"}},
        "usage": None,
        "metadata": {"topic": "weather"},
    }


def test_cancel_closes_open_parts_as_incomplete() -> None:
    run = out_of_band_run()
    run.start()
    run.audio(pcm_ms(20), "Hi")
    events = run.cancel("client_cancelled")
    assert [type(e) for e in events] == [
        ev.ResponseOutputAudioDone,
        ev.ResponseOutputAudioTranscriptDone,
        ev.ResponseContentPartDone,
        ev.ResponseOutputItemDone,  # out of band: no conversation.item.done
        ev.ResponseDone,
    ]
    done = events[-1].to_wire()["response"]
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert done["output"][0]["status"] == "incomplete"
    assert done["conversation_id"] is None


def test_audio_ms_counts_bytes_of_the_output_format() -> None:
    run = ResponseRun(
        "resp_1",
        plan(output_format="audio/pcmu"),
        conversation=None,
        conversation_id=None,
        metadata=None,
    )
    run.start()
    run.audio(b"\xff" * 800, "a")
    run.audio(b"\xff" * 800, "b")
    run.complete(truncated=False)
    (audio_ms, segments) = next(iter(run.audio_items.values()))
    assert (audio_ms, segments) == (200.0, [(0.0, "a"), (100.0, "b")])
    assert run.audio_bytes_sent == 1600


def test_a_response_answers_in_the_sessions_transcription_language_else_english() -> None:
    d = Driver()
    assert start_of(d, text_turn(d)).plan.language == "en"
    d.feed(ins.ResponseComplete(d.conn.last_response_id))
    session_update(d, audio=audio_input(transcription={"model": "whisper-1", "language": "de"}))
    assert start_of(d, text_turn(d)).plan.language == "de"


@pytest.mark.parametrize("parallel", [None, True, False])
def test_parallel_tool_calls_false_keeps_one_call_per_response(parallel: bool | None) -> None:
    d = Driver()
    if parallel is not None:
        session_update(d, parallel_tool_calls=parallel)
    rid = text_turn(d)
    assert start_of(d, rid).plan.parallel_tool_calls is parallel
    d.feed(ins.ToolCallOut(rid, "call_1", "lookup", "{}"))
    d.feed(ins.ToolCallOut(rid, "call_2", "lookup", "{}"))
    done = d.feed(ins.ResponseComplete(rid))[-1]["response"]
    calls = [o["call_id"] for o in done["output"] if o["type"] == "function_call"]
    assert calls == (["call_1"] if parallel is False else ["call_1", "call_2"])


def test_response_create_overrides_the_sessions_parallel_tool_calls() -> None:
    d = Driver()
    session_update(d, parallel_tool_calls=False)
    user_text(d)
    rid = created_id(response_create(d, parallel_tool_calls=True))
    assert start_of(d, rid).plan.parallel_tool_calls is True


def test_the_plan_carries_the_sessions_truncation() -> None:
    d = Driver()
    assert start_of(d, text_turn(d)).plan.truncation == "auto"
    d.feed(ins.ResponseComplete(d.conn.last_response_id))
    cut = {"type": "retention_ratio", "retention_ratio": 0.5}
    session_update(d, truncation=cut)
    assert start_of(d, text_turn(d)).plan.truncation == cut


def test_reasoning_effort_comes_from_the_response_else_the_session() -> None:
    d = Driver()
    assert start_of(d, text_turn(d)).plan.reasoning_effort is None
    d.feed(ins.ResponseComplete(d.conn.last_response_id))
    session_update(d, reasoning={"effort": "low"})
    assert start_of(d, text_turn(d)).plan.reasoning_effort == "low"
    d.feed(ins.ResponseComplete(d.conn.last_response_id))
    user_text(d)
    rid = created_id(response_create(d, reasoning={"effort": "high"}))
    assert start_of(d, rid).plan.reasoning_effort == "high"
