"""The one error type of the protocol layer."""

from __future__ import annotations

import attrs


@attrs.frozen
class ProtocolError(Exception):
    """A client event the protocol does not allow.

    The I/O shell answers it with one wire ``error`` event (``invalid_request_error``) and
    carries on: an invalid event never changes any state.
    """

    code: str
    message: str
    param: str | None = None
    #: the ``event_id`` of the client event that caused it, echoed back as ``error.event_id``
    event_id: str | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def with_event_id(self, event_id: str | None) -> ProtocolError:
        return attrs.evolve(self, event_id=event_id)


class IllegalTransition(RuntimeError):
    """The shell fed the machine something its state cannot accept: a bug, not bad input."""
