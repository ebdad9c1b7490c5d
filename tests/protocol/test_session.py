"""protocol/session.py: OpenAI's defaults, deep-merge, partial updates and their validation."""

from __future__ import annotations

import copy
import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import SessionConfig, TurnDetection, deep_merge
from protocol import inputs as ins
from protocol.effects import AppendInputAudio
from tests.protocol.steps import (
    audio_input,
    session_update,
    speak_audio,
    text_turn,
    vad,
    voice_turn,
)
from tests.support import TRACES, Driver, types

#: fields of a session that differ per session (or per deployment) by nature
PER_SESSION = ("id", "expires_at", "instructions", "model")


def recorded(kind: str) -> dict[str, Any]:
    """The first event of ``kind`` in the recorded GA voice session (sources.md T2)."""
    lines = (TRACES / "gpt_realtime_voice_session_capture.jsonl").read_text().splitlines()
    return next(e for e in map(json.loads, lines) if e.get("type") == kind)


def without(session: dict[str, Any], keys: tuple[str, ...] = PER_SESSION) -> dict[str, Any]:
    return {k: v for k, v in session.items() if k not in keys}


def wire_of(d: Driver) -> dict[str, Any]:
    return d.conn.session.to_wire()


# --- defaults --------------------------------------------------------------------------------


def test_session_created_matches_the_recorded_openai_defaults() -> None:
    ours = Driver().log[0]
    assert ours["type"] == "session.created"
    assert without(ours["session"]) == without(recorded("session.created")["session"])


def test_session_created_carries_id_model_and_an_expiry_an_hour_ahead() -> None:
    session = Driver(session_id="sess_x", model="gpt-realtime-mini", now=lambda: 1000.0).log[0][
        "session"
    ]
    assert (session["id"], session["model"], session["expires_at"]) == (
        "sess_x",
        "gpt-realtime-mini",
        1000 + 3600,
    )


def test_typed_view_of_the_defaults() -> None:
    config = SessionConfig.initial("sess_1", "gpt-realtime", 0)
    assert (config.input_format, config.output_format, config.voice) == (
        "audio/pcm",
        "audio/pcm",
        "alloy",
    )
    assert config.turn_detection == TurnDetection(
        type="server_vad",
        threshold=0.5,
        prefix_padding_ms=300,
        silence_duration_ms=200,
        create_response=True,
        interrupt_response=True,
    )
    assert (config.transcription, config.max_output_tokens, config.tools) == (None, None, ())
    assert config.output_modalities == ("audio",)


# --- deep_merge ------------------------------------------------------------------------------


def test_deep_merge_merges_objects_key_by_key() -> None:
    base = {"audio": {"input": {"format": {"type": "audio/pcm"}, "vad": 1}, "output": 2}}
    patch = {"audio": {"input": {"vad": 3}}}
    assert deep_merge(base, patch) == {
        "audio": {"input": {"format": {"type": "audio/pcm"}, "vad": 3}, "output": 2}
    }


def test_deep_merge_replaces_lists_and_scalars_and_none_switches_off() -> None:
    base = {"tools": [{"name": "a"}], "speed": 1.0, "td": {"type": "server_vad"}}
    assert deep_merge(base, {"tools": []}) == {**base, "tools": []}
    assert deep_merge(base, {"speed": 1.5})["speed"] == 1.5
    assert deep_merge(base, {"td": None})["td"] is None
    assert deep_merge({"td": None}, {"td": {"type": "x"}}) == {"td": {"type": "x"}}


def test_deep_merge_result_shares_nothing_with_its_arguments() -> None:
    base = {"a": {"b": [1]}}
    patch = {"c": {"d": [2]}}
    merged = deep_merge(base, patch)
    merged["a"]["b"].append(9)
    merged["c"]["d"].append(9)
    assert base == {"a": {"b": [1]}}
    assert patch == {"c": {"d": [2]}}


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.sampled_from("abcde"), json_values, max_size=5)


def leaves(obj: dict[str, Any], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every non-object value by its key path; an empty object counts as a leaf."""
    found: dict[tuple[str, ...], Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict) and value:
            found.update(leaves(value, (*path, key)))
        else:
            found[(*path, key)] = value
    return found


def at(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


@settings(max_examples=200, deadline=None)
@given(json_objects)
def test_deep_merge_with_an_empty_patch_is_identity(base: dict[str, Any]) -> None:
    assert deep_merge(base, {}) == base
    assert deep_merge({}, base) == base


@settings(max_examples=200, deadline=None)
@given(json_objects, json_objects)
def test_deep_merge_patch_values_win_and_arguments_are_untouched(
    base: dict[str, Any], patch: dict[str, Any]
) -> None:
    base_before, patch_before = copy.deepcopy(base), copy.deepcopy(patch)
    merged = deep_merge(base, patch)
    assert (base, patch) == (base_before, patch_before)
    for path, value in leaves(patch).items():
        if value == {}:
            continue  # an empty object patches nothing inside an object it lands on
        assert at(merged, path) == value
    # what the patch does not mention is the base's
    for key in base.keys() - patch.keys():
        assert merged[key] == base[key]
    assert deep_merge(merged, patch) == merged


# --- session.update --------------------------------------------------------------------------


def test_partial_update_changes_only_the_given_fields() -> None:
    d = Driver()
    before = wire_of(d)
    (updated,) = session_update(d, instructions="Be brief.")
    assert updated["type"] == "session.updated"
    assert updated["session"] == {**before, "instructions": "Be brief."}


def test_nested_partial_update_keeps_sibling_fields() -> None:
    d = Driver()
    before = wire_of(d)
    (updated,) = session_update(
        d, audio={"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}
    )
    expected = copy.deepcopy(before)
    expected["audio"]["input"]["turn_detection"]["silence_duration_ms"] = 500
    assert updated["session"] == expected
    assert d.conn.session.turn_detection is not None
    assert d.conn.session.turn_detection.silence_duration_ms == 500


def test_updated_session_matches_the_recorded_session_updated() -> None:
    d = Driver()
    trace = recorded("session.updated")["session"]
    (updated,) = session_update(d, instructions=trace["instructions"])
    assert without(updated["session"], ("id", "expires_at", "model")) == without(
        trace, ("id", "expires_at", "model")
    )


def test_empty_tools_list_clears_the_tools() -> None:
    d = Driver()
    tool = {"type": "function", "name": "get_time", "description": "now", "parameters": {}}
    (updated,) = session_update(d, tools=[tool], tool_choice="required")
    assert updated["session"]["tools"] == [tool]
    assert d.conn.session.tools == (tool,)
    (cleared,) = session_update(d, tools=[])
    assert cleared["session"]["tools"] == []
    assert cleared["session"]["tool_choice"] == "required"
    assert d.conn.session.tools == ()


def test_null_turn_detection_disables_vad() -> None:
    d = Driver()
    (updated,) = session_update(d, audio=audio_input(turn_detection=None))
    assert updated["session"]["audio"]["input"]["turn_detection"] is None
    assert d.conn.session.turn_detection is None
    events = voice_turn(d)
    assert events == []
    assert [e.detect_speech for e in d.effects if isinstance(e, AppendInputAudio)] == [False] * 2
    assert d.conn.input_state.value == "has_audio"


def test_switching_to_semantic_vad_starts_from_its_defaults() -> None:
    d = Driver()
    (updated,) = session_update(
        d, audio=audio_input(turn_detection={"type": "semantic_vad", "eagerness": "low"})
    )
    assert updated["session"]["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "low",
        "create_response": True,
        "interrupt_response": True,
    }
    td = d.conn.session.turn_detection
    assert td is not None and (td.type, td.silence_duration_ms) == ("semantic_vad", 1200)
    (back,) = session_update(d, audio=audio_input(turn_detection={"type": "server_vad"}))
    assert (
        back["session"]["audio"]["input"]["turn_detection"]
        == Driver().log[0]["session"]["audio"]["input"]["turn_detection"]
    )


def test_semantic_vad_still_detects_turns() -> None:
    d = Driver()
    session_update(
        d, audio=audio_input(turn_detection={"type": "semantic_vad", "eagerness": "high"})
    )
    events = voice_turn(d, speech_ms=320, silence_ms=320)
    assert types(events)[:2] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
    ]


def test_transcription_on_is_echoed_like_openai() -> None:
    d = Driver()
    (updated,) = session_update(
        d, audio=audio_input(transcription={"model": "gpt-4o-mini-transcribe"})
    )
    # as recorded from OpenAI (sources.md T3, probe 7)
    assert updated["session"]["audio"]["input"]["transcription"] == {
        "model": "gpt-4o-mini-transcribe",
        "language": None,
        "prompt": None,
    }
    (updated,) = session_update(d, audio=audio_input(transcription={"language": "de"}))
    assert updated["session"]["audio"]["input"]["transcription"] == {
        "model": "gpt-4o-mini-transcribe",
        "language": "de",
        "prompt": None,
    }


def test_transcription_settings_reach_the_commit_effect() -> None:
    d = Driver()
    session_update(
        d, audio=audio_input(transcription={"model": "whisper-1", "language": "fr", "prompt": "Le"})
    )
    voice_turn(d)
    (commit,) = [e for e in d.effects if type(e).__name__ == "CommitInputAudio"]
    assert (commit.transcription.language, commit.transcription.prompt) == ("fr", "Le")


def test_transcription_keywords_join_the_prompt_as_a_glossary() -> None:
    d = Driver()
    transcription = {
        "model": "whisper-1",
        "prompt": "Support call.",
        "keywords": ["Kubernetes", "Qwen"],
    }
    session_update(d, audio=audio_input(transcription=transcription))
    voice_turn(d)
    (commit,) = [e for e in d.effects if type(e).__name__ == "CommitInputAudio"]
    assert commit.transcription.keywords == ("Kubernetes", "Qwen")
    options = commit.transcription.stt_options()
    assert options["prompt"] == "Support call. Glossary: Kubernetes, Qwen."
    without_prompt = attrs.evolve(commit.transcription, prompt=None).stt_options()
    assert without_prompt["prompt"] == "Glossary: Kubernetes, Qwen."


def test_noise_reduction_reaches_every_transcription() -> None:
    d = Driver()
    voice_turn(d)
    session_update(d, audio=audio_input(noise_reduction={"type": "far_field", "strength": 0.5}))
    voice_turn(d)
    first, second = [e for e in d.effects if type(e).__name__ == "CommitInputAudio"]
    assert first.transcription.noise_reduction is None  # off by default, as OpenAI's
    assert second.transcription.noise_reduction == ("far_field", 0.5)
    assert "noise_reduction" not in second.transcription.stt_options()  # the shell's to apply


def test_transcription_off_sends_no_transcription_events() -> None:
    d = Driver()
    session_update(d, audio=audio_input(transcription={"model": "whisper-1"}))
    (updated,) = session_update(d, audio=audio_input(transcription=None))
    assert updated["session"]["audio"]["input"]["transcription"] is None
    events = voice_turn(d)
    item_id = events[0]["item_id"]
    assert d.feed(ins.TranscriptDone(item_id, "Hello.", 0.5)) == []


@pytest.mark.parametrize(
    ("session", "code", "param"),
    [
        ({"bogus": 1}, "unknown_parameter", "session.bogus"),
        ({"output_modalities": ["text", "audio"]}, "array_above_max_length", None),
        ({"audio": {"output": {"speed": 0.1}}}, "decimal_below_min_value", None),
        ({"type": "transcription"}, "invalid_value", "session.type"),
        ({"max_output_tokens": 0}, "integer_below_min_value", None),
    ],
)
def test_invalid_update_is_one_error_and_changes_nothing(
    session: dict[str, Any], code: str, param: str | None
) -> None:
    d = Driver()
    before_config, before_wire = d.conn.session, wire_of(d)
    (error,) = d.send(
        {"type": "session.update", "event_id": "evt_1", "session": {"type": "realtime", **session}}
    )
    assert error["type"] == "error"
    assert error["error"]["code"] == code
    assert error["error"]["event_id"] == "evt_1"
    if param is not None:
        assert error["error"]["param"] == param
    assert d.conn.session is before_config
    assert wire_of(d) == before_wire


def test_tracing_cannot_change_once_enabled() -> None:
    d = Driver()
    (updated,) = session_update(d, tracing="auto")
    assert updated["session"]["tracing"] == "auto"
    (error,) = session_update(d, tracing={"workflow_name": "other"})
    assert (error["error"]["code"], error["error"]["param"]) == ("invalid_value", "session.tracing")
    assert session_update(d, tracing="auto")[0]["type"] == "session.updated"


def test_voice_can_change_before_any_assistant_audio() -> None:
    d = Driver()
    text_turn(d)
    (updated,) = session_update(d, audio={"output": {"voice": "marin"}})
    assert updated["session"]["audio"]["output"]["voice"] == "marin"
    assert d.conn.session.voice == "marin"


def test_voice_cannot_change_after_assistant_audio() -> None:
    d = Driver()
    rid = text_turn(d)
    speak_audio(d, rid)
    (error,) = session_update(d, event_id="v1", audio={"output": {"voice": "ash"}})
    assert error["error"]["code"] == "cannot_update_voice"
    assert (error["error"]["param"], error["error"]["event_id"]) == (
        "session.audio.output.voice",
        "v1",
    )
    d.feed(ins.ResponseComplete(rid))
    (error,) = session_update(d, audio={"output": {"voice": "ash"}})
    assert error["error"]["code"] == "cannot_update_voice"
    assert d.conn.session.voice == "alloy"
    # the same voice, or any other field, is still fine
    assert types(session_update(d, audio={"output": {"voice": "alloy", "speed": 1.2}})) == [
        "session.updated"
    ]


@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma"])
def test_g711_formats_are_accepted_and_echoed(fmt: str) -> None:
    d = Driver()
    (updated,) = session_update(
        d, audio={"input": {"format": {"type": fmt}}, "output": {"format": {"type": fmt}}}
    )
    audio = updated["session"]["audio"]
    assert audio["input"]["format"] == audio["output"]["format"] == {"type": fmt}
    assert (d.conn.session.input_format, d.conn.session.output_format) == (fmt, fmt)
    (back,) = session_update(d, audio={"input": {"format": {"type": "audio/pcm"}}})
    assert back["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert back["session"]["audio"]["output"]["format"] == {"type": fmt}


def test_g711_output_format_reaches_the_response() -> None:
    d = Driver()
    session_update(d, audio={"output": {"format": {"type": "audio/pcmu"}}})
    rid = text_turn(d)
    assert d.log[-1]["response"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert d.effects[-1].plan.output_format == "audio/pcmu"
    assert d.conn.responses[rid].plan.output_format == "audio/pcmu"


def test_output_modalities_text_reaches_the_response() -> None:
    d = Driver()
    session_update(d, output_modalities=["text"])
    text_turn(d)
    assert d.log[-1]["response"]["output_modalities"] == ["text"]


def test_update_during_speech_keeps_the_turn_going() -> None:
    d = Driver()
    (started,) = vad(d, 320, 0.9)
    session_update(d, audio=audio_input(turn_detection={"type": "server_vad", "threshold": 0.6}))
    assert vad(d, 320, 0.9) == []  # still the same speech: no second speech_started
    stopped = vad(d, 320, 0.0)
    assert types(stopped)[0] == "input_audio_buffer.speech_stopped"
    assert stopped[0]["item_id"] == started["item_id"]


def test_turning_vad_off_during_speech_leaves_the_audio_uncommitted() -> None:
    d = Driver()
    vad(d, 320, 0.9)
    session_update(d, audio=audio_input(turn_detection=None))
    assert vad(d, 320, 0.0) == []
    assert d.conn.input_state.value == "has_audio"
    assert types(d.send({"type": "input_audio_buffer.commit"}))[0] == (
        "input_audio_buffer.committed"
    )
