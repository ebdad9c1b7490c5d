"""Whole flows through RealtimeConnection alone, each with its exact order of events.

Every event emitted here has passed the SDK's validation and SequenceChecker in the Driver.
"""

from __future__ import annotations

import pytest

from protocol import inputs as ins
from protocol.effects import (
    CancelResponse,
    ClearInputAudio,
    CommitInputAudio,
    StartResponse,
)
from protocol.items import FunctionCallItem, FunctionCallOutputItem, MessageItem
from tests.protocol.steps import (
    audio_input,
    create_item,
    created_id,
    effects_of,
    message,
    response_create,
    session_update,
    speak_audio,
    start_of,
    text_turn,
    user_text,
    vad,
    voice_turn,
)
from tests.support import Driver, pcm_ms, types

USER_TURN_COMMITTED = [
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.added",
    "conversation.item.done",
    "response.created",
]
AUDIO_FIRST_CHUNK = [
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_audio_transcript.delta",
    "response.output_audio.delta",
]
AUDIO_END = [
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "conversation.item.done",
    "response.output_item.done",
    "response.done",
]


def transcribing_driver() -> Driver:
    d = Driver()
    session_update(d, audio=audio_input(transcription={"model": "gpt-4o-mini-transcribe"}))
    return d


def starts(d: Driver) -> list[StartResponse]:
    return effects_of(d, StartResponse)


# --- server-VAD voice turn -------------------------------------------------------------------


def test_server_vad_voice_turn_with_transcription() -> None:
    d = transcribing_driver()
    assert vad(d, 320, 0.0) == []
    (started,) = vad(d, 320, 0.9)
    item_id = started["item_id"]
    assert (started["type"], started["audio_start_ms"]) == (
        "input_audio_buffer.speech_started",
        320,
    )

    committed = vad(d, 320, 0.0)
    assert types(committed) == USER_TURN_COMMITTED
    stopped, buffer_committed, added, done, created = committed
    assert (stopped["item_id"], stopped["audio_end_ms"]) == (item_id, 640 + 224)
    assert buffer_committed == {
        "type": "input_audio_buffer.committed",
        "event_id": buffer_committed["event_id"],
        "previous_item_id": None,
        "item_id": item_id,
    }
    user_item = {
        "id": item_id,
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": None}],
    }
    assert added["item"] == done["item"] == user_item
    (commit,) = effects_of(d, CommitInputAudio)
    assert (commit.item_id, commit.start_ms, commit.end_ms) == (item_id, 320 - 300, 864)
    rid = created["response"]["id"]
    assert starts(d) == []  # the response waits for the transcript

    transcribed = d.feed(ins.TranscriptDone(item_id, "What's the time?", 0.86))
    assert types(transcribed) == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert transcribed[0]["delta"] == "What's the time?"
    assert transcribed[1]["transcript"] == "What's the time?"
    assert transcribed[1]["usage"] == {"type": "duration", "seconds": 0.86}
    (start,) = d.last_effects
    assert isinstance(start, StartResponse) and start.response_id == rid
    assert [i.text for i in start.plan.context] == ["What's the time?"]

    spoken = speak_audio(d, rid, ("It's ", "noon."))
    assert types(spoken) == [
        *AUDIO_FIRST_CHUNK,
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
    ]
    assert spoken[1]["previous_item_id"] == item_id
    finished = d.feed(ins.ResponseComplete(rid, 20, 4))
    assert types(finished) == AUDIO_END
    assert finished[-1]["response"]["status"] == "completed"
    assert d.conn.default_response_id is None


def test_voice_turn_without_transcription_sends_no_transcript_events() -> None:
    d = Driver()
    events = vad(d, 320, 0.9) + vad(d, 320, 0.0)
    assert types(events) == ["input_audio_buffer.speech_started", *USER_TURN_COMMITTED]
    assert d.feed(ins.TranscriptDone(events[0]["item_id"], "Hi.", 0.3)) == []
    assert start_of(d, created_id(events)).plan.context[0].text == "Hi."


def test_live_transcript_deltas_during_speech_then_the_remainder() -> None:
    d = transcribing_driver()
    (started,) = vad(d, 320, 0.9)
    item_id = started["item_id"]
    first = d.feed(ins.TranscriptDelta(item_id, "What's"))
    second = d.feed(ins.TranscriptDelta(item_id, " the"))
    assert [(e["type"], e["delta"]) for e in first + second] == [
        ("conversation.item.input_audio_transcription.delta", "What's"),
        ("conversation.item.input_audio_transcription.delta", " the"),
    ]
    vad(d, 320, 0.0)
    final = d.feed(ins.TranscriptDone(item_id, "What's the time?", 0.6))
    assert [e.get("delta", e.get("transcript")) for e in final] == [" time?", "What's the time?"]


def test_final_transcript_may_revise_the_live_one() -> None:
    d = transcribing_driver()
    (started,) = vad(d, 320, 0.9)
    d.feed(ins.TranscriptDelta(started["item_id"], "Watts"))
    vad(d, 320, 0.0)
    final = d.feed(ins.TranscriptDone(started["item_id"], "What's up?", 0.6))
    assert types(final) == ["conversation.item.input_audio_transcription.completed"]
    assert final[0]["transcript"] == "What's up?"


def test_transcription_failure_is_reported_and_the_response_still_starts() -> None:
    d = transcribing_driver()
    events = vad(d, 320, 0.9) + vad(d, 320, 0.0)
    failed = d.feed(ins.TranscriptFailed(events[0]["item_id"], "model unavailable"))
    assert types(failed) == ["conversation.item.input_audio_transcription.failed"]
    assert failed[0]["error"]["message"] == "model unavailable"
    start_of(d, created_id(events))


def test_second_voice_turn_follows_the_first_answer() -> None:
    d = Driver()
    first = vad(d, 320, 0.9) + vad(d, 320, 0.0)
    d.feed(ins.TranscriptDone(first[0]["item_id"], "Hi.", 0.3))
    rid = created_id(first)
    answer = speak_audio(d, rid)[0]["item"]["id"]
    d.feed(ins.ResponseComplete(rid))
    second = vad(d, 320, 0.9) + vad(d, 320, 0.0)
    assert second[2]["previous_item_id"] == answer  # as in the recorded trace (seq 3)
    assert [i.id for i in d.conn.conversation] == [
        first[0]["item_id"],
        answer,
        second[0]["item_id"],
    ]


def test_create_response_false_commits_without_a_response() -> None:
    d = Driver()
    session_update(
        d, audio=audio_input(turn_detection={"type": "server_vad", "create_response": False})
    )
    events = vad(d, 320, 0.9) + vad(d, 320, 0.0)
    assert types(events) == ["input_audio_buffer.speech_started", *USER_TURN_COMMITTED[:-1]]


# --- text turns ------------------------------------------------------------------------------


def test_text_turn_waits_for_response_create_then_speaks() -> None:
    d = Driver()
    assert types(user_text(d, "Say hi")) == ["conversation.item.added", "conversation.item.done"]
    assert d.last_effects == []
    (created,) = response_create(d)
    assert created["type"] == "response.created"
    (start,) = d.last_effects
    assert isinstance(start, StartResponse) and start.response_id == created["response"]["id"]
    assert [i.text for i in start.plan.context] == ["Say hi"]
    assert start.plan.output_modalities == ("audio",)
    rid = start.response_id
    events = speak_audio(d, rid, ("Hi!",)) + d.feed(ins.ResponseComplete(rid))
    assert types(events) == [*AUDIO_FIRST_CHUNK, *AUDIO_END]


def test_text_only_turn_streams_text() -> None:
    d = Driver()
    session_update(d, output_modalities=["text"])
    user_text(d, "Say hi in three words")
    rid = created_id(response_create(d))
    assert start_of(d, rid).plan.output_modalities == ("text",)
    events = []
    for delta in ("Hi", " there", ",", " friend", "!"):
        events += d.feed(ins.TextOut(rid, delta))
    events += d.feed(ins.ResponseComplete(rid))
    # the order recorded from OpenAI (sources.md T3, probe 8)
    assert types(events) == [
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 5,
        "response.output_text.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
    ]
    assert events[-5]["text"] == "Hi there, friend!"


def test_response_create_can_ask_for_text_in_an_audio_session() -> None:
    d = Driver()
    rid = text_turn(d, output_modalities=["text"])
    assert d.log[-1]["response"]["output_modalities"] == ["text"]
    assert types(d.feed(ins.TextOut(rid, "ok")))[-1] == "response.output_text.delta"


# --- function calls --------------------------------------------------------------------------


def test_function_call_then_follow_up_response_sees_the_history() -> None:
    d = Driver()
    tool = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}
    session_update(d, tools=[tool])
    user_text(d, "What time is it?")
    rid = created_id(response_create(d))
    assert start_of(d, rid).plan.tools == (tool,)
    call = d.feed(ins.ToolCallOut(rid, "call_1", "get_time", '{"tz":"UTC"}'))
    done = d.feed(ins.ResponseComplete(rid))
    assert types(done) == ["response.done"]
    assert done[0]["response"]["output"] == [call[-1]["item"]]
    assert call[-1]["item"]["status"] == "completed"
    # nothing happens until the client answers and asks again
    output = create_item(
        d, {"type": "function_call_output", "call_id": "call_1", "output": "12:00"}
    )
    assert types(output) == ["conversation.item.added", "conversation.item.done"]
    assert d.last_effects == []
    follow_up = created_id(response_create(d))
    context = start_of(d, follow_up).plan.context
    assert [type(i) for i in context] == [MessageItem, FunctionCallItem, FunctionCallOutputItem]
    assert (context[1].call_id, context[1].arguments) == ("call_1", '{"tz":"UTC"}')
    assert context[2].output == "12:00"


# --- interruption and cancel -----------------------------------------------------------------


def test_barge_in_cancels_the_response_and_drops_its_late_output() -> None:
    d = Driver()
    rid = text_turn(d)
    speak_audio(d, rid, ("Once upon",))
    interrupted = vad(d, 320, 0.9)
    assert types(interrupted) == [
        "input_audio_buffer.speech_started",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
    ]
    response = interrupted[-1]["response"]
    assert (response["id"], response["status"], response["status_details"]) == (
        rid,
        "cancelled",
        {"type": "cancelled", "reason": "turn_detected"},
    )
    assert effects_of(d, CancelResponse) == [CancelResponse(rid, "turn_detected")]
    # the engines are slower than the cancel: what they still produce is dropped
    assert speak_audio(d, rid, ("a time",)) == []
    assert d.feed(ins.TextOut(rid, "x")) == []
    assert d.feed(ins.ToolCallOut(rid, "c", "f", "{}")) == []
    assert d.feed(ins.ResponseComplete(rid)) == []
    assert d.feed(ins.ResponseFailed(rid, "late")) == []
    # the interrupting speech becomes the next user turn with its own response
    next_turn = vad(d, 320, 0.0)
    assert types(next_turn) == USER_TURN_COMMITTED
    assert created_id(next_turn) != rid


def test_barge_in_cancels_a_response_still_waiting_for_its_transcript() -> None:
    d = Driver()
    first = vad(d, 320, 0.9) + vad(d, 320, 0.0)
    rid = created_id(first)
    interrupted = vad(d, 320, 0.9)
    assert types(interrupted) == ["input_audio_buffer.speech_started", "response.done"]
    assert interrupted[-1]["response"]["status_details"]["reason"] == "turn_detected"
    assert d.feed(ins.TranscriptDone(first[0]["item_id"], "Hi", 0.3)) == []
    assert not [s for s in starts(d) if s.response_id == rid]


def test_interrupt_response_false_lets_the_response_finish() -> None:
    d = Driver()
    session_update(
        d, audio=audio_input(turn_detection={"type": "server_vad", "interrupt_response": False})
    )
    rid = text_turn(d)
    speak_audio(d, rid)
    assert types(vad(d, 320, 0.9)) == ["input_audio_buffer.speech_started"]
    assert effects_of(d, CancelResponse) == []
    # the user's turn is committed but no second default response starts beside the first
    assert types(vad(d, 320, 0.0)) == USER_TURN_COMMITTED[:-1]
    assert types(speak_audio(d, rid, ("more",))) == [
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
    ]
    (done,) = [e for e in d.feed(ins.ResponseComplete(rid)) if e["type"] == "response.done"]
    assert done["response"]["status"] == "completed"


def test_a_turn_ended_during_an_uninterrupted_response_is_answered_after_it() -> None:
    d = Driver()
    session_update(
        d, audio=audio_input(turn_detection={"type": "server_vad", "interrupt_response": False})
    )
    rid = text_turn(d)
    speak_audio(d, rid)
    turn = voice_turn(d)
    assert "response.created" not in types(turn)
    (item_id,) = [e["item_id"] for e in turn if e["type"] == "input_audio_buffer.committed"]
    d.feed(ins.TranscriptDone(item_id, "And then?", 0.3))
    after = d.feed(ins.ResponseComplete(rid))
    assert types(after)[-2:] == ["response.done", "response.created"]
    second = created_id(after)
    assert start_of(d, second).plan.context[-1].id == item_id


def test_client_cancel_ends_the_active_response() -> None:
    d = Driver()
    rid = text_turn(d)
    speak_audio(d, rid)
    events = d.send({"type": "response.cancel", "event_id": "c1"})
    assert types(events) == AUDIO_END
    assert events[-1]["response"]["status_details"] == {
        "type": "cancelled",
        "reason": "client_cancelled",
    }
    assert d.last_effects == [CancelResponse(rid, "client_cancelled")]
    assert speak_audio(d, rid) == []


def test_client_cancel_by_response_id() -> None:
    d = Driver()
    rid = text_turn(d)
    (done,) = d.send({"type": "response.cancel", "response_id": rid})
    assert (done["type"], done["response"]["status"]) == ("response.done", "cancelled")
    assert done["response"]["output"] == []


def test_cancel_when_idle_is_response_cancel_not_active() -> None:
    d = Driver()
    (error,) = d.send({"type": "response.cancel", "event_id": "cancel_1"})
    assert error["error"] == {
        "type": "invalid_request_error",
        "code": "response_cancel_not_active",
        "message": error["error"]["message"],
        "param": None,
        "event_id": "cancel_1",
    }
    rid = text_turn(d)
    d.feed(ins.ResponseComplete(rid))
    (error,) = d.send({"type": "response.cancel", "response_id": rid})
    assert (error["error"]["code"], error["error"]["param"]) == (
        "response_cancel_not_active",
        "response_id",
    )


def test_second_response_create_is_rejected_and_the_first_continues() -> None:
    d = Driver()
    rid = text_turn(d)
    speak_audio(d, rid, ("One",))
    (error,) = response_create(d, event_id="agents_py_response_create_2")
    assert error["error"]["code"] == "conversation_already_has_active_response"
    assert error["error"]["event_id"] == "agents_py_response_create_2"
    assert rid in error["error"]["message"]
    assert d.last_effects == []
    assert types(speak_audio(d, rid, (" two",))) == [
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
    ]
    assert d.feed(ins.ResponseComplete(rid))[-1]["response"]["output"][0]["content"] == [
        {"type": "output_audio", "transcript": "One two"}
    ]
    assert types(response_create(d)) == ["response.created"]


# --- out-of-band responses and response.create input -----------------------------------------


def test_out_of_band_response_stays_out_of_the_conversation() -> None:
    d = Driver()
    user_text(d, "Tell me about Oslo.")
    items_before = [i.id for i in d.conn.conversation]
    (created,) = response_create(
        d,
        conversation="none",
        output_modalities=["text"],
        instructions="Classify the topic.",
        metadata={"purpose": "topic"},
    )
    rid = created["response"]["id"]
    assert created["response"]["conversation_id"] is None
    assert created["response"]["metadata"] == {"purpose": "topic"}
    plan = start_of(d, rid).plan
    assert plan.instructions == "Classify the topic."
    assert [i.id for i in plan.context] == items_before  # no input: the default conversation
    events = d.feed(ins.TextOut(rid, "travel")) + d.feed(ins.ResponseComplete(rid))
    assert "conversation.item.added" not in types(events)
    assert "conversation.item.done" not in types(events)
    assert events[-1]["response"]["conversation_id"] is None
    assert [i.id for i in d.conn.conversation] == items_before


def test_out_of_band_response_runs_beside_a_default_one() -> None:
    d = Driver()
    default = text_turn(d)
    side = created_id(response_create(d, conversation="none", output_modalities=["text"]))
    d.feed(ins.TextOut(side, "summary"))
    speak_audio(d, default)
    assert d.feed(ins.ResponseComplete(side))[-1]["response"]["id"] == side
    assert d.conn.default_response_id == default
    # cancelling without an id cancels the default response, not the side one
    (done,) = d.send({"type": "response.cancel"})[-1:]
    assert done["response"]["id"] == default


def test_response_input_references_and_inline_items_are_its_context() -> None:
    d = Driver()
    user_text(d, "first", id="item_1")
    user_text(d, "second", id="item_2")
    inline = message("user", "inline", id="item_inline")
    rid = created_id(
        response_create(
            d, conversation="none", input=[{"type": "item_reference", "id": "item_2"}, inline]
        )
    )
    assert [i.id for i in start_of(d, rid).plan.context] == ["item_2", "item_inline"]
    assert "item_inline" not in d.conn.conversation


def test_response_input_unknown_reference_is_an_error_naming_its_index() -> None:
    d = Driver()
    user_text(d, "first", id="item_1")
    (error,) = response_create(
        d,
        event_id="r1",
        input=[{"type": "item_reference", "id": "item_1"}, {"type": "item_reference", "id": "x"}],
    )
    assert (error["error"]["code"], error["error"]["param"], error["error"]["event_id"]) == (
        "item_not_found",
        "response.input[1].id",
        "r1",
    )
    assert d.conn.responses == {}


# --- the input audio buffer ------------------------------------------------------------------


@pytest.mark.parametrize("ms", [0, 99])
def test_commit_of_less_than_100_ms_is_commit_empty(ms: int) -> None:
    d = Driver()
    session_update(d, audio=audio_input(turn_detection=None))
    if ms:
        d.append(pcm_ms(ms))
    (error,) = d.send({"type": "input_audio_buffer.commit", "event_id": "k1"})
    assert (error["error"]["code"], error["error"]["event_id"]) == (
        "input_audio_buffer_commit_empty",
        "k1",
    )
    assert f"{ms:.2f}ms" in error["error"]["message"]
    assert d.conn.timeline_ms == ms


def test_manual_commit_makes_a_user_item() -> None:
    d = Driver()
    session_update(d, audio=audio_input(turn_detection=None))
    d.append(pcm_ms(100))
    events = d.send({"type": "input_audio_buffer.commit"})
    assert types(events) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    (commit,) = effects_of(d, CommitInputAudio)
    assert (commit.item_id, commit.start_ms, commit.end_ms) == (events[0]["item_id"], 0, 100)
    assert d.conn.input_state.value == "empty"
    # committed audio cannot be committed again
    assert d.send({"type": "input_audio_buffer.commit"})[0]["error"]["code"] == (
        "input_audio_buffer_commit_empty"
    )


def test_clear_drops_the_buffer() -> None:
    d = Driver()
    (started,) = vad(d, 320, 0.9)
    d.feed(ins.TranscriptDelta(started["item_id"], "Hel"))
    (cleared,) = d.send({"type": "input_audio_buffer.clear"})
    assert cleared["type"] == "input_audio_buffer.cleared"
    assert d.last_effects == [ClearInputAudio()]
    assert d.conn.input_state.value == "empty"
    # the cleared speech's live transcript goes nowhere, and is not kept
    assert d.feed(ins.TranscriptDelta(started["item_id"], "lost")) == []
    assert started["item_id"] not in d.conn.transcript_sent
    assert types(d.send({"type": "input_audio_buffer.clear"})) == ["input_audio_buffer.cleared"]


def test_odd_length_pcm_append_is_an_error() -> None:
    d = Driver()
    d.append(pcm_ms(10))
    (error,) = d.append(b"\0\0\0")
    assert (error["error"]["code"], error["error"]["param"]) == ("invalid_value", "audio")
    assert d.conn.timeline_ms == 10
    assert d.last_effects == []


def test_empty_append_changes_nothing() -> None:
    d = Driver()
    assert d.append(b"") == []
    assert (d.conn.input_state.value, d.last_effects) == ("empty", [])
