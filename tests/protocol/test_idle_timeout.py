"""``server_vad``'s ``idle_timeout_ms``: no speech for that long after the answer has played
gives ``input_audio_buffer.timeout_triggered``, the silent audio committed as the user's turn,
and a response to it."""

from __future__ import annotations

from protocol import inputs as ins
from tests.protocol.steps import (
    SILENCE,
    audio_input,
    created_id,
    session_update,
    speak_audio,
    start_of,
    text_turn,
    vad,
    voice_turn,
)
from tests.support import Driver, types

IDLE_MS = 5_000


def idle_session(**turn_detection: object) -> Driver:
    d = Driver()
    session_update(
        d,
        audio=audio_input(
            turn_detection={"type": "server_vad", "idle_timeout_ms": IDLE_MS, **turn_detection}
        ),
    )
    return d


def answered(d: Driver, audio_ms: int = 1_000) -> None:
    """A text turn whose answer sends ``audio_ms`` of audio, then ends."""
    rid = text_turn(d)
    speak_audio(d, rid, ("Hello. ",) * (audio_ms // 100), chunk_ms=100)
    d.feed(ins.ResponseComplete(rid))


def test_silence_after_the_answer_has_played_triggers_a_response() -> None:
    d = idle_session()
    vad(d, 320, SILENCE)
    answered(d, audio_ms=1_000)
    played_at = 320 + 1_000
    quiet = vad(d, 1_000 + IDLE_MS - 64, SILENCE)
    assert "input_audio_buffer.timeout_triggered" not in types(quiet)
    events = vad(d, 128, SILENCE)
    (triggered,) = [e for e in events if e["type"] == "input_audio_buffer.timeout_triggered"]
    assert triggered["audio_start_ms"] == played_at
    assert triggered["audio_end_ms"] - triggered["audio_start_ms"] >= IDLE_MS
    assert types(events)[types(events).index("input_audio_buffer.timeout_triggered") :][:5] == [
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    (committed,) = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    assert committed["item_id"] == triggered["item_id"]
    # the response starts once the silent item's transcript is in
    d.feed(ins.TranscriptDone(triggered["item_id"], "", 5.0))
    start_of(d, created_id(events))
    # once only: no second trigger while that response runs, nor after it without a new answer
    assert "input_audio_buffer.timeout_triggered" not in types(vad(d, IDLE_MS + 500, SILENCE))


def test_speech_before_the_timeout_stops_it() -> None:
    d = idle_session(create_response=False)
    vad(d, 320, SILENCE)
    answered(d)
    events = vad(d, 2_000, SILENCE) + voice_turn(d, 320, 640) + vad(d, IDLE_MS + 500, SILENCE)
    assert "input_audio_buffer.speech_started" in types(events)
    assert "input_audio_buffer.timeout_triggered" not in types(events)


def test_without_idle_timeout_ms_silence_triggers_nothing() -> None:
    d = Driver()
    session_update(d, audio=audio_input(turn_detection={"type": "server_vad"}))
    vad(d, 320, SILENCE)
    answered(d)
    assert "input_audio_buffer.timeout_triggered" not in types(vad(d, 2 * IDLE_MS, SILENCE))
