"""``audio.input.noise_reduction``: the STT hears the input denoised (``realtime/noise.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import trio

from realtime import Pipeline, PipelinePool
from realtime.noise import denoise
from tests.realtime.fakes import FakeLLM, FakeSTT, FakeTTS, FakeVAD
from tests.realtime.harness import live_server, session

RATE = 16_000


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples**2)))


def noisy_tone(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One second of hiss, then a second of a 300 Hz tone in the same hiss; and the tone."""
    rng = np.random.default_rng(seed)
    t = np.arange(RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    hiss = (0.02 * rng.standard_normal(2 * RATE)).astype(np.float32)
    return hiss + np.concatenate([np.zeros(RATE, np.float32), tone]), tone


@pytest.mark.parametrize("kind", ["near_field", "far_field"])
def test_denoise_takes_the_hiss_down_and_keeps_the_tone(kind: str) -> None:
    audio, tone = noisy_tone()
    cleaned = denoise(audio, kind, 1.0)
    assert cleaned.dtype == np.float32 and len(cleaned) == len(audio)
    # the hiss alone: about -13 dB near_field (one threshold), -6 dB far_field (tracked)
    assert rms(cleaned[: RATE // 2]) < rms(audio[: RATE // 2]) / 1.8
    kept = cleaned[RATE + RATE // 4 : RATE + 3 * RATE // 4]
    reference = tone[RATE // 4 : 3 * RATE // 4]
    assert np.corrcoef(kept, reference)[0, 1] > 0.95  # the tone, hardly touched


def test_denoise_leaves_too_short_audio_and_zero_strength_alone() -> None:
    audio, _ = noisy_tone()
    assert np.array_equal(denoise(audio[:800], "near_field", 1.0), audio[:800])
    assert np.array_equal(denoise(audio, "far_field", 0.0), audio)


class RecordingSTT(FakeSTT):
    """Keeps the audio of every final transcription."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[np.ndarray] = []

    def transcribe(self, audio, **options):  # type: ignore[no-untyped-def,override]
        if not options.get("partial"):
            self.heard.append(np.array(audio))
        return super().transcribe(audio, **options)


@pytest.mark.parametrize("noise_reduction", [None, {"type": "near_field"}])
def test_the_stt_hears_the_turn_denoised_when_the_session_asks(noise_reduction) -> None:  # type: ignore[no-untyped-def]
    stt = RecordingSTT()
    pool = PipelinePool([Pipeline(index=0, vad=FakeVAD(), stt=stt, llm=FakeLLM(), tts=FakeTTS())])
    audio, _ = noisy_tone()
    at_24k = np.interp(np.arange(2 * len(audio) * 3 // 2) / 1.5, np.arange(len(audio)), audio)
    pcm = (np.clip(np.concatenate([at_24k, np.zeros(24_000)]), -1, 1) * 32767).astype("<i2")

    async def body() -> None:
        async with session(server) as client:
            await client.update_session(
                audio={
                    "input": {
                        "noise_reduction": noise_reduction,
                        "turn_detection": {"type": "server_vad", "create_response": False},
                        "transcription": {"model": "whisper-1"},
                    }
                }
            )
            await client.append(pcm.tobytes())
            await client.until("conversation.item.input_audio_transcription.completed", 20)

    with live_server(pool) as server:
        trio.run(body)
    (heard,) = stt.heard
    # the segment starts with the tone's onset less the prefix padding: 300 ms of hiss alone
    sent_hiss = rms(audio[RATE - 4800 : RATE - 800])
    heard_hiss = rms(heard[:4000])
    if noise_reduction is None:
        assert heard_hiss == pytest.approx(sent_hiss, rel=0.3)
    else:
        assert heard_hiss < sent_hiss / 3
