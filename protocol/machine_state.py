"""The state every room of the machine shares, and what the rooms ask of each other.

:class:`~protocol.connection.RealtimeConnection` is built from rooms, one module per protocol
concept: ``input_buffer.py`` (the input audio buffer and turn taking), ``speculation.py``,
``transcription.py``, ``conversation_ops.py``, ``response_registry.py`` and ``mcp_rules.py``.
Each room is a class over this one: the attributes below are the whole state of a connection (set in
``RealtimeConnection.__init__``), the properties read it, and the abstract methods are the
operations one room asks of another (each implemented by the room named in its docstring).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import events as ev
from .conversation import Conversation
from .effects import ResponsePlan, TranscriptionOptions
from .items import Item
from .mcp_config import McpFunction, McpServerConfig
from .mcp_items import McpApprovalResponseItem
from .output import Output
from .playout import Playout
from .responses import ResponseRun
from .session import SessionConfig
from .states import InputState
from .turns import SpeechPause, TurnDetector

if TYPE_CHECKING:
    from .mcp_rules import McpListing
    from .speculation import EarlyTranscription, Speculation


class MachineState(abc.ABC):
    """The protocol state of one connection."""

    session: SessionConfig
    #: start a turn's work at its first pause (``speculation.py``)
    speculative: bool
    #: the shell answers ``ScoreTurn`` (``semantic_vad`` ends turns on the model's decision)
    turn_model: bool
    conversation: Conversation
    conversation_id: str
    started: bool
    # --- the input audio buffer and the turn in progress
    input_state: InputState
    timeline_ms: float  #: ms of input audio appended since the session began
    buffer_start_ms: float  #: where the uncommitted input audio begins
    #: the id the speech in progress will be committed as (announced by ``speech_started``)
    speech_item_id: str | None
    speech_start_ms: int
    turns: TurnDetector | None  #: None with turn detection off
    #: a VAD turn ended while a response was active (interrupt_response off)
    turn_awaiting_response: bool
    #: ``idle_timeout_ms``: input timeline ms where the last answer's playback ended, while
    #: the timeout runs (None: it does not)
    idle_from_ms: int | None
    # --- responses
    responses: dict[str, ResponseRun]  #: responses not yet done
    default_response_id: str | None  #: the active default-conversation response
    last_response_id: str | None
    #: finished assistant audio: item id -> (audio ms, transcript segments)
    audio_items: dict[str, tuple[float, list[tuple[float, str]]]]
    #: WebRTC: the call's output audio buffer (None over WebSocket: the client plays)
    playout: Playout | None
    # --- transcription
    #: committed items whose transcript is still being made
    pending_transcripts: set[str]
    #: live transcript text already sent as deltas, per item
    transcript_sent: dict[str, str]
    #: item id -> the last live hypothesis of its growing segment
    hypotheses: dict[str, str]
    #: whether partials of the speech in progress are held back (``QuietLiveTranscription``)
    live_quiet: bool
    # --- speculation
    #: the speculation held for the turn in progress or its response, if any
    speculation: Speculation | None
    speculations_started: int
    #: the turn's early transcription, until a speculation takes it or it is dropped
    early: EarlyTranscription | None
    early_transcriptions_started: int
    # --- remote MCP servers
    #: the servers listed (or being listed), by connection key (``McpServerConfig.key``)
    mcp_listings: dict[str, McpListing]
    #: approval requests whose approved call a response has made
    mcp_approvals_used: set[str]
    #: the tool each approval request of the session asked to call, by request item id
    mcp_requests: dict[str, McpFunction]
    #: servers connected for an approved call though no listing names them: closed with it
    mcp_unlisted: set[str]

    def transcription_options(self) -> TranscriptionOptions:
        """What the session asks its input transcriptions for now."""
        transcription = self.session.transcription or {}
        return TranscriptionOptions(
            language=transcription.get("language"),
            prompt=transcription.get("prompt"),
            logprobs=self.session.include_logprobs,
            keywords=tuple(transcription.get("keywords") or ()),
            noise_reduction=self.session.noise_reduction,
        )

    @property
    def transcribing(self) -> bool:
        """Whether input transcription events are sent: always in a transcription session,
        when ``audio.input.transcription`` is set in a realtime one."""
        return self.session.type == "transcription" or self.session.transcription is not None

    def segment_start(self) -> int:
        """Where the speech in progress will be cut from: its onset less the prefix padding,
        never before the uncommitted audio."""
        td = self.session.turn_detection
        padding = 0 if td is None else td.prefix_padding_ms
        return max(int(self.buffer_start_ms), self.speech_start_ms - padding)

    # --- what the rooms ask of each other

    @abc.abstractmethod
    def _cancel(self, run: ResponseRun, reason: str, out: Output) -> None:
        """Cancel a response (``response_registry.py``)."""

    @abc.abstractmethod
    def _create_response(
        self,
        params: ev.ResponseParams,
        out: Output,
        speculation: Speculation | None = None,
        *,
        calls_only: bool = False,
    ) -> None:
        """A new response (``response_registry.py``)."""

    @abc.abstractmethod
    def _start_ready_responses(self, out: Output) -> None:
        """Start the responses whose input is ready (``response_registry.py``)."""

    @abc.abstractmethod
    def _clear_playout(self, out: Output) -> None:
        """Flush the WebRTC output audio buffer (``response_registry.py``)."""

    @abc.abstractmethod
    def _truncate(
        self, item_id: str, content_index: int, audio_end_ms: int
    ) -> ev.ConversationItemTruncated:
        """Cut an assistant audio item (``conversation_ops.py``)."""

    @abc.abstractmethod
    def _speculate(self, pause: SpeechPause, start: int, out: Output) -> None:
        """Start the turn's work at a pause, when allowed (``speculation.py``)."""

    @abc.abstractmethod
    def _abandon_speculation(self, out: Output) -> None:
        """Drop the held speculation, if any (``speculation.py``)."""

    @abc.abstractmethod
    def _transcribe_early(self, out: Output) -> None:
        """Start or drop the turn's early transcription (``speculation.py``)."""

    @abc.abstractmethod
    def _held_response(self, run: ResponseRun, out: Output) -> str | None:
        """The speculation whose held response stands for ``run`` (``speculation.py``)."""

    @abc.abstractmethod
    def _start_idle_timeout(self, run: ResponseRun) -> None:
        """Start ``idle_timeout_ms`` once ``run``'s answer has played (``input_buffer.py``)."""

    @abc.abstractmethod
    def _quiet_live_transcription(self, out: Output) -> None:
        """Hold live partials back, or let them go on (``transcription.py``)."""

    @abc.abstractmethod
    def _retire(self, run: ResponseRun, out: Output) -> None:
        """Forget a response that ended (``response_registry.py``)."""

    @abc.abstractmethod
    def _context(self, run: ResponseRun) -> tuple[Item, ...]:
        """The items a response's model reads (``response_registry.py``)."""

    @abc.abstractmethod
    def _list_mcp_servers(
        self, servers: Iterable[McpServerConfig], out: Output, *, retry_failed: bool
    ) -> None:
        """List the tools of servers not listed yet (``mcp_rules.py``)."""

    @abc.abstractmethod
    def _close_unused_mcp_servers(self, out: Output) -> None:
        """Close the servers no tool names any more (``mcp_rules.py``)."""

    @abc.abstractmethod
    def _mcp_listing_pending(self, plan: ResponsePlan) -> bool:
        """Whether a server of ``plan`` is still being listed (``mcp_rules.py``)."""

    @abc.abstractmethod
    def _mcp_functions(self, plan: ResponsePlan) -> tuple[McpFunction, ...]:
        """The listed tools of ``plan``'s servers, named for the model (``mcp_rules.py``)."""

    @abc.abstractmethod
    def _mcp_tool_call(
        self, run: ResponseRun, function: McpFunction, arguments: str, out: Output
    ) -> None:
        """The model called an MCP tool (``mcp_rules.py``)."""

    @abc.abstractmethod
    def _continue_or_complete(self, run: ResponseRun, truncated: bool, out: Output) -> None:
        """After a model round or a call ended (``mcp_rules.py``)."""

    @abc.abstractmethod
    def _approved_calls(self, run: ResponseRun, context: tuple[Item, ...], out: Output) -> int:
        """Start the approved calls no response has made yet (``mcp_rules.py``)."""

    @abc.abstractmethod
    def _check_approval(self, item: McpApprovalResponseItem) -> None:
        """Refuse an approval that answers no open request (``mcp_rules.py``)."""

    @abc.abstractmethod
    def _answer_approval(self, answer: McpApprovalResponseItem, out: Output) -> None:
        """Carry out the client's answer to an approval request (``mcp_rules.py``)."""
