"""MlxLLM on tiny chat models built at test time (scripts/tiny_llm.py), through mlx_lm's real
``load`` and ``stream_generate`` (on the CPU here: ``mlx[cpu]``)."""

from __future__ import annotations

import threading

import pytest

# The shared tests live outside a test module; their asserts should still explain failures.
pytest.register_assert_rewrite("tests.engines.local_llm_models")

# first: it sets HF_HUB_OFFLINE before huggingface_hub is imported
from tests.engines.local_llm_models import ForwardCount, LocalLLMBehaviour, ask, run  # noqa: E402

pytest.importorskip("mlx_lm", reason="the mlx extra is not installed")

from engines.base import EngineError  # noqa: E402
from engines.mlx_llm import MlxLLM  # noqa: E402
from scripts.tiny_llm import REPLY  # noqa: E402

# the tiny models' session fixtures, shared with the other local LLM engine's tests
pytest_plugins = ("tests.engines.local_llm_models",)


@pytest.fixture(scope="module")
def chat_llm(tiny_chat_model):
    return MlxLLM(model=str(tiny_chat_model))


@pytest.fixture(scope="module")
def random_llm(tiny_random_model):
    return MlxLLM(model=str(tiny_random_model))


@pytest.fixture(scope="module")
def plain_llm(tiny_plain_model):
    return MlxLLM(model=str(tiny_plain_model))


@pytest.fixture
def forwards(chat_llm, monkeypatch):
    count = ForwardCount()
    model_class = type(chat_llm._model)
    forward = model_class.__call__

    def counted(self, *args, **kwargs):
        count.add()
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(model_class, "__call__", counted)
    return count


class TestMlxLLM(LocalLLMBehaviour):
    # mlx_lm reads all but the last prompt token in one pass, then the last gives token 1.
    PREFILL_PASSES = 2


def test_answers_in_threads_other_than_the_one_that_loaded_the_model(chat_llm):
    answers = []
    workers = [
        threading.Thread(target=lambda: answers.append(run(chat_llm, ask("Hello"))[0]))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
        worker.join()
    assert answers == [REPLY, REPLY]


def test_a_model_that_is_not_there_is_an_engine_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}')
    with pytest.raises(EngineError, match="cannot load"):
        MlxLLM(model=str(tmp_path))
