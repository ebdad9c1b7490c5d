import json

from engines.base import ChatMessage, FunctionTool, LLMRequest, ToolCallRequest
from engines.chat_prompt import chat_messages, system_prompt

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
