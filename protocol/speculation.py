"""Speculative start of a user turn's work, and the rules for when what it produced stands.

At the first pause of a user turn (:class:`~protocol.turns.SpeechPause`) the machine asks the
I/O shell to transcribe the turn so far and, when the turn will start a response, to generate
that response, holding all of it (:class:`~protocol.effects.StartSpeculation`). The client sees
none of it until the turn is confirmed by the session's own rule; then the machine proceeds
exactly as without speculation (the same events in the same order) and only tells the shell
where held work may stand in for new engine calls.

- A speculation starts only with turn detection on and the session's switch on, when no
  response exists (none while a response is in progress: the turn's response could not start
  before that one ends, and barge-in decides that one's fate first), and when none is held:
  at most one speculation at a time, so at most one per pause of a turn.
- It is abandoned (:class:`~protocol.effects.CancelSpeculation`, nothing was sent) when speech
  resumes, on ``input_audio_buffer.clear`` and ``input_audio_buffer.commit``, when turn
  detection is switched off, when any other response is created, and when the turn's response
  ends before it started.
- The held transcript stands for the committed segment when no frame after the pause scored
  as speech (the segment then differs from the speculated one by trailing silence only) and
  the transcription settings are those it used; otherwise the confirmed segment is transcribed
  anew.
- The held response stands when the response that the turn starts has exactly the plan the
  speculation used (instructions, tools, voice, output settings and the conversation before
  the user's item) and the user's final transcript has the same words as the held one
  (:func:`same_words`: case, punctuation and whitespace aside). Otherwise it is cancelled and
  the response starts anew from the final transcript.
- Function calls a speculation generates are held like everything else: released only with
  the confirmed response, so no tool runs on a speculation.

Ahead of the pause, :data:`EARLY_TRANSCRIPT_MS` into a silence after speech, the machine asks
for the turn so far to be transcribed (:class:`~protocol.effects.TranscribeEarly`) when a pause
then would start a speculation. The speculation at the pause takes that transcript
(``StartSpeculation.early_id``) when it is for the same speech and the same settings and the
pause grew out of the very silence it was started in: no speech came since, so the span it
heard holds all of the turn. Speech coming back (or the turn ending) before a speculation took
it drops it (:class:`~protocol.effects.CancelEarlyTranscription`).
"""

from __future__ import annotations

import re

import attrs

from . import events as ev
from . import inputs as ins
from .effects import (
    CancelEarlyTranscription,
    CancelSpeculation,
    ResponsePlan,
    StartSpeculation,
    TranscribeEarly,
    TranscriptionOptions,
)
from .items import MessageItem
from .machine_state import MachineState
from .output import Output, stale
from .response_plan import plan_response
from .responses import ResponseRun
from .states import VoiceState
from .turns import (
    PAUSE_MS,
    SpeechPause,
)

_NOT_WORD = re.compile(r"[^\w\s]+")

#: silence (ms) after speech at which the turn's transcription starts, ahead of the pause that
#: starts a speculation; the speculation then takes that transcript, and its answer comes sooner
#: (50 rather than 100 ms: ``semantic_vad``'s first audio p50 -50 ms, p90 -100 ms on two cores,
#: measured with scripts/bench_turns.py voices; a gap inside speech costs a cancelled call)
EARLY_TRANSCRIPT_MS = 50


def same_words(a: str, b: str) -> bool:
    """Whether two transcripts say the same words: case, punctuation and whitespace aside."""
    return _NOT_WORD.sub("", a.lower()).split() == _NOT_WORD.sub("", b.lower()).split()


@attrs.define
class Speculation:
    """The machine's record of the speculation it asked for."""

    request: StartSpeculation
    #: the transcript the shell made of the span (``inputs.SpeculationTranscribed``)
    transcript: str | None = None
    #: the response that the turn's end created, which the held response may stand for
    response_id: str | None = None

    @property
    def id(self) -> str:
        return self.request.speculation_id

    def transcript_stands(self, *, speech_after_pause: bool, options: TranscriptionOptions) -> bool:
        """Whether the held transcript stands for the committed segment, transcribed with
        ``options`` (:meth:`~protocol.connection.RealtimeConnection.transcription_options`)."""
        return not speech_after_pause and self.request.transcription == options

    def response_stands(self, plan: ResponsePlan) -> bool:
        """Whether the held response stands for a response with ``plan`` (its context final)."""
        if self.request.plan is None or self.transcript is None or not plan.context:
            return False
        *before, last = plan.context
        return (
            isinstance(last, MessageItem)
            and last.id == self.request.item_id
            and same_words(last.text, self.transcript)
            and attrs.evolve(plan, context=tuple(before)) == self.request.plan
        )


@attrs.define
class EarlyTranscription:
    """The machine's record of an early transcription it asked for: the silence it was asked
    in (input timeline ms where that silence began) and whether a speculation took it."""

    request: TranscribeEarly
    silence_start_ms: int
    claimed: bool = False

    @property
    def id(self) -> str:
        return self.request.early_id

    def serves(
        self,
        item_id: str,
        start_ms: int,
        end_ms: int,
        silence_start_ms: int | None,
        options: TranscriptionOptions,
    ) -> bool:
        """Whether a speculation of ``[start_ms, end_ms)`` of ``item_id``, made in the silence
        that began at ``silence_start_ms``, can take this transcript instead of its own."""
        request = self.request
        return (
            (request.item_id, request.start_ms, self.silence_start_ms)
            == (item_id, start_ms, silence_start_ms)
            and request.end_ms <= end_ms
            and request.transcription == options
        )


class SpeculationRules(MachineState):
    """When the machine speculates, transcribes early, and drops or hands on what it held.

    Rules of :class:`~protocol.connection.RealtimeConnection` (one of its rooms)."""

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
            plan=self._speculative_plan() if answers else None,
            early_id=early.id if early is not None and takes_early else None,
        )
        self.speculation = Speculation(request)
        out.effects.append(request)

    def _abandon_speculation(self, out: Output) -> None:
        if self.speculation is not None:
            out.effects.append(CancelSpeculation(self.speculation.id))
            self.speculation = None

    def _on_speculation_transcribed(self, result: ins.SpeculationTranscribed, out: Output) -> None:
        if self.speculation is None or self.speculation.id != result.speculation_id:
            return stale(result)
        self.speculation.transcript = result.transcript

    def _speculative_plan(self) -> ResponsePlan:
        """The plan the turn's response would start with now (it stands if nothing changes)."""
        plan = plan_response(self.session, ev.ResponseParams())
        return attrs.evolve(
            plan, context=tuple(self.conversation), mcp_functions=self._mcp_functions(plan)
        )

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
