"""The session object's schema (what ``session.update`` may set, field by field) and
OpenAI's defaults for the fields a session starts with."""

from __future__ import annotations

from typing import Any

from .schema import (
    AnyJSON,
    Bool,
    ByKind,
    Enum,
    Int,
    ListOf,
    MapOf,
    Nullable,
    Num,
    Obj,
    Str,
    Tagged,
    fields,
    required,
)

VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
#: short and plain: small local models follow a long system prompt worse than a short one
DEFAULT_INSTRUCTIONS = "You are a helpful voice assistant. Answer in one or two short sentences."

# --- schema ----------------------------------------------------------------------------------

AUDIO_FORMAT_SPEC = Tagged(
    {
        "audio/pcm": Obj(fields(type=Enum(("audio/pcm",)), rate=Int(minimum=24000, maximum=24000))),
        "audio/pcmu": Obj(fields(type=Enum(("audio/pcmu",)))),
        "audio/pcma": Obj(fields(type=Enum(("audio/pcma",)))),
    },
    default="audio/pcm",
)

_TRANSCRIPTION = Obj(
    fields(
        model=Str(),
        language=Nullable(Str(max_length=16)),
        prompt=Nullable(Str()),
        delay=Enum(("minimal", "low", "medium", "high", "xhigh")),
        keywords=ListOf(Str()),
        languages=ListOf(Str(max_length=16)),
    )
)

_TURN_DETECTION = Tagged(
    {
        "server_vad": Obj(
            fields(
                type=required(Enum(("server_vad",))),
                threshold=Num(0.0, 1.0),
                prefix_padding_ms=Int(0, 10_000),
                silence_duration_ms=Int(0, 10_000),
                idle_timeout_ms=Nullable(Int(5_000, 30_000)),
                create_response=Bool(),
                interrupt_response=Bool(),
            )
        ),
        "semantic_vad": Obj(
            fields(
                type=required(Enum(("semantic_vad",))),
                eagerness=Enum(("low", "medium", "high", "auto")),
                create_response=Bool(),
                interrupt_response=Bool(),
            )
        ),
    }
)

_NOISE_REDUCTION = Obj(fields(type=Enum(("near_field", "far_field")), strength=Num(0.0, 1.0)))

VOICE_SPEC = ByKind(
    {str: Str(max_length=256), dict: Obj(fields(id=required(Str(max_length=256))))},
    "a string or an object",
)

_MCP_TOOL_FILTER = Obj(fields(tool_names=ListOf(Str()), read_only=Bool()))
_ALLOWED_TOOLS = ByKind({list: ListOf(Str()), dict: _MCP_TOOL_FILTER}, "an array or an object")
_REQUIRE_APPROVAL = ByKind(
    {
        str: Enum(("always", "never")),
        dict: Obj(fields(always=_MCP_TOOL_FILTER, never=_MCP_TOOL_FILTER)),
    },
    "'always', 'never' or an object",
)

#: a function, or a remote MCP server whose tools the server lists and calls itself
#: (``mcp_config.check_mcp_tools`` adds the rules a schema cannot say)
FUNCTION_TOOL_SPEC = Tagged(
    {
        "function": Obj(
            fields(
                type=Enum(("function",)),
                name=required(Str(max_length=64)),
                description=Str(),
                parameters=AnyJSON(),
            )
        ),
        "mcp": Obj(
            fields(
                type=required(Enum(("mcp",))),
                server_label=required(Str(max_length=64)),
                server_url=Str(max_length=2048),
                connector_id=Str(),
                tunnel_id=Str(),
                authorization=Str(max_length=8192),
                headers=Nullable(MapOf(Str(max_length=8192), max_items=64)),
                server_description=Str(),
                allowed_tools=Nullable(_ALLOWED_TOOLS),
                require_approval=Nullable(_REQUIRE_APPROVAL),
                defer_loading=Bool(),
                allowed_callers=Nullable(ListOf(Enum(("direct", "programmatic")))),
            )
        ),
    },
    default="function",
)

TOOL_CHOICE_SPEC = ByKind(
    {
        str: Enum(("none", "auto", "required")),
        dict: Tagged(
            {
                "function": Obj(fields(type=required(Enum(("function",))), name=required(Str()))),
                "mcp": Obj(
                    fields(
                        type=required(Enum(("mcp",))),
                        server_label=required(Str()),
                        name=Nullable(Str()),
                    )
                ),
            }
        ),
    },
    "a string or an object",
)

MAX_OUTPUT_TOKENS_SPEC = ByKind({int: Int(1, 4096), str: Enum(("inf",))}, "an integer or 'inf'")
OUTPUT_MODALITIES_SPEC = ListOf(Enum(("text", "audio")), min_items=1, max_items=1)
PROMPT_SPEC = Obj(fields(id=required(Str()), version=Str(), variables=AnyJSON()))
REASONING_SPEC = Obj(fields(effort=Enum(("minimal", "low", "medium", "high", "xhigh"))))

_TRACING = ByKind(
    {
        str: Enum(("auto",)),
        dict: Obj(fields(workflow_name=Str(), group_id=Str(), metadata=AnyJSON())),
    },
    "'auto' or an object",
)
_TRUNCATION = ByKind(
    {
        str: Enum(("auto", "disabled")),
        dict: Tagged(
            {
                "retention_ratio": Obj(
                    fields(
                        type=required(Enum(("retention_ratio",))),
                        retention_ratio=required(Num(0.0, 1.0)),
                        token_limits=Obj(fields(post_instructions=Int(minimum=0))),
                    )
                )
            }
        ),
    },
    "a string or an object",
)

#: ``audio.input``, the same in realtime and transcription sessions
AUDIO_INPUT_SPEC = Obj(
    fields(
        format=AUDIO_FORMAT_SPEC,
        noise_reduction=Nullable(_NOISE_REDUCTION),
        transcription=Nullable(_TRANSCRIPTION),
        turn_detection=Nullable(_TURN_DETECTION),
    )
)

REALTIME_SESSION_SPEC = Obj(
    fields(
        type=required(Enum(("realtime",))),
        model=Str(max_length=256),
        output_modalities=OUTPUT_MODALITIES_SPEC,
        instructions=Str(),
        audio=Obj(
            fields(
                input=AUDIO_INPUT_SPEC,
                output=Obj(
                    fields(format=AUDIO_FORMAT_SPEC, voice=VOICE_SPEC, speed=Num(0.25, 1.5))
                ),
            )
        ),
        include=Nullable(ListOf(Enum(("item.input_audio_transcription.logprobs",)))),
        tools=ListOf(FUNCTION_TOOL_SPEC, max_items=128),
        tool_choice=TOOL_CHOICE_SPEC,
        max_output_tokens=MAX_OUTPUT_TOKENS_SPEC,
        tracing=Nullable(_TRACING),
        truncation=_TRUNCATION,
        prompt=Nullable(PROMPT_SPEC),
        parallel_tool_calls=Bool(),
        reasoning=REASONING_SPEC,
    )
)

#: a transcription session has input audio settings only: no model, voice, tools or output
TRANSCRIPTION_SESSION_SPEC = Obj(
    fields(
        type=required(Enum(("transcription",))),
        audio=Obj(
            fields(
                input=AUDIO_INPUT_SPEC,
            )
        ),
        include=Nullable(ListOf(Enum(("item.input_audio_transcription.logprobs",)))),
    )
)

SESSION_UPDATE_SPEC = Tagged(
    {"realtime": REALTIME_SESSION_SPEC, "transcription": TRANSCRIPTION_SESSION_SPEC}
)

# --- defaults --------------------------------------------------------------------------------

SERVER_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 200,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
SEMANTIC_VAD_DEFAULTS: dict[str, Any] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
#: what a transcription session shows of server VAD (it creates and interrupts no response)
TRANSCRIPTION_SERVER_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 200,
}
TRANSCRIPTION_SEMANTIC_VAD_DEFAULTS: dict[str, Any] = {"type": "semantic_vad", "eagerness": "auto"}
TRANSCRIPTION_DEFAULTS: dict[str, Any] = {"model": "whisper-1", "language": None, "prompt": None}
NOISE_REDUCTION_DEFAULTS: dict[str, Any] = {"type": "near_field", "strength": 1.0}
