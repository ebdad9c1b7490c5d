"""A live server on the real embedded engines and a spoken question, for the client tests."""

from __future__ import annotations

import re
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from engines.base import TTS, CancelToken
from engines.embedded import EmbeddedEngines
from realtime import Pipeline, PipelinePool
from realtime.audio import encode
from tests.realtime.harness import LiveServer, live_server

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
OUTPUT = Path(__file__).resolve().parent / "output"  #: kept after the run (gitignored)
QUESTION = "What is the capital of France?"
SHORT_ANSWERS = "Answer in one short sentence."


def normalise(text: str) -> str:
    return re.sub(r"[^a-z ]", "", text.lower()).strip()


@pytest.fixture
def server(embedded_pipeline: Callable[[], Pipeline]) -> Iterator[LiveServer]:
    with live_server(PipelinePool([embedded_pipeline()])) as server:
        yield server


def spoken_question(tts: TTS, path: Path, lead_s: float) -> Path:
    """:data:`QUESTION` spoken by Piper at its own rate (22.05 kHz, so clients resample) into
    the wav ``path``, after ``lead_s`` of silence and with 0.5 s after."""
    chunks = tts.synthesize(QUESTION, voice=None, speed=1.0, cancel=CancelToken())
    speech = np.concatenate(list(chunks))
    lead = np.zeros(round(tts.sample_rate * lead_s), np.float32)
    tail = np.zeros(tts.sample_rate // 2, np.float32)
    OUTPUT.mkdir(exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(tts.sample_rate)
        wav.writeframes(encode(np.concatenate([lead, speech, tail]), "audio/pcm"))
    return path


@pytest.fixture(scope="session")
def question_wav(embedded: EmbeddedEngines) -> Path:
    """The question with 0.5 s of silence before and after."""
    return spoken_question(embedded.tts, OUTPUT / "question.wav", lead_s=0.5)


@pytest.fixture(scope="session")
def late_question_wav(embedded: EmbeddedEngines) -> Path:
    """The question after 2.5 s of silence: for a fake microphone that starts before its call
    is connected (audio sent before a WebRTC call connects is lost)."""
    return spoken_question(embedded.tts, OUTPUT / "late-question.wav", lead_s=2.5)
