"""QwenTTS on a tiny random-weight Qwen3-TTS CustomVoice checkpoint with two speakers, loaded
through qwen-tts's real ``from_pretrained`` path (the real weights cannot be downloaded here).
The audio is noise: these tests pin rates, framing, streaming, voices and cancellation, never
what it sounds like."""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest

# Read by huggingface_hub when it is imported: nothing here may reach the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

torch = pytest.importorskip("torch", reason="the qwen-tts extra is not installed")

from engines.torch_runtime import install_torchaudio_shim, torch_threads  # noqa: E402

install_torchaudio_shim()  # qwen-tts's import fails on a torchaudio whose native library can't load
pytest.importorskip("qwen_tts", reason="the qwen-tts extra is not installed")

import trio  # noqa: E402

from engines.base import TTS, CancelToken, MissingDependency  # noqa: E402
from engines.qwen_tts import VOICE_PREFERENCES, QwenTTS, speaker_for_voice  # noqa: E402
from realtime import Pipeline, PipelinePool  # noqa: E402
from tests.engines.tiny_production_models import (  # noqa: E402
    QWEN_SAMPLES_PER_FRAME,
    QWEN_SPEAKERS,
    tiny_qwen3_tts,
)
from tests.realtime.fakes import FakeLLM, FakeSTT, FakeVAD  # noqa: E402
from tests.realtime.harness import live_server, session  # noqa: E402
from tests.support import types  # noqa: E402

TEXT = "Hello there, how are you today?"
FEMALE = ("alloy", "coral", "sage", "shimmer", "marin")
MALE = ("ash", "echo", "ballad", "verse", "cedar")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    return tiny_qwen3_tts(tmp_path_factory.mktemp("qwen3_tts"))


@pytest.fixture(scope="module")
def tts(checkpoint):
    return QwenTTS(model=checkpoint, device="cpu", threads=1)


@pytest.fixture(autouse=True)
def seeded():
    """The talker samples its codes: a fixed seed makes each test's utterances the same on
    every run (a random end code could otherwise end one after two frames)."""
    torch.manual_seed(20_251_125)


def chunks(tts, text: str = TEXT, **options) -> list[np.ndarray]:
    options = {"voice": None, "speed": 1.0, "cancel": CancelToken(), **options}
    return list(tts.synthesize(text, **options))


def talker_running() -> bool:
    return any(t.name == "qwen-tts talker" for t in threading.enumerate())


class TalkerSteps:
    """Counts the talker's generation steps and keeps the codec frames they produce."""

    def __init__(self, tts: QwenTTS) -> None:
        self.talker = tts.model.model.talker
        self.frames: list[torch.Tensor] = []
        self.steps = 0

    def __enter__(self) -> TalkerSteps:
        self.hook = self.talker.register_forward_hook(self._step)
        return self

    def __exit__(self, *exc: object) -> None:
        self.hook.remove()

    def _step(self, module, args, output) -> None:
        self.steps += 1
        if output.hidden_states[1] is not None:
            self.frames.append(output.hidden_states[1][0].clone())


def test_tts_speaks_24khz_in_80ms_frames(tts):
    assert isinstance(tts, TTS)
    assert tts.sample_rate == 24_000
    assert tts.samples_per_frame == QWEN_SAMPLES_PER_FRAME
    assert tts.device == "cpu"


def test_voices_are_the_models_speakers_default_first(tts):
    assert tts.voices() == ["ryan", "vivian"]
    assert tts.default_speaker == "ryan"
    assert sorted(tts.voices()) == sorted(QWEN_SPEAKERS)


def test_chunks_are_float32_whole_frames_streamed_small_first(tts):
    produced = chunks(tts)
    assert len(produced) > 1
    for chunk in produced:
        assert chunk.dtype == np.float32 and chunk.ndim == 1
        assert np.isfinite(chunk).all() and np.abs(chunk).max() <= 1.0
        assert len(chunk) > 0 and len(chunk) % QWEN_SAMPLES_PER_FRAME == 0
    assert len(produced[0]) == tts.first_chunk_frames * QWEN_SAMPLES_PER_FRAME
    assert all(len(c) <= tts.chunk_frames * QWEN_SAMPLES_PER_FRAME for c in produced[1:])


def test_streamed_audio_is_the_decoding_of_all_frames(tts):
    with TalkerSteps(tts) as steps:
        streamed = np.concatenate(chunks(tts, voice="vivian"))
    codes = torch.stack(steps.frames)
    (whole,), rate = tts.model.model.speech_tokenizer.decode([{"audio_codes": codes}])
    assert rate == 24_000
    assert len(streamed) == len(whole) == len(codes) * QWEN_SAMPLES_PER_FRAME
    # the same samples, up to the left context a chunk is decoded with
    assert np.abs(streamed - whole).max() <= 1e-2 * np.abs(whole).max()


def test_generation_is_bounded_by_the_text_length(tts, monkeypatch):
    text = "Hi."
    assert tts.max_frames(text) < tts.max_frames(TEXT) <= 40  # 40: the checkpoint's own cap
    network = tts.model.model
    asked = []

    def generate(**options):
        asked.append(options["max_new_tokens"])
        return type(network).generate(network, **options)

    monkeypatch.setattr(network, "generate", generate)
    frames = sum(len(c) for c in chunks(tts, text)) // QWEN_SAMPLES_PER_FRAME
    assert asked == [tts.max_frames(text)]
    assert 0 < frames <= tts.max_frames(text)


def test_cancel_stops_at_the_next_chunk(tts):
    assert len(chunks(tts)) > 1
    cancel = CancelToken()
    produced = []
    for chunk in tts.synthesize(TEXT, voice=None, speed=1.0, cancel=cancel):
        produced.append(chunk)
        cancel.cancel()
    assert len(produced) == 1


def test_cancelled_before_start_yields_nothing_and_generates_nothing(tts):
    cancel = CancelToken()
    cancel.cancel()
    with TalkerSteps(tts) as steps:
        assert chunks(tts, cancel=cancel) == []
    assert steps.steps == 0


def test_closing_the_stream_stops_the_talker_thread(tts):
    stream = tts.synthesize(TEXT, voice=None, speed=1.0, cancel=CancelToken())
    next(stream)
    assert talker_running()
    stream.close()
    assert not talker_running()


def test_a_stream_waiting_for_the_model_stops_when_cancelled(tts):
    cancel = CancelToken()
    produced: list[np.ndarray] = []

    def speak() -> None:
        produced.extend(tts.synthesize(TEXT, voice=None, speed=1.0, cancel=cancel))

    with tts._lock:  # as another utterance of this engine would hold the model
        consumer = threading.Thread(target=speak)
        consumer.start()
        while not talker_running():
            time.sleep(0.01)
        cancel.cancel()
        consumer.join(10)
        assert not consumer.is_alive()
    assert produced == []
    assert not talker_running()


def test_empty_text_yields_nothing(tts):
    assert chunks(tts, "  \n ") == []


def test_every_openai_voice_maps_to_a_speaker_of_its_gender(tts):
    assert set(VOICE_PREFERENCES) == set(FEMALE + MALE)
    assert {tts.speaker_for(v) for v in FEMALE} == {"vivian"}
    assert {tts.speaker_for(v) for v in MALE} == {"ryan"}
    assert chunks(tts, "Hi.", voice="shimmer")


def test_speaker_names_in_any_case_and_unknown_names(tts):
    assert tts.speaker_for("Vivian") == "vivian"
    assert tts.speaker_for("nova") == tts.default_speaker
    assert tts.speaker_for(None) == tts.default_speaker


def test_real_speakers_follow_the_documented_table():
    speakers = ["aiden", "dylan", "eric", "ono_anna", "ryan", "serena", "sohee", "uncle_fu"]
    speakers.append("vivian")
    mapped = {v: speaker_for_voice(v, speakers, "ryan") for v in VOICE_PREFERENCES}
    assert mapped == {v: preferences[0] for v, preferences in VOICE_PREFERENCES.items()}


def test_a_voice_without_its_speakers_gets_a_stable_one():
    speakers = ["alpha", "beta", "gamma"]
    picks = {speaker_for_voice("alloy", speakers, "alpha") for _ in range(3)}
    assert len(picks) == 1 and picks <= set(speakers)


def test_speed_is_accepted_but_must_be_positive(tts):
    assert chunks(tts, "Hi.", speed=1.5)
    with pytest.raises(ValueError, match="speed"):
        chunks(tts, "Hi.", speed=0)


def test_unknown_language_and_speaker_are_refused(checkpoint):
    with pytest.raises(ValueError, match="language"):
        QwenTTS(model=checkpoint, device="cpu", language="Klingon")
    with pytest.raises(ValueError, match="speaker"):
        QwenTTS(model=checkpoint, device="cpu", speaker="nobody")
    assert QwenTTS(model=checkpoint, device="cpu", speaker="Vivian").voices()[0] == "vivian"


def test_a_missing_checkpoint_directory_is_a_missing_dependency(tmp_path):
    with pytest.raises(MissingDependency) as raised:
        QwenTTS(model=tmp_path / "absent", device="cpu")
    assert raised.value.extra == "qwen-tts"


def test_the_torchaudio_shim_gives_kaldi_features():
    kaldi = sys.modules["torchaudio.compliance.kaldi"]
    features = kaldi.fbank(torch.zeros(1, 16_000), num_mel_bins=80, sample_frequency=16_000)
    assert features.shape == (98, 80)
    assert install_torchaudio_shim() == hasattr(sys.modules["torchaudio"], "_realtime_shim")


def test_thread_budget_is_set_for_a_block_and_put_back():
    before = torch.get_num_threads()
    with torch_threads(torch, before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_a_text_turn_through_the_server_is_spoken_by_qwen(tts):
    pool = PipelinePool([Pipeline(0, vad=FakeVAD(), stt=FakeSTT(), llm=FakeLLM(), tts=tts)])
    with live_server(pool) as server:

        async def body() -> None:
            async with session(server) as client:
                await client.user_text("Say hello")
                await client.send({"type": "response.create"})
                events = await client.until("response.done", timeout=60)
                assert events[-1]["response"]["status"] == "completed"
                assert types(events).count("response.output_audio.delta") > 1

        trio.run(body)
