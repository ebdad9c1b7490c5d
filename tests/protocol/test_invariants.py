"""protocol/invariants.py: SequenceChecker against recorded OpenAI traffic, and what it rejects."""

from __future__ import annotations

import copy
import json
from typing import Any

import pydantic
import pytest

from protocol import inputs as ins
from protocol.invariants import InvariantViolation, SequenceChecker
from tests.protocol.steps import (
    audio_input,
    session_update,
    speak_audio,
    text_turn,
    vad,
)
from tests.support import TRACES, Driver, validate_with_sdk

Wire = dict[str, Any]


def check(events: list[Wire], *, strict_start: bool = True) -> SequenceChecker:
    checker = SequenceChecker(strict_start=strict_start)
    for event in events:
        checker.check(event)
    return checker


# --- recorded OpenAI traffic -----------------------------------------------------------------

CAPTURE = TRACES / "gpt_realtime_voice_session_capture.jsonl"


def capture_lines(first: int, last: int) -> list[Wire]:
    """Lines ``first``..``last`` (1-based, inclusive) of the T2 capture."""
    lines = CAPTURE.read_text().splitlines()
    return [json.loads(line) for line in lines[first - 1 : last]]


def test_every_recorded_server_event_validates_with_the_sdk() -> None:
    for event in capture_lines(2, 25):
        validate_with_sdk(event)


def test_recorded_session_start_and_first_voice_turn_satisfy_the_checker() -> None:
    """Lines 2-12: session.created, session.updated, then a server-VAD turn in recorded order
    up to the first transcript delta. The author cut that response there."""
    checker = check(capture_lines(2, 12))
    assert (checker.created, checker.finished) == (1, 0)


def test_recorded_seq_block_satisfies_the_checker() -> None:
    """Lines 16-25 (``seq`` 1-10): the second voice turn, complete and in order up to its first
    transcript delta. It begins mid-session, after a response the capture does not close."""
    checker = check(capture_lines(16, 25), strict_start=False)
    assert (checker.created, checker.finished) == (1, 0)


def test_the_capture_is_spliced_after_line_12() -> None:
    """Line 13 closes the part with the whole story although only "Sure" was streamed before it
    (the author dropped the deltas), and line 15 belongs to another session's response."""
    with pytest.raises(InvariantViolation, match="transcript"):
        check(capture_lines(2, 13))
    with pytest.raises(InvariantViolation, match=r"before its response\.created"):
        check([*capture_lines(2, 12), *capture_lines(14, 15)])


EXAMPLES = json.loads((TRACES / "openapi_ga_event_examples.json").read_text())["server_events"]
#: stale doc examples that use item content type text/audio (sources.md, T1)
STALE_EXAMPLES = {"response.output_item.done", "conversation.item.retrieved"}


def json_examples() -> list[Any]:
    params = []
    for kind, entry in EXAMPLES.items():
        example = entry["example"]
        if isinstance(example, str):
            try:
                example = json.loads(example)
            except ValueError:
                continue  # kept verbatim: comments or trailing commas in the spec
        params.append(pytest.param(kind, example, id=kind))
    return params


@pytest.mark.parametrize(("kind", "example"), json_examples())
def test_official_server_event_examples_validate_with_the_sdk(kind: str, example: Wire) -> None:
    assert example["type"] == kind
    if kind in STALE_EXAMPLES:
        with pytest.raises(pydantic.ValidationError):
            validate_with_sdk(example)
    else:
        validate_with_sdk(example)


def test_most_official_examples_are_strict_json() -> None:
    assert len(json_examples()) >= len(EXAMPLES) - 5


# --- streams of this machine -----------------------------------------------------------------


def voice_session() -> list[Wire]:
    """A real stream: a transcribed voice turn answered with audio, a barge-in, a text turn."""
    d = Driver()
    session_update(d, audio=audio_input(transcription={"model": "whisper-1"}))
    turn = vad(d, 320, 0.9) + vad(d, 320, 0.0)
    rid = turn[-1]["response"]["id"]
    d.feed(ins.TranscriptDelta(turn[0]["item_id"], "Hi"))
    d.feed(ins.TranscriptDone(turn[0]["item_id"], "Hi there", 0.5))
    speak_audio(d, rid, ("Hello", " you."))
    d.feed(ins.ResponseComplete(rid))
    rid = text_turn(d, output_modalities=["text"])
    d.feed(ins.TextOut(rid, "Sure"))
    d.feed(ins.ResponseComplete(rid))
    return d.log


def test_a_machine_stream_passes_and_counts_its_responses() -> None:
    checker = check(voice_session())
    assert checker.created == checker.finished == 2
    assert checker.active == {}


def index_of(events: list[Wire], kind: str, nth: int = 0) -> int:
    return [i for i, e in enumerate(events) if e["type"] == kind][nth]


def test_first_event_must_be_session_created() -> None:
    events = voice_session()
    with pytest.raises(InvariantViolation, match="first server event"):
        check(events[1:])
    with pytest.raises(InvariantViolation, match="once, first"):
        check([*events, {**events[0], "event_id": "event_again"}])


def test_every_event_needs_a_unique_event_id() -> None:
    events = voice_session()
    with pytest.raises(InvariantViolation, match="was used before"):
        check([*events[:3], {**events[3], "event_id": events[2]["event_id"]}])
    with pytest.raises(InvariantViolation, match="needs an event_id"):
        check([events[0], {k: v for k, v in events[1].items() if k != "event_id"}])


def test_delta_after_its_done_is_rejected() -> None:
    events = voice_session()
    done = index_of(events, "response.output_text.done")
    late = {**events[index_of(events, "response.output_text.delta")], "event_id": "event_late"}
    with pytest.raises(InvariantViolation, match=r"after output_text\.done"):
        check([*events[: done + 1], late])
    done = index_of(events, "response.output_audio.done")
    late = {**events[index_of(events, "response.output_audio.delta")], "event_id": "event_late"}
    with pytest.raises(InvariantViolation, match=r"after output_audio\.done"):
        check([*events[: done + 1], late])


def test_event_after_response_done_is_rejected() -> None:
    events = voice_session()
    end = index_of(events, "response.done")
    late = {**events[index_of(events, "response.output_audio.delta")], "event_id": "event_late"}
    with pytest.raises(InvariantViolation, match=r"after its response\.done"):
        check([*events[: end + 1], late])


def test_event_before_response_created_is_rejected() -> None:
    events = voice_session()
    created = index_of(events, "response.created")
    with pytest.raises(InvariantViolation, match=r"before its response\.created"):
        check([*events[:created], *events[created + 1 :]])


def test_two_active_default_responses_are_rejected() -> None:
    events = voice_session()
    created = events[index_of(events, "response.created")]
    second = copy.deepcopy(created)
    second["event_id"], second["response"]["id"] = "event_second", "resp_second"
    with pytest.raises(InvariantViolation, match="second active response"):
        check([*events[: index_of(events, "response.created") + 1], second])
    # an out-of-band response (no conversation) may run beside it
    second["response"]["conversation_id"] = None
    check([*events[: index_of(events, "response.created") + 1], second])


def test_response_done_must_close_every_item_and_list_them() -> None:
    events = voice_session()
    end = index_of(events, "response.done")
    with pytest.raises(InvariantViolation, match="still open"):
        check([*events[: end - 2], events[end]])
    wrong = copy.deepcopy(events[end])
    wrong["response"]["output"] = []
    with pytest.raises(InvariantViolation, match="exactly the streamed items"):
        check([*events[:end], wrong])


def test_final_status_details_must_match_the_status() -> None:
    events = voice_session()
    end = index_of(events, "response.done")
    wrong = copy.deepcopy(events[end])
    wrong["response"]["status"] = "cancelled"
    wrong["response"]["status_details"] = {"type": "incomplete", "reason": "max_output_tokens"}
    with pytest.raises(InvariantViolation, match=r"status_details\.type"):
        check([*events[:end], wrong])
    wrong["response"]["status"] = "in_progress"
    with pytest.raises(InvariantViolation, match="final status"):
        check([*events[:end], wrong])


def test_transcript_must_equal_its_deltas() -> None:
    events = voice_session()
    done = index_of(events, "response.output_audio_transcript.done")
    wrong = {**events[done], "transcript": "Something else."}
    with pytest.raises(InvariantViolation, match="concatenated deltas"):
        check([*events[:done], wrong])


def test_parts_close_in_order() -> None:
    events = voice_session()
    audio_done = index_of(events, "response.output_audio.done")
    part_done = index_of(events, "response.content_part.done")
    with pytest.raises(InvariantViolation, match="before its audio/transcript done"):
        check([*events[:audio_done], events[part_done]])
    item_done = index_of(events, "response.output_item.done")
    with pytest.raises(InvariantViolation, match=r"before its content_part\.done"):
        check([*events[:part_done], events[item_done]])


def test_output_index_counts_from_zero() -> None:
    events = voice_session()
    added = index_of(events, "response.output_item.added")
    with pytest.raises(InvariantViolation, match="output_index"):
        check([*events[:added], {**events[added], "output_index": 1}])


def test_function_call_arguments_must_equal_their_deltas() -> None:
    d = Driver()
    rid = text_turn(d)
    d.feed(ins.ToolCallOut(rid, "call_1", "f", '{"a":1}'))
    events = d.log
    done = index_of(events, "response.function_call_arguments.done")
    with pytest.raises(InvariantViolation, match="arguments must equal"):
        check([*events[:done], {**events[done], "arguments": "{}"}])


def test_no_transcription_event_after_the_items_result() -> None:
    events = voice_session()
    completed = index_of(events, "conversation.item.input_audio_transcription.completed")
    delta = events[index_of(events, "conversation.item.input_audio_transcription.delta")]
    with pytest.raises(InvariantViolation, match="after the item's completed"):
        check([*events[: completed + 1], {**delta, "event_id": "event_late"}])
    with pytest.raises(InvariantViolation, match="second transcription result"):
        check([*events[: completed + 1], {**events[completed], "event_id": "event_again"}])


def test_a_new_response_must_be_in_progress() -> None:
    events = voice_session()
    created = index_of(events, "response.created")
    wrong = copy.deepcopy(events[created])
    wrong["response"]["status"] = "completed"
    with pytest.raises(InvariantViolation, match="in_progress"):
        check([*events[:created], wrong])
