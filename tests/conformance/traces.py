"""The recorded traces of ``tests/data/traces`` (see its ``sources.md``) as steps to replay.

A :class:`Step` is what one client did (its frames) and the server events that followed, up to
the next thing the client did. Each loader keeps the recording as it is: what the recorder left
out is marked with :data:`~tests.conformance.compare.ELISION`, never filled in.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs

from tests.conformance.compare import ELISION
from tests.support import TRACES


@attrs.frozen
class Step:
    """Client frames (an event dict, a text frame that is not JSON, or a binary frame) and the
    server events that answered them."""

    client: tuple[dict[str, Any] | str | bytes, ...]
    server: tuple[dict[str, Any], ...]


@attrs.frozen
class VoiceSession:
    """T2: one GA session of OpenAI's, two server-VAD turns."""

    created: dict[str, Any]
    updated: dict[str, Any]
    #: the first turn in recorded order, cut after its first transcript delta
    first_turn: tuple[dict[str, Any], ...]
    #: events of the first turn recorded on their own, after the cut
    first_turn_samples: tuple[dict[str, Any], ...]
    #: the second turn in recorded order (the recorder's ``seq`` block), cut the same way
    second_turn: tuple[dict[str, Any], ...]


def voice_session(path: Path = TRACES / "gpt_realtime_voice_session_capture.jsonl") -> VoiceSession:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    events = [line for line in lines if "type" in line]
    created, updated, *rest = events
    unnumbered = [e for e in rest if "seq" not in e]
    # ``seq`` is the recorder's numbering of its in-order block, not part of the event
    numbered = sorted((e for e in rest if "seq" in e), key=lambda e: e["seq"])
    second_turn = tuple({k: v for k, v in e.items() if k != "seq"} for e in numbered)
    cut = next(
        i for i, e in enumerate(unnumbered) if e["type"] == "response.output_audio_transcript.delta"
    )
    return VoiceSession(
        created,
        updated,
        tuple(unnumbered[: cut + 1]),
        tuple(unnumbered[cut + 1 :]),
        second_turn,
    )


_FRAME = re.compile(r"^\s*\d+(?:\.\d+)?\s+(?P<direction>S>C|C>S)\s+(?P<rest>.*)$")
_PROBE = re.compile(r"^## Probe (?P<number>\d+)")
_CYCLE = re.compile(r"^\s*\d+(?:\.\d+)?\s+…\s+\d+(?:\.\d+)?\s+the same \d+-event cycle")
_TYPE = re.compile(r'"type"\s*:\s*"(?P<type>[^"]+)"')
_BARE_PLACEHOLDER = re.compile(r"(:\s*)(?:R\d+|…)(?=\s*[,}])")
_DESCRIBED = re.compile(r'^(?P<type>[a-z_.]+)(?:\s+"(?P<text>[^"]*)")?$')


def probe_capture(
    path: Path = TRACES / "openai_realtime_ws_probe_capture.txt",
) -> dict[int, list[Step]]:
    """T3: each probe of the frame capture as its steps; the first step has no client frames
    (what the server sent on connect)."""
    probes: dict[int, list[Step]] = {}
    steps: list[Step] | None = None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            header = _PROBE.match(line)
            steps = probes.setdefault(int(header["number"]), []) if header else None
            continue
        if steps is None:
            continue
        if _CYCLE.match(line):
            # "the same cycle" as the last step whose client sent the same kinds of events
            current = steps[-1]
            kinds = [_kind(frame) for frame in current.client]
            earlier = next(s for s in reversed(steps[:-1]) if [_kind(f) for f in s.client] == kinds)
            repeated = tuple(e for e in earlier.server if e["type"] != "rate_limits.updated")
            steps[-1] = attrs.evolve(current, server=current.server + repeated)
            continue
        frame = _FRAME.match(line)
        if frame is None:
            # notes, and lines summing up more deltas of the kind above (their number varies)
            continue
        if frame["direction"] == "C>S":
            if not steps or steps[-1].server:
                steps.append(Step((), ()))
            steps[-1] = attrs.evolve(
                steps[-1], client=steps[-1].client + _client_frames(frame["rest"])
            )
        else:
            if not steps:
                steps.append(Step((), ()))
            steps[-1] = attrs.evolve(
                steps[-1], server=(*steps[-1].server, _server_event(frame["rest"]))
            )
    return probes


def _kind(frame: dict[str, Any] | str | bytes) -> str:
    return frame.get("type", "") if isinstance(frame, dict) else type(frame).__name__


def _client_frames(text: str) -> tuple[dict[str, Any] | str | bytes, ...]:
    if text.startswith("{"):
        return (json.loads(text),)
    if text.startswith("TEXT "):
        return (json.loads(text.removeprefix("TEXT ")),)
    if text.startswith("BINARY "):
        return (bytes(int(text.split()[1])),)
    # a description: "conversation.item.create "words"; response.create"
    frames: list[dict[str, Any] | str | bytes] = []
    for piece in text.split("; "):
        described = _DESCRIBED.match(piece.strip())
        if described is None:
            raise ValueError(f"a client frame the capture describes in a way not known: {piece}")
        if described["text"] is None:
            frames.append({"type": described["type"]})
        else:
            frames.append(
                {
                    "type": described["type"],
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": described["text"]}],
                    },
                }
            )
    return tuple(frames)


def _recorded_json(text: str) -> Any:
    """JSON as the capture writes it: the recorder put bare placeholders for the ids it elided
    (``"id":R1``, ``"item_id":…``), which are elided strings here."""
    return json.loads(_BARE_PLACEHOLDER.sub(r'\g<1>"…"', text))


def _server_event(text: str) -> dict[str, Any]:
    if text.startswith("{"):
        try:
            return dict(_recorded_json(text))
        except json.JSONDecodeError:
            found = _TYPE.search(text)
            if found is None:
                raise ValueError(f"a server frame without a type: {text}") from None
            return {"type": found["type"], ELISION: True}
    kind, _, body = text.partition(" ")
    body = body.strip()
    if body.startswith("{"):
        try:
            fields = _recorded_json(body)
        except json.JSONDecodeError:
            return {"type": kind, ELISION: True}
        # the recorder wrote the body without its envelope and elided ids (the capture's
        # header says so): the event_id was sent, its value was not recorded
        return {"type": kind, "event_id": f"event_{ELISION}", **fields}
    return {"type": kind, ELISION: True}


@attrs.frozen
class ObservedError:
    """One line of ``observed_errors.jsonl``: a recorded error event, or a list of codes a
    client treats specially, or a refusal with its close frame."""

    source: str  #: the line's ``_source``, which begins with its trace id
    event: dict[str, Any] | None
    codes: tuple[str, ...]
    close: dict[str, Any] | None

    @property
    def trace_id(self) -> str:
        return self.source.split()[0]


def observed_errors(path: Path = TRACES / "observed_errors.jsonl") -> list[ObservedError]:
    found = []
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            found.append(
                ObservedError(
                    entry["_source"],
                    entry.get("event"),
                    tuple(entry.get("codes", ())),
                    entry.get("close"),
                )
            )
    return found


def openapi_examples(
    side: str = "server", path: Path = TRACES / "openapi_ga_event_examples.json"
) -> dict[str, Any]:
    """T1: the API reference's example of each GA ``side`` ("server" or "client") event kind
    that is strict JSON in the spec (the others are kept there as text, with comments)."""
    examples = json.loads(path.read_text())[f"{side}_events"]
    return {
        kind: entry["example"]
        for kind, entry in examples.items()
        if isinstance(entry["example"], dict)
    }
