"""What one call into the machine produces."""

from __future__ import annotations

from typing import Any

import attrs

from . import events as ev
from .effects import Effect


@attrs.define
class Output:
    """What one call produced: events to send in order, then effects to carry out."""

    events: list[ev.ServerEvent] = attrs.Factory(list)
    effects: list[Effect] = attrs.Factory(list)


def stale(_: Any) -> None:
    """Results for work that was cancelled, cleared or deleted are dropped, by design."""
