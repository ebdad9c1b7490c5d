import re

import numpy as np

from engines.base import STT, CancelToken


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


class CancelledAfterChecks(CancelToken):
    """Reads as cancelled from its ``after``-th look on: cancels mid-transcription."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.looks = 0
        self.after = after

    @property
    def cancelled(self) -> bool:
        self.looks += 1
        return self.looks > self.after


def test_stt_takes_16khz_audio(stt):
    assert isinstance(stt, STT)
    assert stt.sample_rate == 16_000


def test_a_synthesised_sentence_is_transcribed_exactly(stt, speech_16k):
    transcript = stt.transcribe(speech_16k)
    assert normalise(transcript.text) == "the quick brown fox jumps over the lazy dog"
    assert transcript.audio_seconds == len(speech_16k) / 16_000
    assert transcript.language == "en"


def test_a_partial_hypothesis_is_also_right_on_clean_speech(stt, speech_16k):
    transcript = stt.transcribe(speech_16k, partial=True)
    assert normalise(transcript.text) == "the quick brown fox jumps over the lazy dog"


def test_a_growing_segment_gives_a_prefix_hypothesis(stt, speech_16k):
    words = normalise(stt.transcribe(speech_16k[: len(speech_16k) // 2], partial=True).text)
    assert words and "the quick brown fox jumps over the lazy dog".startswith(words.split()[0])


def test_empty_audio_is_empty_text(stt):
    transcript = stt.transcribe(np.zeros(0, np.float32))
    assert (transcript.text, transcript.audio_seconds) == ("", 0.0)


def test_cancelled_before_start_transcribes_nothing(stt, speech_16k):
    cancel = CancelToken()
    cancel.cancel()
    assert stt.transcribe(speech_16k, cancel=cancel).text == ""


def test_cancel_stops_between_segments(stt, say):
    pause = np.zeros(32_000, np.float32)  # 2 s pauses make Whisper return separate segments
    audio = np.concatenate([say("The sun is shining."), pause, say("Let us go for a walk."), pause])
    full = stt.transcribe(audio)
    cut = stt.transcribe(audio, cancel=CancelledAfterChecks(after=1))
    assert cut.text and full.text.startswith(cut.text) and len(cut.text) < len(full.text)
