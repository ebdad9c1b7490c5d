import json

import pytest

from engines import llama_cpp_llm
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
from engines.llama_cpp_llm import LlamaCppLLM

llama_cpp = pytest.importorskip("llama_cpp")

INSTRUCTIONS = "You are a helpful voice assistant. Answer in one short sentence."
WEATHER = FunctionTool(
    "get_weather",
    description="Get the current weather for a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)
TIMER = FunctionTool(
    "set_timer",
    description="Start a countdown timer.",
    parameters={"type": "object", "properties": {"minutes": {"type": "integer"}}},
)


def ask(question: str, **options) -> LLMRequest:
    options.setdefault("temperature", 0.0)
    return LLMRequest(INSTRUCTIONS, (ChatMessage("user", question),), **options)


def run(llm, request: LLMRequest) -> tuple[str, list[ToolCall], Usage]:
    events = list(llm.stream(request, CancelToken()))
    usage = events[-1]
    assert isinstance(usage, Usage)
    assert not any(isinstance(e, Usage) for e in events[:-1])
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    return text, [e for e in events if isinstance(e, ToolCall)], usage


def test_llm_is_an_llm(llm):
    assert isinstance(llm, LLM)


def test_an_answer_streams_as_many_deltas_and_ends_with_usage(llm):
    events = list(llm.stream(ask("What is the capital city of France?"), CancelToken()))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 3
    assert all(d.text for d in deltas)
    assert not deltas[0].text[0].isspace()
    usage = events[-1]
    assert usage == Usage(
        input_tokens=len(llm.prompt_tokens(ask("What is the capital city of France?"))),
        output_tokens=usage.output_tokens,
        truncated=False,
    )
    assert usage.output_tokens >= len(deltas)


def test_deltas_arrive_one_token_at_a_time(llm):
    cancel = CancelToken()
    stream = llm.stream(ask("Tell me a long story about a dragon."), cancel)
    first = next(stream)
    assert isinstance(first, TextDelta)
    cancel.cancel()
    rest = list(stream)
    # The first delta came out before any later token was generated.
    assert rest == [Usage(input_tokens=rest[0].input_tokens, output_tokens=1)]


def test_cancel_stops_within_one_token(llm):
    cancel = CancelToken()
    produced = []
    for event in llm.stream(ask("Tell me a long story about a dragon."), cancel):
        produced.append(event)
        if len(produced) == 5:
            cancel.cancel()
    deltas = [e for e in produced if isinstance(e, TextDelta)]
    assert len(deltas) <= 6
    assert produced[-1].output_tokens <= 6


def test_a_second_stream_waits_for_the_first_then_gives_up(llm, monkeypatch):
    monkeypatch.setattr(llm, "busy_timeout_s", 0.05)
    first = llm.stream(ask("Tell me a long story about a dragon."), CancelToken())
    next(first)
    with pytest.raises(EngineError, match="another answer"):
        next(llm.stream(ask("Hello"), CancelToken()))
    first.close()
    assert isinstance(list(llm.stream(ask("Hello", max_output_tokens=3), CancelToken()))[-1], Usage)


def test_cancelled_before_start_generates_nothing(llm):
    cancel = CancelToken()
    cancel.cancel()
    (usage,) = list(llm.stream(ask("Hello"), cancel))
    assert usage.output_tokens == 0 and usage.input_tokens > 0


def test_max_output_tokens_truncates_and_says_so(llm):
    text, _, usage = run(llm, ask("Tell me a long story about a dragon.", max_output_tokens=5))
    assert text
    assert (usage.output_tokens, usage.truncated) == (5, True)


def test_temperature_zero_is_deterministic(llm):
    request = ask("Name a colour.", max_output_tokens=12)
    assert run(llm, request)[0] == run(llm, request)[0]


def test_required_tool_choice_yields_a_valid_tool_call(llm):
    text, calls, usage = run(
        llm, ask("What's the weather in Paris?", tools=(WEATHER, TIMER), tool_choice="required")
    )
    assert text == ""
    (call,) = calls
    assert call.name in {"get_weather", "set_timer"}
    assert isinstance(json.loads(call.arguments), dict)
    assert call.call_id.startswith("call_")
    assert usage.output_tokens > 0


def test_a_named_tool_choice_forces_that_tool(llm):
    _, calls, _ = run(
        llm,
        ask(
            "Please start a timer for five minutes.",
            tools=(WEATHER, TIMER),
            tool_choice="set_timer",
        ),
    )
    assert [c.name for c in calls] == ["set_timer"]
    assert set(json.loads(calls[0].arguments)) <= {"minutes"}


def test_a_schema_llama_cpp_cannot_compile_falls_back_to_free_decoding(llm, caplog):
    odd = FunctionTool(
        "odd", parameters={"type": "object", "properties": {"a": {"type": "strang"}}}
    )
    request = ask("Call odd.", tools=(odd,), tool_choice="required", max_output_tokens=20)
    _, _, usage = run(llm, request)
    assert usage.output_tokens > 0
    assert "no grammar" in caplog.text


def test_tool_choice_none_answers_in_text(llm):
    text, calls, _ = run(
        llm,
        ask(
            "What's the weather in Paris?",
            tools=(WEATHER,),
            tool_choice="none",
            max_output_tokens=20,
        ),
    )
    assert text and calls == []


def test_a_history_with_a_tool_result_is_answered(llm):
    call = ToolCallRequest("call_1", "get_weather", '{"city": "Paris"}')
    history = (
        ChatMessage("user", "What's the weather in Paris?"),
        ChatMessage("assistant", tool_calls=(call,)),
        ChatMessage("tool", '{"sky": "sunny", "temp_c": 21}', tool_call_id="call_1"),
    )
    request = LLMRequest(
        INSTRUCTIONS, history, tools=(WEATHER,), temperature=0.0, max_output_tokens=30
    )
    text, calls, usage = run(llm, request)
    assert text or calls
    assert usage.input_tokens > 50


@pytest.fixture(scope="module")
def small_context_llm():
    return LlamaCppLLM(n_ctx=256, threads=2)


def test_a_long_history_is_trimmed_from_the_oldest_turn(small_context_llm):
    turns = [
        ChatMessage("user" if i % 2 == 0 else "assistant", f"Message number {i}. " * 8)
        for i in range(20)
    ]
    history = (*turns, ChatMessage("user", "What was the last message?"))
    tokens = small_context_llm.prompt_tokens(LLMRequest(INSTRUCTIONS, history))
    prompt = small_context_llm._llm.detokenize(tokens, special=True).decode()
    assert len(tokens) <= 192
    assert INSTRUCTIONS in prompt and "What was the last message?" in prompt
    assert "Message number 0." not in prompt


def test_a_prompt_that_cannot_fit_is_an_engine_error(small_context_llm):
    with pytest.raises(EngineError, match="context"):
        small_context_llm.prompt_tokens(LLMRequest("word " * 400, (ChatMessage("user", "Hi"),)))


INTEL_AMX_FLAGS = (
    "flags\t\t: fpu vme de pse tsc msr avx2 avx512f avx512_bf16 amx_bf16 avx512_fp16 "
    "amx_tile amx_int8 arch_capabilities"
)
AMD_FLAGS = "flags\t\t: fpu vme de pse tsc msr avx2 avx512f avx512_bf16 avx512_vnni"


def test_amx_is_read_from_the_cpu_flags():
    assert llama_cpp_llm.cpu_has_amx(f"processor\t: 0\n{INTEL_AMX_FLAGS}\n")
    assert not llama_cpp_llm.cpu_has_amx(f"processor\t: 0\n{AMD_FLAGS}\n")
    assert not llama_cpp_llm.cpu_has_amx("processor\t: 0\n")  # no flags line (not x86)


def test_on_an_amx_cpu_the_model_loads_without_extra_buffer_types(monkeypatch):
    """llama.cpp's AMX buffer type segfaults in ggml_backend_amx_mul_mat on the embedded
    model; with the extra buffer types off the weights stay in plain CPU buffers, and the
    model answers."""
    monkeypatch.setattr(llama_cpp_llm, "cpu_has_amx", lambda: True)
    default_params = llama_cpp.llama_cpp.llama_model_default_params
    llm = LlamaCppLLM(n_ctx=512, threads=2)
    assert llm.extra_buffer_types is False
    assert llm._llm.model_params.use_extra_bufts is False
    # the wrapping of llama.cpp's defaults ended with the load
    assert llama_cpp.llama_cpp.llama_model_default_params is default_params
    assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is True
    text, _, usage = run(llm, ask("What is the capital city of France?"))
    assert text.strip() and usage.output_tokens > 0


def test_without_amx_the_extra_buffer_types_stay_on(monkeypatch):
    monkeypatch.setattr(llama_cpp_llm, "cpu_has_amx", lambda: False)
    llm = LlamaCppLLM(n_ctx=512, threads=2)
    assert llm._llm.model_params.use_extra_bufts is True


def test_extra_buffer_types_can_be_chosen_outright():
    llm = LlamaCppLLM(n_ctx=512, threads=2, extra_buffer_types=False)
    assert llm._llm.model_params.use_extra_bufts is False
