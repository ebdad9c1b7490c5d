"""ParakeetSTT on a tiny random-weight Parakeet-shaped TDT model, loaded through NeMo's real
``restore_from`` path (the real weights cannot be downloaded here). The model's output is
random tokens: these tests pin types, lengths, sharing and cancellation, never the text."""

from __future__ import annotations

import os
import shutil
import threading

import numpy as np
import pytest

# Read by huggingface_hub when it is imported: nothing here may reach the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

torch = pytest.importorskip("torch", reason="the nemo extra is not installed")

from engines.torch_runtime import install_torchaudio_shim  # noqa: E402

install_torchaudio_shim()  # NeMo's import fails on a torchaudio whose native library can't load
pytest.importorskip("nemo.collections.asr", reason="the nemo extra is not installed")

import trio  # noqa: E402

from engines.base import STT, CancelToken, EngineError, MissingDependency  # noqa: E402
from engines.parakeet_stt import ParakeetSTT  # noqa: E402
from realtime import Pipeline, PipelinePool  # noqa: E402
from tests.engines.tiny_production_models import tiny_parakeet  # noqa: E402
from tests.realtime.fakes import FakeLLM, FakeTTS, FakeVAD  # noqa: E402
from tests.realtime.harness import live_server, session, silence_pcm, tone_pcm  # noqa: E402


@pytest.fixture(scope="session")
def nemo_path(tmp_path_factory):
    return tiny_parakeet(tmp_path_factory.mktemp("parakeet"))


@pytest.fixture(scope="module")
def stt(nemo_path):
    return ParakeetSTT(model=nemo_path, device="cpu", threads=1)


@pytest.fixture(scope="module")
def noise():
    """Two seconds of 16 kHz noise: the tiny model emits tokens for it."""
    return (0.1 * np.random.default_rng(0).standard_normal(32_000)).astype(np.float32)


def test_stt_takes_16khz_audio(stt):
    assert isinstance(stt, STT)
    assert stt.sample_rate == 16_000
    assert stt.device == "cpu"


def test_a_final_transcript_reports_the_audio_it_covered(stt, noise):
    transcript = stt.transcribe(noise)
    assert isinstance(transcript.text, str) and transcript.text
    assert transcript.text == transcript.text.strip()
    assert transcript.audio_seconds == len(noise) / 16_000
    assert transcript.language == "en"
    assert transcript.logprobs is None


def test_a_partial_hypothesis_uses_the_same_greedy_decoding(stt, noise):
    growing = noise[:20_000]
    partial = stt.transcribe(growing, partial=True, logprobs=True)
    assert partial.text == stt.transcribe(growing).text
    assert partial.audio_seconds == 1.25
    assert partial.logprobs is None  # partials never pay for scores


def test_logprobs_are_one_natural_log_probability_per_token(stt, noise):
    transcript = stt.transcribe(noise, logprobs=True)
    assert transcript.logprobs
    assert "".join(token for token, _ in transcript.logprobs).strip() == transcript.text
    assert all(np.isfinite(p) and p <= 0.0 for _, p in transcript.logprobs)
    assert stt.transcribe(noise).text == transcript.text  # scoring leaves the search alone


def test_empty_and_very_short_audio_give_empty_transcripts(stt):
    empty = stt.transcribe(np.zeros(0, np.float32))
    assert (empty.text, empty.audio_seconds) == ("", 0.0)
    short = stt.transcribe(np.zeros(100, np.float32), logprobs=True)
    assert (short.text, short.audio_seconds) == ("", 100 / 16_000)


def test_cancelled_before_start_transcribes_nothing(stt, noise):
    assert stt.transcribe(noise).text
    cancel = CancelToken()
    cancel.cancel()
    transcript = stt.transcribe(noise, cancel=cancel)
    assert (transcript.text, transcript.audio_seconds) == ("", 0.0)


def test_cancel_during_the_encoder_skips_decoding(stt, noise, monkeypatch):
    cancel = CancelToken()
    decoding = stt.model.decoding
    decoded = []

    def decode(*args, **kwargs):
        decoded.append(True)
        return type(decoding).rnnt_decoder_predictions_tensor(decoding, *args, **kwargs)

    monkeypatch.setattr(decoding, "rnnt_decoder_predictions_tensor", decode)
    assert stt.transcribe(noise).text and decoded == [True]
    hook = stt.model.encoder.register_forward_hook(lambda *_: cancel.cancel())
    try:
        transcript = stt.transcribe(noise, cancel=cancel)
    finally:
        hook.remove()
    assert cancel.cancelled
    assert (transcript.text, transcript.audio_seconds) == ("", 0.0)
    assert decoded == [True]


def test_a_batch_gives_the_transcripts_of_single_calls(stt, noise):
    segments = [noise, noise[:8_000], np.zeros(0, np.float32), noise[:20_000]]
    batch = stt.transcribe_batch(segments)
    assert [t.audio_seconds for t in batch] == [2.0, 0.5, 0.0, 1.25]
    assert [t.text for t in batch] == [stt.transcribe(s).text for s in segments]


def test_engines_of_one_model_and_device_share_it(stt, nemo_path, tmp_path):
    again = ParakeetSTT(model=str(nemo_path), device="cpu", threads=2)
    assert again.model is stt.model
    copy = shutil.copy(nemo_path, tmp_path / "copy.nemo")
    assert ParakeetSTT(model=copy, device="cpu").model is not stt.model


def test_calls_run_with_the_engines_thread_budget(nemo_path, noise):
    default = torch.get_num_threads()
    engine = ParakeetSTT(model=nemo_path, device="cpu", threads=default + 1)
    during, around = [], []
    hook = engine.model.encoder.register_forward_hook(
        lambda *_: during.append(torch.get_num_threads())
    )

    def call() -> None:
        around.append(torch.get_num_threads())
        engine.transcribe(noise)
        around.append(torch.get_num_threads())

    try:
        worker = threading.Thread(target=call)
        worker.start()
        worker.join()
    finally:
        hook.remove()
    assert during == [default + 1]
    assert around == [default, default]  # the worker's own budget is put back


def test_a_missing_model_file_is_a_missing_dependency(tmp_path):
    with pytest.raises(MissingDependency) as raised:
        ParakeetSTT(model=tmp_path / "absent.nemo", device="cpu")
    assert raised.value.extra == "nemo"


def test_a_hub_model_that_cannot_be_fetched_fails_at_load():
    with pytest.raises(EngineError, match="no-such-parakeet"):
        ParakeetSTT(model="nvidia/no-such-parakeet", device="cpu")


def test_an_unknown_device_is_refused(nemo_path):
    with pytest.raises(ValueError, match="device"):
        ParakeetSTT(model=nemo_path, device="tpu")


def test_a_voice_turn_through_the_server_is_transcribed_by_parakeet(stt):
    pool = PipelinePool([Pipeline(0, vad=FakeVAD(), stt=stt, llm=FakeLLM(), tts=FakeTTS())])
    with live_server(pool) as server:

        async def body() -> None:
            async with session(server) as client:
                await client.update_session(
                    audio={"input": {"transcription": {"model": "whisper-1"}}}
                )
                await client.append(silence_pcm(200) + tone_pcm(1500) + silence_pcm(700))
                events = await client.until(
                    "conversation.item.input_audio_transcription.completed", timeout=30
                )
                completed = events[-1]
                assert isinstance(completed["transcript"], str)
                assert completed["item_id"] in {
                    e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"
                }

        trio.run(body)
