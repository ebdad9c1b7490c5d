"""A live server on the real embedded engines and a spoken question, for the client tests."""

from __future__ import annotations

import re
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engines.base import CancelToken
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
def server(embedded: EmbeddedEngines) -> Iterator[LiveServer]:
    with live_server(PipelinePool([Pipeline(0, *embedded)])) as server:
        yield server


@pytest.fixture(scope="session")
def question_wav(embedded: EmbeddedEngines) -> Path:
    """:data:`QUESTION` spoken by Piper at its own rate (22.05 kHz, so clients resample), with
    0.5 s of silence before and after."""
    tts = embedded.tts
    chunks = tts.synthesize(QUESTION, voice=None, speed=1.0, cancel=CancelToken())
    speech = np.concatenate(list(chunks))
    pad = np.zeros(tts.sample_rate // 2, np.float32)
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / "question.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(tts.sample_rate)
        wav.writeframes(encode(np.concatenate([pad, speech, pad]), "audio/pcm"))
    return path
