"""The client's conversation operations: ``conversation.item.create`` (audio in a created
item goes to the transcriber), ``.retrieve``, ``.delete`` and ``.truncate`` (an assistant audio
item cut where the listener stopped hearing it).

Rules of :class:`~protocol.connection.RealtimeConnection` (one of its rooms).
"""

from __future__ import annotations

import attrs

from . import events as ev
from .codec import decode_base64_audio
from .conversation import item_already_exists
from .effects import (
    TranscribeItemAudio,
)
from .errors import ProtocolError
from .items import Content, MessageItem
from .machine_state import MachineState
from .mcp_items import McpApprovalResponseItem
from .output import Output
from .responses import heard_before


class ConversationOps(MachineState):
    """Operations on the conversation's items."""

    def _on_item_create(self, event: ev.ConversationItemCreate, out: Output) -> None:
        item = event.item
        if item.id == self.speech_item_id:
            # announced by speech_started: the id the speech in progress will be committed as
            raise item_already_exists(item.id)
        decoded: list[bytes] = []
        fmt = self.session.input_format
        for index, content in enumerate(getattr(item, "content", ())):
            if content.type != "input_audio" or not content.audio:
                continue
            data = decode_base64_audio(content.audio, f"item.content[{index}].audio")
            if fmt == "audio/pcm" and len(data) % 2:
                raise ProtocolError(
                    "invalid_value",
                    "Invalid audio: audio/pcm input must be 16-bit samples.",
                    f"item.content[{index}].audio",
                )
            decoded.append(data)
        if decoded and isinstance(item, MessageItem):
            # the audio goes to the transcriber; the conversation keeps the transcript only
            item = attrs.evolve(
                item, content=tuple(attrs.evolve(c, audio=None) for c in item.content)
            )
        if isinstance(item, McpApprovalResponseItem):
            self._check_approval(item)
        previous = self.conversation.insert(item, event.previous_item_id)
        out.events += [
            ev.ConversationItemAdded(previous_item_id=previous, item=item),
            ev.ConversationItemDone(previous_item_id=previous, item=item),
        ]
        if isinstance(item, McpApprovalResponseItem):
            self._answer_approval(item, out)
        if decoded:
            self.pending_transcripts.add(item.id)
            out.effects.append(
                TranscribeItemAudio(
                    item.id,
                    b"".join(decoded),
                    self.session.input_format,
                    self.transcription_options(),
                )
            )

    def _on_item_retrieve(self, event: ev.ConversationItemRetrieve, out: Output) -> None:
        out.events.append(ev.ConversationItemRetrieved(item=self.conversation.get(event.item_id)))

    def _on_item_delete(self, event: ev.ConversationItemDelete, out: Output) -> None:
        self.conversation.get(event.item_id)
        for run in self.responses.values():
            if any(item.id == event.item_id for item in run.output):
                raise ProtocolError(
                    "invalid_value",
                    f"Item '{event.item_id}' belongs to response '{run.id}', which is still "
                    "in progress; cancel it first.",
                    "item_id",
                )
        self.conversation.delete(event.item_id)
        self.pending_transcripts.discard(event.item_id)
        self.transcript_sent.pop(event.item_id, None)
        self.hypotheses.pop(event.item_id, None)
        self.audio_items.pop(event.item_id, None)
        out.events.append(ev.ConversationItemDeleted(item_id=event.item_id))
        self._start_ready_responses(out)

    def _on_item_truncate(self, event: ev.ConversationItemTruncate, out: Output) -> None:
        item = self.conversation.get(event.item_id)
        if not isinstance(item, MessageItem) or item.role != "assistant":
            raise ProtocolError(
                "invalid_value", "Only assistant messages can be truncated.", "item_id"
            )
        if event.content_index == 0:
            for run in self.responses.values():
                end_ms = run.cut_open_audio(item.id, event.audio_end_ms)
                if end_ms is not None:  # still streaming: nothing after end_ms is sent
                    out.events.append(
                        ev.ConversationItemTruncated(
                            item_id=item.id, content_index=0, audio_end_ms=end_ms
                        )
                    )
                    return
        if (
            event.content_index >= len(item.content)
            or item.content[event.content_index].type != "output_audio"
        ):
            raise ProtocolError(
                "invalid_value",
                f"Content {event.content_index} of item '{item.id}' is not audio.",
                "content_index",
            )
        out.events.append(self._truncate(item.id, event.content_index, event.audio_end_ms))

    def _truncate(
        self, item_id: str, content_index: int, audio_end_ms: int
    ) -> ev.ConversationItemTruncated:
        """Cut a finished assistant audio item at ``audio_end_ms``: its transcript keeps the
        pieces spoken before it."""
        item = self.conversation.get(item_id)
        assert isinstance(item, MessageItem)
        audio_ms, segments = self._audio_item(item_id)
        # Clients measure playback with their own clock and may overshoot the audio a little:
        # clamp to what was sent instead of failing the truncate they need after an interruption.
        end_ms = min(audio_end_ms, int(audio_ms))
        heard = heard_before(segments, end_ms)
        content = list(item.content)
        content[content_index] = Content("output_audio", transcript="".join(t for _, t in heard))
        self.conversation.replace(attrs.evolve(item, content=tuple(content)))
        self.audio_items[item_id] = (float(end_ms), heard)
        return ev.ConversationItemTruncated(
            item_id=item_id, content_index=content_index, audio_end_ms=end_ms
        )

    def _audio_item(self, item_id: str) -> tuple[float, list[tuple[float, str]]]:
        """The audio ms and transcript segments of a finished assistant audio item."""
        if item_id in self.audio_items:
            return self.audio_items[item_id]
        for run in self.responses.values():  # closed before its response ended
            if item_id in run.audio_items:
                return run.audio_items[item_id]
        return 0.0, []
