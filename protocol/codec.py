"""JSON text <-> events: strict parsing of client frames, compact encoding of server events."""

from __future__ import annotations

import binascii
import json
import math
import re
from collections.abc import Callable
from typing import Any

from . import events as ev
from .errors import ProtocolError
from .items import ITEM_OR_REFERENCE_SPEC, ITEM_SPEC, item_from_wire
from .mcp_config import check_mcp_tools
from .schema import (
    Bool,
    Enum,
    Int,
    ListOf,
    MapOf,
    Nullable,
    Obj,
    Str,
    fields,
    required,
)
from .session import check_tool_choice
from .session_spec import (
    AUDIO_FORMAT_SPEC,
    FUNCTION_TOOL_SPEC,
    MAX_OUTPUT_TOKENS_SPEC,
    OUTPUT_MODALITIES_SPEC,
    PROMPT_SPEC,
    REASONING_SPEC,
    SESSION_UPDATE_SPEC,
    TOOL_CHOICE_SPEC,
    VOICE_SPEC,
)

#: largest base64 ``audio`` accepted in one ``input_audio_buffer.append`` (OpenAI's 15 MiB)
MAX_AUDIO_B64_CHARS = 15 * 1024 * 1024
#: largest text frame parsed at all; a bigger frame is refused before JSON decoding
MAX_FRAME_CHARS = MAX_AUDIO_B64_CHARS + 64 * 1024

_EVENT_ID = Str(max_length=512)

RESPONSE_PARAMS_SPEC = Obj(
    fields(
        conversation=Enum(("auto", "none")),
        input=ListOf(ITEM_OR_REFERENCE_SPEC, max_items=1024),
        instructions=Str(),
        tools=ListOf(FUNCTION_TOOL_SPEC, max_items=128),
        tool_choice=TOOL_CHOICE_SPEC,
        output_modalities=OUTPUT_MODALITIES_SPEC,
        max_output_tokens=MAX_OUTPUT_TOKENS_SPEC,
        metadata=Nullable(MapOf(Str(max_length=512), max_items=16)),
        audio=Obj(fields(output=Obj(fields(format=AUDIO_FORMAT_SPEC, voice=VOICE_SPEC)))),
        prompt=Nullable(PROMPT_SPEC),
        parallel_tool_calls=Bool(),
        reasoning=Nullable(REASONING_SPEC),
    )
)


def _event_spec(**specs: Any) -> Obj:
    return Obj(fields(type=required(Str()), event_id=Nullable(_EVENT_ID), **specs))


EVENT_SPECS: dict[str, Obj] = {
    "session.update": _event_spec(session=required(SESSION_UPDATE_SPEC)),
    "input_audio_buffer.append": _event_spec(audio=required(Str())),
    "input_audio_buffer.commit": _event_spec(),
    "input_audio_buffer.clear": _event_spec(),
    "output_audio_buffer.clear": _event_spec(),
    "conversation.item.create": _event_spec(
        item=required(ITEM_SPEC), previous_item_id=Nullable(Str(max_length=64))
    ),
    "conversation.item.retrieve": _event_spec(item_id=required(Str(max_length=64))),
    "conversation.item.delete": _event_spec(item_id=required(Str(max_length=64))),
    "conversation.item.truncate": _event_spec(
        item_id=required(Str(max_length=64)),
        content_index=required(Int(minimum=0)),
        audio_end_ms=required(Int(minimum=0)),
    ),
    "response.create": _event_spec(response=Nullable(RESPONSE_PARAMS_SPEC)),
    "response.cancel": _event_spec(response_id=Nullable(Str(max_length=64))),
}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value.")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"Number out of range: {text}.")
    return value


#: strict JSON: ``NaN``/``Infinity`` and numbers that overflow a double are refused, since
#: echoing them back (in ``session.updated`` say) would send the client invalid JSON
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _has_lone_surrogate(data: Any) -> bool:
    """Whether a decoded JSON value holds a string that UTF-8 cannot encode (``"\\ud800"``)."""
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(value, dict):
            pending += value.keys()
            pending += value.values()
        elif isinstance(value, list):
            pending += value
    return False


def decode_base64_audio(text: str, param: str) -> bytes:
    if len(text) > MAX_AUDIO_B64_CHARS:
        raise ProtocolError(
            "invalid_value",
            f"Audio payload too large: {len(text)} base64 characters, the limit is "
            f"{MAX_AUDIO_B64_CHARS} (15 MiB) per event. Send audio in smaller chunks.",
            param,
        )
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(
            "invalid_value", f"Invalid '{param}': not valid base64 ({exc}).", param
        ) from None


def _response_params(data: dict[str, Any] | None) -> ev.ResponseParams:
    if not data:
        return ev.ResponseParams()
    context: tuple[Any, ...] | None = None
    if "input" in data:
        context = tuple(
            ev.ItemReference(id=entry["id"])
            if entry["type"] == "item_reference"
            else item_from_wire(entry, f"response.input[{i}]")
            for i, entry in enumerate(data["input"])
        )
    if "tools" in data:
        check_mcp_tools(data["tools"], "response.tools")
        check_tool_choice(data.get("tool_choice"), data["tools"], "response")
    output = data.get("audio", {}).get("output", {})
    voice = output.get("voice")
    mot = data.get("max_output_tokens")
    return ev.ResponseParams(
        conversation=data.get("conversation", "auto"),
        input=context,
        instructions=data.get("instructions"),
        tools=tuple(data["tools"]) if "tools" in data else None,
        tool_choice=data.get("tool_choice"),
        output_modalities=tuple(data["output_modalities"]) if "output_modalities" in data else None,
        max_output_tokens=mot,
        metadata=data.get("metadata"),
        voice=voice["id"] if isinstance(voice, dict) else voice,
        output_format=output["format"].get("type", "audio/pcm") if "format" in output else None,
        reasoning_effort=(data.get("reasoning") or {}).get("effort"),
        parallel_tool_calls=data.get("parallel_tool_calls"),
    )


_BUILDERS: dict[str, Callable[[dict[str, Any], str | None], ev.ClientEvent]] = {
    "session.update": lambda d, e: ev.SessionUpdate(event_id=e, session=d["session"]),
    "input_audio_buffer.append": lambda d, e: ev.InputAudioBufferAppend(
        event_id=e, audio=decode_base64_audio(d["audio"], "audio")
    ),
    "input_audio_buffer.commit": lambda d, e: ev.InputAudioBufferCommit(event_id=e),
    "input_audio_buffer.clear": lambda d, e: ev.InputAudioBufferClear(event_id=e),
    "output_audio_buffer.clear": lambda d, e: ev.OutputAudioBufferClear(event_id=e),
    "conversation.item.create": lambda d, e: ev.ConversationItemCreate(
        event_id=e,
        item=item_from_wire(d["item"], "item"),
        previous_item_id=d.get("previous_item_id"),
    ),
    "conversation.item.retrieve": lambda d, e: ev.ConversationItemRetrieve(
        event_id=e, item_id=d["item_id"]
    ),
    "conversation.item.delete": lambda d, e: ev.ConversationItemDelete(
        event_id=e, item_id=d["item_id"]
    ),
    "conversation.item.truncate": lambda d, e: ev.ConversationItemTruncate(
        event_id=e,
        item_id=d["item_id"],
        content_index=d["content_index"],
        audio_end_ms=d["audio_end_ms"],
    ),
    "response.create": lambda d, e: ev.ResponseCreate(
        event_id=e, response=_response_params(d.get("response"))
    ),
    "response.cancel": lambda d, e: ev.ResponseCancel(event_id=e, response_id=d.get("response_id")),
}


def binary_frame_error() -> ProtocolError:
    return ProtocolError(
        "invalid_event", "Expected a text WebSocket message; binary frames are not supported."
    )


def _echoable_event_id(data: Any) -> str | None:
    """The client's ``event_id``, where an error can echo it (clients that send one wait for
    it: a lone surrogate elsewhere in the event must not hide it)."""
    event_id = data.get("event_id") if isinstance(data, dict) else None
    return event_id if isinstance(event_id, str) and not _has_lone_surrogate(event_id) else None


#: an ``event_id`` member as JSON text: a string of at most 512 characters
_EVENT_ID_MEMBER = re.compile(r'"event_id"\s*:\s*("(?:[^"\\]|\\.){0,512}")')
#: how far from each end of an oversize frame its ``event_id`` is looked for
_EVENT_ID_WINDOW = 4096


def _event_id_of_oversize(frame: str) -> str | None:
    """The ``event_id`` of a frame too large to parse, found near either end without parsing
    the rest (clients put it first or last; base64 audio never holds a quote), so the error
    still echoes it."""
    for window in (frame[:_EVENT_ID_WINDOW], frame[-_EVENT_ID_WINDOW:]):
        match = _EVENT_ID_MEMBER.search(window)
        if match is None:
            continue
        try:
            return _echoable_event_id({"event_id": json.loads(match.group(1))})
        except ValueError:
            return None
    return None


def parse_client_event(frame: str | bytes) -> ev.ClientEvent:
    """One client frame -> one client event, or :class:`ProtocolError` (never anything else)."""
    if not isinstance(frame, str):
        raise binary_frame_error()
    if len(frame) > MAX_FRAME_CHARS:
        raise ProtocolError(
            "invalid_event",
            f"Event too large: {len(frame)} characters, the limit is {MAX_FRAME_CHARS}.",
            None,
            _event_id_of_oversize(frame),
        )
    try:
        data = _DECODER.decode(frame)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(
            "invalid_json", f"Invalid event: failed to parse JSON value. {exc}"
        ) from None
    # A lone surrogate (raw, or escaped as \udXXX) would be echoed into events that cannot be
    # sent as UTF-8; only frames with non-ASCII text or escapes can hold one (a search for the
    # backslash alone is a memchr: the audio frames pay nothing).
    if (not frame.isascii() or "\\" in frame) and _has_lone_surrogate(data):
        raise ProtocolError(
            "invalid_json",
            "Invalid event: failed to parse JSON value. A string holds a lone UTF-16 surrogate.",
            None,
            _echoable_event_id(data),
        )
    if not isinstance(data, dict):
        raise ProtocolError("invalid_event", "Invalid event: expected a JSON object.")
    event_id = _echoable_event_id(data)
    try:
        if "type" not in data:
            raise ProtocolError("invalid_event", "The 'type' field is missing.")
        kind = data["type"]
        spec = EVENT_SPECS.get(kind) if isinstance(kind, str) else None
        if spec is None:
            raise ProtocolError(
                "invalid_value",
                f"Invalid value: {kind!r}. Supported values are: "
                + ", ".join(f"'{t}'" for t in EVENT_SPECS)
                + ".",
                "type",
            )
        checked = spec.check(data, "")
        return _BUILDERS[kind](checked, event_id)
    except ProtocolError as exc:
        raise exc.with_event_id(event_id) from None
    except RecursionError:
        raise ProtocolError(
            "invalid_event", "Invalid event: nested too deeply.", None, event_id
        ) from None


def encode_server_event(event: ev.ServerEvent) -> str:
    """A server event as compact JSON text."""
    return json.dumps(event.to_wire(), ensure_ascii=False, separators=(",", ":"))
