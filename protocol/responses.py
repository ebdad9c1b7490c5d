"""One response's lifecycle and the exact ladder of events it streams.

Phases and their allowed triggers are the table ``states.RESPONSE_TRANSITIONS``. Within a
response, at most one message item is open at a time, with one content part (``audio`` with a
transcript, or ``text``); a function call is emitted whole. Closing (complete, cancel, fail)
sends every pending ``*.done`` event, then ``response.done``, after which the response accepts
nothing more.
"""

from __future__ import annotations

import base64
from typing import Any

import attrs

from . import events as ev
from . import ids
from .conversation import Conversation
from .effects import ResponsePlan
from .errors import IllegalTransition
from .items import Content, FunctionCallItem, Item, MessageItem
from .mcp_output import McpOutput
from .session import BYTES_PER_MS
from .states import Phase, advance

#: an audio item's transcript pieces: (audio position in ms where a piece starts, the piece)
Segments = list[tuple[float, str]]


def heard_before(segments: Segments, end_ms: float) -> Segments:
    """The transcript pieces a listener who stopped at ``end_ms`` heard begin."""
    return [(start, text) for start, text in segments if start < end_ms]


@attrs.define
class _OpenMessage:
    item_id: str
    output_index: int
    modality: str  # "audio" | "text"
    text: str = ""
    audio_ms: float = 0.0
    #: (audio position in ms where a transcript piece starts, the piece)
    segments: list[tuple[float, str]] = attrs.Factory(list)
    #: truncated while streaming: heard up to this ms, nothing after it is sent
    cut_ms: float | None = None

    def heard(self) -> tuple[float, Segments]:
        """The audio ms and transcript pieces the listener heard (all, unless cut)."""
        if self.cut_ms is None:
            return self.audio_ms, self.segments
        return self.cut_ms, heard_before(self.segments, self.cut_ms)


class ResponseRun(McpOutput):
    """A response from ``response.created`` to ``response.done`` (its MCP output and model
    rounds: :class:`~protocol.mcp_output.McpOutput`)."""

    def __init__(
        self,
        response_id: str,
        plan: ResponsePlan,
        *,
        conversation: Conversation | None,
        conversation_id: str | None,
        metadata: dict[str, str] | None,
        context_ids: tuple[str, ...] | None = None,
        extra_items: dict[str, Item] | None = None,
    ) -> None:
        self.id = response_id
        self.plan = plan
        self.phase = Phase.WAITING_INPUT
        self.conversation = conversation  # None: out-of-band, items stay out of the conversation
        self.conversation_id = conversation_id
        self.metadata = metadata
        self.output: list[Item] = []
        self.audio_bytes_sent = 0
        self._message: _OpenMessage | None = None
        #: the context: ``None`` = the whole default conversation, else these item ids
        self.context_ids = context_ids
        #: items given inline in ``response.create``'s ``input``
        self.extra_items = extra_items or {}
        #: finished audio items: item id -> (audio ms sent, transcript segments), for truncation
        self.audio_items: dict[str, tuple[float, list[tuple[float, str]]]] = {}
        self.mcp_in_flight: dict[str, int] = {}
        self.approvals_pending: set[str] = set()
        self.call_servers: set[str] = set()
        self.model_running = False
        self.rounds = 0
        self.tokens = (0, 0)
        self.calls_only = False
        #: a model round stopped at ``max_output_tokens`` (the response ends ``incomplete``)
        self.truncated = False

    # --- transitions -------------------------------------------------------------------------

    def _go(self, trigger: str) -> None:
        self.phase = advance(self.phase, trigger, f"response {self.id}")

    @property
    def is_done(self) -> bool:
        return self.phase is Phase.DONE

    # --- wire objects ------------------------------------------------------------------------

    def to_wire(
        self,
        status: str = "in_progress",
        details: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        fmt: dict[str, Any] = {"type": self.plan.output_format}
        if self.plan.output_format == "audio/pcm":
            fmt["rate"] = 24000
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": status,
            "status_details": details,
            "output": [item.to_wire() for item in self.output],
            "conversation_id": self.conversation_id,
            "output_modalities": list(self.plan.output_modalities),
            "max_output_tokens": self.plan.max_output_tokens or "inf",
            "audio": {"output": {"format": fmt, "voice": self.plan.voice}},
            "usage": usage,
            "metadata": self.metadata,
        }

    def created(self) -> list[ev.ServerEvent]:
        return [ev.ResponseCreated(response=self.to_wire())]

    def start(self) -> None:
        self._go("start")

    # --- items -------------------------------------------------------------------------------

    def _add_item(self, item: Item) -> list[ev.ServerEvent]:
        output_index = len(self.output)
        self.output.append(item)
        out: list[ev.ServerEvent] = [
            ev.ResponseOutputItemAdded(response_id=self.id, output_index=output_index, item=item)
        ]
        if self.conversation is not None:
            previous = self.conversation.insert(item)
            out.append(ev.ConversationItemAdded(previous_item_id=previous, item=item))
        return out

    def _finish_item(
        self, item: Item, output_index: int, kept: Item | None = None
    ) -> list[ev.ServerEvent]:
        """``kept``: what the conversation keeps of ``item``, when that differs (a message
        truncated while it streamed keeps the transcript of what was heard)."""
        self.output[output_index] = item
        out: list[ev.ServerEvent] = []
        if self.conversation is not None:
            self.conversation.replace(kept or item)
            previous = (
                self.conversation.previous_id(item.id) if item.id in self.conversation else None
            )
            out.append(ev.ConversationItemDone(previous_item_id=previous, item=item))
        out.append(
            ev.ResponseOutputItemDone(response_id=self.id, output_index=output_index, item=item)
        )
        return out

    def _open_message(self, modality: str) -> list[ev.ServerEvent]:
        item_id = ids.item_id()
        item = MessageItem(id=item_id, role="assistant", content=(), status="in_progress")
        out = self._add_item(item)
        self._message = _OpenMessage(
            item_id=item_id,
            output_index=len(self.output) - 1,
            modality=modality,
        )
        part: dict[str, Any] = (
            {"type": "audio", "transcript": ""}
            if modality == "audio"
            else {"type": "text", "text": ""}
        )
        out.append(
            ev.ResponseContentPartAdded(
                response_id=self.id,
                item_id=item_id,
                output_index=self._message.output_index,
                content_index=0,
                part=part,
            )
        )
        return out

    def _close_message(self, status: str) -> list[ev.ServerEvent]:
        msg = self._message
        if msg is None:
            return []
        self._message = None
        where: dict[str, Any] = {
            "response_id": self.id,
            "item_id": msg.item_id,
            "output_index": msg.output_index,
            "content_index": 0,
        }
        out: list[ev.ServerEvent]
        kept: Content | None = None
        if msg.modality == "audio":
            out = [
                ev.ResponseOutputAudioDone(**where),
                ev.ResponseOutputAudioTranscriptDone(**where, transcript=msg.text),
                ev.ResponseContentPartDone(**where, part={"type": "audio", "transcript": msg.text}),
            ]
            content = Content("output_audio", transcript=msg.text)
            heard_ms, heard = msg.heard()
            self.audio_items[msg.item_id] = (heard_ms, heard)
            if msg.cut_ms is not None:
                transcript = "".join(text for _, text in heard)
                kept = Content("output_audio", transcript=transcript)
        else:
            out = [
                ev.ResponseOutputTextDone(**where, text=msg.text),
                ev.ResponseContentPartDone(**where, part={"type": "text", "text": msg.text}),
            ]
            content = Content("output_text", text=msg.text)
        item = MessageItem(id=msg.item_id, role="assistant", content=(content,), status=status)  # type: ignore[arg-type]
        kept_item = None if kept is None else attrs.evolve(item, content=(kept,))
        out += self._finish_item(item, msg.output_index, kept_item)
        return out

    # --- outputs -----------------------------------------------------------------------------

    def _message_for(self, modality: str) -> tuple[_OpenMessage, list[ev.ServerEvent]]:
        """The open message, opened now if needed; its one part must be of ``modality``."""
        out: list[ev.ServerEvent] = (
            [] if self._message is not None else self._open_message(modality)
        )
        msg = self._message
        assert msg is not None
        if msg.modality != modality:
            raise IllegalTransition(
                f"response {self.id}: {modality} output inside its open {msg.modality} message"
            )
        return msg, out

    @property
    def open_item_id(self) -> str | None:
        """The message being streamed, if any."""
        return None if self._message is None else self._message.item_id

    @property
    def open_audio_cut(self) -> bool:
        """Whether the message being streamed was truncated: its audio goes nowhere."""
        return self._message is not None and self._message.cut_ms is not None

    def cut_open_audio(self, item_id: str, audio_end_ms: int) -> int | None:
        """``conversation.item.truncate`` of the audio message this response is streaming:
        it was heard up to ``audio_end_ms`` (clamped to the audio sent), and nothing more of
        it, audio or transcript, is sent. The effective point, or None if ``item_id`` is not
        the audio message being streamed."""
        msg = self._message
        if msg is None or msg.item_id != item_id or msg.modality != "audio":
            return None
        end = min(audio_end_ms, int(msg.audio_ms if msg.cut_ms is None else msg.cut_ms))
        msg.cut_ms = float(end)
        return end

    def audio(
        self, audio: bytes, transcript: str, *, audio_events: bool = True
    ) -> list[ev.ServerEvent]:
        """Audio and the text it speaks. ``audio_events=False`` (WebRTC: the audio goes to
        the call's track) counts the audio without ``response.output_audio.delta`` events."""
        self._go("output")
        msg, out = self._message_for("audio")
        if msg.cut_ms is not None:
            return out  # truncated: the listener hears nothing more of this message
        where: dict[str, Any] = {
            "response_id": self.id,
            "item_id": msg.item_id,
            "output_index": msg.output_index,
            "content_index": 0,
        }
        if transcript:
            msg.text += transcript
            msg.segments.append((msg.audio_ms, transcript))
            out.append(ev.ResponseOutputAudioTranscriptDelta(**where, delta=transcript))
        if audio:
            msg.audio_ms += len(audio) / BYTES_PER_MS[self.plan.output_format]
            self.audio_bytes_sent += len(audio)
            if audio_events:
                delta = base64.b64encode(audio).decode("ascii")
                out.append(ev.ResponseOutputAudioDelta(**where, delta=delta))
        return out

    def text(self, delta: str) -> list[ev.ServerEvent]:
        self._go("output")
        msg, out = self._message_for("text")
        msg.text += delta
        out.append(
            ev.ResponseOutputTextDelta(
                response_id=self.id,
                item_id=msg.item_id,
                output_index=msg.output_index,
                content_index=0,
                delta=delta,
            )
        )
        return out

    def tool_call(self, call_id: str, name: str, arguments: str) -> list[ev.ServerEvent]:
        self._go("output")
        out = self._close_message("completed")
        item_id = ids.item_id()
        call_id = call_id or ids.call_id()
        started = FunctionCallItem(
            id=item_id, call_id=call_id, name=name, arguments="", status="in_progress"
        )
        out += self._add_item(started)
        output_index = len(self.output) - 1
        where: dict[str, Any] = {
            "response_id": self.id,
            "item_id": item_id,
            "output_index": output_index,
        }
        if arguments:
            out.append(
                ev.ResponseFunctionCallArgumentsDelta(**where, call_id=call_id, delta=arguments)
            )
        out.append(
            ev.ResponseFunctionCallArgumentsDone(
                **where, call_id=call_id, name=name, arguments=arguments
            )
        )
        done = attrs.evolve(started, arguments=arguments, status="completed")
        out += self._finish_item(done, output_index)
        return out

    # --- endings -----------------------------------------------------------------------------

    def complete(self, truncated: bool) -> list[ev.ServerEvent]:
        """The last model round ended (its tokens counted by ``model_ended``)."""
        self._go("complete")
        input_tokens, output_tokens = self.tokens
        if truncated:
            out = self._close_message("incomplete")
            details = {"type": "incomplete", "reason": "max_output_tokens"}
            return out + self._done("incomplete", details, input_tokens, output_tokens)
        return self._close_message("completed") + self._done(
            "completed", None, input_tokens, output_tokens
        )

    def cancel(self, reason: str) -> list[ev.ServerEvent]:
        self._go("cancel")
        out = self._close_message("incomplete")
        out += self.abandon_mcp_calls("The response was cancelled before the tool answered.")
        return out + self._done("cancelled", {"type": "cancelled", "reason": reason}, 0, 0)

    def fail(self, code: str, message: str) -> list[ev.ServerEvent]:
        self._go("fail")
        out = self._close_message("incomplete")
        out += self.abandon_mcp_calls("The response failed before the tool answered.")
        details = {
            "type": "failed",
            "error": {"type": "server_error", "code": code, "message": message},
        }
        return out + self._done("failed", details, 0, 0)

    def _done(
        self, status: str, details: dict[str, Any] | None, input_tokens: int, output_tokens: int
    ) -> list[ev.ServerEvent]:
        # a cascaded pipeline's only tokens are the language model's text tokens
        usage = {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {
                "text_tokens": input_tokens,
                "audio_tokens": 0,
                "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": output_tokens, "audio_tokens": 0},
        }
        return [ev.ResponseDone(response=self.to_wire(status, details, usage))]
