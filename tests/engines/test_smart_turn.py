"""engines/smart_turn.py: the features, the real model on Piper speech, and semantic_vad through
the live server on the real embedded engines with the turn model.

Piper speaks each text with fresh random noise, so the phrases here are ones whose scores stay
far from the threshold across syntheses: the complete ones scored at least 0.94 in 15 tries
each, the cut-off ones below 0.1 in 20 tries ("The quick brown fox jumps over the lazy dog."
ranged from 0.30 to 0.99, so it is not one of them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import trio

from engines.base import MissingDependency, TurnModel
from engines.embedded import EmbeddedEngines
from engines.smart_turn import (
    FRAMES,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    WINDOW_S,
    SmartTurn,
    load_turn_model,
    log_mel_features,
    mel_filterbank,
)
from protocol.turns import COMPLETE_THRESHOLD
from realtime import Pipeline, PipelinePool
from realtime.audio import encode
from tests.realtime.harness import live_server, session, silence_pcm
from tests.realtime.test_embedded_voice import normalise

Say = Callable[[str], np.ndarray]

COMPLETE = [
    "What is the capital of France?",
    "I want to book a flight to Paris.",
    "Can you tell me the time?",
    "Please turn off the lights.",
]
CUT_OFF = [
    "What is the weather like in",
    "I am looking for a good",
    "I was thinking that maybe we could",
]


@pytest.fixture(scope="module")
def turn_model() -> SmartTurn:
    try:
        return SmartTurn()
    except MissingDependency as error:
        pytest.skip(str(error))


def trimmed(audio: np.ndarray, level: float = 0.01) -> np.ndarray:
    """The audio without Piper's leading and trailing near-silence."""
    loud = np.nonzero(np.abs(audio) > level)[0]
    return audio[loud[0] : loud[-1] + 1]


def pause(ms: int) -> np.ndarray:
    return np.zeros(SAMPLE_RATE * ms // 1000, np.float32)


# --- features --------------------------------------------------------------------------------


def test_mel_filterbank_is_80_unit_area_triangles_over_the_spectrum() -> None:
    filters = mel_filterbank()
    assert filters.shape == (N_MELS, N_FFT // 2 + 1)
    assert (filters >= 0).all()
    hz_per_bin = SAMPLE_RATE / N_FFT
    # Slaney normalisation: each triangle's area (in Hz) is 1
    areas = filters.sum(axis=1) * hz_per_bin
    assert np.allclose(areas[5:-5], 1.0, rtol=0.15)
    peaks = filters.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all() and peaks[-1] > peaks[0]


def test_features_cover_the_last_8_s_left_padded() -> None:
    rng = np.random.default_rng(7)
    long = rng.standard_normal(10 * SAMPLE_RATE).astype(np.float32) * 0.1
    features = log_mel_features(long)
    assert features.shape == (N_MELS, FRAMES) and features.dtype == np.float32
    assert np.array_equal(features, log_mel_features(long[-WINDOW_S * SAMPLE_RATE :]))
    short = log_mel_features(long[: 2 * SAMPLE_RATE])
    # the padding (the first 6 s) is the same in every frame; the audio is louder
    assert (np.ptp(short[:, :590], axis=1) == 0).all()
    assert short[:, 610:].mean() > short[:, :590].mean()


def test_smart_turn_is_a_turn_model(turn_model: SmartTurn) -> None:
    assert isinstance(turn_model, TurnModel)
    assert turn_model.sample_rate == SAMPLE_RATE


def test_a_missing_model_file_is_a_missing_dependency(tmp_path: Path) -> None:
    with pytest.raises(MissingDependency, match="model file"):
        SmartTurn(model_path=tmp_path / "none.onnx")


# --- the model on speech ---------------------------------------------------------------------


@pytest.mark.parametrize("text", COMPLETE)
def test_complete_sentences_score_as_complete(turn_model: SmartTurn, say: Say, text: str) -> None:
    audio = np.concatenate([trimmed(say(text)), pause(224)])
    assert turn_model.probability(audio) >= COMPLETE_THRESHOLD


@pytest.mark.parametrize("text", CUT_OFF)
def test_sentences_cut_off_mid_phrase_score_as_incomplete(
    turn_model: SmartTurn, say: Say, text: str
) -> None:
    audio = np.concatenate([trimmed(say(text)), pause(224)])
    assert turn_model.probability(audio) < COMPLETE_THRESHOLD


def test_finishing_the_phrase_makes_it_sound_complete(turn_model: SmartTurn, say: Say) -> None:
    cut = turn_model.probability(
        np.concatenate([trimmed(say("I want to book a flight to")), pause(224)])
    )
    whole = turn_model.probability(
        np.concatenate([trimmed(say("I want to book a flight to Paris.")), pause(224)])
    )
    assert cut < whole and whole >= COMPLETE_THRESHOLD


# --- semantic_vad through the live server ----------------------------------------------------


def pcm24(audio_16k: np.ndarray) -> bytes:
    """16 kHz float audio as the wire's 24 kHz PCM16."""
    count = len(audio_16k) * 3 // 2
    positions = np.arange(count) * (2 / 3)
    resampled = np.interp(positions, np.arange(len(audio_16k)), audio_16k).astype(np.float32)
    return encode(resampled, "audio/pcm")


def test_semantic_vad_does_not_end_the_turn_at_a_mid_phrase_pause(
    embedded: EmbeddedEngines, turn_model: SmartTurn, say: Say
) -> None:
    pipeline = Pipeline(0, *embedded, turn_model=turn_model)
    first = pcm24(trimmed(say("What is the weather like in")))
    second = pcm24(trimmed(say("Paris?")))
    with live_server(PipelinePool([pipeline]), live_transcription=False) as server:

        async def body() -> None:
            async with session(server) as client:
                await client.update_session(
                    audio={
                        "input": {
                            "transcription": {"model": "whisper-1"},
                            "turn_detection": {
                                "type": "semantic_vad",
                                "eagerness": "auto",
                                "create_response": False,
                            },
                        }
                    }
                )
                # the closing silence outlasts auto eagerness' longest wait (2000 ms): the turn
                # ends there if the model does not end it sooner
                await client.append(
                    silence_pcm(300) + first + silence_pcm(500) + second + silence_pcm(2300)
                )
                events = await client.until(
                    "conversation.item.input_audio_transcription.completed", timeout=60
                )
                kinds = [e["type"] for e in events]
                assert kinds.count("input_audio_buffer.speech_started") == 1
                assert kinds.count("input_audio_buffer.committed") == 1
                stopped = next(e for e in events if e["type"].endswith("speech_stopped"))
                second_starts_ms = 300 + (len(first) + 48 * 500) // 48
                assert stopped["audio_end_ms"] > second_starts_ms
                assert normalise(events[-1]["transcript"]) == "what is the weather like in paris"

        trio.run(body)


def test_without_the_model_file_load_turn_model_warns_and_gives_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="engines.smart_turn"):
        assert load_turn_model(tmp_path / "none.onnx") is None
    (record,) = caplog.records
    assert "semantic_vad ends turns after fixed silences" in record.getMessage()
