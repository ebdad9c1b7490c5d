"""``RealtimeConnection``: one Realtime session as a sans-IO state machine.

Feed it client frames (:meth:`receive_frame`) and what the engines produced (:meth:`feed`);
each call returns an :class:`Output`: the server events to send, in order, and the effects the
I/O shell must carry out. Every state and transition of the machine is a table in
``states.py``. A client event the rules do not allow becomes exactly one ``error`` event and
changes nothing.

This module is the machine's front: construction, the public API, ``session.update`` and the
dispatch tables that send each client event and engine result to the room whose rules handle
it. The rooms, one module per protocol concept, share the state in ``machine_state.py``:

- ``input_buffer.py``: appends, commits, clears, voice activity and the end of a user turn
- ``speculation.py``: a turn's work started at its first pause, and its early transcript
- ``transcription.py``: live and final transcripts of the user's audio
- ``conversation_ops.py``: ``conversation.item.create`` / ``retrieve`` / ``delete`` / ``truncate``
- ``response_registry.py``: responses from ``response.create`` to ``response.done``, the routing
  of engine output to them, and the WebRTC output buffer (``playout.py``); each response's own
  event sequence is ``responses.py``, what it runs with ``response_plan.py``
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs

from . import events as ev
from . import ids
from . import inputs as ins
from .codec import parse_client_event
from .conversation import Conversation
from .conversation_ops import ConversationOps
from .errors import IllegalTransition, ProtocolError
from .input_buffer import MIN_COMMIT_MS, InputBufferRules
from .items import MessageItem
from .mcp_rules import McpRules
from .output import Output
from .playout import Playout
from .response_registry import ResponseRegistry
from .session import SessionConfig
from .session_spec import SESSION_UPDATE_SPEC
from .speculation import SpeculationRules
from .states import InputState
from .transcription import TranscriptionRules

SESSION_LIFETIME_S = 60 * 60


#: the client events a transcription session accepts (it has no conversation or responses)
#: where a session's audio travels: in events, or on a call the server plays out itself
TRANSPORTS = ("websocket", "webrtc", "phone")
CALL_TRANSPORTS = ("webrtc", "phone")

TRANSCRIPTION_EVENTS: tuple[type[ev.ClientEvent], ...] = (
    ev.SessionUpdate,
    ev.InputAudioBufferAppend,
    ev.InputAudioBufferCommit,
    ev.InputAudioBufferClear,
)


class RealtimeConnection(
    InputBufferRules,
    SpeculationRules,
    TranscriptionRules,
    ConversationOps,
    ResponseRegistry,
    McpRules,
):
    """The protocol state of one connection. Not thread-safe: one caller at a time."""

    def __init__(
        self,
        *,
        model: str = "gpt-realtime",
        voice: str = "alloy",
        session_id: str | None = None,
        session_type: str = "realtime",
        session_defaults: dict[str, Any] | None = None,
        now: Callable[[], float] = time.time,
        speculation: bool = True,
        turn_model: bool = False,
        transport: str = "websocket",
    ) -> None:
        """``session_type``: ``"realtime"`` (a voice conversation) or ``"transcription"``
        (speech to text only). ``session_defaults``: a partial session object (as in
        ``session.update``) laid over OpenAI's defaults; invalid ones raise ProtocolError.
        ``speculation``: start a turn's work at its first pause (``speculation.py``); what
        clients see is the same either way, apart from timing. ``turn_model``: the shell
        answers ``ScoreTurn`` (``semantic_vad`` then ends turns on the model's decision;
        without one it uses fixed silence windows, see ``turns.py``). ``transport``:
        ``"websocket"``, ``"webrtc"`` (input audio from the call's track, answer audio to
        it, the output buffer reported as in ``playout.py``) or ``"phone"`` (the same over a
        phone line; key presses arrive as ``inputs.DtmfReceived``)."""
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r}")
        session_id = session_id or ids.session_id()
        expires_at = int(now()) + SESSION_LIFETIME_S
        if session_type == "transcription":
            self.session = SessionConfig.initial_transcription(session_id, expires_at)
        elif session_type == "realtime":
            self.session = SessionConfig.initial(session_id, model, expires_at, voice)
        else:
            raise ValueError(f"unknown session type {session_type!r}")
        if session_defaults:
            patch = SESSION_UPDATE_SPEC.check({"type": session_type, **session_defaults}, "session")
            self.session = self.session.updated(patch, voice_locked=False)
        # the state every room shares (documented in ``machine_state.py``)
        self.speculative = speculation
        self.turn_model = turn_model
        self.conversation = Conversation()
        self.conversation_id = ids.conversation_id()
        self.started = False
        self.input_state = InputState.EMPTY
        self.timeline_ms = 0.0
        self.buffer_start_ms = 0.0
        self.speech_item_id = None
        self.speech_start_ms = 0
        self.turns = self._new_detector()
        self.turn_awaiting_response = False
        self.idle_from_ms = None
        self.responses = {}
        self.default_response_id = None
        self.last_response_id = None
        self.audio_items = {}
        self.playout = Playout() if transport in CALL_TRANSPORTS else None
        self.pending_transcripts = set()
        self.transcript_sent = {}
        self.hypotheses = {}
        self.live_quiet = False
        self.speculation = None
        self.speculations_started = 0
        self.early = None
        self.early_transcriptions_started = 0
        self.mcp_listings = {}
        self.mcp_approvals_used = set()
        self.mcp_requests = {}
        self.mcp_unlisted = set()

    # --- public API --------------------------------------------------------------------------

    def start(self) -> Output:
        """``session.created``: the first event of every connection, sent once."""
        if self.started:
            raise IllegalTransition("the session was already started")
        self.started = True
        out = Output([ev.SessionCreated(session=self.session.to_wire())])
        self._list_mcp_servers(self.session.mcp_servers, out, retry_failed=False)
        return out

    def receive_frame(self, frame: str | bytes) -> Output:
        """One WebSocket frame from the client."""
        try:
            event = parse_client_event(frame)
        except ProtocolError as error:
            return Output([self.error_event(error)])
        return self.handle(event)

    def handle(self, event: ev.ClientEvent) -> Output:
        """One parsed client event. Errors become one ``error`` event and change nothing."""
        out = Output()
        try:
            if self.session.type == "transcription" and type(event) not in TRANSCRIPTION_EVENTS:
                raise ProtocolError(
                    "invalid_value",
                    f"Invalid value: '{event.TYPE}'. A transcription session supports: "
                    + ", ".join(f"'{cls.TYPE}'" for cls in TRANSCRIPTION_EVENTS)
                    + ".",
                    "type",
                )
            self._CLIENT_HANDLERS[type(event)](self, event, out)
        except ProtocolError as error:
            return Output([self.error_event(error.with_event_id(event.event_id))])
        return out

    def feed(self, result: ins.EngineResult) -> Output:
        """One result from the engines (VAD frame, transcript, response output)."""
        out = Output()
        self._RESULT_HANDLERS[type(result)](self, result, out)
        return out

    @staticmethod
    def error_event(error: ProtocolError) -> ev.Error:
        return ev.Error(
            code=error.code,
            message=error.message,
            param=error.param,
            client_event_id=error.event_id,
        )

    # --- session -----------------------------------------------------------------------------

    def _on_session_update(self, event: ev.SessionUpdate, out: Output) -> None:
        voice_locked = any(
            isinstance(item, MessageItem)
            and item.role == "assistant"
            and item.id in self.audio_items
            for item in self.conversation
        ) or any(run.audio_bytes_sent for run in self.responses.values())
        before = self.session
        self.session = before.updated(event.session, voice_locked=voice_locked)
        if self.session.turn_detection != before.turn_detection:
            previous, self.turns = self.turns, self._new_detector()
            if self.input_state is InputState.SPEECH:
                if self.turns is None:
                    self._go("vad_off")
                    self._drop_speech_item()
                    self._abandon_speculation(out)
                elif previous is not None:
                    # the user is still speaking: the new settings apply to this turn's end
                    self.turns = attrs.evolve(previous, config=self.turns.config)
        out.events.append(ev.SessionUpdated(session=self.session.to_wire()))
        if self.session.type == "realtime":
            retry = "tools" in event.session
            self._list_mcp_servers(self.session.mcp_servers, out, retry_failed=retry)
            self._close_unused_mcp_servers(out)

    _CLIENT_HANDLERS: dict[type, Callable[[Any, Any, Output], None]] = {
        ev.SessionUpdate: _on_session_update,
        ev.InputAudioBufferAppend: InputBufferRules._on_append,
        ev.InputAudioBufferCommit: InputBufferRules._on_commit,
        ev.InputAudioBufferClear: InputBufferRules._on_clear,
        ev.OutputAudioBufferClear: ResponseRegistry._on_output_audio_clear,
        ev.ConversationItemCreate: ConversationOps._on_item_create,
        ev.ConversationItemRetrieve: ConversationOps._on_item_retrieve,
        ev.ConversationItemDelete: ConversationOps._on_item_delete,
        ev.ConversationItemTruncate: ConversationOps._on_item_truncate,
        ev.ResponseCreate: ResponseRegistry._on_response_create,
        ev.ResponseCancel: ResponseRegistry._on_response_cancel,
    }
    _RESULT_HANDLERS: dict[type, Callable[[Any, Any, Output], None]] = {
        ins.VadFrame: InputBufferRules._on_vad_frame,
        ins.TranscriptDelta: TranscriptionRules._on_transcript_delta,
        ins.PartialHypothesis: TranscriptionRules._on_partial_hypothesis,
        ins.TranscriptDone: TranscriptionRules._on_transcript_done,
        ins.TranscriptFailed: TranscriptionRules._on_transcript_failed,
        ins.AudioOut: ResponseRegistry._on_audio_out,
        ins.TextOut: ResponseRegistry._on_text_out,
        ins.ToolCallOut: ResponseRegistry._on_tool_call,
        ins.ResponseComplete: ResponseRegistry._on_response_complete,
        ins.ResponseFailed: ResponseRegistry._on_response_failed,
        ins.TurnScored: InputBufferRules._on_turn_scored,
        ins.SpeculationTranscribed: SpeculationRules._on_speculation_transcribed,
        ins.MediaAudio: InputBufferRules._on_media_audio,
        ins.PlayoutStarted: ResponseRegistry._on_playout_started,
        ins.PlayoutStopped: ResponseRegistry._on_playout_stopped,
        ins.PlayoutCleared: ResponseRegistry._on_playout_cleared,
        ins.DtmfReceived: InputBufferRules._on_dtmf,
        ins.McpToolsListed: McpRules._on_mcp_tools_listed,
        ins.McpToolsListFailed: McpRules._on_mcp_tools_list_failed,
        ins.McpCallDone: McpRules._on_mcp_call_done,
    }


__all__ = ["MIN_COMMIT_MS", "Output", "RealtimeConnection"]
