import re

import numpy as np
import pytest

from engines.base import STT, CancelToken
from engines.whisper_stt import FULL_WINDOW_S, WhisperSTT, _looped


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


@pytest.fixture(scope="module")
def full_window_stt():
    return WhisperSTT(threads=2, min_window_s=FULL_WINDOW_S)


def test_cancel_stops_between_segments_of_the_full_window(full_window_stt, say):
    stt = full_window_stt
    pause = np.zeros(32_000, np.float32)  # 2 s pauses make Whisper return separate segments
    audio = np.concatenate([say("The sun is shining."), pause, say("Let us go for a walk."), pause])
    full = stt.transcribe(audio)
    cut = stt.transcribe(audio, cancel=CancelledAfterChecks(after=1))
    assert cut.text and full.text.startswith(cut.text) and len(cut.text) < len(full.text)


def test_cancel_between_encoding_and_decoding_a_short_window(stt, speech_16k):
    assert stt.transcribe(speech_16k, cancel=CancelledAfterChecks(after=1)).text == ""


def test_the_short_window_hears_what_the_full_window_hears(stt, full_window_stt, say):
    audio = np.concatenate([np.zeros(4_000, np.float32), say("What is the capital of France?")])
    for partial in (False, True):
        short = stt.transcribe(audio, partial=partial).text
        assert normalise(short) == normalise(
            full_window_stt.transcribe(audio, partial=partial).text
        )
        assert normalise(short) == "what is the capital of france"


def test_a_decode_that_loops_is_done_again_on_the_full_window(say):
    # A 1 s minimum window is too short for Whisper: it starts the question over.
    stt = WhisperSTT(threads=2, min_window_s=1.0)
    audio = np.concatenate([np.zeros(4_000, np.float32), say("What is the capital of France?")])
    assert normalise(stt.transcribe(audio).text) == "what is the capital of france"
    assert stt.full_window_retries == 1


def test_a_segment_longer_than_the_short_window_gets_a_longer_one(stt, say):
    sentences = [
        "The sun is shining.",
        "Let us go for a walk.",
        "The park is not far away.",
        "We can take the dog with us.",
        "It has been a long week at work.",
        "Maybe we will have ice cream on the way back.",
        "I think it will rain later though.",
    ]
    audio = np.concatenate([say(s) for s in sentences])
    assert len(audio) > 11 * 16_000  # past the 10 s minimum window
    retries = stt.full_window_retries
    assert normalise(stt.transcribe(audio).text) == normalise(" ".join(sentences))
    assert stt.full_window_retries == retries


def test_loops_are_a_start_said_over_again():
    assert _looped([1, 2, 3, 1, 2])  # "What is the capital? What is"
    assert _looped([7, 7, 7])
    assert not _looped([1, 2, 3, 1])  # one word again is not a loop
    assert not _looped([1, 2, 3, 4])
    assert not _looped([])


def test_the_minimum_window_is_within_whispers_own():
    with pytest.raises(ValueError, match="min_window_s"):
        WhisperSTT(min_window_s=31)
