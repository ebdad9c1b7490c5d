"""Every GA client event, and every server event this server emits, as frozen values.

Field names are the wire's. Server events get a fresh ``event_id`` when none is given and turn
into wire dicts with :meth:`ServerEvent.to_wire`; nested values (items, sessions, responses) are
plain JSON values or objects with their own ``to_wire``.

Longer than the other modules on purpose: it is the protocol's vocabulary, one short class per
event type, and one place to look up any event beats the same classes spread over several files.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, TypeVar

import attrs

from . import ids
from .items import Item
from .mcp_config import tools_repr

# --- client events ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ClientEvent:
    TYPE: ClassVar[str] = ""
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class SessionUpdate(ClientEvent):
    TYPE = "session.update"
    session: dict[str, Any]  #: the checked partial session object


@attrs.frozen(kw_only=True)
class InputAudioBufferAppend(ClientEvent):
    TYPE = "input_audio_buffer.append"
    audio: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")  #: decoded, session format


@attrs.frozen(kw_only=True)
class InputAudioBufferCommit(ClientEvent):
    TYPE = "input_audio_buffer.commit"


@attrs.frozen(kw_only=True)
class InputAudioBufferClear(ClientEvent):
    TYPE = "input_audio_buffer.clear"


@attrs.frozen(kw_only=True)
class OutputAudioBufferClear(ClientEvent):
    TYPE = "output_audio_buffer.clear"


@attrs.frozen(kw_only=True)
class ConversationItemCreate(ClientEvent):
    TYPE = "conversation.item.create"
    item: Item
    previous_item_id: str | None = None


@attrs.frozen(kw_only=True)
class ConversationItemRetrieve(ClientEvent):
    TYPE = "conversation.item.retrieve"
    item_id: str


@attrs.frozen(kw_only=True)
class ConversationItemDelete(ClientEvent):
    TYPE = "conversation.item.delete"
    item_id: str


@attrs.frozen(kw_only=True)
class ConversationItemTruncate(ClientEvent):
    TYPE = "conversation.item.truncate"
    item_id: str
    content_index: int
    audio_end_ms: int


@attrs.frozen(kw_only=True)
class ItemReference:
    id: str


@attrs.frozen(kw_only=True)
class ResponseParams:
    """``response.create``'s ``response`` object; ``None`` fields fall back to the session."""

    conversation: Literal["auto", "none"] = "auto"
    #: ``None``: the default conversation is the context; a tuple: this context instead
    input: tuple[Item | ItemReference, ...] | None = None
    instructions: str | None = None
    tools: tuple[dict[str, Any], ...] | None = attrs.field(default=None, repr=tools_repr)
    tool_choice: str | dict[str, Any] | None = None
    output_modalities: tuple[str, ...] | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    metadata: dict[str, str] | None = None
    voice: str | None = None
    output_format: str | None = None
    reasoning_effort: str | None = None
    parallel_tool_calls: bool | None = None


@attrs.frozen(kw_only=True)
class ResponseCreate(ClientEvent):
    TYPE = "response.create"
    response: ResponseParams = ResponseParams()


@attrs.frozen(kw_only=True)
class ResponseCancel(ClientEvent):
    TYPE = "response.cancel"
    response_id: str | None = None


CLIENT_EVENT_TYPES: dict[str, type[ClientEvent]] = {
    cls.TYPE: cls
    for cls in (
        SessionUpdate,
        InputAudioBufferAppend,
        InputAudioBufferCommit,
        InputAudioBufferClear,
        OutputAudioBufferClear,
        ConversationItemCreate,
        ConversationItemRetrieve,
        ConversationItemDelete,
        ConversationItemTruncate,
        ResponseCreate,
        ResponseCancel,
    )
}

# --- server events ---------------------------------------------------------------------------


def _wire(value: Any) -> Any:
    if hasattr(value, "to_wire"):
        return value.to_wire()
    if isinstance(value, tuple | list):
        return [_wire(v) for v in value]
    return value


@attrs.frozen(kw_only=True)
class ServerEvent:
    TYPE: ClassVar[str] = ""
    _FIELDS: ClassVar[tuple[str, ...]] = ()
    event_id: str = attrs.field(factory=ids.event_id)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"type": self.TYPE, "event_id": self.event_id}
        for name in self._FIELDS:
            wire[name] = _wire(getattr(self, name))
        return wire


_E = TypeVar("_E", bound=type[ServerEvent])


def _server_event(cls: _E) -> _E:
    cls._FIELDS = tuple(f.name for f in attrs.fields(cls) if f.name != "event_id")
    return cls


@_server_event
@attrs.frozen(kw_only=True)
class Error(ServerEvent):
    TYPE = "error"
    error_type: str = "invalid_request_error"
    code: str
    message: str
    param: str | None = None
    client_event_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "error",
            "event_id": self.event_id,
            "error": {
                "type": self.error_type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
                "event_id": self.client_event_id,
            },
        }


@_server_event
@attrs.frozen(kw_only=True)
class SessionCreated(ServerEvent):
    TYPE = "session.created"
    session: dict[str, Any]


@_server_event
@attrs.frozen(kw_only=True)
class SessionUpdated(ServerEvent):
    TYPE = "session.updated"
    session: dict[str, Any]


@_server_event
@attrs.frozen(kw_only=True)
class ConversationItemAdded(ServerEvent):
    TYPE = "conversation.item.added"
    previous_item_id: str | None
    item: Item


@_server_event
@attrs.frozen(kw_only=True)
class ConversationItemDone(ServerEvent):
    TYPE = "conversation.item.done"
    previous_item_id: str | None
    item: Item


@_server_event
@attrs.frozen(kw_only=True)
class ConversationItemRetrieved(ServerEvent):
    TYPE = "conversation.item.retrieved"
    item: Item


@_server_event
@attrs.frozen(kw_only=True)
class ConversationItemDeleted(ServerEvent):
    TYPE = "conversation.item.deleted"
    item_id: str


@_server_event
@attrs.frozen(kw_only=True)
class ConversationItemTruncated(ServerEvent):
    TYPE = "conversation.item.truncated"
    item_id: str
    content_index: int
    audio_end_ms: int


@_server_event
@attrs.frozen(kw_only=True)
class InputAudioBufferCommitted(ServerEvent):
    TYPE = "input_audio_buffer.committed"
    previous_item_id: str | None
    item_id: str


@_server_event
@attrs.frozen(kw_only=True)
class InputAudioBufferCleared(ServerEvent):
    TYPE = "input_audio_buffer.cleared"


@_server_event
@attrs.frozen(kw_only=True)
class InputAudioBufferSpeechStarted(ServerEvent):
    TYPE = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


@_server_event
@attrs.frozen(kw_only=True)
class InputAudioBufferSpeechStopped(ServerEvent):
    TYPE = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


@_server_event
@attrs.frozen(kw_only=True)
class InputAudioBufferTimeoutTriggered(ServerEvent):
    TYPE = "input_audio_buffer.timeout_triggered"
    audio_start_ms: int
    audio_end_ms: int
    item_id: str


@_server_event
@attrs.frozen(kw_only=True)
class InputAudioBufferDtmfEventReceived(ServerEvent):
    """A phone call's caller pressed a key (``0``-``9``, ``*``, ``#``, ``A``-``D``);
    ``received_at``: Unix seconds when the server received it."""

    TYPE = "input_audio_buffer.dtmf_event_received"
    event: str
    received_at: int


@_server_event
@attrs.frozen(kw_only=True)
class TranscriptionDelta(ServerEvent):
    TYPE = "conversation.item.input_audio_transcription.delta"
    item_id: str
    content_index: int
    delta: str


@_server_event
@attrs.frozen(kw_only=True)
class TranscriptionCompleted(ServerEvent):
    TYPE = "conversation.item.input_audio_transcription.completed"
    item_id: str
    content_index: int
    transcript: str
    usage: dict[str, Any]
    #: per token: ``{"token", "logprob", "bytes"}``; sent only when the session includes them
    logprobs: list[dict[str, Any]] | None = None

    def to_wire(self) -> dict[str, Any]:
        wire = super().to_wire()
        if self.logprobs is None:
            del wire["logprobs"]
        return wire


@_server_event
@attrs.frozen(kw_only=True)
class TranscriptionFailed(ServerEvent):
    TYPE = "conversation.item.input_audio_transcription.failed"
    item_id: str
    content_index: int
    error: dict[str, Any]


@_server_event
@attrs.frozen(kw_only=True)
class ResponseCreated(ServerEvent):
    TYPE = "response.created"
    response: dict[str, Any]


@_server_event
@attrs.frozen(kw_only=True)
class ResponseDone(ServerEvent):
    TYPE = "response.done"
    response: dict[str, Any]


@_server_event
@attrs.frozen(kw_only=True)
class ResponseOutputItemAdded(ServerEvent):
    TYPE = "response.output_item.added"
    response_id: str
    output_index: int
    item: Item


@_server_event
@attrs.frozen(kw_only=True)
class ResponseOutputItemDone(ServerEvent):
    TYPE = "response.output_item.done"
    response_id: str
    output_index: int
    item: Item


@_server_event
@attrs.frozen(kw_only=True)
class ResponseContentPartAdded(ServerEvent):
    TYPE = "response.content_part.added"
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    part: dict[str, Any]


@_server_event
@attrs.frozen(kw_only=True)
class ResponseContentPartDone(ServerEvent):
    TYPE = "response.content_part.done"
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    part: dict[str, Any]


@_server_event
@attrs.frozen(kw_only=True)
class ResponseOutputAudioDelta(ServerEvent):
    TYPE = "response.output_audio.delta"
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str  #: base64 audio in the session's output format


@_server_event
@attrs.frozen(kw_only=True)
class ResponseOutputAudioDone(ServerEvent):
    TYPE = "response.output_audio.done"
    response_id: str
    item_id: str
    output_index: int
    content_index: int


@_server_event
@attrs.frozen(kw_only=True)
class ResponseOutputAudioTranscriptDelta(ServerEvent):
    TYPE = "response.output_audio_transcript.delta"
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str


@_server_event
@attrs.frozen(kw_only=True)
class ResponseOutputAudioTranscriptDone(ServerEvent):
    TYPE = "response.output_audio_transcript.done"
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    transcript: str


@_server_event
@attrs.frozen(kw_only=True)
class ResponseOutputTextDelta(ServerEvent):
    TYPE = "response.output_text.delta"
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str


@_server_event
@attrs.frozen(kw_only=True)
class ResponseOutputTextDone(ServerEvent):
    TYPE = "response.output_text.done"
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    text: str


@_server_event
@attrs.frozen(kw_only=True)
class ResponseFunctionCallArgumentsDelta(ServerEvent):
    TYPE = "response.function_call_arguments.delta"
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    delta: str


@_server_event
@attrs.frozen(kw_only=True)
class ResponseFunctionCallArgumentsDone(ServerEvent):
    TYPE = "response.function_call_arguments.done"
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str


@_server_event
@attrs.frozen(kw_only=True)
class McpListToolsInProgress(ServerEvent):
    TYPE = "mcp_list_tools.in_progress"
    item_id: str


@_server_event
@attrs.frozen(kw_only=True)
class McpListToolsCompleted(ServerEvent):
    TYPE = "mcp_list_tools.completed"
    item_id: str


@_server_event
@attrs.frozen(kw_only=True)
class McpListToolsFailed(ServerEvent):
    TYPE = "mcp_list_tools.failed"
    item_id: str


@_server_event
@attrs.frozen(kw_only=True)
class ResponseMcpCallArgumentsDelta(ServerEvent):
    TYPE = "response.mcp_call_arguments.delta"
    response_id: str
    item_id: str
    output_index: int
    delta: str
    #: OpenAI's padding against length analysis; the Agents SDK for JavaScript requires the
    #: field on this event, so it is sent, empty (no padding)
    obfuscation: str = ""


@_server_event
@attrs.frozen(kw_only=True)
class ResponseMcpCallArgumentsDone(ServerEvent):
    TYPE = "response.mcp_call_arguments.done"
    response_id: str
    item_id: str
    output_index: int
    arguments: str


@_server_event
@attrs.frozen(kw_only=True)
class ResponseMcpCallInProgress(ServerEvent):
    TYPE = "response.mcp_call.in_progress"
    item_id: str
    output_index: int


@_server_event
@attrs.frozen(kw_only=True)
class ResponseMcpCallCompleted(ServerEvent):
    TYPE = "response.mcp_call.completed"
    item_id: str
    output_index: int


@_server_event
@attrs.frozen(kw_only=True)
class ResponseMcpCallFailed(ServerEvent):
    TYPE = "response.mcp_call.failed"
    item_id: str
    output_index: int


@_server_event
@attrs.frozen(kw_only=True)
class RateLimitsUpdated(ServerEvent):
    TYPE = "rate_limits.updated"
    rate_limits: list[dict[str, Any]]


@_server_event
@attrs.frozen(kw_only=True)
class OutputAudioBufferStarted(ServerEvent):
    TYPE = "output_audio_buffer.started"
    response_id: str


@_server_event
@attrs.frozen(kw_only=True)
class OutputAudioBufferStopped(ServerEvent):
    TYPE = "output_audio_buffer.stopped"
    response_id: str


@_server_event
@attrs.frozen(kw_only=True)
class OutputAudioBufferCleared(ServerEvent):
    TYPE = "output_audio_buffer.cleared"
    response_id: str


SERVER_EVENT_TYPES: dict[str, type[ServerEvent]] = {
    cls.TYPE: cls for cls in ServerEvent.__subclasses__()
}
