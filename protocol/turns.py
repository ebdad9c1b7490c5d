"""Server VAD turn logic over speech probabilities: when speech starts and when it stops.

The VAD engine turns each frame of input audio into a probability; this pure state machine
decides the ``speech_started`` / ``speech_stopped`` moments on the session's input timeline
(milliseconds of audio appended since the session began).
"""

from __future__ import annotations

import enum

import attrs

from .session import TurnDetection

#: speech must last this long before it counts (filters clicks and breaths)
MIN_SPEECH_MS = 64
#: below ``threshold - HYSTERESIS`` a frame counts as silence (Silero's usual offset)
HYSTERESIS = 0.15


class VoiceState(enum.Enum):
    SILENCE = "silence"
    ONSET = "onset"  # speech frames seen, not long enough yet
    SPEECH = "speech"


@attrs.frozen
class SpeechStart:
    audio_start_ms: int


@attrs.frozen
class SpeechStop:
    audio_end_ms: int


@attrs.define
class TurnDetector:
    config: TurnDetection
    state: VoiceState = VoiceState.SILENCE
    onset_start_ms: int = 0
    onset_ms: int = 0
    silence_ms: int = 0

    def reset(self) -> None:
        self.state, self.onset_ms, self.silence_ms = VoiceState.SILENCE, 0, 0

    def feed(
        self, end_ms: int, duration_ms: int, probability: float
    ) -> SpeechStart | SpeechStop | None:
        """One VAD frame ending at ``end_ms`` (input timeline) lasting ``duration_ms``."""
        speech = probability >= self.config.threshold
        silence = probability < self.config.threshold - HYSTERESIS
        if self.state is VoiceState.SILENCE:
            if speech:
                self.state = VoiceState.ONSET
                self.onset_start_ms, self.onset_ms = end_ms - duration_ms, duration_ms
        elif self.state is VoiceState.ONSET:
            if silence:
                self.reset()
            elif speech:
                self.onset_ms += duration_ms
        elif silence:
            self.silence_ms += duration_ms
            if self.silence_ms >= self.config.silence_duration_ms:
                self.reset()
                return SpeechStop(audio_end_ms=end_ms)
        else:
            self.silence_ms = 0
        if self.state is VoiceState.ONSET and self.onset_ms >= MIN_SPEECH_MS:
            self.state, self.silence_ms = VoiceState.SPEECH, 0
            return SpeechStart(audio_start_ms=max(0, self.onset_start_ms))
        return None
