"""``RealtimeConnection``: one Realtime session as a sans-IO state machine.

Feed it client frames (:meth:`receive_frame`) and what the engines produced (:meth:`feed`);
each call returns an :class:`Output`: the server events to send, in order, and the effects the
I/O shell must carry out. Every state and transition of the machine is a table in
``states.py``. A client event the rules do not allow becomes exactly one ``error`` event and
changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs

from . import events as ev
from . import ids
from . import inputs as ins
from .codec import decode_base64_audio, parse_client_event
from .conversation import Conversation, item_already_exists
from .effects import (
    AcceptMediaAudio,
    AppendInputAudio,
    CancelEarlyTranscription,
    CancelResponse,
    CancelSpeculation,
    ClearInputAudio,
    ClearPlayout,
    CommitInputAudio,
    Effect,
    PlayAudio,
    QuietLiveTranscription,
    ResponsePlan,
    ScoreTurn,
    StartResponse,
    StartSpeculation,
    TranscribeEarly,
    TranscribeItemAudio,
    TranscribeLive,
    TranscriptionOptions,
    user_audio_item,
)
from .errors import IllegalTransition, ProtocolError
from .hypotheses import confirmed_growth
from .items import Content, Item, MessageItem
from .playout import Playout
from .responses import ResponseRun
from .session import BYTES_PER_MS, SESSION_UPDATE_SPEC, SessionConfig
from .speculation import EARLY_TRANSCRIPT_MS, EarlyTranscription, Speculation
from .states import InputState, Phase, VoiceState, advance
from .turns import (
    PARTIAL_QUIET_MS,
    PAUSE_MS,
    SpeechPause,
    SpeechRescore,
    SpeechResume,
    SpeechStart,
    SpeechStop,
    TurnDetector,
)

#: OpenAI refuses to commit less audio than this
MIN_COMMIT_MS = 100
SESSION_LIFETIME_S = 60 * 60


@attrs.define
class Output:
    """What one call produced: events to send in order, then effects to carry out."""

    events: list[ev.ServerEvent] = attrs.Factory(list)
    effects: list[Effect] = attrs.Factory(list)


def _stale(_: Any) -> None:
    """Results for work that was cancelled, cleared or deleted are dropped, by design."""


#: the client events a transcription session accepts (it has no conversation or responses)
TRANSCRIPTION_EVENTS: tuple[type[ev.ClientEvent], ...] = (
    ev.SessionUpdate,
    ev.InputAudioBufferAppend,
    ev.InputAudioBufferCommit,
    ev.InputAudioBufferClear,
)


class RealtimeConnection:
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
        ``"websocket"``, or ``"webrtc"`` (input audio from the call's track, answer audio to
        it, the output buffer reported as in ``playout.py``)."""
        if transport not in ("websocket", "webrtc"):
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
        self.speculative = speculation
        self.turn_model = turn_model
        self.conversation = Conversation()
        self.conversation_id = ids.conversation_id()
        self.input_state = InputState.EMPTY
        self.timeline_ms = 0.0  #: ms of input audio appended since the session began
        self.buffer_start_ms = 0.0  #: where the uncommitted input audio begins
        self.speech_item_id: str | None = None
        self.speech_start_ms = 0
        self.turns = self._new_detector()
        self.responses: dict[str, ResponseRun] = {}  #: responses not yet done
        self.default_response_id: str | None = None  #: the active default-conversation response
        self.last_response_id: str | None = None
        #: committed items whose transcript is still being made
        self.pending_transcripts: set[str] = set()
        #: live transcript text already sent as deltas, per item
        self.transcript_sent: dict[str, str] = {}
        #: item id -> the last live hypothesis of its growing segment
        self.hypotheses: dict[str, str] = {}
        #: whether partials of the speech in progress are held back (``QuietLiveTranscription``)
        self.live_quiet = False
        #: finished assistant audio: item id -> (audio ms, transcript segments)
        self.audio_items: dict[str, tuple[float, list[tuple[float, str]]]] = {}
        self.started = False
        #: a VAD turn ended while a response was active (interrupt_response off)
        self.turn_awaiting_response = False
        #: the speculation held for the turn in progress or its response, if any
        self.speculation: Speculation | None = None
        self.speculations_started = 0
        #: the turn's early transcription, until a speculation takes it or it is dropped
        self.early: EarlyTranscription | None = None
        self.early_transcriptions_started = 0
        #: WebRTC: the call's output audio buffer (None over WebSocket: the client plays)
        self.playout = Playout() if transport == "webrtc" else None

    # --- public API --------------------------------------------------------------------------

    def start(self) -> Output:
        """``session.created``: the first event of every connection, sent once."""
        if self.started:
            raise IllegalTransition("the session was already started")
        self.started = True
        return Output([ev.SessionCreated(session=self.session.to_wire())])

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

    # --- input audio buffer ------------------------------------------------------------------

    def _go(self, trigger: str) -> None:
        self.input_state = advance(self.input_state, trigger, "input audio buffer")

    def _new_detector(self) -> TurnDetector | None:
        td = self.session.turn_detection
        return None if td is None else TurnDetector(td, turn_model=self.turn_model)

    def _on_append(self, event: ev.InputAudioBufferAppend, out: Output) -> None:
        if self.playout is not None:
            raise ProtocolError(
                "invalid_value",
                "input_audio_buffer.append is not available over WebRTC: the input audio "
                "comes from the call's audio track.",
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

    def _quiet_live_transcription(self, out: Output) -> None:
        """Hold new partials back while the speaker is quiet or a speculation transcribes
        the turn; let them go on when that is over (:class:`QuietLiveTranscription`)."""
        if self.speech_item_id is None or self.turns is None or not self.transcribing:
            return
        quiet = self.turns.silence_ms >= PARTIAL_QUIET_MS or self.speculation is not None
        if quiet != self.live_quiet:
            self.live_quiet = quiet
            out.effects.append(QuietLiveTranscription(self.speech_item_id, quiet))

    def _transcribe_early(self, out: Output) -> None:
        """Ask for the turn so far to be transcribed :data:`EARLY_TRANSCRIPT_MS` into a
        silence after speech, when a pause would start a speculation; drop an early
        transcription no speculation took once that silence is over."""
        turns, early = self.turns, self.early
        silence_start = None if turns is None else turns.silence_start_ms
        if early is not None and early.silence_start_ms != silence_start:
            if not early.claimed:
                out.effects.append(CancelEarlyTranscription(early.id))
            self.early = early = None  # (a claimed one is its speculation's now)
        if (
            early is not None
            or turns is None
            or turns.state is not VoiceState.SPEECH
            or turns.silence_ms < EARLY_TRANSCRIPT_MS
            or silence_start is None
            or not self.may_speculate
            or self.speech_item_id is None
        ):
            return
        self.early_transcriptions_started += 1
        request = TranscribeEarly(
            early_id=f"early_{self.early_transcriptions_started}",
            item_id=self.speech_item_id,
            start_ms=self.segment_start(),
            end_ms=turns.position_ms,
            transcription=self.transcription_options(),
        )
        self.early = EarlyTranscription(request, silence_start)
        out.effects.append(request)

    def _follow_voice(self, frame: ins.VadFrame, out: Output) -> None:
        if self.turns is None or frame.end_ms <= self.buffer_start_ms:
            return _stale(frame)  # VAD off, or audio already committed/cleared
        signal = self.turns.feed(frame.end_ms, frame.duration_ms, frame.probability)
        td = self.session.turn_detection
        assert td is not None
        if isinstance(signal, SpeechStart):
            self._go("speech_started")
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

    def segment_start(self) -> int:
        """Where the speech in progress will be cut from: its onset less the prefix padding,
        never before the uncommitted audio."""
        td = self.session.turn_detection
        padding = 0 if td is None else td.prefix_padding_ms
        return max(int(self.buffer_start_ms), self.speech_start_ms - padding)

    def transcription_options(self) -> TranscriptionOptions:
        """What the session asks its input transcriptions for now."""
        transcription = self.session.transcription or {}
        return TranscriptionOptions(
            language=transcription.get("language"),
            prompt=transcription.get("prompt"),
            logprobs=self.session.include_logprobs,
        )

    def _on_pause(self, pause: SpeechPause, out: Output) -> None:
        """The turn may be over: speculate on it and have the turn model score it."""
        assert self.turns is not None and self.speech_item_id is not None
        start = self.segment_start()
        self._speculate(pause, start, out)
        if self.turns.scores_pauses:
            out.effects.append(
                ScoreTurn(self.speech_item_id, pause.pause_id, start, pause.audio_end_ms)
            )

    @property
    def may_speculate(self) -> bool:
        """Whether a pause in the speech now would start a speculation: it is on, no response
        is in progress, the turn has none yet, and the turn's rule leaves room for a pause."""
        return (
            self.speculative
            and not self.responses
            and self.speculation is None
            and self.turns is not None
            and PAUSE_MS < self.turns.end_of_turn_ms
        )

    def _speculate(self, pause: SpeechPause, start: int, out: Output) -> None:
        assert self.speech_item_id is not None
        if not self.may_speculate:
            return
        td = self.session.turn_detection
        assert td is not None
        answers = td.create_response and self.session.type == "realtime"
        self.speculations_started += 1
        options = self.transcription_options()
        early = self.early
        silence_start = None if self.turns is None else self.turns.silence_start_ms
        takes_early = early is not None and early.serves(
            self.speech_item_id, start, pause.audio_end_ms, silence_start, options
        )
        if early is not None and takes_early:
            early.claimed = True
        request = StartSpeculation(
            speculation_id=f"spec_{self.speculations_started}",
            item_id=self.speech_item_id,
            start_ms=start,
            end_ms=pause.audio_end_ms,
            transcription=options,
            plan=attrs.evolve(self._plan(ev.ResponseParams()), context=tuple(self.conversation))
            if answers
            else None,
            early_id=early.id if early is not None and takes_early else None,
        )
        self.speculation = Speculation(request)
        out.effects.append(request)

    def _abandon_speculation(self, out: Output) -> None:
        if self.speculation is not None:
            out.effects.append(CancelSpeculation(self.speculation.id))
            self.speculation = None

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
            return _stale(result)  # incomplete (keep waiting), or late for its pause
        self._end_turn(stop, out)

    def _on_speculation_transcribed(self, result: ins.SpeculationTranscribed, out: Output) -> None:
        if self.speculation is None or self.speculation.id != result.speculation_id:
            return _stale(result)
        self.speculation.transcript = result.transcript

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

    # --- conversation ------------------------------------------------------------------------

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
        previous = self.conversation.insert(item, event.previous_item_id)
        out.events += [
            ev.ConversationItemAdded(previous_item_id=previous, item=item),
            ev.ConversationItemDone(previous_item_id=previous, item=item),
        ]
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
        transcript = "".join(text for start, text in segments if start < end_ms)
        content = list(item.content)
        content[content_index] = Content("output_audio", transcript=transcript)
        self.conversation.replace(attrs.evolve(item, content=tuple(content)))
        self.audio_items[item_id] = (
            float(end_ms),
            [(start, text) for start, text in segments if start < end_ms],
        )
        return ev.ConversationItemTruncated(
            item_id=item_id, content_index=content_index, audio_end_ms=end_ms
        )

    # --- responses ---------------------------------------------------------------------------

    def _on_response_create(self, event: ev.ResponseCreate, out: Output) -> None:
        params = event.response
        if params.conversation == "auto" and self.default_response_id is not None:
            raise ProtocolError(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress: "
                f"{self.default_response_id}. Wait until the response is finished before "
                "creating a new one.",
            )
        self._create_response(params, out)

    def _create_response(
        self,
        params: ev.ResponseParams,
        out: Output,
        speculation: Speculation | None = None,
    ) -> None:
        """A new response; ``speculation``: the one held for the turn this response answers
        (any other held speculation is abandoned)."""
        context_ids: tuple[str, ...] | None = None
        extra_items: dict[str, Item] = {}
        if params.input is not None:
            refs = []
            for index, entry in enumerate(params.input):
                if isinstance(entry, ev.ItemReference):
                    self.conversation.get(entry.id, f"response.input[{index}].id")
                    refs.append(entry.id)
                else:
                    extra_items[entry.id] = entry
                    refs.append(entry.id)
            context_ids = tuple(refs)
        plan = self._plan(params)
        self._abandon_speculation(out)
        in_conversation = params.conversation == "auto"
        run = ResponseRun(
            ids.response_id(),
            plan,
            conversation=self.conversation if in_conversation else None,
            conversation_id=self.conversation_id if in_conversation else None,
            metadata=params.metadata,
            context_ids=context_ids,
            extra_items=extra_items,
        )
        self.responses[run.id] = run
        self.last_response_id = run.id
        if in_conversation:
            self.default_response_id = run.id
        if speculation is not None:
            speculation.response_id = run.id
            self.speculation = speculation
        out.events += run.created()
        self._start_ready_responses(out)

    def _plan(self, params: ev.ResponseParams) -> ResponsePlan:
        """What a response with ``params`` will run with (its context is set when it starts)."""
        session = self.session
        mot = params.max_output_tokens
        return ResponsePlan(
            instructions=session.instructions
            if params.instructions is None
            else params.instructions,
            context=(),
            tools=session.tools if params.tools is None else params.tools,
            tool_choice=session.tool_choice if params.tool_choice is None else params.tool_choice,
            output_modalities=params.output_modalities or session.output_modalities,
            max_output_tokens=session.max_output_tokens
            if mot is None
            else (None if mot == "inf" else int(mot)),
            voice=params.voice or session.voice,
            speed=session.speed,
            output_format=params.output_format or session.output_format,
            reasoning_effort=params.reasoning_effort,
        )

    def _context(self, run: ResponseRun) -> tuple[Item, ...]:
        if run.context_ids is None:
            return tuple(self.conversation)
        by_id = {item.id: item for item in self.conversation}
        by_id.update(run.extra_items)
        return tuple(by_id[i] for i in run.context_ids if i in by_id)

    def _start_ready_responses(self, out: Output) -> None:
        for run in list(self.responses.values()):
            if run.phase is not Phase.WAITING_INPUT:
                continue
            context = self._context(run)
            if any(item.id in self.pending_transcripts for item in context):
                continue
            run.start()
            run.plan = attrs.evolve(run.plan, context=context)
            out.effects.append(StartResponse(run.id, run.plan, self._held_response(run, out)))

    def _held_response(self, run: ResponseRun, out: Output) -> str | None:
        """The speculation whose held response stands for ``run``, which starts now."""
        speculation = self.speculation
        if speculation is None or speculation.response_id != run.id:
            return None
        self.speculation = None
        if speculation.response_stands(run.plan):
            return speculation.id
        out.effects.append(CancelSpeculation(speculation.id))
        return None

    def _on_response_cancel(self, event: ev.ResponseCancel, out: Output) -> None:
        response_id = event.response_id or self.default_response_id
        run = self.responses.get(response_id) if response_id else None
        if run is None:
            raise ProtocolError(
                "response_cancel_not_active",
                "Cancellation failed: no active response found"
                + (f" with id '{event.response_id}'." if event.response_id else "."),
                "response_id" if event.response_id else None,
            )
        self._cancel(run, "client_cancelled", out)

    def _on_output_audio_clear(self, event: ev.OutputAudioBufferClear, out: Output) -> None:
        if self.playout is not None and self.playout.active:
            self._clear_playout(out)
            return
        # Over WebSocket the client owns playback; nothing is queued here. Acknowledge it.
        if self.last_response_id is None:
            raise ProtocolError("invalid_value", "There is no response audio to clear.", None)
        out.events.append(ev.OutputAudioBufferCleared(response_id=self.last_response_id))

    def _cancel(self, run: ResponseRun, reason: str, out: Output) -> None:
        out.events += run.cancel(reason)
        self._retire(run, out)
        out.effects.append(CancelResponse(run.id, reason))

    def _retire(self, run: ResponseRun, out: Output) -> None:
        del self.responses[run.id]
        if self.playout is not None:
            out.events += self.playout.response_finished(run.id)
        if self.speculation is not None and self.speculation.response_id == run.id:
            self._abandon_speculation(out)  # the response ended before it started
        for item_id, audio in run.audio_items.items():
            self.audio_items.setdefault(item_id, audio)  # a truncate may have cut it already
        if self.default_response_id == run.id:
            self.default_response_id = None
            if self.turn_awaiting_response:
                self.turn_awaiting_response = False
                self._create_response(ev.ResponseParams(), out)

    def _audio_item(self, item_id: str) -> tuple[float, list[tuple[float, str]]]:
        """The audio ms and transcript segments of a finished assistant audio item."""
        if item_id in self.audio_items:
            return self.audio_items[item_id]
        for run in self.responses.values():  # closed before its response ended
            if item_id in run.audio_items:
                return run.audio_items[item_id]
        return 0.0, []

    def _run_for(self, response_id: str) -> ResponseRun | None:
        run = self.responses.get(response_id)
        if run is not None and run.phase is Phase.WAITING_INPUT:
            raise IllegalTransition(f"response {response_id} produced output before it started")
        return run

    def _on_audio_out(self, result: ins.AudioOut, out: Output) -> None:
        run = self._run_for(result.response_id)
        if run is None:
            return _stale(result)
        if self.playout is None:
            out.events += run.audio(result.audio, result.transcript)
            return
        out.events += run.audio(result.audio, result.transcript, audio_events=False)
        if result.audio:
            item_id = run.open_item_id
            assert item_id is not None
            fmt = run.plan.output_format
            out.events += self.playout.queue(run.id, item_id, len(result.audio) / BYTES_PER_MS[fmt])
            out.effects.append(PlayAudio(run.id, result.audio, fmt))

    def _on_playout_started(self, result: ins.PlayoutStarted, out: Output) -> None:
        if self.playout is not None:
            out.events += self.playout.started()

    def _on_playout_stopped(self, result: ins.PlayoutStopped, out: Output) -> None:
        if self.playout is not None:
            out.events += self.playout.drained()

    def _clear_playout(self, out: Output) -> None:
        assert self.playout is not None
        out.events += self.playout.clear()
        out.effects.append(ClearPlayout())

    def _on_playout_cleared(self, result: ins.PlayoutCleared, out: Output) -> None:
        if self.playout is None:
            return _stale(result)
        item_id, heard_ms = self.playout.flushed(result.dropped_ms)
        if item_id is not None and item_id in self.audio_items and item_id in self.conversation:
            # the assistant item keeps what was heard, as a client's truncate would make it
            out.events.append(self._truncate(item_id, 0, int(heard_ms)))

    def _on_text_out(self, result: ins.TextOut, out: Output) -> None:
        run = self._run_for(result.response_id)
        if run is None:
            return _stale(result)
        out.events += run.text(result.text)

    def _on_tool_call(self, result: ins.ToolCallOut, out: Output) -> None:
        run = self._run_for(result.response_id)
        if run is None:
            return _stale(result)
        out.events += run.tool_call(result.call_id, result.name, result.arguments)

    def _on_response_complete(self, result: ins.ResponseComplete, out: Output) -> None:
        run = self._run_for(result.response_id)
        if run is None:
            return _stale(result)
        out.events += run.complete(result.input_tokens, result.output_tokens, result.truncated)
        self._retire(run, out)

    def _on_response_failed(self, result: ins.ResponseFailed, out: Output) -> None:
        run = self.responses.get(result.response_id)
        if run is None:
            return _stale(result)
        out.events += run.fail(result.code, result.message)
        self._retire(run, out)
        out.events.append(
            ev.Error(
                error_type="server_error",
                code=result.code,
                message=f"Response {run.id} failed: {result.message}",
            )
        )

    # --- transcription -----------------------------------------------------------------------

    @property
    def transcribing(self) -> bool:
        """Whether input transcription events are sent: always in a transcription session,
        when ``audio.input.transcription`` is set in a realtime one."""
        return self.session.type == "transcription" or self.session.transcription is not None

    def _on_transcript_delta(self, result: ins.TranscriptDelta, out: Output) -> None:
        live = result.item_id == self.speech_item_id or result.item_id in self.pending_transcripts
        if not live or not result.delta:
            return _stale(result)
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
            return _stale(result)
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
            return _stale(result)
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

    _CLIENT_HANDLERS: dict[type, Callable[[Any, Any, Output], None]] = {
        ev.SessionUpdate: _on_session_update,
        ev.InputAudioBufferAppend: _on_append,
        ev.InputAudioBufferCommit: _on_commit,
        ev.InputAudioBufferClear: _on_clear,
        ev.OutputAudioBufferClear: _on_output_audio_clear,
        ev.ConversationItemCreate: _on_item_create,
        ev.ConversationItemRetrieve: _on_item_retrieve,
        ev.ConversationItemDelete: _on_item_delete,
        ev.ConversationItemTruncate: _on_item_truncate,
        ev.ResponseCreate: _on_response_create,
        ev.ResponseCancel: _on_response_cancel,
    }
    _RESULT_HANDLERS: dict[type, Callable[[Any, Any, Output], None]] = {
        ins.VadFrame: _on_vad_frame,
        ins.TranscriptDelta: _on_transcript_delta,
        ins.PartialHypothesis: _on_partial_hypothesis,
        ins.TranscriptDone: _on_transcript_done,
        ins.TranscriptFailed: _on_transcript_failed,
        ins.AudioOut: _on_audio_out,
        ins.TextOut: _on_text_out,
        ins.ToolCallOut: _on_tool_call,
        ins.ResponseComplete: _on_response_complete,
        ins.ResponseFailed: _on_response_failed,
        ins.TurnScored: _on_turn_scored,
        ins.SpeculationTranscribed: _on_speculation_transcribed,
        ins.MediaAudio: _on_media_audio,
        ins.PlayoutStarted: _on_playout_started,
        ins.PlayoutStopped: _on_playout_stopped,
        ins.PlayoutCleared: _on_playout_cleared,
    }


__all__ = ["Output", "RealtimeConnection"]
