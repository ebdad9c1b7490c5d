"""What the I/O shell reports back to the machine: VAD frames and engine results."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class VadFrame:
    """One VAD frame ending at ``end_ms`` of the input timeline (ms of audio appended)."""

    end_ms: int
    duration_ms: int
    probability: float


@attrs.frozen
class TranscriptDelta:
    """Newly confirmed text of a segment still being transcribed (append-only)."""

    item_id: str
    delta: str


@attrs.frozen
class PartialHypothesis:
    """The STT's latest hypothesis of a segment still being spoken (``TranscribeLive``); the
    machine sends the words it confirms (:mod:`protocol.hypotheses`)."""

    item_id: str
    text: str


@attrs.frozen
class TranscriptDone:
    item_id: str
    transcript: str
    audio_seconds: float
    #: per token ``{"token": str, "logprob": float, "bytes": list[int]}``, when the engine has them
    logprobs: tuple[dict[str, Any], ...] | None = None


@attrs.frozen
class TranscriptFailed:
    item_id: str
    message: str


@attrs.frozen
class AudioOut:
    """Synthesised audio in the session's output format, with the text it speaks (if new)."""

    response_id: str
    audio: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    transcript: str = ""


@attrs.frozen
class TextOut:
    """Text of a text-only response."""

    response_id: str
    text: str


@attrs.frozen
class ToolCallOut:
    response_id: str
    call_id: str
    name: str
    arguments: str


@attrs.frozen
class ResponseComplete:
    response_id: str
    input_tokens: int = 0
    output_tokens: int = 0
    #: generation stopped at ``max_output_tokens``: the response ends ``incomplete``
    truncated: bool = False


@attrs.frozen
class ResponseFailed:
    response_id: str
    message: str
    code: str = "engine_error"


@attrs.frozen
class TurnScored:
    """The turn model's P(complete) for the pause ``pause_id`` of a ``ScoreTurn``."""

    item_id: str
    pause_id: int
    probability: float


@attrs.frozen
class SpeculationTranscribed:
    """The transcript a speculation made of its span (held: it sends nothing by itself)."""

    speculation_id: str
    transcript: str


@attrs.frozen
class MediaAudio:
    """A call: ``duration_ms`` of the caller's audio arrived on the call's line (the shell
    holds the samples; this keeps the input timeline and the buffer's state)."""

    duration_ms: float


@attrs.frozen
class PlayoutStarted:
    """WebRTC: queued answer audio began to play out on the call's track."""


@attrs.frozen
class PlayoutStopped:
    """WebRTC: the call's output audio buffer played out (nothing queued any more)."""


@attrs.frozen
class PlayoutCleared:
    """WebRTC: the output audio buffer was flushed (after ``ClearPlayout``);
    ``dropped_ms`` of queued audio was never heard."""

    dropped_ms: float


@attrs.frozen
class DtmfReceived:
    """Phone: the caller pressed ``digit`` on the keypad, received at ``received_at`` (Unix s)."""

    digit: str
    received_at: int


@attrs.frozen
class McpToolsListed:
    """An MCP server listed ``tools`` for the ``mcp_list_tools`` item ``item_id`` (each as the
    item shows it: ``name``, ``input_schema``, ``description``, ``annotations``)."""

    item_id: str
    tools: tuple[dict[str, Any], ...]


@attrs.frozen
class McpToolsListFailed:
    item_id: str
    message: str


@attrs.frozen
class McpCallDone:
    """An MCP tool call ended: ``output`` (its text), or ``error`` (an ``mcp_call.error``
    object: ``protocol_error``, ``tool_execution_error`` or ``http_error``)."""

    response_id: str
    item_id: str
    output: str | None = None
    error: dict[str, Any] | None = None


EngineResult = (
    VadFrame
    | TranscriptDelta
    | PartialHypothesis
    | TranscriptDone
    | TranscriptFailed
    | AudioOut
    | TextOut
    | ToolCallOut
    | ResponseComplete
    | ResponseFailed
    | TurnScored
    | SpeculationTranscribed
    | MediaAudio
    | PlayoutStarted
    | PlayoutStopped
    | PlayoutCleared
    | DtmfReceived
    | McpToolsListed
    | McpToolsListFailed
    | McpCallDone
)
