"""protocol/turns.py: server-VAD turn logic, alone and on the machine's input timeline."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.effects import AppendInputAudio, CommitInputAudio, TranscribeLive
from protocol.session import SERVER_VAD_DEFAULTS, TurnDetection
from protocol.turns import HYSTERESIS, MIN_SPEECH_MS, SpeechStart, SpeechStop, TurnDetector
from tests.protocol.steps import audio_input, effects_of, session_update, vad
from tests.support import Driver, pcm_ms, types

FRAME = 32


def detector(**overrides: object) -> TurnDetector:
    return TurnDetector(TurnDetection.from_wire({**SERVER_VAD_DEFAULTS, **overrides}))


def run(td: TurnDetector, start_ms: int, probabilities: list[float]) -> list[object]:
    """Feed 32 ms frames from ``start_ms``; the signals with the frame end they came at."""
    signals: list[object] = []
    for index, probability in enumerate(probabilities):
        end = start_ms + (index + 1) * FRAME
        signal = td.feed(end, FRAME, probability)
        if signal is not None:
            signals.append((end, signal))
    return signals


def test_speech_starts_once_it_lasts_min_speech_ms_and_dates_from_its_onset() -> None:
    td = detector()
    frames_needed = -(-MIN_SPEECH_MS // FRAME)
    signals = run(td, 1000, [0.0] * 3 + [0.9] * frames_needed)
    assert signals == [(1000 + (3 + frames_needed) * FRAME, SpeechStart(audio_start_ms=1096))]


def test_a_click_shorter_than_min_speech_is_not_speech() -> None:
    td = detector()
    assert run(td, 0, [0.9, 0.0, 0.9, 0.0, 0.9, 0.0]) == []


def test_silence_alone_never_starts_speech() -> None:
    assert run(detector(), 0, [0.0] * 100) == []
    assert run(detector(), 0, [0.5 - HYSTERESIS] * 100) == []  # below threshold


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 0.4999), max_size=80))
def test_no_probability_below_threshold_ever_starts_speech(probabilities: list[float]) -> None:
    assert run(detector(), 0, probabilities) == []


def test_speech_stops_after_silence_duration_at_that_frame_end() -> None:
    td = detector(silence_duration_ms=200)
    signals = run(td, 0, [0.9] * 5 + [0.0] * 7)
    assert signals == [(64, SpeechStart(0)), (5 * FRAME + 7 * FRAME, SpeechStop(384))]


def test_frames_in_the_hysteresis_band_neither_speak_nor_count_as_silence() -> None:
    td = detector(silence_duration_ms=200)
    between = 0.5 - HYSTERESIS / 2
    signals = run(td, 0, [0.9] * 3 + [0.0] * 6 + [between] + [0.0] * 6)
    # the in-between frame resets the silence count, so 7 silent frames come only at the end
    assert [type(s) for _, s in signals] == [SpeechStart]
    signals = run(td, 17 * FRAME, [0.0])
    assert [type(s) for _, s in signals] == [SpeechStop]


def test_threshold_is_the_sessions() -> None:
    td = detector(threshold=0.8)
    assert run(td, 0, [0.7] * 10) == []
    assert [type(s) for _, s in run(td, 320, [0.85] * 3)] == [SpeechStart]


def test_reset_forgets_a_speech_in_progress() -> None:
    td = detector()
    run(td, 0, [0.9] * 3)
    td.reset()
    assert run(td, 96, [0.0] * 20) == []


@pytest.mark.parametrize(
    ("eagerness", "silence_ms"), [("low", 1200), ("medium", 600), ("auto", 600), ("high", 300)]
)
def test_semantic_vad_eagerness_sets_the_end_of_turn_wait(eagerness: str, silence_ms: int) -> None:
    td = TurnDetection.from_wire(
        {
            "type": "semantic_vad",
            "eagerness": eagerness,
            "create_response": True,
            "interrupt_response": True,
        }
    )
    assert td.silence_duration_ms == silence_ms


# --- on the machine's input timeline ---------------------------------------------------------


def test_speech_started_and_stopped_carry_timeline_ms_and_one_item_id() -> None:
    d = Driver()
    vad(d, 640, 0.0)
    (started,) = vad(d, 320, 0.9)
    assert started == {
        "type": "input_audio_buffer.speech_started",
        "event_id": started["event_id"],
        "audio_start_ms": 640,
        "item_id": started["item_id"],
    }
    stopped = vad(d, 320, 0.0)[0]
    assert (stopped["audio_end_ms"], stopped["item_id"]) == (960 + 224, started["item_id"])


def test_commit_effect_includes_prefix_padding_but_not_before_the_buffer() -> None:
    d = Driver()
    vad(d, 640, 0.0)
    vad(d, 320, 0.9)
    vad(d, 320, 0.0)
    (commit,) = effects_of(d, CommitInputAudio)
    assert (commit.start_ms, commit.end_ms) == (640 - 300, 960 + 224)
    d2 = Driver()
    vad(d2, 320, 0.9)
    vad(d2, 320, 0.0)
    (commit,) = effects_of(d2, CommitInputAudio)
    assert commit.start_ms == 0


def test_audio_after_the_turn_end_stays_for_the_next_turn() -> None:
    d = Driver()
    vad(d, 320, 0.9)
    vad(d, 480, 0.0)  # the turn ends at 544; 256 ms more are buffered
    assert d.conn.input_state.value == "has_audio"
    assert d.conn.buffer_start_ms == 544
    (commit,) = types(d.send({"type": "input_audio_buffer.commit"}))[:1]
    assert commit == "input_audio_buffer.committed"
    assert effects_of(d, CommitInputAudio)[-1].start_ms == 544


def test_live_transcription_starts_with_speech_only_when_configured() -> None:
    d = Driver()
    vad(d, 320, 0.9)
    assert effects_of(d, TranscribeLive) == []
    d2 = Driver()
    session_update(d2, audio=audio_input(transcription={"model": "whisper-1"}))
    vad(d2, 640, 0.0)
    (started,) = vad(d2, 320, 0.9)
    (live,) = effects_of(d2, TranscribeLive)
    assert (live.item_id, live.start_ms) == (started["item_id"], 640 - 300)


def test_g711_input_timeline_counts_8_bytes_per_ms() -> None:
    d = Driver()
    session_update(d, audio=audio_input(format={"type": "audio/pcmu"}))
    d.append(b"\xff" * 8 * 1000)
    assert d.conn.timeline_ms == 1000
    (append,) = effects_of(d, AppendInputAudio)
    assert (append.format, len(append.audio)) == ("audio/pcmu", 8000)
    started = d.vad(0, 320, 0.9)
    stopped = d.vad(320, 640, 0.0)
    assert started[0]["audio_start_ms"] == 0
    assert stopped[0]["audio_end_ms"] == 544
    # odd byte counts are fine for G.711: one byte is one sample
    assert d.append(b"\xff" * 7) == []
    assert d.conn.timeline_ms == 1000 + 7 / 8


def test_pcm_timeline_counts_48_bytes_per_ms() -> None:
    d = Driver()
    d.append(pcm_ms(20))
    d.append(b"\0\0")
    assert d.conn.timeline_ms == 20 + 2 / 48


def test_stale_frames_before_a_clear_are_ignored() -> None:
    d = Driver()
    d.append(pcm_ms(1000))
    d.vad(0, 32, 0.9)  # onset
    d.send({"type": "input_audio_buffer.clear"})
    assert d.conn.buffer_start_ms == 1000
    assert d.vad(32, 1000, 0.9) == []  # frames of audio the clear dropped
    d.append(pcm_ms(320))
    (started,) = d.vad(1000, 1320, 0.9)
    assert started["audio_start_ms"] == 1000


def test_frames_after_a_commit_start_a_new_turn() -> None:
    d = Driver()
    first = vad(d, 320, 0.9)[0]["item_id"]
    d.send({"type": "input_audio_buffer.commit"})
    assert d.conn.input_state.value == "empty"
    (started,) = vad(d, 320, 0.9)
    assert started["item_id"] != first
    assert started["audio_start_ms"] == 320
