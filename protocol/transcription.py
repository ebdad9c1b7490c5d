"""Input transcription: the options every transcription effect carries, live partial
hypotheses confirmed into ``...transcription.delta`` events, and the final transcript (or its
failure) of each committed item.

Rules of :class:`~protocol.connection.RealtimeConnection` (one of its rooms).
"""

from __future__ import annotations

import attrs

from . import events as ev
from . import inputs as ins
from .effects import (
    QuietLiveTranscription,
)
from .hypotheses import confirmed_growth
from .items import MessageItem
from .machine_state import MachineState
from .output import Output, stale
from .turns import (
    PARTIAL_QUIET_MS,
)


class TranscriptionRules(MachineState):
    """Transcripts of the user's audio, live and final."""

    def _quiet_live_transcription(self, out: Output) -> None:
        """Hold new partials back while the speaker is quiet or a speculation transcribes
        the turn; let them go on when that is over (:class:`QuietLiveTranscription`)."""
        if self.speech_item_id is None or self.turns is None or not self.transcribing:
            return
        quiet = self.turns.silence_ms >= PARTIAL_QUIET_MS or self.speculation is not None
        if quiet != self.live_quiet:
            self.live_quiet = quiet
            out.effects.append(QuietLiveTranscription(self.speech_item_id, quiet))

    def _on_transcript_delta(self, result: ins.TranscriptDelta, out: Output) -> None:
        live = result.item_id == self.speech_item_id or result.item_id in self.pending_transcripts
        if not live or not result.delta:
            return stale(result)
        self.transcript_sent[result.item_id] = (
            self.transcript_sent.get(result.item_id, "") + result.delta
        )
        if self.transcribing:
            out.events.append(
                ev.TranscriptionDelta(item_id=result.item_id, content_index=0, delta=result.delta)
            )

    def _on_partial_hypothesis(self, result: ins.PartialHypothesis, out: Output) -> None:
        previous = self.hypotheses.get(result.item_id, "")
        sent = self.transcript_sent.get(result.item_id, "")
        self.hypotheses[result.item_id] = result.text
        growth = confirmed_growth(sent, previous, result.text.strip())
        if growth:
            self._on_transcript_delta(ins.TranscriptDelta(result.item_id, growth), out)

    def _set_transcript(self, item_id: str, transcript: str) -> None:
        item = self.conversation.get(item_id)
        assert isinstance(item, MessageItem)
        content = tuple(
            attrs.evolve(c, transcript=transcript) if c.type == "input_audio" else c
            for c in item.content
        )
        self.conversation.replace(attrs.evolve(item, content=content))

    def _on_transcript_done(self, result: ins.TranscriptDone, out: Output) -> None:
        if result.item_id not in self.pending_transcripts:
            return stale(result)
        self.pending_transcripts.discard(result.item_id)
        sent = self.transcript_sent.pop(result.item_id, "")
        self.hypotheses.pop(result.item_id, None)
        self._set_transcript(result.item_id, result.transcript)
        if self.transcribing:
            if result.transcript.startswith(sent) and len(result.transcript) > len(sent):
                out.events.append(
                    ev.TranscriptionDelta(
                        item_id=result.item_id,
                        content_index=0,
                        delta=result.transcript[len(sent) :],
                    )
                )
            out.events.append(
                ev.TranscriptionCompleted(
                    item_id=result.item_id,
                    content_index=0,
                    transcript=result.transcript,
                    usage={"type": "duration", "seconds": round(result.audio_seconds, 3)},
                    logprobs=(
                        [dict(p) for p in result.logprobs]
                        if self.session.include_logprobs and result.logprobs is not None
                        else None
                    ),
                )
            )
        self._start_ready_responses(out)

    def _on_transcript_failed(self, result: ins.TranscriptFailed, out: Output) -> None:
        if result.item_id not in self.pending_transcripts:
            return stale(result)
        self.pending_transcripts.discard(result.item_id)
        self.transcript_sent.pop(result.item_id, None)
        self.hypotheses.pop(result.item_id, None)
        if self.transcribing:
            out.events.append(
                ev.TranscriptionFailed(
                    item_id=result.item_id,
                    content_index=0,
                    error={
                        "type": "transcription_error",
                        "code": "transcription_failed",
                        "message": result.message,
                        "param": None,
                    },
                )
            )
        self._start_ready_responses(out)
