"""The engine interfaces (VAD, STT, LLM, TTS and the turn model) and the plain values that
cross them.

Engines know nothing about the Realtime protocol: they take audio as float32 numpy arrays
(mono, at the engine's own ``sample_rate``) and text as ``str``, and they are called from
``trio.to_thread`` worker threads. Every long call takes a :class:`CancelToken` and returns at
its next token/chunk once the token is cancelled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import attrs
import numpy as np
import numpy.typing as npt

FloatAudio = npt.NDArray[np.float32]


class CancelToken:
    """Set by the I/O shell when the work it asked for is no longer wanted."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (in the cancelling thread) when the token is cancelled, at once if
        it already is; returns a function that unregisters it. For work that must be told
        of a cancel rather than poll for it, such as a call into an engine worker process."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return lambda: self._forget(callback)
        callback()
        return lambda: None

    def _forget(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)


class EngineError(Exception):
    """An engine could not do what it was asked (bad model output, remote failure, ...).

    ``code`` is the ``error.code`` the client is told when this fails a response."""

    code = "engine_error"


class UnsupportedInput(EngineError):
    """The engine cannot take what the request holds (an image for a text-only LLM)."""

    code = "unsupported_input"


class EngineFailed(EngineError):
    """An engine's worker process died (a signal, an exit, an OOM kill) or stopped answering
    and was killed; the supervisor restarts it."""

    code = "engine_failed"


class MissingDependency(EngineError):
    """An engine's optional dependency or model file is not installed; ``extra`` names the fix
    (or ``install``, the command, for what no extra of this package installs)."""

    def __init__(self, engine: str, extra: str, detail: str, install: str | None = None) -> None:
        install = install or f"pip install -e '.[{extra}]'"
        super().__init__(f"{engine} needs {detail}; install it with: {install}")
        self.engine = engine
        self.extra = extra


# --- VAD -------------------------------------------------------------------------------------


@runtime_checkable
class VAD(Protocol):
    """Speech probability per fixed-size frame; the turn logic lives in ``protocol``."""

    sample_rate: int  #: Hz of the frames it accepts (16 000 for Silero)
    frame_samples: int  #: samples per frame (512 = 32 ms at 16 kHz for Silero)

    def probability(self, frame: FloatAudio) -> float:
        """Speech probability in [0, 1] of one frame of exactly ``frame_samples`` samples."""
        ...

    def reset(self) -> None:
        """Forget the recurrent state (start of a new session)."""
        ...

    def stream(self) -> VAD:
        """A VAD with its own fresh state that shares this one's model (one per session)."""
        ...


# --- turn model ------------------------------------------------------------------------------


@runtime_checkable
class TurnModel(Protocol):
    """Whether an utterance sounds finished, from its audio (for ``semantic_vad``)."""

    sample_rate: int  #: Hz of the audio it accepts (16 000)

    def probability(self, audio: FloatAudio) -> float:
        """P(the speaker has finished their turn) in [0, 1], for the utterance that ends at the
        end of ``audio`` (mono float32; the model may look at only its last seconds)."""
        ...


# --- STT -------------------------------------------------------------------------------------


@attrs.frozen
class Transcript:
    text: str
    audio_seconds: float  #: duration of the audio that was transcribed
    language: str | None = None
    #: (token, natural-log probability) pairs, when asked for and the engine has them
    logprobs: tuple[tuple[str, float], ...] | None = None


@runtime_checkable
class STT(Protocol):
    sample_rate: int  #: Hz of the audio it accepts (16 000)

    def transcribe(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        partial: bool = False,
        logprobs: bool = False,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        """Transcribe one segment. ``partial=True`` asks for a fast hypothesis of a segment
        that is still growing (live transcription); engines may trade accuracy for speed.
        ``logprobs=True`` asks for per-token log probabilities in ``Transcript.logprobs``."""
        ...


# --- LLM -------------------------------------------------------------------------------------


@attrs.frozen
class ToolCallRequest:
    """A function call made by the assistant in the history."""

    call_id: str
    name: str
    arguments: str  #: JSON text


@attrs.frozen
class ChatMessage:
    """One turn of the history in the engine's terms.

    ``role="tool"`` carries a function result (``tool_call_id`` + ``content``);
    an assistant message may carry ``tool_calls`` and empty content.
    """

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCallRequest, ...] = ()
    tool_call_id: str | None = None
    #: a user turn's images: (image_url, detail); only LLMs that take images accept them
    images: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class FunctionTool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = attrs.field(factory=dict)  #: JSON Schema


@attrs.frozen
class ContextTruncation:
    """What to do with a conversation too long for the model (the session's ``truncation``):
    ``"auto"`` drops the oldest turns that do not fit; ``"disabled"`` fails the response
    instead; ``"retention_ratio"`` drops, once the conversation after the instructions passes
    ``post_instructions`` tokens (or the context), the oldest turns until ``retention_ratio``
    of that limit is left, so later turns fit without dropping again."""

    mode: str = "auto"  #: "auto" | "disabled" | "retention_ratio"
    retention_ratio: float = 1.0
    post_instructions: int | None = None  #: tokens after the instructions; None: the context

    @classmethod
    def from_wire(cls, value: Any) -> ContextTruncation:
        if isinstance(value, dict):
            limits = value.get("token_limits") or {}
            return cls(
                "retention_ratio",
                float(value["retention_ratio"]),
                limits.get("post_instructions"),
            )
        return cls(str(value or "auto"))


@attrs.frozen
class LLMRequest:
    instructions: str
    messages: tuple[ChatMessage, ...]
    tools: tuple[FunctionTool, ...] = ()
    #: "auto" | "none" | "required" | a function name to force
    tool_choice: str = "auto"
    max_output_tokens: int | None = None  #: None = the engine's own limit
    temperature: float | None = None
    #: a reasoning model's effort ("minimal" ... "xhigh"); None = the engine's own
    reasoning_effort: str | None = None
    #: the language to answer in (ISO 639-1, "en"); None = say nothing about it
    language: str | None = None
    #: False: at most one function call (None: the engine's default)
    parallel_tool_calls: bool | None = None
    #: what a local model does with a conversation longer than its context
    truncation: ContextTruncation = ContextTruncation()


@attrs.frozen
class TextDelta:
    text: str


@attrs.frozen
class ToolCall:
    call_id: str
    name: str
    arguments: str  #: JSON text


@attrs.frozen
class Usage:
    input_tokens: int
    output_tokens: int
    #: True when generation stopped at ``max_output_tokens``
    truncated: bool = False


LLMEvent = TextDelta | ToolCall | Usage


@runtime_checkable
class LLM(Protocol):
    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        """Yield text deltas and tool calls as they are generated, then one ``Usage``.
        Stops at the next token once ``cancel`` is set."""
        ...


# --- TTS -------------------------------------------------------------------------------------


@runtime_checkable
class TTS(Protocol):
    sample_rate: int  #: Hz of the audio it yields

    def voices(self) -> Sequence[str]:
        """Names accepted as ``voice``; any other name falls back to the default voice."""
        ...

    def synthesize(
        self, text: str, *, voice: str | None, speed: float, cancel: CancelToken
    ) -> Iterator[FloatAudio]:
        """Yield float32 mono chunks of speech for ``text`` as they are produced.
        ``speed`` is a multiple of the natural rate (0.25-1.5). Stops at the next chunk once
        ``cancel`` is set."""
        ...
