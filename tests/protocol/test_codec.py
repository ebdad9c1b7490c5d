"""protocol/codec.py: strict parsing of client frames, OpenAI-shaped errors."""

from __future__ import annotations

import base64
import json
import re

import pytest

from protocol import ProtocolError, events, parse_client_event
from protocol.codec import EVENT_SPECS, MAX_AUDIO_B64_CHARS, MAX_FRAME_CHARS
from tests.support import TRACES


def error_of(frame: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_event(frame)
    return info.value


def loose_json_objects(text: str) -> list[dict]:
    """The JSON objects in a spec example written with comments and trailing commas."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r",(\s*[}\]])", r"\1", text)
    decoder, objects, index = json.JSONDecoder(), [], 0
    while (start := text.find("{", index)) != -1:
        obj, index = decoder.raw_decode(text, start)
        objects.append(obj)
    return objects


def test_every_official_client_example_parses() -> None:
    examples = json.loads((TRACES / "openapi_ga_event_examples.json").read_text())
    parsed = set()
    for kind, entry in examples["client_events"].items():
        if kind not in EVENT_SPECS:
            continue  # transcription_session.update is a beta name, not a GA event
        example = entry["example"]
        for obj in [example] if isinstance(example, dict) else loose_json_objects(example):
            if kind == "input_audio_buffer.append":
                # the spec's placeholder "Base64EncodedAudioData" is not base64
                obj = {**obj, "audio": base64.b64encode(b"\0" * 480).decode()}
            event = parse_client_event(json.dumps(obj))
            assert event.TYPE == kind
            assert event.event_id == obj.get("event_id")
            parsed.add(kind)
    assert parsed == set(EVENT_SPECS)


def test_non_json_text_is_invalid_json() -> None:
    error = error_of("not json")
    assert (error.code, error.param, error.event_id) == ("invalid_json", None, None)
    assert error.message.startswith("Invalid event: failed to parse JSON value.")


def test_binary_frame_is_invalid_event() -> None:
    assert error_of(b"\x00\x01").code == "invalid_event"


def test_missing_type_is_invalid_event_and_echoes_event_id() -> None:
    error = error_of('{"event_id": "event_567"}')
    assert (error.code, error.message, error.event_id) == (
        "invalid_event",
        "The 'type' field is missing.",
        "event_567",
    )


def test_unknown_type_is_invalid_value_on_type() -> None:
    error = error_of('{"type": "nope", "event_id": "e1"}')
    assert (error.code, error.param, error.event_id) == ("invalid_value", "type", "e1")
    assert "'session.update'" in error.message


@pytest.mark.parametrize(
    "server_type", ["response.created", "session.created", "error", "response.output_audio.delta"]
)
def test_server_only_type_from_client_is_invalid_value(server_type: str) -> None:
    error = error_of(json.dumps({"type": server_type}))
    assert (error.code, error.param) == ("invalid_value", "type")


def test_unknown_session_field_is_unknown_parameter() -> None:
    error = error_of('{"type":"session.update","session":{"type":"realtime","bogus_field":1}}')
    assert (error.code, error.param) == ("unknown_parameter", "session.bogus_field")
    assert error.message == "Unknown parameter: 'session.bogus_field'."


def test_missing_session_type_is_missing_required_parameter() -> None:
    error = error_of('{"type":"session.update","session":{"instructions":"x"}}')
    assert (error.code, error.param) == ("missing_required_parameter", "session.type")
    assert error.message == "Missing required parameter: 'session.type'."


def test_unknown_top_level_field_is_unknown_parameter() -> None:
    error = error_of('{"type":"input_audio_buffer.commit","extra":1}')
    assert (error.code, error.param) == ("unknown_parameter", "extra")


def test_rate_other_than_24000_is_integer_below_min_value() -> None:
    frame = json.dumps(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
            },
        }
    )
    error = error_of(frame)
    assert (error.code, error.param) == (
        "integer_below_min_value",
        "session.audio.input.format.rate",
    )


@pytest.mark.parametrize(
    ("session", "param"),
    [
        ({"type": "realtime", "instructions": 5}, "session.instructions"),
        ({"type": "realtime", "output_modalities": ["video"]}, "session.output_modalities[0]"),
        ({"type": "realtime", "tool_choice": "sometimes"}, "session.tool_choice"),
        ({"type": "realtime", "max_output_tokens": "lots"}, "session.max_output_tokens"),
        (
            {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "magic"}}}},
            "session.audio.input.turn_detection.type",
        ),
        (
            {"type": "realtime", "audio": {"output": {"speed": True}}},
            "session.audio.output.speed",
        ),
        ({"type": "realtime", "tools": [{"type": "function"}]}, "session.tools[0].name"),
    ],
)
def test_wrong_type_or_value_names_the_param(session: dict, param: str) -> None:
    error = error_of(json.dumps({"type": "session.update", "session": session}))
    assert error.param == param
    assert error.code in ("invalid_value", "missing_required_parameter")


def test_speed_out_of_range_is_decimal_above_max_value() -> None:
    frame = {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"output": {"speed": 4}}},
    }
    error = error_of(json.dumps(frame))
    assert (error.code, error.param) == ("decimal_above_max_value", "session.audio.output.speed")


def test_append_decodes_base64_audio() -> None:
    audio = bytes(range(256)) * 4
    event = parse_client_event(
        json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()})
    )
    assert isinstance(event, events.InputAudioBufferAppend)
    assert event.audio == audio


def test_invalid_base64_is_invalid_value_on_audio() -> None:
    error = error_of('{"type":"input_audio_buffer.append","audio":"@@@@","event_id":"a1"}')
    assert (error.code, error.param, error.event_id) == ("invalid_value", "audio", "a1")


def test_audio_over_15_mib_is_refused_before_decoding() -> None:
    frame = '{"type":"input_audio_buffer.append","audio":"' + "A" * (MAX_AUDIO_B64_CHARS + 4) + '"}'
    error = error_of(frame)
    assert error.code == "invalid_value"
    assert "15 MiB" in error.message


@pytest.mark.parametrize("where", ["first", "last"])
def test_an_oversize_append_still_echoes_its_event_id(where: str) -> None:
    audio = '"audio":"' + "A" * (MAX_FRAME_CHARS + 4) + '"'
    members = ['"type":"input_audio_buffer.append"', audio]
    members.insert(0 if where == "first" else 2, '"event_id":"evt_\\u00e9big"')
    error = error_of("{" + ",".join(members) + "}")
    assert error.code == "invalid_event"
    assert error.event_id == "evt_\u00e9big"
    # near the limit but under it: the audio check refuses it, echoing the id too
    frame = (
        '{"type":"input_audio_buffer.append","event_id":"e2","audio":"'
        + "A" * (MAX_AUDIO_B64_CHARS + 4)
        + '"}'
    )
    assert error_of(frame).event_id == "e2"


def test_an_oversize_frame_without_an_event_id_echoes_none() -> None:
    frame = '{"type":"input_audio_buffer.append","audio":"' + "A" * (MAX_FRAME_CHARS + 4) + '"}'
    assert error_of(frame).event_id is None


def test_message_item_content_type_must_fit_the_role() -> None:
    frame = {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "output_text", "text": "x"}],
        },
    }
    error = error_of(json.dumps(frame))
    assert (error.code, error.param) == ("invalid_value", "item.content[0].type")


def test_function_call_output_needs_call_id() -> None:
    frame = {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "output": "1"},
    }
    error = error_of(json.dumps(frame))
    assert (error.code, error.param) == ("missing_required_parameter", "item.call_id")


def test_item_ids_are_generated_when_absent() -> None:
    frame = {
        "type": "conversation.item.create",
        "item": {"type": "function_call", "name": "f", "arguments": "{}"},
    }
    event = parse_client_event(json.dumps(frame))
    assert isinstance(event, events.ConversationItemCreate)
    assert event.item.id.startswith("item_")
    assert event.item.call_id.startswith("call_")  # type: ignore[union-attr]


def test_response_create_parses_out_of_band_params() -> None:
    frame = {
        "type": "response.create",
        "event_id": "agents_py_response_create_1",
        "response": {
            "conversation": "none",
            "instructions": "Summarise.",
            "output_modalities": ["text"],
            "metadata": {"purpose": "summary"},
            "input": [
                {"type": "item_reference", "id": "item_1"},
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "x"}],
                },
            ],
            "max_output_tokens": 50,
            "audio": {"output": {"voice": "ash"}},
        },
    }
    event = parse_client_event(json.dumps(frame))
    assert isinstance(event, events.ResponseCreate)
    params = event.response
    assert params.conversation == "none"
    assert params.output_modalities == ("text",)
    assert params.max_output_tokens == 50
    assert params.voice == "ash"
    assert params.input is not None and isinstance(params.input[0], events.ItemReference)


def test_metadata_values_must_be_strings() -> None:
    frame = {"type": "response.create", "response": {"metadata": {"k": 1}}}
    error = error_of(json.dumps(frame))
    assert error.param == "response.metadata.k"


def test_deeply_nested_json_is_a_protocol_error() -> None:
    frame = '{"type":"session.update","session":' + "[" * 100_000 + "]" * 100_000 + "}"
    assert error_of(frame).code in ("invalid_json", "invalid_event", "invalid_value")


def tool_update(parameters: str) -> str:
    return (
        '{"type":"session.update","session":{"type":"realtime","tools":[{"type":"function",'
        f'"name":"f","parameters":{parameters}}}]}}}}'
    )


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_non_finite_numbers_are_invalid_json(value: str) -> None:
    # passed through into session.updated they would make the server send invalid JSON
    error = error_of(tool_update('{"x":' + value + "}"))
    assert error.code == "invalid_json"


def test_finite_floats_still_parse() -> None:
    event = parse_client_event(tool_update('{"x":1.5e3,"y":-0.25}'))
    assert isinstance(event, events.SessionUpdate)
    assert event.session["tools"][0]["parameters"] == {"x": 1500.0, "y": -0.25}


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"input_audio_buffer.clear","event_id":"\\ud800"}',
        '{"type":"session.update","session":{"type":"realtime","instructions":"a\\udc00b"}}',
        '{"type":"session.update","session":{"type":"realtime","\\ud83d":1}}',
        '{"type":"session.update","session":{"type":"realtime","instructions":"\ud800"}}',
    ],
)
def test_lone_surrogates_are_invalid_json(frame: str) -> None:
    # echoed back they could not be encoded as UTF-8 for the wire
    assert error_of(frame).code == "invalid_json"


def test_surrogate_pairs_are_one_character() -> None:
    event = parse_client_event(
        '{"type":"session.update","session":{"type":"realtime","instructions":"\\ud83d\\ude00"}}'
    )
    assert isinstance(event, events.SessionUpdate)
    assert event.session["instructions"] == "😀"


def test_free_json_nested_too_deeply_is_invalid_value_on_its_param() -> None:
    error = error_of(tool_update('{"a":' * 65 + "1" + "}" * 65))
    assert (error.code, error.param) == ("invalid_value", "session.tools[0].parameters")
    assert parse_client_event(tool_update('{"a":' * 64 + "1" + "}" * 64))
