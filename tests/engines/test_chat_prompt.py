import json

import pytest

from engines.base import (
    ChatMessage,
    ContextTruncation,
    EngineError,
    FunctionTool,
    LLMRequest,
    ToolCallRequest,
    UnsupportedInput,
)
from engines.chat_prompt import MUST_CALL, chat_messages, fit_context, system_prompt, tool_schemas

WEATHER = FunctionTool(
    "get_weather",
    description="Current weather for a city.",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "city name"},
            "unit": {"type": "string", "enum": ["c", "f"]},
        },
        "required": ["city"],
    },
)


def test_instructions_become_the_system_message():
    request = LLMRequest("Be brief.", (ChatMessage("user", "Hi"),))
    assert chat_messages(request) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]


def test_no_instructions_and_no_tools_means_no_system_message():
    assert chat_messages(LLMRequest("", (ChatMessage("user", "Hi"),)))[0]["role"] == "user"


def test_tools_are_described_with_their_arguments_and_the_call_format():
    prompt = system_prompt(LLMRequest("Be brief.", (), tools=(WEATHER,)))
    assert prompt.startswith("Be brief.\n\n")
    assert "- get_weather: Current weather for a city." in prompt
    assert "city (string, required) - city name" in prompt
    assert 'unit (string), one of ["c", "f"]' in prompt
    assert '{"name": "<function name>", "arguments":' in prompt
    assert "plain text" in prompt


def test_required_tool_choice_says_a_call_is_needed():
    prompt = system_prompt(LLMRequest("", (), tools=(WEATHER,), tool_choice="required"))
    assert "must call" in prompt


def test_tool_choice_none_hides_the_tools():
    assert system_prompt(LLMRequest("Hi.", (), tools=(WEATHER,), tool_choice="none")) == "Hi."


def test_past_calls_and_results_are_rendered_as_text_turns():
    call = ToolCallRequest("call_1", "get_weather", '{"city": "Paris"}')
    history = (
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage("assistant", tool_calls=(call,)),
        ChatMessage("tool", '{"temp_c": 21}', tool_call_id="call_1"),
        ChatMessage("user", "Thanks."),
    )
    messages = chat_messages(LLMRequest("", history, tools=(WEATHER,)))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert json.loads(messages[2]["content"]) == {
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }
    assert messages[3]["content"] == 'Result of get_weather: {"temp_c": 21}\n\nThanks.'


def test_history_system_messages_merge_into_the_system_prompt():
    history = (ChatMessage("system", "Speak French."), ChatMessage("user", "Hi"))
    messages = chat_messages(LLMRequest("Be brief.", history))
    assert messages[0] == {"role": "system", "content": "Be brief.\n\nSpeak French."}


def test_native_tools_keep_calls_and_results_structured():
    call = ToolCallRequest("call_1", "get_weather", '{"city": "Paris"}')
    history = (
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage("assistant", "Let me look."),
        ChatMessage("assistant", tool_calls=(call,)),
        ChatMessage("tool", '{"temp_c": 21}', tool_call_id="call_1"),
        ChatMessage("tool", '{"wind": "none"}', tool_call_id="call_1"),
    )
    messages = chat_messages(LLMRequest("Be brief.", history, tools=(WEATHER,)), native_tools=True)
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {
            "role": "tool",
            "content": '{"temp_c": 21}',
            "tool_call_id": "call_1",
            "name": "get_weather",
        },
        {
            "role": "tool",
            "content": '{"wind": "none"}',
            "tool_call_id": "call_1",
            "name": "get_weather",
        },
    ]


def test_native_tools_with_a_required_call_say_so_without_describing_the_tools():
    request = LLMRequest("Be brief.", (), tools=(WEATHER,), tool_choice="required")
    assert chat_messages(request, native_tools=True)[0]["content"] == f"Be brief.\n\n{MUST_CALL}"


def test_tool_schemas_are_the_offered_tools_in_the_chat_template_shape():
    timer = FunctionTool("set_timer")
    request = LLMRequest("", (), tools=(WEATHER, timer), tool_choice="set_timer")
    assert tool_schemas(request) == [
        {
            "type": "function",
            "function": {
                "name": "set_timer",
                "description": "",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]


def words(messages: list[dict]) -> list[int]:
    """A stand-in tokenizer: one token per word of every message."""
    return [0 for m in messages for _ in str(m["content"]).split()]


def test_fit_context_keeps_a_prompt_that_fits():
    messages = [{"role": "system", "content": "a b"}, {"role": "user", "content": "c d"}]
    assert fit_context(messages, words, n_ctx=8) == (messages, [0, 0, 0, 0])


def test_fit_context_drops_the_oldest_turns_and_their_tool_results():
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "one two"},
        {"role": "assistant", "content": "three four", "tool_calls": []},
        {"role": "tool", "content": "five"},
        {"role": "user", "content": "six"},
    ]
    kept, tokens = fit_context(messages, words, n_ctx=4)
    # Without its call, "five" would fit; a result whose call is gone means nothing, though.
    assert [m["content"] for m in kept] == ["sys", "six"]
    assert len(tokens) == 2


def test_fit_context_fails_when_the_last_turn_alone_is_too_long():
    messages = [{"role": "user", "content": "far too many words here"}]
    with pytest.raises(EngineError, match="5 tokens of a 4-token context"):
        fit_context(messages, words, n_ctx=4)


def conversation(turns: int) -> list[dict]:
    """A system message of 2 tokens, then ``turns`` user/assistant messages of 3 tokens each."""
    roles = ("user", "assistant")
    return [{"role": "system", "content": "be brief"}] + [
        {"role": roles[i % 2], "content": f"turn {i} here"} for i in range(turns)
    ]


def test_truncation_disabled_refuses_to_drop_turns():
    messages = conversation(4)  # 14 tokens
    disabled = ContextTruncation("disabled")
    assert fit_context(messages, words, n_ctx=40, truncation=disabled)[0] == messages
    with pytest.raises(EngineError, match="truncation is disabled"):
        fit_context(messages, words, n_ctx=16, truncation=disabled)


def test_retention_ratio_drops_down_to_its_share_of_the_post_instructions_limit():
    messages = conversation(6)  # 2 + 18 tokens
    ratio = ContextTruncation("retention_ratio", 0.5, post_instructions=12)
    kept, tokens = fit_context(messages, words, n_ctx=1000, truncation=ratio)
    # over 12 tokens after the instructions: the oldest turns go until 6 are left
    assert [m["content"] for m in kept] == ["be brief", "turn 4 here", "turn 5 here"]
    assert len(tokens) == 2 + 6
    # under the limit, nothing is dropped
    assert fit_context(messages[:4], words, n_ctx=1000, truncation=ratio)[0] == messages[:4]
    # "auto" with the same context keeps everything that fits
    assert fit_context(messages, words, n_ctx=1000)[0] == messages


def test_truncation_reaches_the_request_from_the_session():
    wire = {
        "type": "retention_ratio",
        "retention_ratio": 0.8,
        "token_limits": {"post_instructions": 900},
    }
    assert ContextTruncation.from_wire(wire) == ContextTruncation("retention_ratio", 0.8, 900)
    assert ContextTruncation.from_wire("disabled") == ContextTruncation("disabled")
    assert ContextTruncation.from_wire("auto") == ContextTruncation()


def test_the_answer_language_is_named_after_the_instructions():
    request = LLMRequest("Be brief.", (ChatMessage("user", "Capital of Germany?"),), language="en")
    prompt = system_prompt(request)
    assert prompt.startswith("Be brief.\n\n")
    assert "in plain English words" in prompt
    assert "in plain French words" in system_prompt(LLMRequest("", (), language="fr-CA"))
    assert "in plain tlh words" in system_prompt(LLMRequest("", (), language="tlh"))


def test_no_language_means_nothing_said_about_it():
    assert system_prompt(LLMRequest("Be brief.", ())) == "Be brief."


def test_a_local_llm_refuses_images_with_an_error_that_says_so():
    request = LLMRequest("", (ChatMessage("user", "What is this?", images=(("data:x", "auto"),)),))
    with pytest.raises(UnsupportedInput, match="this LLM takes no images") as refused:
        chat_messages(request)
    assert refused.value.code == "unsupported_input"
