"""The stream comparison catches what breaks conformance and tolerates what legitimately varies."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

from tests.conformance.compare import ELISION, Allowance, Comparison, Difference, Kind

_event_ids = itertools.count()


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": f"event_{next(_event_ids)}", **fields}


def spoken_turn(
    user: str, assistant: str, response: str, transcript: list[str], audio_chunks: int
) -> list[dict[str, Any]]:
    """A text-triggered turn answered with audio, audio and transcript deltas interleaved."""
    on = {"response_id": response, "item_id": assistant, "output_index": 0, "content_index": 0}
    message = {"id": assistant, "type": "message", "role": "assistant"}
    final = {
        **message,
        "status": "completed",
        "content": [{"type": "output_audio", "transcript": "".join(transcript)}],
    }
    user_item = {
        "id": user,
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_text", "text": "hi"}],
    }
    deltas = []
    for n in range(max(len(transcript), audio_chunks)):
        if n < len(transcript):
            deltas.append(
                event("response.output_audio_transcript.delta", **on, delta=transcript[n])
            )
        if n < audio_chunks:
            deltas.append(event("response.output_audio.delta", **on, delta="AAAA"))
    turn = [
        event("conversation.item.added", previous_item_id=None, item=user_item),
        event("conversation.item.done", previous_item_id=None, item=user_item),
        event(
            "response.created",
            response={"id": response, "status": "in_progress", "output": [], "usage": None},
        ),
        event(
            "response.output_item.added",
            response_id=response,
            output_index=0,
            item={**message, "status": "in_progress", "content": []},
        ),
        event(
            "conversation.item.added",
            previous_item_id=user,
            item={**message, "status": "in_progress", "content": []},
        ),
        event("response.content_part.added", **on, part={"type": "audio", "transcript": ""}),
        *deltas,
        event("response.output_audio.done", **on),
        event("response.output_audio_transcript.done", **on, transcript="".join(transcript)),
        event(
            "response.content_part.done",
            **on,
            part={"type": "audio", "transcript": "".join(transcript)},
        ),
        event("conversation.item.done", previous_item_id=user, item=final),
        event("response.output_item.done", response_id=response, output_index=0, item=final),
        event(
            "response.done",
            response={
                "id": response,
                "status": "completed",
                "output": [final],
                "usage": {"total_tokens": 7},
            },
        ),
    ]
    return list(json.loads(json.dumps(turn)))  # no dict shared between events


REFERENCE = spoken_turn("item_U", "item_A", "resp_R", ["Hi ", "there."], audio_chunks=2)


def ours() -> list[dict[str, Any]]:
    """Our side of the same turn: other ids, other text, other delta counts."""
    return spoken_turn("item_u1", "item_a1", "resp_r1", ["Hello", " to", " you."], audio_chunks=5)


def compare(
    actual: list[dict[str, Any]],
    reference: list[dict[str, Any]] = REFERENCE,
    **options: Any,
) -> list[Difference]:
    comparison = Comparison(options.pop("allowances", ()))
    comparison.streams(reference, actual, source="test", **options)
    return comparison.differences


def only(differences: list[Difference]) -> Difference:
    assert len(differences) == 1, [d.explain() for d in differences]
    return differences[0]


def find(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(e for e in events if e["type"] == kind)


def test_the_same_turn_with_other_ids_texts_and_delta_counts_matches() -> None:
    assert compare(ours()) == []


def test_a_missing_key_is_caught_with_its_path() -> None:
    actual = ours()
    del find(actual, "response.done")["response"]["output"][0]["status"]
    difference = only(compare(actual))
    assert difference.kind is Kind.MISSING_KEY
    assert (difference.event_type, difference.path) == (
        "response.done",
        "response.output[].status",
    )
    assert difference.reference == "completed"


def test_an_extra_key_is_caught() -> None:
    actual = ours()
    find(actual, "response.created")["response"]["beta_field"] = 1
    difference = only(compare(actual))
    assert (difference.kind, difference.path) == (Kind.EXTRA_KEY, "response.beta_field")


def test_a_type_change_is_caught() -> None:
    actual = ours()
    for e in actual:
        if e["type"] == "response.output_audio.delta":
            e["content_index"] = "0"
    difference = only(compare(actual))
    assert difference.kind is Kind.TYPE
    assert (difference.event_type, difference.path) == (
        "response.output_audio.delta",
        "content_index",
    )
    assert "reference number 0, ours string '0'" in difference.explain()


def test_a_protocol_value_change_is_caught_and_model_values_are_not() -> None:
    actual = ours()
    find(actual, "response.content_part.added")["part"]["type"] = "text"
    find(actual, "response.done")["response"]["usage"]["total_tokens"] = 99
    difference = only(compare(actual))
    assert (difference.kind, difference.path) == (Kind.VALUE, "part.type")
    assert (difference.reference, difference.actual) == ("audio", "text")


def test_lifecycle_events_in_the_wrong_order_are_caught() -> None:
    actual = ours()
    created = find(actual, "response.created")
    actual.remove(created)
    actual.insert(0, created)
    difference = only(compare(actual))
    assert (difference.kind, difference.event_type) == (Kind.ORDER, "response.created")
    assert "reference #2" in difference.where and "ours #0" in difference.where


def test_a_missing_lifecycle_event_is_caught() -> None:
    actual = [e for e in ours() if e["type"] != "response.content_part.done"]
    difference = only(compare(actual))
    assert (difference.kind, difference.event_type) == (
        Kind.MISSING_EVENT,
        "response.content_part.done",
    )
    assert "after response.output_audio_transcript.done" in difference.where


def test_an_extra_event_kind_is_caught() -> None:
    actual = ours()
    actual.insert(3, event("conversation.item.truncated", item_id="item_a1", content_index=0))
    difference = only(compare(actual))
    assert (difference.kind, difference.event_type) == (
        Kind.EXTRA_EVENT,
        "conversation.item.truncated",
    )


def test_a_missing_delta_lane_is_caught() -> None:
    actual = [e for e in ours() if e["type"] != "response.output_audio.delta"]
    difference = only(compare(actual))
    assert (difference.kind, difference.event_type) == (
        Kind.MISSING_EVENT,
        "response.output_audio.delta",
    )


def test_a_delta_of_another_response_breaks_the_linkage() -> None:
    actual = ours()
    deltas = [e for e in actual if e["type"] == "response.output_audio_transcript.delta"]
    deltas[-1]["response_id"] = "resp_other"
    difference = only(compare(actual))
    assert (difference.kind, difference.path) == (Kind.LINKAGE, "response_id")
    assert "resp_r1" in difference.where and "resp_other" in difference.where


def test_a_previous_item_id_chain_pointing_elsewhere_breaks_the_linkage() -> None:
    actual = ours()
    added = [e for e in actual if e["type"] == "conversation.item.added"][1]
    added["previous_item_id"] = "item_a1"  # the item itself instead of the user's item
    difference = only(compare(actual))
    assert (difference.kind, difference.event_type, difference.path) == (
        Kind.LINKAGE,
        "conversation.item.added",
        "previous_item_id",
    )


def test_null_against_an_id_breaks_the_linkage() -> None:
    actual = ours()
    [e for e in actual if e["type"] == "conversation.item.added"][1]["previous_item_id"] = None
    assert only(compare(actual)).kind is Kind.LINKAGE


def test_linkage_holds_across_steps_of_a_flow() -> None:
    comparison = Comparison()
    comparison.streams(REFERENCE, ours())
    later_reference = [event("conversation.item.deleted", item_id="item_A")]
    comparison.streams(later_reference, [event("conversation.item.deleted", item_id="item_u1")])
    assert comparison.differences[0].kind is Kind.LINKAGE


def test_the_two_done_events_of_an_item_may_come_in_either_order() -> None:
    actual = ours()
    a = actual.index(find(actual, "response.output_item.done"))
    actual[a - 1], actual[a] = actual[a], actual[a - 1]
    b = actual.index(find(actual, "response.output_audio.done"))
    actual[b], actual[b + 1] = actual[b + 1], actual[b]
    assert compare(actual) == []


def test_deltas_before_their_content_part_are_caught() -> None:
    actual = ours()
    delta = find(actual, "response.output_audio_transcript.delta")
    actual.remove(delta)
    actual.insert(actual.index(find(actual, "response.content_part.added")), delta)
    difference = only(compare(actual))
    assert difference.kind is Kind.ORDER
    assert "comes before response.content_part.added" in difference.where


def test_a_truncated_reference_is_a_prefix_of_ours() -> None:
    cut = REFERENCE[
        : REFERENCE.index(find(REFERENCE, "response.output_audio_transcript.delta")) + 1
    ]
    assert compare(ours(), cut, truncated=True) == []
    extras = compare(ours(), cut)
    assert {d.kind for d in extras} == {Kind.EXTRA_EVENT}
    assert "response.done" in {d.event_type for d in extras}


def test_an_elided_body_counts_only_by_kind_and_place() -> None:
    reference = copy.deepcopy(REFERENCE)
    created = find(reference, "response.created")
    created.clear()
    created.update({"type": "response.created", ELISION: True})
    find(reference, "response.done")["response"]["id"] = "resp_…"
    assert compare(ours(), reference) == []


def test_an_allowance_covers_one_field_of_one_event_from_its_sources() -> None:
    actual = ours()
    for e in actual:
        e["obfuscation"] = "xyz"
    allowance = Allowance(
        Kind.EXTRA_KEY,
        "response.output_audio_transcript.delta",
        "obfuscation",
        "test",
        frozenset({"test"}),
    )
    comparison = Comparison([allowance])
    comparison.streams(REFERENCE, actual, source="test")
    remaining = {d.event_type for d in comparison.differences}
    assert "response.output_audio_transcript.delta" not in remaining
    assert "response.done" in remaining  # the same key elsewhere is not covered
    assert comparison.allowed and all(a is allowance for _, a in comparison.allowed)
    elsewhere = Comparison([allowance])
    elsewhere.streams(REFERENCE, actual, source="another trace")
    assert "response.output_audio_transcript.delta" in {d.event_type for d in elsewhere.differences}


def test_a_sample_is_compared_with_ours_of_its_variant() -> None:
    comparison = Comparison()
    text_part = event(
        "response.content_part.added",
        response_id="r",
        item_id="i",
        output_index=0,
        content_index=0,
        part={"type": "text", "text": "", "extra": 1},
    )
    comparison.sample(text_part, ours())
    assert comparison.differences == []  # ours has audio parts only: nothing to compare with
    comparison.sample(event("rate_limits.updated", rate_limits=[]), ours())
    assert only(comparison.differences).kind is Kind.MISSING_EVENT
    audio_part = copy.deepcopy(find(REFERENCE, "response.content_part.added"))
    audio_part["part"]["extra"] = 1
    comparison = Comparison()
    comparison.sample(audio_part, ours())
    assert only(comparison.differences).path == "part.extra"


def test_an_explanation_names_the_event_the_field_and_both_values() -> None:
    difference = Difference(
        Kind.VALUE, "error", "error.code", "invalid_value", "invalid_event", "ours #3", "T3"
    )
    assert difference.explain() == (
        "value change: error field error.code - reference 'invalid_value', ours 'invalid_event'"
        " (ours #3) [T3]"
    )
