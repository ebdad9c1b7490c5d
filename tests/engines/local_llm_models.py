"""Tiny chat models for the local LLM engines (transformers, mlx_lm), and the behaviour both
engines share, written once.

The models are built once per test session by ``scripts/tiny_llm.py`` into the session's temp
directory: ``tiny_chat_model`` answers every prompt with :data:`REPLY` (one token per word)
and ends its turn; ``tiny_random_model`` writes random tokens to the limit; ``tiny_plain_model``
is the first with a chat template that knows nothing of tools. Nothing is downloaded.

A test module runs :class:`LocalLLMBehaviour` against its engine by subclassing it and defining
the fixtures it uses: ``chat_llm``, ``random_llm`` and ``plain_llm`` (the engine on each model)
and ``forwards`` (a :class:`ForwardCount` of the model's forward passes during the test);
``PREFILL_PASSES`` says how many passes the engine's library makes before the first token.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from engines.base import (
    LLM,
    CancelToken,
    ChatMessage,
    EngineError,
    FunctionTool,
    LLMRequest,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    Usage,
)
from engines.chat_prompt import MUST_CALL
from engines.hf_chat import LocalChatLLM, Sampling
from realtime import Pipeline, PipelinePool
from scripts.tiny_llm import PLAIN_TEMPLATE, REPLY, build_tiny_chat_model
from tests.realtime.fakes import FakeSTT, FakeTTS, FakeVAD
from tests.realtime.harness import live_server, session

# Read by huggingface_hub when it is imported: nothing here may reach the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

INSTRUCTIONS = "You are a helpful voice assistant. Answer in one short sentence."
WEATHER = FunctionTool(
    "get_weather",
    description="Get the current weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
TIMER = FunctionTool(
    "set_timer",
    description="Start a countdown timer.",
    parameters={"type": "object", "properties": {"minutes": {"type": "integer"}}},
)


def _built(factory: pytest.TempPathFactory, name: str, **options: Any) -> Path:
    # Each engine's test module asks for the same models: build them once per session.
    directory = factory.getbasetemp() / name
    if not (directory / "model.safetensors").exists():
        build_tiny_chat_model(directory, **options)
    return directory


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _built(tmp_path_factory, "tiny_chat_model")


@pytest.fixture(scope="session")
def tiny_random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _built(tmp_path_factory, "tiny_random_model", reply=None)


@pytest.fixture(scope="session")
def tiny_plain_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _built(tmp_path_factory, "tiny_plain_model", template=PLAIN_TEMPLATE)


class ForwardCount:
    """How many forward passes the model has made since the test began (set by a hook)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.count += 1


class FakeGeneration:
    """Stands in for an engine's model: "generates" the tokens of ``text`` as the engine's
    tokenizer splits it (up to the token limit), then ends the turn."""

    def __init__(self, llm: LocalChatLLM, text: str) -> None:
        self.token_ids = llm.tokenizer.encode(text, add_special_tokens=False)

    def __call__(
        self, prompt: list[int], sampling: Sampling, max_tokens: int, cancel: CancelToken
    ) -> Iterator[int]:
        yield from self.token_ids[:max_tokens]


def ask(question: str, **options: Any) -> LLMRequest:
    options.setdefault("temperature", 0.0)
    return LLMRequest(INSTRUCTIONS, (ChatMessage("user", question),), **options)


def run(llm: LLM, request: LLMRequest) -> tuple[str, list[ToolCall], Usage]:
    """Text, tool calls and usage of one whole answer; checks that usage comes once, last."""
    events = list(llm.stream(request, CancelToken()))
    usage = events[-1]
    assert isinstance(usage, Usage)
    assert not any(isinstance(e, Usage) for e in events[:-1])
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    return text, [e for e in events if isinstance(e, ToolCall)], usage


def reply_tokens(llm: LocalChatLLM) -> int:
    """How many tokens :data:`REPLY` is (one per word, and one for its full stop)."""
    return len(llm.tokenizer.encode(REPLY, add_special_tokens=False))


def history_with_a_call() -> tuple[ChatMessage, ...]:
    call = ToolCallRequest("call_1", "get_weather", '{"city": "Paris"}')
    return (
        ChatMessage("user", "What's the weather in Paris?"),
        ChatMessage("assistant", "Let me look.", tool_calls=(call,)),
        ChatMessage("tool", '{"sky": "sunny"}', tool_call_id="call_1"),
        ChatMessage("user", "Thanks!"),
    )


class LocalLLMBehaviour:
    """What every local chat engine does, whichever library runs the model."""

    PREFILL_PASSES = 1

    def test_it_is_an_llm(self, chat_llm):
        assert isinstance(chat_llm, LLM)

    def test_an_answer_streams_word_by_word_and_ends_with_usage(self, chat_llm):
        request = ask("What is the capital of France?")
        events = list(chat_llm.stream(request, CancelToken()))
        deltas = [e.text for e in events if isinstance(e, TextDelta)]
        assert "".join(deltas) == REPLY
        assert len(deltas) == reply_tokens(chat_llm)
        assert events[-1] == Usage(
            input_tokens=len(chat_llm.prompt(request).token_ids),
            output_tokens=reply_tokens(chat_llm),
            truncated=False,
        )

    def test_each_delta_comes_before_the_tokens_after_it_are_computed(self, chat_llm, forwards):
        passes = []
        for event in chat_llm.stream(ask("Tell me a story."), CancelToken()):
            if isinstance(event, TextDelta):
                time.sleep(0.02)  # time enough for a model that ran ahead to show it
                passes.append(forwards.count)
        # Delta n arrives after the n-th token's pass, with at most the next one under way.
        assert len(passes) == reply_tokens(chat_llm)
        assert all(p <= self.PREFILL_PASSES + n for n, p in enumerate(passes, start=1))
        assert forwards.count >= reply_tokens(chat_llm)

    def test_cancel_stops_generation_within_one_token(self, chat_llm, forwards):
        cancel = CancelToken()
        stream = chat_llm.stream(ask("Tell me a story."), cancel)
        assert isinstance(next(stream), TextDelta)
        assert isinstance(next(stream), TextDelta)
        cancel.cancel()
        passes_at_cancel = forwards.count
        rest = list(stream)
        assert rest == [Usage(input_tokens=rest[0].input_tokens, output_tokens=2)]
        assert forwards.count <= passes_at_cancel + 1

    def test_cancelled_before_start_generates_nothing(self, chat_llm, forwards):
        cancel = CancelToken()
        cancel.cancel()
        (usage,) = list(chat_llm.stream(ask("Hello"), cancel))
        assert (usage.output_tokens, usage.truncated) == (0, False)
        assert usage.input_tokens > 0
        assert forwards.count == 0

    def test_a_closed_stream_stops_generating(self, chat_llm, forwards):
        stream = chat_llm.stream(ask("Tell me a story."), CancelToken())
        next(stream)
        passes_at_close = forwards.count
        stream.close()
        assert forwards.count <= passes_at_close + 1
        assert run(chat_llm, ask("Hello"))[0] == REPLY  # and the model is free again

    def test_max_output_tokens_truncates_and_says_so(self, chat_llm):
        text, _, usage = run(chat_llm, ask("Tell me a story.", max_output_tokens=3))
        assert text == " ".join(REPLY.split()[:3])
        assert (usage.output_tokens, usage.truncated) == (3, True)

    def test_an_answer_that_ends_within_the_limit_is_not_truncated(self, chat_llm):
        # The end-of-turn token comes right after the reply: it fits, and is not counted.
        request = ask("Hello", max_output_tokens=reply_tokens(chat_llm) + 1)
        _, _, usage = run(chat_llm, request)
        assert (usage.output_tokens, usage.truncated) == (reply_tokens(chat_llm), False)

    def test_the_context_limits_the_answer(self, random_llm, monkeypatch):
        prompt_tokens = len(random_llm.prompt(ask("Hello")).token_ids)
        n_ctx = -(-prompt_tokens * 4 // 3)  # the least that leaves the answer a quarter
        monkeypatch.setattr(random_llm, "n_ctx", n_ctx)
        _, _, usage = run(random_llm, ask("Hello", max_output_tokens=1000))
        assert (usage.output_tokens, usage.truncated) == (n_ctx - prompt_tokens, True)

    def test_temperature_zero_is_deterministic_and_sampling_is_not(self, random_llm):
        greedy = ask("Name a colour.", max_output_tokens=40)
        assert run(random_llm, greedy)[0] == run(random_llm, greedy)[0]
        hot = ask("Name a colour.", max_output_tokens=40, temperature=1.5)
        assert run(random_llm, hot)[0] != run(random_llm, hot)[0]

    def test_a_second_stream_waits_for_the_first_then_gives_up(self, chat_llm, monkeypatch):
        monkeypatch.setattr(chat_llm, "busy_timeout_s", 0.05)
        first = chat_llm.stream(ask("Tell me a story."), CancelToken())
        next(first)
        with pytest.raises(EngineError, match="another answer"):
            next(chat_llm.stream(ask("Hello"), CancelToken()))
        first.close()
        assert run(chat_llm, ask("Hello"))[0] == REPLY

    def test_history_with_calls_and_results_goes_through_the_template(self, chat_llm):
        request = LLMRequest(INSTRUCTIONS, history_with_a_call(), tools=(WEATHER, TIMER))
        prompt = chat_llm.prompt(request)
        assert prompt.native_tools
        assert prompt.text.startswith(f"<|im_start|>system\n{INSTRUCTIONS}\n\n")
        schemas = [json.loads(line) for line in prompt.text.splitlines() if '"function"' in line]
        assert [s["function"]["name"] for s in schemas] == ["get_weather", "set_timer"]
        assert (
            "<|im_start|>assistant\nLet me look.\n<tool_call>\n"
            '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
            '<|im_start|>user\n<tool_response>\n{"sky": "sunny"}\n</tool_response><|im_end|>\n'
            "<|im_start|>user\nThanks!<|im_end|>\n<|im_start|>assistant\n"
        ) in prompt.text
        assert prompt.token_ids == tuple(
            chat_llm.tokenizer.encode(prompt.text, add_special_tokens=False)
        )

    def test_a_required_tool_choice_is_said_in_the_system_message(self, chat_llm):
        request = ask("Weather?", tools=(WEATHER, TIMER), tool_choice="set_timer")
        text = chat_llm.prompt(request).text
        assert f"{INSTRUCTIONS}\n\n{MUST_CALL}" in text
        assert '"set_timer"' in text and '"get_weather"' not in text

    def test_without_tools_the_template_gets_none(self, chat_llm):
        prompt = chat_llm.prompt(ask("Hello"))
        assert not prompt.native_tools
        assert "<tools>" not in prompt.text

    def test_a_template_without_tools_gets_them_described_in_the_system_message(self, plain_llm):
        request = LLMRequest(INSTRUCTIONS, history_with_a_call(), tools=(WEATHER,))
        prompt = plain_llm.prompt(request)
        assert not prompt.native_tools
        assert "You can call these functions:\n- get_weather: Get the current" in prompt.text
        assert (
            '<|im_start|>assistant\nLet me look.\n{"name": "get_weather", '
            '"arguments": {"city": "Paris"}}<|im_end|>'
        ) in prompt.text
        assert 'Result of get_weather: {"sky": "sunny"}\n\nThanks!' in prompt.text

    def test_a_long_history_loses_its_oldest_turns_first(self, chat_llm, monkeypatch):
        turns = tuple(
            ChatMessage("user" if i % 2 == 0 else "assistant", f"Message number {i}. " * 3)
            for i in range(12)
        )
        request = LLMRequest(INSTRUCTIONS, (*turns, ChatMessage("user", "And the last one?")))
        monkeypatch.setattr(chat_llm, "n_ctx", 400)
        prompt = chat_llm.prompt(request)
        assert len(prompt.token_ids) <= 300
        assert INSTRUCTIONS in prompt.text and "And the last one?" in prompt.text
        assert "Message number 0." not in prompt.text and "Message number 11." in prompt.text

    def test_a_prompt_that_cannot_fit_is_an_engine_error(self, chat_llm, monkeypatch):
        monkeypatch.setattr(chat_llm, "n_ctx", 64)
        with pytest.raises(EngineError, match="context"):
            chat_llm.prompt(LLMRequest("word " * 100, (ChatMessage("user", "Hi"),)))

    def test_a_tagged_call_after_some_text_is_a_tool_call_and_no_markup_is_shown(
        self, chat_llm, monkeypatch
    ):
        output = (
            "Let me check.\n<tool_call>\n"
            '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        )
        monkeypatch.setattr(chat_llm, "_generate", FakeGeneration(chat_llm, output))
        text, calls, usage = run(chat_llm, ask("Weather in Paris?", tools=(WEATHER,)))
        assert text.strip() == "Let me check."
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [
            ("get_weather", {"city": "Paris"})
        ]
        assert not usage.truncated

    def test_two_tagged_calls_are_two_tool_calls(self, chat_llm, monkeypatch):
        output = (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "set_timer", "arguments": {"minutes": 5}}\n</tool_call>'
        )
        monkeypatch.setattr(chat_llm, "_generate", FakeGeneration(chat_llm, output))
        text, calls, _ = run(chat_llm, ask("Weather, and a timer", tools=(WEATHER, TIMER)))
        assert text == ""
        assert [c.name for c in calls] == ["get_weather", "set_timer"]

    @pytest.mark.parametrize(
        ("block", "reason"),
        [
            ('{"name": "get_weather", "arguments": {city: Paris}}', "not JSON"),
            ('{"name": "launch_rocket", "arguments": {}}', "not an offered function"),
        ],
    )
    def test_an_invalid_tagged_call_is_an_engine_error(self, chat_llm, monkeypatch, block, reason):
        output = f"<tool_call>\n{block}\n</tool_call>"
        monkeypatch.setattr(chat_llm, "_generate", FakeGeneration(chat_llm, output))
        with pytest.raises(EngineError, match=f"invalid tool call.*{reason}"):
            run(chat_llm, ask("Weather in Paris?", tools=(WEATHER,)))

    def test_a_call_cut_off_at_the_token_limit_is_dropped_and_the_answer_truncated(
        self, chat_llm, monkeypatch
    ):
        output = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
        fake = FakeGeneration(chat_llm, output)
        monkeypatch.setattr(chat_llm, "_generate", fake)
        limit = len(fake.token_ids) - 3
        request = ask("Weather in Paris?", tools=(WEATHER,), max_output_tokens=limit)
        text, calls, usage = run(chat_llm, request)
        assert (text, calls) == ("", [])
        assert (usage.output_tokens, usage.truncated) == (limit, True)

    def test_a_call_whose_closing_tag_is_missing_still_counts(self, chat_llm, monkeypatch):
        output = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        monkeypatch.setattr(chat_llm, "_generate", FakeGeneration(chat_llm, output))
        _, calls, _ = run(chat_llm, ask("Weather in Paris?", tools=(WEATHER,)))
        assert [c.name for c in calls] == ["get_weather"]

    def test_a_model_that_was_told_about_tools_in_text_answers_with_bare_json(
        self, plain_llm, monkeypatch
    ):
        output = '{"name": "set_timer", "arguments": {"minutes": 3}}'
        monkeypatch.setattr(plain_llm, "_generate", FakeGeneration(plain_llm, output))
        text, calls, _ = run(plain_llm, ask("A timer for 3 minutes", tools=(TIMER,)))
        assert text == ""
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [("set_timer", {"minutes": 3})]

    def test_markup_is_plain_text_when_no_tools_are_offered(self, chat_llm, monkeypatch):
        output = "<tool_call>not a call</tool_call>"
        monkeypatch.setattr(chat_llm, "_generate", FakeGeneration(chat_llm, output))
        assert run(chat_llm, ask("Hello"))[0] == output

    def test_characters_split_across_tokens_are_streamed_whole(self, chat_llm, monkeypatch):
        output = "Grüße aus Köln ☀ 🙂!"
        fake = FakeGeneration(chat_llm, output)
        assert len(fake.token_ids) > len(output.split())  # multi-byte characters are split
        monkeypatch.setattr(chat_llm, "_generate", fake)
        events = list(chat_llm.stream(ask("Hello"), CancelToken()))
        deltas = [e.text for e in events if isinstance(e, TextDelta)]
        assert "".join(deltas) == output
        assert not any("\ufffd" in d for d in deltas)

    def test_a_text_turn_through_the_server(self, chat_llm):
        pipeline = Pipeline(index=0, vad=FakeVAD(), stt=FakeSTT(), llm=chat_llm, tts=FakeTTS())
        with live_server(PipelinePool([pipeline])) as server:

            async def body() -> None:
                async with session(server) as client:
                    await client.update_session(output_modalities=["text"])
                    await client.user_text("What is the capital of France?")
                    await client.until("conversation.item.done")
                    await client.send({"type": "response.create"})
                    events = await client.until("response.done", timeout=30)
                    deltas = [
                        e["delta"] for e in events if e["type"] == "response.output_text.delta"
                    ]
                    assert "".join(deltas) == REPLY
                    assert len(deltas) == reply_tokens(chat_llm)
                    assert events[-1]["response"]["status"] == "completed"

            trio.run(body)
