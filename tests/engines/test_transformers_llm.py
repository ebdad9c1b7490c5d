"""TransformersLLM on tiny chat models built at test time (scripts/tiny_llm.py), through
transformers' real ``from_pretrained`` and ``generate``."""

from __future__ import annotations

import threading

import pytest

# The shared tests live outside a test module; their asserts should still explain failures.
pytest.register_assert_rewrite("tests.engines.local_llm_models")

# first: it sets HF_HUB_OFFLINE before huggingface_hub is imported
from tests.engines.local_llm_models import ForwardCount, LocalLLMBehaviour, ask, run  # noqa: E402

torch = pytest.importorskip("torch", reason="the transformers extra is not installed")
pytest.importorskip("transformers", reason="the transformers extra is not installed")

from engines.base import CancelToken, EngineError, TextDelta  # noqa: E402
from engines.transformers_llm import AUTO_DTYPE, TransformersLLM  # noqa: E402
from scripts.tiny_llm import REPLY  # noqa: E402

# the tiny models' session fixtures, shared with the other local LLM engine's tests
pytest_plugins = ("tests.engines.local_llm_models",)

GENERATE_THREAD = "transformers-generate"


@pytest.fixture(scope="module")
def chat_llm(tiny_chat_model):
    return TransformersLLM(model=str(tiny_chat_model), threads=2)


@pytest.fixture(scope="module")
def random_llm(tiny_random_model):
    return TransformersLLM(model=str(tiny_random_model), threads=2)


@pytest.fixture(scope="module")
def plain_llm(tiny_plain_model):
    return TransformersLLM(model=str(tiny_plain_model), threads=2)


@pytest.fixture
def forwards(chat_llm):
    count = ForwardCount()
    hook = chat_llm._model.register_forward_hook(lambda *_: count.add())
    yield count
    hook.remove()


def generate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == GENERATE_THREAD]


class TestTransformersLLM(LocalLLMBehaviour):
    PREFILL_PASSES = 1  # generate's first forward pass reads the prompt and gives token 1


def test_the_generate_thread_is_joined_when_an_answer_ends_or_is_cancelled(chat_llm):
    run(chat_llm, ask("Hello"))
    assert generate_threads() == []
    cancel = CancelToken()
    stream = chat_llm.stream(ask("Hello"), cancel)
    next(stream)
    assert len(generate_threads()) == 1
    cancel.cancel()
    list(stream)
    assert generate_threads() == []


def test_an_error_in_generate_reaches_the_reader(chat_llm, monkeypatch):
    def fake_generate(**settings):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(chat_llm._model, "generate", fake_generate)
    with pytest.raises(RuntimeError, match="out of memory"):
        list(chat_llm.stream(ask("Hello"), CancelToken()))
    assert generate_threads() == []
    monkeypatch.undo()
    assert run(chat_llm, ask("Hello"))[0] == REPLY


def test_generation_uses_the_configured_cpu_threads(tiny_chat_model):
    llm = TransformersLLM(model=str(tiny_chat_model), threads=1)
    seen = []
    hook = llm._model.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        run(llm, ask("Hello"))
    finally:
        hook.remove()
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before


def test_auto_picks_the_best_device_here_and_its_dtype(chat_llm):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and torch.backends.mps.is_available():
        expected = "mps"
    assert chat_llm.device == expected
    assert chat_llm.dtype == AUTO_DTYPE[expected]
    assert next(chat_llm._model.parameters()).dtype == getattr(torch, chat_llm.dtype)


def test_an_explicit_dtype_is_used(tiny_chat_model):
    llm = TransformersLLM(model=str(tiny_chat_model), device="cpu", dtype="bfloat16")
    assert next(llm._model.parameters()).dtype == torch.bfloat16
    events = list(llm.stream(ask("Hello"), CancelToken()))
    assert any(isinstance(e, TextDelta) for e in events)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"dtype": "int4"}, ValueError),
        ({"device": "tpu"}, ValueError),
    ],
)
def test_bad_options_are_refused(tiny_chat_model, options, error):
    with pytest.raises(error):
        TransformersLLM(model=str(tiny_chat_model), **options)


def test_a_model_that_is_not_there_is_an_engine_error(tmp_path):
    with pytest.raises(EngineError, match="cannot load"):
        TransformersLLM(model=str(tmp_path / "missing"))
