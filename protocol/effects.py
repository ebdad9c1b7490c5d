"""What the machine asks the I/O shell to do. Effects are instructions, never events."""

from __future__ import annotations

from typing import Any

import attrs

from .items import Content, Item, MessageItem
from .mcp_config import McpFunction, McpServerConfig, tools_repr


@attrs.frozen
class AppendInputAudio:
    """Decoded client audio to add to the input timeline (and run through the VAD)."""

    audio: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    format: str  #: "audio/pcm" (24 kHz PCM16), "audio/pcmu" or "audio/pcma" (8 kHz)
    #: feed the audio to the VAD (turn detection is on)
    detect_speech: bool


@attrs.frozen
class ClearInputAudio:
    """Drop the uncommitted input audio (and any live transcription of it)."""


@attrs.frozen
class TranscribeLive:
    """Speech started: produce partial transcripts of ``item_id`` from ``start_ms`` on."""

    item_id: str
    start_ms: int


@attrs.frozen
class QuietLiveTranscription:
    """Whether new partial transcripts of ``item_id`` are wanted now. ``quiet``: not while the
    speaker has been silent :data:`~protocol.turns.PARTIAL_QUIET_MS` (the final is near, the
    silence adds no words, and a partial in flight would hold the final up) nor while a
    speculation transcribes the turn; ``quiet=False`` when that is over."""

    item_id: str
    quiet: bool


@attrs.frozen
class TranscriptionOptions:
    """What a session asks of each input transcription: ``audio.input.transcription``'s
    ``language``, ``prompt`` and ``keywords``, and word log probabilities when ``include``
    names them. Every transcription effect carries the value in force when it was made."""

    language: str | None = None
    prompt: str | None = None
    logprobs: bool = False
    keywords: tuple[str, ...] = ()
    #: ``audio.input.noise_reduction``: its type ("near_field" or "far_field") and strength
    #: (the shell denoises the audio before the STT hears it); None: off
    noise_reduction: tuple[str, float] | None = None

    def stt_options(self) -> dict[str, Any]:
        """As keyword arguments of the STT engine's ``transcribe``: the keywords join the
        prompt as a glossary, which biases a prompted decoder (Whisper) towards them."""
        prompt = self.prompt
        if self.keywords:
            glossary = "Glossary: " + ", ".join(self.keywords) + "."
            prompt = f"{prompt} {glossary}" if prompt else glossary
        return {"language": self.language, "prompt": prompt, "logprobs": self.logprobs}


@attrs.frozen
class CommitInputAudio:
    """Cut ``[start_ms, end_ms)`` of the input timeline into ``item_id`` and transcribe it."""

    item_id: str
    start_ms: int
    end_ms: int
    transcription: TranscriptionOptions
    #: the speculation whose transcript stands for this segment (see ``speculation.py``):
    #: use it instead of transcribing anew (if it has none after all, transcribe)
    speculation_id: str | None = None


@attrs.frozen
class TranscribeItemAudio:
    """Transcribe the audio a client put in an ``input_audio`` item."""

    item_id: str
    audio: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    format: str
    transcription: TranscriptionOptions


@attrs.frozen
class ResponsePlan:
    """Everything a response's pipeline needs, frozen at the moment it starts."""

    instructions: str
    context: tuple[Item, ...]
    tools: tuple[dict[str, Any], ...] = attrs.field(repr=tools_repr)
    tool_choice: str | dict[str, Any]
    output_modalities: tuple[str, ...]
    max_output_tokens: int | None
    voice: str
    speed: float
    output_format: str
    reasoning_effort: str | None = None
    #: the language answers are given in: the session's transcription language, else English
    language: str = "en"
    #: False: at most one function call per response (None: the engine's default)
    parallel_tool_calls: bool | None = None
    #: the session's ``truncation``: "auto", "disabled" or a retention_ratio object
    truncation: str | dict[str, Any] = "auto"
    #: the remote MCP servers of its tools (``tools`` holds the function tools alone)
    mcp_servers: tuple[McpServerConfig, ...] = ()
    #: their listed tools as the model is offered them (set when the response starts)
    mcp_functions: tuple[McpFunction, ...] = ()

    def mcp_function(self, name: str) -> McpFunction | None:
        """The MCP tool the model calls as function ``name``, if it is one."""
        return next((f for f in self.mcp_functions if f.function_name == name), None)


@attrs.frozen
class StartResponse:
    response_id: str
    plan: ResponsePlan
    #: the speculation whose held output stands for this response: replay it and continue its
    #: stream instead of starting the engines anew (if it failed or is gone, start anew)
    speculation_id: str | None = None
    #: False: the response first makes the MCP calls the client approved (``CallMcpTool``
    #: effects beside this one) and runs the model on ``ContinueResponse``
    run_model: bool = True


@attrs.frozen
class ListMcpTools:
    """Connect to an MCP server and list its tools for the ``mcp_list_tools`` item
    ``item_id`` (answered by ``McpToolsListed`` or ``McpToolsListFailed``)."""

    item_id: str
    server: McpServerConfig


@attrs.frozen
class CloseMcpServer:
    """No tool of the session names this server any more: close its connection."""

    key: str


@attrs.frozen
class CallMcpTool:
    """Call tool ``name`` of ``server`` for the response's ``mcp_call`` item ``item_id``,
    inside the response's work (its cancel abandons the call); answered by ``McpCallDone``."""

    response_id: str
    item_id: str
    server: McpServerConfig
    name: str
    arguments: str


@attrs.frozen
class ContinueResponse:
    """The response's MCP calls answered: run the model again with ``plan`` (the context now
    holds the calls and their outputs), in the same response."""

    response_id: str
    plan: ResponsePlan


@attrs.frozen
class TranscribeEarly:
    """The user has been quiet a moment in a turn that may pause before it ends: transcribe
    ``[start_ms, end_ms)`` of the input timeline now, so that a speculation at the pause can
    take this transcript (its :attr:`StartSpeculation.early_id`) instead of starting its own.
    Nothing is sent to the client from it."""

    early_id: str
    item_id: str
    start_ms: int
    end_ms: int
    transcription: TranscriptionOptions


@attrs.frozen
class CancelEarlyTranscription:
    """Speech came back, or the turn ended, before a speculation took the early
    transcription ``early_id``: it heard only part of the turn; drop it."""

    early_id: str


@attrs.frozen
class CancelResponse:
    """Stop the response's work now; anything it still produces is dropped by the machine."""

    response_id: str
    reason: str


@attrs.frozen
class StartSpeculation:
    """The user paused: transcribe ``[start_ms, end_ms)`` of the input timeline now and, when
    ``plan`` is set, generate the response that :meth:`response_plan` describes, holding
    every result until a :class:`CommitInputAudio` / :class:`StartResponse` names this
    speculation. Nothing of it reaches the client before then."""

    speculation_id: str
    item_id: str  #: the id the segment will be committed as
    start_ms: int
    end_ms: int
    transcription: TranscriptionOptions
    #: the response the turn would start, without the user's item (None: no response follows)
    plan: ResponsePlan | None
    #: the early transcription (:class:`TranscribeEarly`) that serves as this speculation's
    #: transcript: wait for it instead of transcribing the span (if it fails, transcribe)
    early_id: str | None = None

    def response_plan(self, transcript: str) -> ResponsePlan:
        """The plan with the user's item added as it will be once transcribed."""
        assert self.plan is not None
        item = user_audio_item(self.item_id, transcript)
        return attrs.evolve(self.plan, context=(*self.plan.context, item))


@attrs.frozen
class CancelSpeculation:
    """Stop the speculation's work and drop everything it holds; none of it is ever sent."""

    speculation_id: str


@attrs.frozen
class ScoreTurn:
    """Ask the turn model whether the utterance in ``[start_ms, end_ms)`` of the input
    timeline sounds complete; answer with ``inputs.TurnScored(item_id, pause_id, ...)``."""

    item_id: str  #: the speech in progress
    pause_id: int
    start_ms: int
    end_ms: int


@attrs.frozen
class AcceptMediaAudio:
    """WebRTC: add the track audio just reported (``inputs.MediaAudio``) to the input
    timeline, and run it through the VAD when ``detect_speech``."""

    detect_speech: bool


@attrs.frozen
class PlayAudio:
    """WebRTC: queue answer audio (in the session's output ``format``) on the call's track."""

    response_id: str
    audio: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    format: str


@attrs.frozen
class ClearPlayout:
    """WebRTC: flush the call's queued output audio now; answer with
    ``inputs.PlayoutCleared(dropped_ms)``."""


def user_audio_item(item_id: str, transcript: str | None) -> MessageItem:
    """The user item that committed input audio becomes (its transcript once known)."""
    return MessageItem(
        id=item_id, role="user", content=(Content("input_audio", transcript=transcript),)
    )


Effect = (
    AppendInputAudio
    | ClearInputAudio
    | TranscribeLive
    | QuietLiveTranscription
    | CommitInputAudio
    | TranscribeItemAudio
    | StartResponse
    | CancelResponse
    | StartSpeculation
    | TranscribeEarly
    | CancelEarlyTranscription
    | CancelSpeculation
    | ScoreTurn
    | AcceptMediaAudio
    | PlayAudio
    | ClearPlayout
    | ListMcpTools
    | CloseMcpServer
    | CallMcpTool
    | ContinueResponse
)
