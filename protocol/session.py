"""The session configuration: OpenAI's defaults, strict validation, deep-merge on update.

The effective session is kept as its full wire object (what ``session.updated`` echoes) inside a
frozen :class:`SessionConfig`, together with typed views of the fields the pipeline acts on.
An update is checked against :data:`SESSION_UPDATE_SPEC`, merged by :func:`deep_merge` (a pure
function) and checked again as a whole; any error leaves the session as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from .errors import ProtocolError
from .mcp_config import (
    McpServerConfig,
    check_mcp_tools,
    mcp_servers,
    tools_repr,
    without_secrets,
)
from .session_spec import (
    DEFAULT_INSTRUCTIONS,
    NOISE_REDUCTION_DEFAULTS,
    SEMANTIC_VAD_DEFAULTS,
    SERVER_VAD_DEFAULTS,
    TRANSCRIPTION_DEFAULTS,
    TRANSCRIPTION_SEMANTIC_VAD_DEFAULTS,
    TRANSCRIPTION_SERVER_VAD_DEFAULTS,
)


def default_session(
    session_id: str, model: str, expires_at: int, voice: str = "alloy"
) -> dict[str, Any]:
    """The full session object of ``session.created``, as OpenAI's GA server sends it."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(SERVER_VAD_DEFAULTS),
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": voice,
                "speed": 1.0,
            },
        },
        "include": None,
    }


def default_transcription_session(session_id: str, expires_at: int) -> dict[str, Any]:
    """The session object of a transcription session's ``session.created``, as OpenAI's."""
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": session_id,
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(TRANSCRIPTION_SERVER_VAD_DEFAULTS),
            }
        },
        "include": None,
    }


# --- merge -----------------------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``patch`` laid over it, objects merged key by key.

    Lists and scalars in ``patch`` replace (``tools: []`` clears); ``None`` replaces (turns a
    feature off). Neither argument is modified.
    """
    merged = {k: copy.deepcopy(v) for k, v in base.items()}
    for key, value in patch.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _fill_defaults(session: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Complete objects that the patch switched on or switched kind (VAD type, transcription)."""
    audio_in = session["audio"]["input"]
    patch_in = patch.get("audio", {}).get("input", {})
    td = patch_in.get("turn_detection")
    if td is not None:
        # a new VAD type starts from that type's defaults, not from the old type's fields
        defaults = _vad_defaults(session["type"], td["type"])
        optional = set(SERVER_VAD_DEFAULTS) | set(SEMANTIC_VAD_DEFAULTS)
        base = (
            audio_in["turn_detection"]
            if isinstance(audio_in["turn_detection"], dict)
            and audio_in["turn_detection"].get("type") == td["type"]
            else {}
        )
        merged = {**defaults, **base, **td}
        # fields of the other VAD type go; a transcription session keeps the optional ones given
        keep = set(defaults) | (set(td) & optional)
        if session["type"] == "realtime":
            keep = set(defaults)
        audio_in["turn_detection"] = {k: v for k, v in merged.items() if k in keep}
    if patch_in.get("transcription") is not None:
        audio_in["transcription"] = {**TRANSCRIPTION_DEFAULTS, **audio_in["transcription"]}
    if patch_in.get("noise_reduction") is not None:
        audio_in["noise_reduction"] = {**NOISE_REDUCTION_DEFAULTS, **audio_in["noise_reduction"]}
    for direction in session["audio"]:
        fmt = session["audio"][direction]["format"]
        if fmt.get("type", "audio/pcm") == "audio/pcm":
            session["audio"][direction]["format"] = {"type": "audio/pcm", "rate": 24000}
        else:
            session["audio"][direction]["format"] = {"type": fmt["type"]}
    return session


def _vad_defaults(session_type: str, vad_type: str) -> dict[str, Any]:
    if session_type == "transcription":
        if vad_type == "server_vad":
            return TRANSCRIPTION_SERVER_VAD_DEFAULTS
        return TRANSCRIPTION_SEMANTIC_VAD_DEFAULTS
    return SERVER_VAD_DEFAULTS if vad_type == "server_vad" else SEMANTIC_VAD_DEFAULTS


# --- typed view ------------------------------------------------------------------------------

AudioFormat = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]

#: bytes of encoded input per millisecond of audio, by format
BYTES_PER_MS: dict[str, int] = {"audio/pcm": 48, "audio/pcmu": 8, "audio/pcma": 8}


@attrs.frozen
class TurnDetection:
    type: Literal["server_vad", "semantic_vad"]
    threshold: float
    prefix_padding_ms: int
    silence_duration_ms: int
    create_response: bool
    interrupt_response: bool
    idle_timeout_ms: int | None = None
    eagerness: str = "auto"

    @classmethod
    def from_wire(cls, td: Mapping[str, Any]) -> TurnDetection:
        if td["type"] == "server_vad":
            return cls(
                type="server_vad",
                threshold=td["threshold"],
                prefix_padding_ms=td["prefix_padding_ms"],
                silence_duration_ms=td["silence_duration_ms"],
                create_response=td.get("create_response", False),
                interrupt_response=td.get("interrupt_response", False),
                idle_timeout_ms=td.get("idle_timeout_ms"),
            )
        # semantic_vad: the end-of-turn wait follows eagerness (low waits longest)
        silence = {"low": 1200, "medium": 600, "auto": 600, "high": 300}[td["eagerness"]]
        return cls(
            type="semantic_vad",
            threshold=0.5,
            prefix_padding_ms=300,
            silence_duration_ms=silence,
            create_response=td.get("create_response", False),
            interrupt_response=td.get("interrupt_response", False),
            eagerness=td["eagerness"],
        )


@attrs.frozen
class SessionConfig:
    """The effective session: its wire object plus typed views built once per update."""

    wire: dict[str, Any] = attrs.field(eq=False, repr=False)
    type: Literal["realtime", "transcription"]
    input_format: AudioFormat
    output_format: AudioFormat
    turn_detection: TurnDetection | None
    transcription: dict[str, Any] | None
    voice: str
    speed: float
    instructions: str
    output_modalities: tuple[str, ...]
    tools: tuple[dict[str, Any], ...] = attrs.field(repr=tools_repr)
    tool_choice: str | dict[str, Any]
    max_output_tokens: int | None  #: None = "inf"

    include_logprobs: bool = False
    #: whether a response may call several functions (None: the engine's default)
    parallel_tool_calls: bool | None = None
    #: ``reasoning.effort`` (None: the engine's own)
    reasoning_effort: str | None = None
    #: ``truncation``: "auto", "disabled" or a retention_ratio object
    truncation: str | dict[str, Any] = "auto"
    #: ``audio.input.noise_reduction``: (type, strength), None when off
    noise_reduction: tuple[str, float] | None = None

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> SessionConfig:
        audio_in = wire["audio"]["input"]
        td = audio_in["turn_detection"]
        include_logprobs = "item.input_audio_transcription.logprobs" in (wire["include"] or ())
        noise = audio_in.get("noise_reduction")
        noise_reduction = (
            None
            if noise is None
            else (noise.get("type", "near_field"), float(noise.get("strength", 1.0)))
        )
        if wire["type"] == "transcription":
            return cls(
                wire=wire,
                type="transcription",
                input_format=audio_in["format"]["type"],
                output_format="audio/pcm",
                turn_detection=None if td is None else TurnDetection.from_wire(td),
                transcription=audio_in["transcription"],
                voice="",
                speed=1.0,
                instructions="",
                output_modalities=(),
                tools=(),
                tool_choice="none",
                max_output_tokens=None,
                include_logprobs=include_logprobs,
                noise_reduction=noise_reduction,
            )
        audio_out = wire["audio"]["output"]
        voice = audio_out["voice"]
        mot = wire["max_output_tokens"]
        return cls(
            wire=wire,
            type="realtime",
            input_format=audio_in["format"]["type"],
            output_format=audio_out["format"]["type"],
            turn_detection=None if td is None else TurnDetection.from_wire(td),
            transcription=audio_in["transcription"],
            voice=voice["id"] if isinstance(voice, dict) else voice,
            speed=float(audio_out["speed"]),
            instructions=wire["instructions"],
            output_modalities=tuple(wire["output_modalities"]),
            tools=tuple(wire["tools"]),
            tool_choice=wire["tool_choice"],
            max_output_tokens=None if mot == "inf" else int(mot),
            include_logprobs=include_logprobs,
            parallel_tool_calls=wire.get("parallel_tool_calls"),
            reasoning_effort=(wire.get("reasoning") or {}).get("effort"),
            truncation=wire.get("truncation", "auto"),
            noise_reduction=noise_reduction,
        )

    @classmethod
    def initial(
        cls, session_id: str, model: str, expires_at: int, voice: str = "alloy"
    ) -> SessionConfig:
        return cls.from_wire(default_session(session_id, model, expires_at, voice))

    @classmethod
    def initial_transcription(cls, session_id: str, expires_at: int) -> SessionConfig:
        return cls.from_wire(default_transcription_session(session_id, expires_at))

    def to_wire(self) -> dict[str, Any]:
        """The session object as the client is shown it (MCP credentials left out)."""
        return copy.deepcopy(without_secrets(self.wire))

    @property
    def mcp_servers(self) -> tuple[McpServerConfig, ...]:
        """The remote MCP servers its ``type: "mcp"`` tools name."""
        return mcp_servers(self.tools)

    def updated(self, patch: dict[str, Any], *, voice_locked: bool) -> SessionConfig:
        """The session after a schema-checked ``session.update`` payload, or ProtocolError."""
        if patch["type"] != self.wire["type"]:
            raise ProtocolError(
                "invalid_value",
                f"Cannot change the session type from '{self.wire['type']}' to "
                f"'{patch['type']}' on an open session.",
                "session.type",
            )
        new_voice = patch.get("audio", {}).get("output", {}).get("voice")
        if (
            self.type == "realtime"
            and voice_locked
            and new_voice is not None
            and new_voice != self.wire["audio"]["output"]["voice"]
        ):
            raise ProtocolError(
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
                "session.audio.output.voice",
            )
        if (
            "tracing" in patch
            and self.wire.get("tracing") is not None
            and patch["tracing"] != self.wire["tracing"]
        ):
            raise ProtocolError(
                "invalid_value",
                "Tracing cannot be modified once it is enabled for a session.",
                "session.tracing",
            )
        if "tools" in patch:
            check_mcp_tools(patch["tools"], "session.tools")
        merged = _fill_defaults(deep_merge(self.wire, patch), patch)
        check_tool_choice(merged.get("tool_choice"), merged.get("tools", ()), "session")
        return SessionConfig.from_wire(merged)


def check_tool_choice(choice: Any, tools: Any, where: str) -> None:
    """A ``tool_choice`` that forces an MCP server's tools must name one of ``tools``."""
    if not isinstance(choice, dict) or choice.get("type") != "mcp":
        return
    labels = [t.get("server_label") for t in tools or () if t.get("type") == "mcp"]
    if choice["server_label"] not in labels:
        raise ProtocolError(
            "invalid_value",
            f"tool_choice names the MCP server '{choice['server_label']}', which is not among "
            "the tools.",
            f"{where}.tool_choice.server_label",
        )
