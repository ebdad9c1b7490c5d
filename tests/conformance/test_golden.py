"""Each golden flow recorded again and compared with its file in ``tests/data/golden``."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.conformance.golden import GOLDEN, Frame, compare_with_golden, normalise, read
from tests.conformance.scenarios import SCENARIOS, record


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_golden_flow_is_unchanged(name: str) -> None:
    path = GOLDEN / f"{name}.jsonl"
    assert path.exists(), f"no golden file; record it: python scripts/record_golden.py {name}"
    problems = compare_with_golden(read(path), record(SCENARIOS[name]))
    assert not problems, (
        f"the server's events for {name} differ from {path.relative_to(GOLDEN.parents[2])}"
        " (reference: the golden file; ours: this run):\n"
        + "\n".join(problems)
        + f"\nIf the change is intended, re-record: python scripts/record_golden.py {name}"
        " (and review the diff of the golden file)"
    )


def test_every_golden_file_has_its_flow() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.jsonl")) == sorted(SCENARIOS)


def test_normalising_keeps_linkage_and_hides_volatile_values() -> None:
    frames = [
        Frame(1, "client", event={"type": "response.create", "event_id": "mine"}),
        Frame(
            1,
            "server",
            event={
                "type": "response.output_audio.delta",
                "event_id": "event_X",
                "response_id": "resp_A",
                "item_id": "item_A",
                "delta": "AAAAAA==",
            },
        ),
        Frame(
            1,
            "server",
            event={
                "type": "response.output_audio.delta",
                "event_id": "event_Y",
                "response_id": "resp_A",
                "item_id": "item_A",
                "delta": "AAAAAA==",
            },
        ),
        Frame(
            1,
            "server",
            event={
                "type": "input_audio_buffer.committed",
                "event_id": "event_Z",
                "item_id": "item_B",
                "previous_item_id": "item_A",
            },
        ),
        Frame(1, "server", close={"code": 1000, "reason": ""}),
    ]
    lines = normalise(frames)
    assert lines[0]["event"]["event_id"] == "mine"  # client ids are ours, and echoed back
    delta = lines[1]["event"]
    assert (delta["event_id"], delta["response_id"], delta["item_id"], delta["delta"]) == (
        "<event_id>",
        "<resp 1>",
        "<item 1>",
        "<audio: 4 bytes>",
    )
    assert lines[1]["repeat"] == 2  # the two deltas are one line once normalised
    committed = lines[2]["event"]
    assert (committed["item_id"], committed["previous_item_id"]) == ("<item 2>", "<item 1>")
    assert lines[3] == {"connection": 1, "from": "server", "close": {"code": 1000, "reason": ""}}


def test_a_changed_flow_is_explained_by_step_event_and_field() -> None:
    golden = read(GOLDEN / "client_cancel.jsonl")
    fresh: list[dict[str, Any]] = copy.deepcopy(golden)
    for line in fresh:
        event = line.get("event", {})
        if event.get("type") == "response.done":
            event["response"]["status_details"]["reason"] = "turn_detected"
        if event.get("type") == "conversation.item.truncated":
            line["event"] = {**event, "content_index": "0"}
    problems = compare_with_golden(golden, fresh)
    assert len(problems) == 2, problems
    first, second = problems
    assert first.startswith("step 3 (after response.cancel): value change: response.done")
    assert "status_details.reason - reference 'client_cancelled', ours 'turn_detected'" in first
    assert "type change: conversation.item.truncated field content_index" in second


def test_a_changed_client_side_is_reported_as_such() -> None:
    golden = read(GOLDEN / "pool_refusal.jsonl")
    fresh = [line for line in golden if line.get("connection") != 3]
    problems = compare_with_golden(golden, fresh)
    assert problems and "missing event: session.created" in problems[-1]
    changed = copy.deepcopy(golden)
    changed[3]["event"]["item"]["content"][0]["text"] = "Anyone there?"
    (problem,) = compare_with_golden(golden, changed)
    assert problem.startswith(
        "step 2 (after conversation.item.create): the client sent other frames:"
    )
    assert "Anyone there?" in problem and "Still here?" in problem
