"""Strict validation of client JSON against small declarative schemas.

Each spec checks one JSON value at a dotted ``param`` path (``session.audio.input.format.rate``,
``item.content[0].type``) and raises :class:`ProtocolError` with OpenAI's error codes:
``missing_required_parameter``, ``unknown_parameter``, ``invalid_value`` (wrong type or value),
``integer_below_min_value`` / ``integer_above_max_value`` and the ``decimal_*`` pair for ranges.
Checked values are returned as plain JSON values (dicts, lists, str, int, float, bool, None).

``null`` in an optional field means "not set", as the ``openai`` SDK's types have it (its
pydantic models type every optional field ``Optional``, and clients send ``null`` for what they
leave unset): the field is dropped from the checked object. Where ``null`` means something of
its own (``turn_detection: null`` turns detection off), the field is :class:`Nullable` and the
``None`` is kept. A required field refuses ``null`` like any other wrong type.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import Any

import attrs

from .errors import ProtocolError

_JSON_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _type_name(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def invalid_type(path: str, expected: str, value: Any) -> ProtocolError:
    return ProtocolError(
        "invalid_value",
        f"Invalid type for '{path}': expected {expected}, but got {_type_name(value)} instead.",
        path,
    )


def invalid_value(path: str, value: Any, supported: tuple[Any, ...] | None = None) -> ProtocolError:
    message = f"Invalid value: {value!r}."
    if supported:
        message += " Supported values are: " + ", ".join(repr(s) for s in supported) + "."
    return ProtocolError("invalid_value", message, path)


class Spec(abc.ABC):
    """One JSON value's rule."""

    @abc.abstractmethod
    def check(self, value: Any, path: str) -> Any:
        """The checked value, or ProtocolError naming ``path``."""


@attrs.frozen
class Str(Spec):
    max_length: int | None = None

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise invalid_type(path, "a string", value)
        if self.max_length is not None and len(value) > self.max_length:
            raise ProtocolError(
                "string_above_max_length",
                f"Invalid '{path}': string too long. Expected a string with maximum length "
                f"{self.max_length}, but got a string with length {len(value)} instead.",
                path,
            )
        return value


@attrs.frozen
class Bool(Spec):
    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            raise invalid_type(path, "a boolean", value)
        return value


def _range_error(kind: str, path: str, value: Any, bound: Any, below: bool) -> ProtocolError:
    side = "below_min" if below else "above_max"
    relation = ">=" if below else "<="
    return ProtocolError(
        f"{kind}_{side}_value",
        f"Invalid '{path}': expected a value {relation} {bound}, but got {value} instead.",
        path,
    )


@attrs.frozen
class Int(Spec):
    minimum: int | None = None
    maximum: int | None = None

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid_type(path, "an integer", value)
        if self.minimum is not None and value < self.minimum:
            raise _range_error("integer", path, value, self.minimum, below=True)
        if self.maximum is not None and value > self.maximum:
            raise _range_error("integer", path, value, self.maximum, below=False)
        return value


@attrs.frozen
class Num(Spec):
    minimum: float | None = None
    maximum: float | None = None

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid_type(path, "a number", value)
        if not math.isfinite(value):
            raise invalid_value(path, value)
        if self.minimum is not None and value < self.minimum:
            raise _range_error("decimal", path, value, self.minimum, below=True)
        if self.maximum is not None and value > self.maximum:
            raise _range_error("decimal", path, value, self.maximum, below=False)
        return float(value)


@attrs.frozen
class Enum(Spec):
    """One of a few strings."""

    values: tuple[str, ...]

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise invalid_type(path, "a string", value)
        if value not in self.values:
            raise invalid_value(path, value, self.values)
        return value


@attrs.frozen
class Nullable(Spec):
    inner: Spec

    def check(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.check(value, path)


@attrs.frozen
class ListOf(Spec):
    item: Spec
    max_items: int | None = None
    min_items: int = 0

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise invalid_type(path, "an array", value)
        if self.max_items is not None and len(value) > self.max_items:
            raise ProtocolError(
                "array_above_max_length",
                f"Invalid '{path}': array too long. Expected an array with maximum length "
                f"{self.max_items}, but got an array with length {len(value)} instead.",
                path,
            )
        if len(value) < self.min_items:
            raise ProtocolError(
                "array_below_min_length",
                f"Invalid '{path}': array too short. Expected an array with minimum length "
                f"{self.min_items}, but got an array with length {len(value)} instead.",
                path,
            )
        return [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]


@attrs.frozen
class MapOf(Spec):
    """A JSON object with free keys and values of one kind (``metadata``)."""

    value: Spec
    max_items: int | None = None

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise invalid_type(path, "an object", value)
        if self.max_items is not None and len(value) > self.max_items:
            raise ProtocolError(
                "object_above_max_properties",
                f"Invalid '{path}': expected an object with at most {self.max_items} "
                f"properties, but got {len(value)}.",
                path,
            )
        return {k: self.value.check(v, join(path, k)) for k, v in value.items()}


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest in a JSON value (a scalar is 0)."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        current, depth = pending.pop()
        if isinstance(current, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            children = current.values() if isinstance(current, dict) else current
            pending += [(child, depth) for child in children]
    return deepest


@attrs.frozen
class AnyJSON(Spec):
    """Any JSON value of the given Python kinds, passed through (JSON Schemas, trace metadata).

    Its nesting is bounded: the value is copied and echoed back, both recursively.
    """

    kinds: tuple[type, ...] = (dict,)
    max_depth: int = 64

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, self.kinds):
            raise invalid_type(path, _JSON_TYPE_NAMES.get(self.kinds[0], "a value"), value)
        if _depth(value) > self.max_depth:
            raise ProtocolError(
                "invalid_value",
                f"Invalid '{path}': nested deeper than {self.max_depth} levels.",
                path,
            )
        return value


@attrs.frozen
class Field:
    spec: Spec
    required: bool = False


@attrs.frozen
class Obj(Spec):
    """A JSON object with known fields; unknown fields are ``unknown_parameter``."""

    fields: Mapping[str, Field]

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise invalid_type(path, "an object", value)
        for name in value:
            if name not in self.fields:
                where = join(path, name)
                raise ProtocolError("unknown_parameter", f"Unknown parameter: '{where}'.", where)
        for name, spec in self.fields.items():
            if spec.required and name not in value:
                where = join(path, name)
                raise ProtocolError(
                    "missing_required_parameter", f"Missing required parameter: '{where}'.", where
                )
        checked = {}
        for name, v in value.items():
            field = self.fields[name]
            if v is None and not field.required and not isinstance(field.spec, Nullable):
                continue  # null is "not set" for an optional field, as OpenAI's types have it
            checked[name] = field.spec.check(v, join(path, name))
        return checked


@attrs.frozen
class Tagged(Spec):
    """An object chosen by its ``key`` field (``type``); ``default`` applies when it is absent."""

    variants: Mapping[str, Obj]
    key: str = "type"
    default: str | None = None

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise invalid_type(path, "an object", value)
        where = join(path, self.key)
        tag = value.get(self.key)
        if tag is None and self.default is not None:  # absent, or null: "not set"
            tag = self.default
            value = {k: v for k, v in value.items() if k != self.key}
        if tag is None:
            raise ProtocolError(
                "missing_required_parameter", f"Missing required parameter: '{where}'.", where
            )
        if not isinstance(tag, str):
            raise invalid_type(where, "a string", tag)
        variant = self.variants.get(tag)
        if variant is None:
            raise invalid_value(where, tag, tuple(self.variants))
        return variant.check(value, path)


@attrs.frozen
class ByKind(Spec):
    """A value that is one of several JSON kinds (``"auto"`` or an object), chosen by kind."""

    choices: Mapping[type, Spec]
    expected: str

    def check(self, value: Any, path: str) -> Any:
        for kind, spec in self.choices.items():
            if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
                return spec.check(value, path)
        raise invalid_type(path, self.expected, value)


def fields(**specs: Spec | Field) -> dict[str, Field]:
    """``Obj`` fields from keyword specs; a bare ``Spec`` is optional."""
    return {k: v if isinstance(v, Field) else Field(v) for k, v in specs.items()}


def required(spec: Spec) -> Field:
    return Field(spec, required=True)
