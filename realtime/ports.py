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

#: ASGI's messages and the callables that carry them (the raw WebSocket routes use them)
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class EventPort(Protocol):
    """A transport's incoming event side: the client's frames (outgoing ones use the Outbox)."""

    async def receive(self) -> str | bytes: ...


class CallMedia(Protocol):
    """A call's audio, seen from its session (see ``realtime.calls``): a WebRTC peer's
    tracks or a phone line."""

    #: the output's sample rate (Hz): what :meth:`play` takes and :meth:`clear` counts in
    rate: int
    #: the caller's audio: float32 mono chunks at ``ENGINE_RATE``
    audio_in: trio.MemoryReceiveChannel[np.ndarray]
    #: what happens on the line, for the machine: playout started / stopped, keys pressed
    reports: trio.MemoryReceiveChannel[ins.EngineResult]

    def play(self, samples: np.ndarray) -> None:
        """Queue float32 mono samples at :attr:`rate` behind what is queued."""
        ...

    async def clear(self) -> int:
        """Flush the queued output; returns the samples (at :attr:`rate`) never heard."""
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
    #: or "webrtc" / "phone": audio on the call's line (``media``)
    transport: str = "websocket"
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
