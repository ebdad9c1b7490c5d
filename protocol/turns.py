"""Turn logic over VAD speech probabilities: when speech starts, pauses, resumes and stops.

The VAD engine turns each frame of input audio into a probability; this pure state machine
decides the ``speech_started`` / ``speech_stopped`` moments on the session's input timeline
(milliseconds of audio appended since the session began), and the pauses in between. Its
states and their transitions are ``states.VOICE_TRANSITIONS``; this module decides, from the
frames and the timings below, which transition each frame makes.

A frame is *speech* at or above the session's threshold, *silence* below
``threshold - HYSTERESIS``, and in between otherwise. The states:

- ``SILENCE`` -> ``ONSET`` on a speech frame; ``ONSET`` -> ``SPEECH`` once speech has lasted
  :data:`MIN_SPEECH_MS` (signal :class:`SpeechStart`), back to ``SILENCE`` on silence.
- ``SPEECH``: silence frames add up; any other frame sets the count back to zero. At
  :data:`PAUSE_MS` of silence, when the turn's end comes later than that, -> ``PAUSE``
  (signal :class:`SpeechPause`): the turn may be over, a speculation may start and, for
  ``semantic_vad`` with a turn model, the model scores the utterance.
- ``PAUSE``: silence keeps adding up; an in-between frame sets it back to zero (the wait
  restarts), as does a speech frame. Speech lasting :data:`MIN_SPEECH_MS` -> ``SPEECH``
  (signal :class:`SpeechResume`): the pause was not the end.
- ``SPEECH`` or ``PAUSE`` -> ``SILENCE`` when the turn ends (signal :class:`SpeechStop`):

  - ``server_vad`` (OpenAI's rule): ``silence_duration_ms`` of silence.
  - ``semantic_vad`` with a turn model: the model's P(complete) for the current pause is at
    least :data:`COMPLETE_THRESHOLD` (:meth:`TurnDetector.scored`), or the silence reached
    :data:`SEMANTIC_MAX_WAIT_MS` of the session's eagerness. Low eagerness waits longest:
    low 4000 ms, medium and auto 2000 ms, high 1000 ms. The model scores the pause when it
    starts and again every :data:`RESCORE_EVERY_MS` of silence after that (signal
    :class:`SpeechRescore`): the model hears the silence too, and an utterance it found
    unfinished at 200 ms often reads as finished a little later.
  - ``semantic_vad`` without a turn model (the model file is not installed): a fixed silence
    window per eagerness, ``TurnDetection.silence_duration_ms`` (low 1200 ms, medium and auto
    600 ms, high 300 ms).

A model score arriving for an earlier pause, after speech resumed, or after the turn ended
is stale and ignored.
"""

from __future__ import annotations

import attrs

from .session import TurnDetection
from .states import VoiceState, advance

#: speech must last this long before it counts (filters clicks and breaths); the same holds
#: for speech resuming after a pause
MIN_SPEECH_MS = 64
#: below ``threshold - HYSTERESIS`` a frame counts as silence (Silero's usual offset)
HYSTERESIS = 0.15
#: silence (ms) after which the turn may be over: speculation starts, the turn model scores
PAUSE_MS = 200
#: silence (ms) after which no partial hypothesis is started: one in flight at the pause would
#: hold up the turn's final (the two share the STT), and the silence brings no new words
PARTIAL_QUIET_MS = 100
#: the turn model's P(complete) at or above which a ``semantic_vad`` turn ends at once
COMPLETE_THRESHOLD = 0.5
#: ``semantic_vad`` with a turn model: silence (ms) after which the turn ends whatever the
#: model said, by eagerness
SEMANTIC_MAX_WAIT_MS: dict[str, int] = {"low": 4000, "medium": 2000, "auto": 2000, "high": 1000}
#: ``semantic_vad`` with a turn model: a pause is scored again after each further this many ms
#: of silence, up to the eagerness' longest wait
RESCORE_EVERY_MS = 400


@attrs.frozen
class SpeechStart:
    audio_start_ms: int


@attrs.frozen
class SpeechPause:
    """The turn may be over: ``audio_end_ms`` is the end of the frame that made the pause."""

    audio_end_ms: int
    pause_id: int  #: names this pause in the turn model's score (:meth:`TurnDetector.scored`)


@attrs.frozen
class SpeechRescore:
    """The pause ``pause_id`` goes on: the turn model scores it again, with the silence up to
    ``audio_end_ms``."""

    audio_end_ms: int
    pause_id: int


@attrs.frozen
class SpeechResume:
    """Speech came back after a :class:`SpeechPause`: the turn goes on."""


@attrs.frozen
class SpeechStop:
    audio_end_ms: int
    #: a frame after the pause scored as speech (a click or breath too short to resume it)
    speech_after_pause: bool = False


Signal = SpeechStart | SpeechPause | SpeechRescore | SpeechResume | SpeechStop


@attrs.define
class TurnDetector:
    """The turn state of one input stream. ``turn_model``: whether a turn model scores
    ``semantic_vad`` pauses (when not, the fixed windows of the module docstring apply)."""

    config: TurnDetection
    turn_model: bool = False
    state: VoiceState = VoiceState.SILENCE
    onset_start_ms: int = 0
    onset_ms: int = 0
    silence_ms: int = 0
    resume_ms: int = 0  #: consecutive speech (ms) during a pause
    speech_after_pause: bool = False
    position_ms: int = 0  #: end of the last frame fed
    pause_id: int = 0  #: the current (or last) pause's id
    next_score_ms: int = 0  #: the silence (ms) at which the pause is scored again

    @property
    def end_of_turn_ms(self) -> int:
        """Silence (ms) that ends the turn without a model decision."""
        if self.config.type == "semantic_vad" and self.turn_model:
            return SEMANTIC_MAX_WAIT_MS[self.config.eagerness]
        return self.config.silence_duration_ms

    @property
    def scores_pauses(self) -> bool:
        """Whether a pause is scored by the turn model."""
        return self.config.type == "semantic_vad" and self.turn_model

    @property
    def silence_start_ms(self) -> int | None:
        """Where the silence after speech that goes on now began (input timeline ms); None
        outside speech or while the speaker is not silent."""
        if self.state not in (VoiceState.SPEECH, VoiceState.PAUSE) or not self.silence_ms:
            return None
        return self.position_ms - self.silence_ms

    def reset(self, trigger: str = "reset") -> None:
        self.state = advance(self.state, trigger, "turn detector")
        self.onset_ms, self.silence_ms = 0, 0
        self.resume_ms, self.speech_after_pause = 0, False

    def feed(self, end_ms: int, duration_ms: int, probability: float) -> Signal | None:
        """One VAD frame ending at ``end_ms`` (input timeline) lasting ``duration_ms``."""
        self.position_ms = max(self.position_ms, end_ms)
        speech = probability >= self.config.threshold
        silence = probability < self.config.threshold - HYSTERESIS
        if self.state is VoiceState.SILENCE:
            if speech:
                self.state = advance(self.state, "speech_frame", "turn detector")
                self.onset_start_ms, self.onset_ms = end_ms - duration_ms, duration_ms
            return self._started()
        if self.state is VoiceState.ONSET:
            if silence:
                self.reset("onset_lost")
            elif speech:
                self.onset_ms += duration_ms
            return self._started()
        if silence:
            self.resume_ms = 0
            self.silence_ms += duration_ms
            if self.silence_ms >= self.end_of_turn_ms:
                return self._stop(end_ms)
            if (
                self.state is VoiceState.SPEECH
                and PAUSE_MS <= self.silence_ms
                and PAUSE_MS < self.end_of_turn_ms
            ):
                self.state = advance(self.state, "paused", "turn detector")
                self.pause_id += 1
                self.resume_ms, self.speech_after_pause = 0, False
                self.next_score_ms = PAUSE_MS + RESCORE_EVERY_MS
                return SpeechPause(audio_end_ms=end_ms, pause_id=self.pause_id)
            if (
                self.state is VoiceState.PAUSE
                and self.scores_pauses
                and self.silence_ms >= self.next_score_ms
            ):
                self.next_score_ms += RESCORE_EVERY_MS
                return SpeechRescore(audio_end_ms=end_ms, pause_id=self.pause_id)
            return None
        self.silence_ms = 0
        if self.state is VoiceState.PAUSE:
            if not speech:
                self.resume_ms = 0
                return None
            self.speech_after_pause = True
            self.resume_ms += duration_ms
            if self.resume_ms >= MIN_SPEECH_MS:
                self.state = advance(self.state, "resumed", "turn detector")
                self.resume_ms = 0
                return SpeechResume()
        return None

    def scored(self, pause_id: int, probability: float) -> SpeechStop | None:
        """The turn model's P(complete) for pause ``pause_id``: the turn ends now when it is
        complete and that pause is still going on; otherwise nothing changes."""
        if (
            self.state is not VoiceState.PAUSE
            or pause_id != self.pause_id
            or not self.scores_pauses
            or probability < COMPLETE_THRESHOLD
        ):
            return None
        return self._stop(self.position_ms)

    def _started(self) -> SpeechStart | None:
        if self.state is VoiceState.ONSET and self.onset_ms >= MIN_SPEECH_MS:
            self.state = advance(self.state, "speech_started", "turn detector")
            self.silence_ms = 0
            return SpeechStart(audio_start_ms=max(0, self.onset_start_ms))
        return None

    def _stop(self, end_ms: int) -> SpeechStop:
        stop = SpeechStop(audio_end_ms=end_ms, speech_after_pause=self.speech_after_pause)
        self.reset("turn_ended")
        return stop
