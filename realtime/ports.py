"""What a session runner is given: its options, the client's event port, a call's media, and
the one way its tasks hand results to the machine (:data:`Feed`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import numpy as np
import trio

from protocol import inputs as ins

#: hands an engine result to the session's machine and carries out what it answers
Feed = Callable[[ins.EngineResult], Awaitable[None]]

PLAYOUT_RATE = 48_000  #: Hz of a WebRTC call's output track


class EventPort(Protocol):
    """A transport's incoming event side: the client's frames (outgoing ones use the Outbox)."""

    async def receive(self) -> str | bytes: ...


class CallMedia(Protocol):
    """A WebRTC call's audio, seen from its session (see ``realtime.calls``)."""

    #: the caller's audio: float32 mono chunks at ``ENGINE_RATE``
    audio_in: trio.MemoryReceiveChannel[np.ndarray]
    #: "started" / "stopped" as the answer's audio plays out on the track
    playout: trio.MemoryReceiveChannel[str]

    def play(self, samples: np.ndarray) -> None:
        """Queue float32 mono samples at ``PLAYOUT_RATE``."""
        ...

    async def clear(self) -> int:
        """Flush the queued output; returns the samples dropped."""
        ...


@attrs.frozen
class SessionOptions:
    model: str = "gpt-realtime"
    voice: str = "alloy"
    session_type: str = "realtime"  #: or "transcription"
    #: a partial session object laid over OpenAI's session defaults (from the CLI flags)
    session_defaults: dict[str, Any] = attrs.Factory(dict)
    #: the same for transcription sessions (input audio settings only)
    transcription_defaults: dict[str, Any] = attrs.Factory(dict)
    live_transcription: bool = True
    live_interval_ms: int = 500
    output_chunk_ms: int = 40
    #: start a turn's transcription and response at its first pause, holding them until the
    #: turn is confirmed; clients see the same events either way, only sooner
    speculative: bool = True
    transport: str = "websocket"  #: or "webrtc": audio on the call's tracks (``media``)
    outbox_high_water: int = 512  #: events queued for the client before producers wait
    send_timeout_s: float = 15.0  #: one frame not accepted by the client for this long ends it
    engine_timeout_s: float = 30.0
    #: an MCP server's connect (and tool listing) and one MCP tool call are bounded by these
    mcp_connect_timeout_s: float = 10.0
    mcp_call_timeout_s: float = 30.0
    #: URL prefixes a session's MCP tools may name (None: any; empty: none)
    mcp_allowed_urls: tuple[str, ...] | None = None
    #: OpenTelemetry's tracer provider (``tracing.provider_from_environment``); None: no traces
    tracer_provider: Any = None
