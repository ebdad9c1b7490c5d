"""The input audio buffer and turn taking: appends, commits and clears, the voice activity
the shell reports (``inputs.VadFrame``) followed through the session's turn detector, and the
end of a user turn (commit it, answer it).

Rules of :class:`~protocol.connection.RealtimeConnection` (this class is one of its rooms;
its methods run on the connection's state). The buffer's states and transitions are
``INPUT_TRANSITIONS`` in ``states.py``; the detector's are ``VOICE_TRANSITIONS``.
"""

from __future__ import annotations

from . import events as ev
from . import ids
from . import inputs as ins
from .effects import (
    AcceptMediaAudio,
    AppendInputAudio,
    CancelSpeculation,
    ClearInputAudio,
    CommitInputAudio,
    ScoreTurn,
    TranscribeLive,
    user_audio_item,
)
from .errors import ProtocolError
from .machine_state import MachineState
from .output import Output, stale
from .responses import ResponseRun
from .session import BYTES_PER_MS
from .states import InputState, advance
from .turns import (
    SpeechPause,
    SpeechRescore,
    SpeechResume,
    SpeechStart,
    SpeechStop,
    TurnDetector,
)

#: OpenAI refuses to commit less audio than this
MIN_COMMIT_MS = 100
#: the keys of a telephone keypad (DTMF)
DTMF_KEYS = "0123456789*#ABCD"


class InputBufferRules(MachineState):
    """The input audio buffer and the user's turns."""

    def _go(self, trigger: str) -> None:
        self.input_state = advance(self.input_state, trigger, "input audio buffer")

    def _new_detector(self) -> TurnDetector | None:
        td = self.session.turn_detection
        return None if td is None else TurnDetector(td, turn_model=self.turn_model)

    def _on_append(self, event: ev.InputAudioBufferAppend, out: Output) -> None:
        if self.playout is not None:
            raise ProtocolError(
                "invalid_value",
                "input_audio_buffer.append is not available on a call: the input audio "
                "comes from the call's own audio (its WebRTC track or phone line).",
                "type",
            )
        fmt = self.session.input_format
        if fmt == "audio/pcm" and len(event.audio) % 2:
            raise ProtocolError(
                "invalid_value",
                "Invalid 'audio': audio/pcm input must be 16-bit samples (an even number of "
                f"bytes), got {len(event.audio)} bytes.",
                "audio",
            )
        if not event.audio:
            return
        self._go("append")
        self.timeline_ms += len(event.audio) / BYTES_PER_MS[fmt]
        out.effects.append(AppendInputAudio(event.audio, fmt, self.turns is not None))

    def _on_media_audio(self, result: ins.MediaAudio, out: Output) -> None:
        if result.duration_ms <= 0:
            return
        self._go("append")
        self.timeline_ms += result.duration_ms
        out.effects.append(AcceptMediaAudio(self.turns is not None))

    def _on_dtmf(self, result: ins.DtmfReceived, out: Output) -> None:
        """A key press on a phone call: told to the client as it is, nothing else changes
        (OpenAI's SIP calls do the same; the application decides what a key means)."""
        if result.digit not in DTMF_KEYS or len(result.digit) != 1:
            return  # not a keypad key: the shell's transport reported garbage
        out.events.append(
            ev.InputAudioBufferDtmfEventReceived(event=result.digit, received_at=result.received_at)
        )

    def _on_commit(self, event: ev.InputAudioBufferCommit, out: Output) -> None:
        buffered = self.timeline_ms - self.buffer_start_ms
        if self.input_state is InputState.EMPTY or buffered < MIN_COMMIT_MS:
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {max(buffered, 0):.2f}ms "
                "of audio.",
            )
        item_id = self.speech_item_id or ids.item_id()
        self._go("commit")
        self._abandon_speculation(out)
        self._commit(item_id, int(self.buffer_start_ms), int(self.timeline_ms), out)
        self.buffer_start_ms = self.timeline_ms

    def _commit(
        self,
        item_id: str,
        start_ms: int,
        end_ms: int,
        out: Output,
        speculation_id: str | None = None,
    ) -> None:
        """The buffer's audio becomes a user item; its transcript is on its way."""
        self.speech_item_id = None
        if self.turns is not None:
            self.turns.reset()
        item = user_audio_item(item_id, None)
        previous = self.conversation.insert(item)
        self.pending_transcripts.add(item_id)
        out.events += [
            ev.InputAudioBufferCommitted(previous_item_id=previous, item_id=item_id),
            ev.ConversationItemAdded(previous_item_id=previous, item=item),
            ev.ConversationItemDone(previous_item_id=previous, item=item),
        ]
        out.effects.append(
            CommitInputAudio(
                item_id,
                start_ms,
                end_ms,
                self.transcription_options(),
                speculation_id=speculation_id,
            )
        )

    def _drop_speech_item(self) -> None:
        """The speech in progress will never be committed: forget its id and live transcript."""
        if self.speech_item_id is not None:
            self.transcript_sent.pop(self.speech_item_id, None)
            self.hypotheses.pop(self.speech_item_id, None)
        self.speech_item_id = None

    def _on_clear(self, event: ev.InputAudioBufferClear, out: Output) -> None:
        self._go("clear")
        self.buffer_start_ms = self.timeline_ms
        self._drop_speech_item()
        self._abandon_speculation(out)
        if self.turns is not None:
            self.turns.reset()
        out.events.append(ev.InputAudioBufferCleared())
        out.effects.append(ClearInputAudio())

    def _on_vad_frame(self, frame: ins.VadFrame, out: Output) -> None:
        self._follow_voice(frame, out)
        self._transcribe_early(out)
        self._quiet_live_transcription(out)
        self._check_idle_timeout(frame, out)

    def _start_idle_timeout(self, run: ResponseRun) -> None:
        """With ``server_vad``'s ``idle_timeout_ms``, the wait for the user starts when the
        answer has played: at ``response.done`` plus the audio it sent (as OpenAI defines it;
        the input audio keeps arriving in real time meanwhile)."""
        td = self.session.turn_detection
        if td is None or td.type != "server_vad" or td.idle_timeout_ms is None:
            return
        audio_ms = run.audio_bytes_sent / BYTES_PER_MS[run.plan.output_format]
        self.idle_from_ms = int(self.timeline_ms + audio_ms)

    def _check_idle_timeout(self, frame: ins.VadFrame, out: Output) -> None:
        """No speech for ``idle_timeout_ms`` after the answer played: ``timeout_triggered``,
        the silent audio committed as the user's turn, and a response to it."""
        td = self.session.turn_detection
        if self.idle_from_ms is None or td is None or td.idle_timeout_ms is None:
            return
        if self.input_state is not InputState.HAS_AUDIO or self.default_response_id is not None:
            return  # speech in progress, or an answer already under way
        if frame.end_ms < self.idle_from_ms + td.idle_timeout_ms:
            return
        start_ms, self.idle_from_ms = self.idle_from_ms, None
        item_id = ids.item_id()
        out.events.append(
            ev.InputAudioBufferTimeoutTriggered(
                audio_start_ms=start_ms, audio_end_ms=frame.end_ms, item_id=item_id
            )
        )
        self._go("idle_timeout")
        self._abandon_speculation(out)
        self._commit(item_id, int(self.buffer_start_ms), frame.end_ms, out)
        self.buffer_start_ms = float(frame.end_ms)
        if self.timeline_ms > self.buffer_start_ms:
            self._go("append")
        self._create_response(ev.ResponseParams(), out)

    def _follow_voice(self, frame: ins.VadFrame, out: Output) -> None:
        if self.turns is None or frame.end_ms <= self.buffer_start_ms:
            return stale(frame)  # VAD off, or audio already committed/cleared
        signal = self.turns.feed(frame.end_ms, frame.duration_ms, frame.probability)
        td = self.session.turn_detection
        assert td is not None
        if isinstance(signal, SpeechStart):
            self._go("speech_started")
            self.idle_from_ms = None  # the user spoke: no idle timeout until the next answer
            self.speech_item_id = ids.item_id()
            self.speech_start_ms = max(signal.audio_start_ms, int(self.buffer_start_ms))
            out.events.append(
                ev.InputAudioBufferSpeechStarted(
                    audio_start_ms=self.speech_start_ms, item_id=self.speech_item_id
                )
            )
            if self.transcribing:
                self.live_quiet = False
                out.effects.append(TranscribeLive(self.speech_item_id, self.segment_start()))
            if td.interrupt_response and self.playout is not None and self.playout.active:
                self._clear_playout(out)  # what is still queued is never heard
            if td.interrupt_response and self.default_response_id is not None:
                self._cancel(self.responses[self.default_response_id], "turn_detected", out)
        elif isinstance(signal, SpeechPause):
            self._on_pause(signal, out)
        elif isinstance(signal, SpeechRescore):
            assert self.speech_item_id is not None
            start = self.segment_start()
            out.effects.append(
                ScoreTurn(self.speech_item_id, signal.pause_id, start, signal.audio_end_ms)
            )
        elif isinstance(signal, SpeechResume):
            self._abandon_speculation(out)
        elif isinstance(signal, SpeechStop):
            self._end_turn(signal, out)

    def _on_pause(self, pause: SpeechPause, out: Output) -> None:
        """The turn may be over: speculate on it and have the turn model score it."""
        assert self.turns is not None and self.speech_item_id is not None
        start = self.segment_start()
        self._speculate(pause, start, out)
        if self.turns.scores_pauses:
            out.effects.append(
                ScoreTurn(self.speech_item_id, pause.pause_id, start, pause.audio_end_ms)
            )

    def _end_turn(self, stop: SpeechStop, out: Output) -> None:
        """The session's rule confirmed the end of the turn: commit it, answer it."""
        td = self.session.turn_detection
        assert td is not None
        item_id = self.speech_item_id
        assert item_id is not None
        end_ms = stop.audio_end_ms
        start = self.segment_start()
        out.events.append(ev.InputAudioBufferSpeechStopped(audio_end_ms=end_ms, item_id=item_id))
        self._go("speech_stopped")
        speculation, self.speculation = self.speculation, None
        held_transcript = speculation is not None and speculation.transcript_stands(
            speech_after_pause=stop.speech_after_pause, options=self.transcription_options()
        )
        self._commit(
            item_id,
            start,
            end_ms,
            out,
            speculation.id if speculation is not None and held_transcript else None,
        )
        self.buffer_start_ms = float(end_ms)
        if self.timeline_ms > self.buffer_start_ms:
            self._go("append")  # audio after the turn's end stays for the next turn
        answers = td.create_response and self.session.type == "realtime"
        if answers and self.default_response_id is None:
            self._create_response(ev.ResponseParams(), out, speculation)
            return
        if answers:
            # interrupt_response is off: answer this turn once the current answer ends
            self.turn_awaiting_response = True
        if speculation is not None and (
            speculation.request.plan is not None or not held_transcript
        ):
            # its response will not be used (a transcript the commit took stays wanted)
            out.effects.append(CancelSpeculation(speculation.id))

    def _on_turn_scored(self, result: ins.TurnScored, out: Output) -> None:
        stop = (
            self.turns.scored(result.pause_id, result.probability)
            if self.turns is not None and result.item_id == self.speech_item_id
            else None
        )
        if stop is None:
            return stale(result)  # incomplete (keep waiting), or late for its pause
        self._end_turn(stop, out)
