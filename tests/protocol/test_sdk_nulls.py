"""``null`` in client events, field by field, as the ``openai`` SDK's own types have it.

The cases are generated from the SDK's pydantic models of every client event
(``openai.types.realtime.RealtimeClientEvent``), walked into every nested object, through
every member of a union and into the element of every list, so a field the SDK adds is
covered without a new test:

- a field the SDK types as optional accepts ``null`` and means "not set": the machine answers
  the event with the field set to ``null`` exactly as it answers the same event without it;
- a required field refuses ``null`` with an ``error`` naming the field, like any wrong type.

Each case is the smallest event that reaches the field: the required fields of every object
on the way are filled with sample values. The clients that send ``null`` for unset fields
(LiveKit Agents sends ``"instructions": null`` in every ``response.create``) rely on it.
"""

from __future__ import annotations

import base64
import json
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

import pydantic
import pytest
from openai.types.realtime import realtime_client_event

from protocol import RealtimeConnection

#: the SDK's client event models
EVENT_MODELS: tuple[type[pydantic.BaseModel], ...] = typing.get_args(
    typing.get_args(realtime_client_event.RealtimeClientEvent)[0]
)
#: fields whose ``null`` has a meaning of its own in OpenAI's documentation (turn it off,
#: no predecessor, ...), tested where that meaning is; they are only checked to be accepted
NULL_MEANS_SOMETHING = {
    "turn_detection",
    "transcription",
    "noise_reduction",
    "tracing",
    "previous_item_id",
    "metadata",
    "prompt",
}
#: sample values for required fields, by name, where the type alone would not make one the
#: server accepts
SAMPLES: dict[str, Any] = {
    "audio": base64.b64encode(bytes(4800)).decode(),
    "event_id": "evt_1",
    "model": "gpt-realtime",
}
MAX_DEPTH = 8


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a union (or the annotation itself), ``None`` left out."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [] if annotation is type(None) else [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)


def _sample(name: str, annotation: Any, depth: int) -> Any:
    """A value of ``annotation`` for the required field ``name``."""
    if name in SAMPLES:
        return SAMPLES[name]
    member = _members(annotation)[0]
    origin = typing.get_origin(member)
    if origin is Literal:
        return typing.get_args(member)[0]
    if origin in (list, typing.List):  # noqa: UP006
        return []
    if origin in (dict, typing.Dict):  # noqa: UP006
        return {}
    if _is_model(member):
        return _minimal(member, depth + 1)
    return {str: "x", int: 1, float: 0.5, bool: True}.get(member, "x")


def _minimal(model: type[pydantic.BaseModel], depth: int = 0) -> dict[str, Any]:
    """The smallest object of ``model``: its required fields only."""
    return {
        field.alias or name: _sample(name, field.annotation, depth)
        for name, field in model.model_fields.items()
        if field.is_required()
    }


class Case(typing.NamedTuple):
    path: str  #: the field, as the server's ``param`` names it
    event: dict[str, Any]  #: the event with the field set to null
    without: dict[str, Any] | None  #: the same event without the field (optional fields)
    base: dict[str, Any]  #: the same event with the field at its sample value


Found = tuple[str, dict[str, Any], "dict[str, Any] | None", dict[str, Any]]


def _cases(
    model: type[pydantic.BaseModel], obj: dict[str, Any], path: str, depth: int
) -> Iterator[Found]:
    """(path, object with the field null, object without it, object with it at its sample
    value) for every field below ``obj``, ``obj`` being a minimal ``model``; the objects are
    copies of ``obj`` changed at one place."""
    if depth > MAX_DEPTH:
        return
    for name, field in model.model_fields.items():
        key = field.alias or name
        where = f"{path}.{key}" if path else key
        with_null = {**obj, key: None}
        if field.is_required():
            yield where, with_null, None, obj
        else:
            sample = {**obj, key: _sample(name, field.annotation, depth)}
            yield where, with_null, {k: v for k, v in obj.items() if k != key}, sample
        for member in _members(field.annotation):
            inner, suffix = member, ""
            if typing.get_origin(member) in (list, typing.List):  # noqa: UP006
                inner, suffix = typing.get_args(member)[0], "[0]"
            for candidate in _members(inner):
                if not _is_model(candidate):
                    continue
                child = _minimal(candidate, depth + 1)
                for sub_path, sub_null, sub_without, sub_base in _cases(
                    candidate, child, f"{where}{suffix}", depth + 1
                ):
                    wrap = (lambda c: [c]) if suffix else (lambda c: c)
                    yield (
                        sub_path,
                        {**obj, key: wrap(sub_null)},
                        None if sub_without is None else {**obj, key: wrap(sub_without)},
                        {**obj, key: wrap(sub_base)},
                    )


def all_cases() -> list[Case]:
    cases: dict[str, Case] = {}
    for model in EVENT_MODELS:
        base = _minimal(model)
        for path, with_null, without, sample in _cases(model, base, "", 0):
            if path in ("type", "event_id"):
                continue
            cases.setdefault(f"{base['type']}:{path}", Case(path, with_null, without, sample))
    return list(cases.values())


CASES = all_cases()


def _answer(event: dict[str, Any]) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """What a fresh connection answers to ``event``: its events' types (errors with code and
    param), and the session afterwards."""
    conn = RealtimeConnection(session_id="sess_null", now=lambda: 0.0)
    conn.start()
    out = conn.receive_frame(json.dumps(event))
    answered = [(e.TYPE, getattr(e, "code", None), getattr(e, "param", None)) for e in out.events]
    return answered, conn.session.wire


def test_the_cases_reach_deep_into_every_event() -> None:
    paths = {f"{c.event['type']}:{c.path}" for c in CASES}
    assert len(EVENT_MODELS) == 11
    for expected in (
        "response.create:response.instructions",
        "response.create:response.tools[0].description",
        "session.update:session.audio.input.turn_detection.idle_timeout_ms",
        "conversation.item.create:item.content[0].transcript",
        "conversation.item.truncate:audio_end_ms",
    ):
        assert expected in paths
    assert len(CASES) > 150


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.without is not None],
    ids=lambda c: f"{c.event['type']}:{c.path}",
)
def test_an_optional_field_accepts_null_as_not_set(case: Case) -> None:
    assert case.without is not None
    answered, session = _answer(case.event)
    without, session_without = _answer(case.without)
    if without and without[0][0] == "error":
        # the event is refused without the field too (a field the server needs, or a
        # feature it does not have): null must not make it pass
        assert answered[0][0] == "error" and answered[0][2] == without[0][2]
        return
    assert "error" not in [a[0] for a in answered], f"null refused at {case.path}: {answered}"
    leaf = case.path.rsplit(".", 1)[-1].split("[")[0]
    if leaf not in NULL_MEANS_SOMETHING:
        assert (answered, session) == (without, session_without)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.without is None], ids=lambda c: f"{c.event['type']}:{c.path}"
)
def test_a_required_field_refuses_null(case: Case) -> None:
    answered, _ = _answer(case.event)
    assert [a[0] for a in answered] == ["error"]
    base, _ = _answer(case.base)
    if base and base[0][0] == "error" and not case.path.startswith(str(base[0][2])):
        return  # refused with the field set too, elsewhere (an item type not supported)
    code, param = answered[0][1], answered[0][2]
    assert code in ("invalid_value", "missing_required_parameter")
    assert param is not None and case.path.startswith(param)
