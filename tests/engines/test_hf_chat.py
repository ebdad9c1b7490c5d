"""The parts of engines/hf_chat.py that need no model: decoding, templates, sampling settings
(with the tiny chat model's real tokenizer)."""

from __future__ import annotations

import copy

import pytest

# The shared tests live outside a test module; their asserts should still explain failures.
pytest.register_assert_rewrite("tests.engines.local_llm_models")

# first: it sets HF_HUB_OFFLINE before huggingface_hub is imported
from tests.engines.local_llm_models import WEATHER, ask  # noqa: E402

transformers = pytest.importorskip("transformers", reason="the transformers extra is not installed")

from engines.base import EngineError  # noqa: E402
from engines.hf_chat import ChatTemplate, Detokenizer, Sampling, template_variables  # noqa: E402

# the tiny models' session fixtures, shared with the local LLM engines' tests
pytest_plugins = ("tests.engines.local_llm_models",)


@pytest.fixture(scope="module")
def tokenizer(tiny_chat_model):
    return transformers.AutoTokenizer.from_pretrained(tiny_chat_model)


def decode_one_by_one(tokenizer, text: str) -> list[str]:
    detokenizer = Detokenizer(tokenizer)
    pieces = [detokenizer.add(t) for t in tokenizer.encode(text, add_special_tokens=False)]
    return [*pieces, detokenizer.flush()]


def test_detokenizer_gives_each_token_its_text(tokenizer):
    assert decode_one_by_one(tokenizer, "Hello from a tiny test model.") == [
        "Hello",
        " from",
        " a",
        " tiny",
        " test",
        " model",
        ".",
        "",
    ]


def test_detokenizer_holds_a_character_until_its_last_byte(tokenizer):
    pieces = decode_one_by_one(tokenizer, "Grüße 🙂")
    assert "".join(pieces) == "Grüße 🙂"
    assert "" in pieces  # some token ended inside a character and waited
    assert not any("\ufffd" in p for p in pieces)


def test_detokenizer_leaves_special_tokens_out(tokenizer):
    detokenizer = Detokenizer(tokenizer)
    ids = tokenizer.encode("Hello<|im_end|>", add_special_tokens=False)
    assert "".join(detokenizer.add(t) for t in ids) + detokenizer.flush() == "Hello"


def test_detokenizer_flushes_an_incomplete_character_as_a_replacement(tokenizer):
    detokenizer = Detokenizer(tokenizer)
    smiley = tokenizer.encode("🙂", add_special_tokens=False)
    assert len(smiley) > 1
    assert detokenizer.add(smiley[0]) == ""
    assert detokenizer.flush() == "\ufffd"


def test_template_variables_are_what_the_template_reads():
    source = "{% for m in messages %}{{ m.content }}{% endfor %}{% if tools %}x{% endif %}"
    assert template_variables(source) == {"messages", "tools"}


def test_a_template_plain_jinja_cannot_parse_is_read_for_its_words():
    source = "{% generation %}{{ messages }}{% endgeneration %}{% if tools %}{% endif %}"
    assert {"messages", "tools"} <= template_variables(source)


def test_a_thinking_switch_in_the_template_is_turned_off(tokenizer):
    thinking = copy.deepcopy(tokenizer)
    thinking.chat_template = (
        "{{ 'thinking=' ~ enable_thinking ~ '\\n' }}"
        "{% for m in messages %}{{ m.role ~ ': ' ~ m.content ~ '\\n' }}{% endfor %}"
    )
    prompt = ChatTemplate(thinking, engine="test").prompt(ask("Hi"), n_ctx=1000)
    assert prompt.text.startswith("thinking=False\n")


def test_a_template_that_ignores_tools_gets_them_in_the_system_message(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = (
        "{% for m in messages %}{{ m.role ~ ': ' ~ m.content ~ '\\n' }}{% endfor %}"
    )
    prompt = ChatTemplate(plain, engine="test").prompt(ask("Hi", tools=(WEATHER,)), n_ctx=1000)
    assert not prompt.native_tools
    assert "- get_weather: Get the current weather for a city." in prompt.text


def test_a_tokenizer_without_a_chat_template_is_refused(tokenizer):
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(EngineError, match="no chat template"):
        ChatTemplate(bare, engine="test")


def test_sampling_follows_the_generation_config():
    sampled = transformers.GenerationConfig(do_sample=True, temperature=0.6, top_p=0.8, top_k=20)
    assert Sampling.from_generation_config(sampled) == Sampling(0.6, 0.8, 20, 1.0)
    greedy = transformers.GenerationConfig(repetition_penalty=1.1)
    assert Sampling.from_generation_config(greedy) == Sampling(0.0, 1.0, 50, 1.1)
    unset = transformers.GenerationConfig(do_sample=True, temperature=None, top_k=None)
    assert Sampling.from_generation_config(unset) == Sampling(1.0, 1.0, 0, 1.0)


def test_sampling_options_replace_only_what_they_set():
    sampling = Sampling(0.6, 0.8, 20, 1.1)
    assert sampling.overridden(temperature=0.0, top_p=None) == Sampling(0.0, 0.8, 20, 1.1)
    assert sampling.overridden(temperature=None, top_p=0.5) == Sampling(0.6, 0.5, 20, 1.1)
