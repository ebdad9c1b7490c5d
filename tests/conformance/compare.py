"""Compare a server event stream with a reference one: a recorded OpenAI trace or a golden file.

What must match (PROTOCOL.md section 4):

- the event kinds, and the order of the lifecycle events of a stream (its *main lane*);
- the linkage between events: every id of the reference stands for exactly one id of ours and
  back (item ids in ``response.output_item.*``, ``previous_item_id`` chains, ``response_id`` on
  deltas, ``call_id``), so that both streams describe the same conversation;
- the shape of each event: the same keys at every level, the same JSON types, and the same values
  wherever the protocol or the client decides them (``type`` fields, roles, statuses, indexes,
  error codes and params, session settings).

What may differ:

- how many deltas there are: the deltas of one kind for one item form a *lane* of their own,
  and consecutive events of a lane count as one;
- how lanes interleave with the lifecycle: a lane may start later than in the reference, never
  before the lifecycle event it follows there (deltas after their ``content_part.added``);
- the place of input transcription and rate limits, asynchronous to responses (V2, R4);
- the order within the pairs a server may send either way round (:data:`EITHER_ORDER`);
- values that the model, the clock or the audio decide (:data:`VOLATILE_KEYS`).

Anything else a reference legitimately differs in is an :class:`Allowance`: one kind of
difference, on one field of one event type, from the sources it names, with its reason.

A reference may hold what its recorder left out: a string containing :data:`ELISION` is a value
that was not recorded, and an event with the key :data:`ELISION` is one whose body was not
recorded (only its kind and place count).
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

#: what recorders write where they left something out
ELISION = "…"

#: keys whose values are ids: compared by linkage (a one-to-one mapping), not by value
ID_KEYS = frozenset(
    {"id", "item_id", "previous_item_id", "response_id", "call_id", "conversation_id"}
)

#: keys whose values are compared by shape only: the values depend on the clock (timings), the
#: audio (bytes), the model (text it hears or says, token counts) or are messages for humans
VOLATILE_KEYS = frozenset(
    {
        "audio_start_ms",
        "audio_end_ms",
        "expires_at",
        "received_at",
        "audio",
        "delta",
        "transcript",
        "text",
        "arguments",
        "instructions",
        "message",
        "obfuscation",
        "model",
    }
)

#: whole subtrees compared by shape only: token and rate accounting, token probabilities
VOLATILE_SUBTREES = frozenset({"usage", "rate_limits", "logprobs"})

#: paths compared by shape only: a server event's own id is unique, never linked
VOLATILE_PATHS = frozenset({"event_id"})

#: deltas: their number, and how they interleave with other deltas, vary from run to run
STREAMED = frozenset(
    {
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_text.delta",
        "response.function_call_arguments.delta",
    }
)

#: events asynchronous to the response lifecycle, by the lane they form (PROTOCOL V2 and R4)
ASYNCHRONOUS = {
    "conversation.item.input_audio_transcription.delta": "input transcription",
    "conversation.item.input_audio_transcription.completed": "input transcription",
    "conversation.item.input_audio_transcription.failed": "input transcription",
    "conversation.item.input_audio_transcription.segment": "input transcription",
    "rate_limits.updated": "rate limits",
}

#: adjacent events about one item that a server may send in either order (PROTOCOL R2, R3)
EITHER_ORDER = (
    frozenset({"conversation.item.done", "response.output_item.done"}),
    frozenset({"response.output_audio.done", "response.output_audio_transcript.done"}),
)

_MAIN = ("lifecycle", None)


class Kind(enum.Enum):
    MISSING_EVENT = "missing event"
    EXTRA_EVENT = "extra event"
    ORDER = "wrong order"
    MISSING_KEY = "missing key"
    EXTRA_KEY = "extra key"
    TYPE = "type change"
    VALUE = "value change"
    LINKAGE = "broken linkage"


@attrs.frozen
class Difference:
    """One way in which our stream differs from the reference."""

    kind: Kind
    event_type: str
    path: str = ""  #: dotted field path from the event's root, ``[]`` for list elements
    reference: Any = None
    actual: Any = None
    where: str = ""  #: positions in the two streams, or what the linkage was
    source: str = ""  #: the reference's source (a trace id such as ``T2``, or a golden file)

    def explain(self) -> str:
        field = f" field {self.path}" if self.path else ""
        text = f"{self.kind.value}: {self.event_type}{field}"
        if self.kind is Kind.MISSING_KEY:
            text += f" - the reference has it ({_short(self.reference)}), ours does not"
        elif self.kind is Kind.EXTRA_KEY:
            text += f" - ours has it ({_short(self.actual)}), the reference does not"
        elif self.kind is Kind.TYPE:
            text += (
                f" - reference {_json_type(self.reference)} {_short(self.reference)},"
                f" ours {_json_type(self.actual)} {_short(self.actual)}"
            )
        elif self.kind is Kind.VALUE:
            text += f" - reference {_short(self.reference)}, ours {_short(self.actual)}"
        if self.where:
            text += f" ({self.where})"
        if self.source:
            text += f" [{self.source}]"
        return text


@attrs.frozen
class Allowance:
    """A difference that is legitimate: one kind, on one field of one event type.

    ``path`` is ``""`` for whole events (missing, extra, out of order). ``sources`` limits it to
    references from those sources; empty means any reference. ``in_some_runs`` marks a
    difference that depends on thread timing, so that not every run meets it.
    """

    kind: Kind
    event_type: str
    path: str
    why: str
    sources: frozenset[str] = frozenset()
    in_some_runs: bool = False

    def covers(self, difference: Difference) -> bool:
        return (
            difference.kind is self.kind
            and difference.event_type == self.event_type
            and difference.path == self.path
            and (not self.sources or difference.source in self.sources)
        )


class IdMap:
    """A one-to-one mapping of the reference's ids onto ours, built as events are paired."""

    def __init__(self) -> None:
        self.ours: dict[str, str] = {}  #: reference id -> our id
        self.reference: dict[str, str] = {}  #: our id -> reference id

    def link(self, reference: Any, actual: Any) -> str | None:
        """Record that two ids stand for one thing; what contradicts earlier links, if any."""
        if reference is None or actual is None:
            if reference is actual:
                return None
            return f"the reference has {reference!r} where ours has {actual!r}"
        if not isinstance(reference, str) or not isinstance(actual, str):
            return f"ids must be strings: {reference!r}, {actual!r}"
        if ELISION in reference:
            return None
        known_ours = self.ours.get(reference)
        known_reference = self.reference.get(actual)
        if known_ours is None and known_reference is None:
            self.ours[reference] = actual
            self.reference[actual] = reference
            return None
        if known_ours == actual:
            return None
        if known_ours is not None:
            return f"reference {reference} is ours {known_ours} elsewhere, here ours {actual}"
        return f"ours {actual} is reference {known_reference} elsewhere, here reference {reference}"


class Comparison:
    """Compares reference streams with ours, step by step, with one :class:`IdMap` for all.

    Differences that an allowance covers go to :attr:`allowed`, the others to
    :attr:`differences`.
    """

    def __init__(self, allowances: Iterable[Allowance] = ()) -> None:
        self.allowances = tuple(allowances)
        self.ids = IdMap()
        self.differences: list[Difference] = []
        self.allowed: list[tuple[Difference, Allowance]] = []
        self._seen: set[tuple[Kind, str, str, str]] = set()
        self.compared = 0  #: event pairs whose shapes were compared

    def report(self) -> str:
        return "\n".join(d.explain() for d in self.differences)

    def _add(self, difference: Difference) -> None:
        # one report per field of an event kind: every delta of a lane would repeat it
        key = (difference.kind, difference.event_type, difference.path, difference.source)
        if key in self._seen:
            return
        self._seen.add(key)
        for allowance in self.allowances:
            if allowance.covers(difference):
                self.allowed.append((difference, allowance))
                return
        self.differences.append(difference)

    def streams(
        self,
        reference: Sequence[dict[str, Any]],
        actual: Sequence[dict[str, Any]],
        *,
        source: str = "",
        truncated: bool = False,
    ) -> None:
        """Compare one step of a flow: the server events of the reference and ours.

        ``truncated`` says the reference was cut short by its recorder: ours may go on after
        the reference's last lifecycle event, and lanes ours starts after it are not compared.
        """
        reference_lanes = _lanes(reference)
        actual_lanes = _lanes(actual)
        reference_main = _canonical_order(reference_lanes.pop(_MAIN, []))
        actual_main = _canonical_order(actual_lanes.pop(_MAIN, []))
        pairs = self._align(reference_main, actual_main, source, truncated, lane="")
        for (i, ref), (j, ours) in pairs:
            self._event(ref, ours, source, f"reference #{i}, ours #{j}")
        cut = pairs[-1][1][0] if truncated and pairs else len(actual)
        # where each reference lifecycle event landed in ours, to place the lanes
        landed = {i: j for (i, _), (j, _) in pairs}
        lifecycle = [i for i, _ in reference_main]
        translated: dict[tuple[Any, ...], list[tuple[int, dict[str, Any]]]] = {}
        for key, events in actual_lanes.items():
            translated.setdefault(self._translate(key), []).extend(events)
        for key, reference_events in reference_lanes.items():
            name, item = key
            if item is None or ELISION in str(item):
                # the recorder left the item out: the first lane of ours of that kind
                key = next((k for k in translated if k[0] == name), key)
            ours_events = translated.pop(key, [])
            if not ours_events:
                for kind in _collapse(reference_events):
                    self._add(
                        Difference(
                            Kind.MISSING_EVENT,
                            kind,
                            where=f"ours has no {_lane_name(key)}",
                            source=source,
                        )
                    )
                continue
            first = reference_events[0][0]
            anchor = max((i for i in lifecycle if i < first), default=None)
            if anchor is not None and anchor in landed and ours_events[0][0] < landed[anchor]:
                self._add(
                    Difference(
                        Kind.ORDER,
                        ours_events[0][1]["type"],
                        where=(
                            f"ours #{ours_events[0][0]} comes before"
                            f" {reference[anchor]['type']} (ours #{landed[anchor]});"
                            f" the reference sends it after"
                        ),
                        source=source,
                    )
                )
            self._align(
                _first_of_runs(reference_events),
                _first_of_runs(ours_events),
                source,
                truncated=False,
                lane=_lane_name(key),
            )
            # every event of a lane against the reference's first of its type: all of them
            # must link to the same item and response
            samples: dict[str, tuple[int, dict[str, Any]]] = {}
            for i, event in reference_events:
                samples.setdefault(event["type"], (i, event))
            for j, ours in ours_events:
                if ours["type"] in samples:
                    i, ref = samples[ours["type"]]
                    self._event(ref, ours, source, f"reference #{i}, ours #{j}")
        for key, ours_events in translated.items():
            if ours_events[0][0] > cut:
                continue
            for kind in _collapse(ours_events):
                self._add(
                    Difference(
                        Kind.EXTRA_EVENT,
                        kind,
                        where=f"the reference has no {_lane_name(key)}",
                        source=source,
                    )
                )

    def sample(
        self,
        reference: dict[str, Any],
        actual: Sequence[dict[str, Any]],
        *,
        source: str = "",
        link: bool = False,
    ) -> None:
        """Compare the shape of a reference event recorded on its own with ours of its kind.

        It is compared with the event of ours of the same type and variant (the ``type`` and
        ``role`` values at every level) that differs from it least; ours having the type only in
        other variants is no difference, ours lacking the type altogether is a missing event.
        """
        variant = _variant(reference)
        candidates = [event for event in actual if event.get("type") == reference["type"]]
        if not candidates:
            self._add(Difference(Kind.MISSING_EVENT, reference["type"], source=source))
            return
        candidates = [event for event in candidates if _variant(event) == variant]
        if not candidates:
            return

        def differences(event: dict[str, Any]) -> int:
            trial = Comparison()
            trial._event(reference, event, source, "sample", link=False)
            return len(trial.differences)

        # the event of ours that this one sample most resembles (the same error code, say)
        self._event(reference, min(candidates, key=differences), source, "sample", link=link)

    def _translate(self, key: tuple[Any, ...]) -> tuple[Any, ...]:
        """A lane key of ours, with our item id replaced by the reference's."""
        name, item = key
        if isinstance(item, str):
            item = self.ids.reference.get(item, f"ours:{item}")
        return (name, item)

    def _align(
        self,
        reference: list[tuple[int, dict[str, Any]]],
        actual: list[tuple[int, dict[str, Any]]],
        source: str,
        truncated: bool,
        lane: str,
    ) -> list[tuple[tuple[int, dict[str, Any]], tuple[int, dict[str, Any]]]]:
        reference_kinds = [event["type"] for _, event in reference]
        actual_kinds = [event["type"] for _, event in actual]
        matcher = difflib.SequenceMatcher(None, reference_kinds, actual_kinds, autojunk=False)
        opcodes = matcher.get_opcodes()
        if truncated:
            while opcodes and opcodes[-1][0] == "insert":
                opcodes.pop()
        pairs = []
        missing: list[tuple[str, str]] = []
        extra: list[tuple[str, str]] = []
        within = f" in the {lane}" if lane else ""
        for tag, i1, i2, j1, j2 in opcodes:
            if tag == "equal":
                pairs += list(zip(reference[i1:i2], actual[j1:j2], strict=True))
                continue
            for i in range(i1, i2):
                after = reference_kinds[i - 1] if i else "the step's start"
                where = f"reference #{reference[i][0]}{within}, after {after}"
                missing.append((reference_kinds[i], where))
            for j in range(j1, j2):
                after = actual_kinds[j - 1] if j else "the step's start"
                extra.append((actual_kinds[j], f"ours #{actual[j][0]}{within}, after {after}"))
        # a kind missing at one place and extra at another is one that moved
        for kind, where in missing:
            moved = next((other for other in extra if other[0] == kind), None)
            if moved is None:
                self._add(Difference(Kind.MISSING_EVENT, kind, where=where, source=source))
            else:
                extra.remove(moved)
                self._add(Difference(Kind.ORDER, kind, where=f"{where}; {moved[1]}", source=source))
        for kind, where in extra:
            self._add(Difference(Kind.EXTRA_EVENT, kind, where=where, source=source))
        return pairs

    def _event(
        self,
        reference: dict[str, Any],
        actual: dict[str, Any],
        source: str,
        where: str,
        *,
        link: bool = True,
    ) -> None:
        if ELISION in reference:
            return
        self.compared += 1
        self._value(reference, actual, "", reference["type"], source, where, link)

    def _value(
        self,
        reference: Any,
        actual: Any,
        path: str,
        event_type: str,
        source: str,
        where: str,
        link: bool,
    ) -> None:
        if isinstance(reference, str) and ELISION in reference:
            return
        key = path.rsplit(".", 1)[-1].removesuffix("[]")
        if key in ID_KEYS and _json_type(reference) in ("string", "null"):
            if not link:
                if _json_type(actual) not in ("string", "null"):
                    self._add(
                        Difference(Kind.TYPE, event_type, path, reference, actual, where, source)
                    )
                return
            problem = self.ids.link(reference, actual)
            if problem is not None:
                self._add(
                    Difference(Kind.LINKAGE, event_type, path, reference, actual, problem, source)
                )
            return
        kind = _json_type(reference)
        if kind != _json_type(actual):
            self._add(Difference(Kind.TYPE, event_type, path, reference, actual, where, source))
            return
        if kind == "object":
            if reference.get("type") != actual.get("type") and isinstance(
                reference.get("type"), str
            ):
                # another member of a union (a content part, a usage form): its keys differ
                self._add(
                    Difference(
                        Kind.VALUE,
                        event_type,
                        _join(path, "type"),
                        reference["type"],
                        actual.get("type"),
                        where,
                        source,
                    )
                )
                return
            for name in reference.keys() - actual.keys():
                self._add(
                    Difference(
                        Kind.MISSING_KEY,
                        event_type,
                        _join(path, name),
                        reference=reference[name],
                        where=where,
                        source=source,
                    )
                )
            for name in actual.keys() - reference.keys():
                self._add(
                    Difference(
                        Kind.EXTRA_KEY,
                        event_type,
                        _join(path, name),
                        actual=actual[name],
                        where=where,
                        source=source,
                    )
                )
            for name in reference.keys() & actual.keys():
                self._value(
                    reference[name],
                    actual[name],
                    _join(path, name),
                    event_type,
                    source,
                    where,
                    link,
                )
        elif kind == "array":
            self._array(reference, actual, path, event_type, source, where, link)
        elif not _volatile(path) and reference != actual:
            self._add(Difference(Kind.VALUE, event_type, path, reference, actual, where, source))

    def _array(
        self,
        reference: list[Any],
        actual: list[Any],
        path: str,
        event_type: str,
        source: str,
        where: str,
        link: bool,
    ) -> None:
        element = path + "[]"
        if all(_json_type(v) not in ("object", "array") for v in (*reference, *actual)):
            # a list of settings (modalities, include): its value is the setting
            if not _volatile(element) and reference != actual:
                self._add(
                    Difference(Kind.VALUE, event_type, path, reference, actual, where, source)
                )
            return
        if len(reference) == len(actual):
            for ref, ours in zip(reference, actual, strict=True):
                self._value(ref, ours, element, event_type, source, where, link)
            return
        # lists of different lengths: each of ours against a reference element of its kind
        for ours in actual:
            like = [ref for ref in reference if _kind_of(ref) == _kind_of(ours)]
            if like:
                self._value(like[0], ours, element, event_type, source, where, link=False)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    raise TypeError(f"not a JSON value: {value!r}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _volatile(path: str) -> bool:
    parts = [part.removesuffix("[]") for part in path.split(".")]
    if parts[-1] == "type":
        return False  # a discriminator, even inside a volatile subtree
    return (
        path in VOLATILE_PATHS
        or parts[-1] in VOLATILE_KEYS
        or any(part in VOLATILE_SUBTREES for part in parts)
    )


def _kind_of(value: Any) -> Any:
    return value.get("type") if isinstance(value, dict) else _json_type(value)


def _variant(event: dict[str, Any]) -> frozenset[tuple[str, str]]:
    """The ``type`` and ``role`` values found under an event, by path."""
    found: set[tuple[str, str]] = set()

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for name, inner in value.items():
                inner_path = _join(path, name)
                if name in ("type", "role") and isinstance(inner, str):
                    found.add((inner_path, inner))
                else:
                    walk(inner, inner_path)
        elif isinstance(value, list):
            for inner in value:
                walk(inner, path + "[]")

    walk(event, "")
    return frozenset(found)


def _lane(event: dict[str, Any]) -> tuple[Any, ...]:
    kind = event.get("type", "")
    if kind in STREAMED:
        return (kind, event.get("item_id"))
    if kind in ASYNCHRONOUS:
        return (ASYNCHRONOUS[kind], event.get("item_id"))
    return _MAIN


def _lane_name(key: tuple[Any, ...]) -> str:
    return " ".join(str(part) for part in key if part is not None)


def _lanes(
    events: Sequence[dict[str, Any]],
) -> dict[tuple[Any, ...], list[tuple[int, dict[str, Any]]]]:
    lanes: dict[tuple[Any, ...], list[tuple[int, dict[str, Any]]]] = {}
    for index, event in enumerate(events):
        lanes.setdefault(_lane(event), []).append((index, event))
    return lanes


def _subject(event: dict[str, Any]) -> Any:
    item = event.get("item")
    return item.get("id") if isinstance(item, dict) else event.get("item_id")


def _canonical_order(
    events: list[tuple[int, dict[str, Any]]],
) -> list[tuple[int, dict[str, Any]]]:
    """Adjacent pairs of :data:`EITHER_ORDER` about one item, put in one fixed order."""
    ordered = list(events)
    for k in range(len(ordered) - 1):
        first, second = ordered[k][1], ordered[k + 1][1]
        pair = frozenset({first["type"], second["type"]})
        if (
            pair in EITHER_ORDER
            and len(pair) == 2
            and _subject(first) == _subject(second)
            and first["type"] > second["type"]
        ):
            ordered[k], ordered[k + 1] = ordered[k + 1], ordered[k]
    return ordered


def _first_of_runs(
    events: list[tuple[int, dict[str, Any]]],
) -> list[tuple[int, dict[str, Any]]]:
    """A lane with each run of consecutive events of one type reduced to its first."""
    return [
        (index, event)
        for n, (index, event) in enumerate(events)
        if n == 0 or events[n - 1][1]["type"] != event["type"]
    ]


def _collapse(events: list[tuple[int, dict[str, Any]]]) -> list[str]:
    return [event["type"] for _, event in _first_of_runs(events)]
