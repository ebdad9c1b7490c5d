"""protocol/turns.py: turn logic (server_vad, pauses, semantic_vad), alone and on the machine's
input timeline."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.effects import AppendInputAudio, CommitInputAudio, ScoreTurn, TranscribeLive
from protocol.inputs import TurnScored
from protocol.session import TurnDetection
from protocol.session_spec import SERVER_VAD_DEFAULTS
from protocol.turns import (
    COMPLETE_THRESHOLD,
    HYSTERESIS,
    MIN_SPEECH_MS,
    PAUSE_MS,
    RESCORE_EVERY_MS,
    SEMANTIC_MAX_WAIT_MS,
    SpeechPause,
    SpeechRescore,
    SpeechResume,
    SpeechStart,
    SpeechStop,
    TurnDetector,
    VoiceState,
)
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


# --- pauses and semantic_vad -----------------------------------------------------------------


def semantic(eagerness: str = "auto", turn_model: bool = True) -> TurnDetector:
    config = TurnDetection.from_wire(
        {
            "type": "semantic_vad",
            "eagerness": eagerness,
            "create_response": True,
            "interrupt_response": True,
        }
    )
    return TurnDetector(config, turn_model=turn_model)


PAUSE_FRAMES = -(-PAUSE_MS // FRAME)


def test_a_pause_is_signalled_when_the_turn_ends_later() -> None:
    td = detector(silence_duration_ms=500)
    signals = run(td, 0, [0.9] * 5 + [0.0] * PAUSE_FRAMES)
    pause_end = (5 + PAUSE_FRAMES) * FRAME
    assert signals == [(64, SpeechStart(0)), (pause_end, SpeechPause(pause_end, pause_id=1))]
    assert td.state is VoiceState.PAUSE


def test_no_pause_when_the_turn_ends_at_the_pause_or_sooner() -> None:
    td = detector(silence_duration_ms=PAUSE_MS)
    kinds = [type(s) for _, s in run(td, 0, [0.9] * 5 + [0.0] * PAUSE_FRAMES)]
    assert kinds == [SpeechStart, SpeechStop]


def test_server_vad_ends_the_turn_after_its_window_whatever_paused() -> None:
    td = detector(silence_duration_ms=500)
    signals = run(td, 0, [0.9] * 5 + [0.0] * 16)
    assert [type(s) for _, s in signals] == [SpeechStart, SpeechPause, SpeechStop]
    assert signals[-1] == (5 * FRAME + 16 * FRAME, SpeechStop(672))


def test_speech_lasting_min_speech_ms_resumes_a_paused_turn() -> None:
    td = detector(silence_duration_ms=500)
    run(td, 0, [0.9] * 5 + [0.0] * PAUSE_FRAMES)
    signals = run(td, 384, [0.9] * (MIN_SPEECH_MS // FRAME))
    assert [s for _, s in signals] == [SpeechResume()]
    assert td.state is VoiceState.SPEECH
    # a second pause of the turn is a new one
    signals = run(td, 448, [0.0] * PAUSE_FRAMES)
    assert [s.pause_id for _, s in signals if isinstance(s, SpeechPause)] == [2]


def test_a_click_in_a_pause_restarts_the_silence_and_marks_the_stop() -> None:
    td = detector(silence_duration_ms=500)
    run(td, 0, [0.9] * 5 + [0.0] * PAUSE_FRAMES)
    assert run(td, 384, [0.9]) == []  # shorter than MIN_SPEECH_MS: still a pause
    assert td.state is VoiceState.PAUSE
    signals = run(td, 416, [0.0] * 16)
    assert signals == [(416 + 16 * FRAME, SpeechStop(928, speech_after_pause=True))]


def test_an_in_between_frame_in_a_pause_restarts_the_wait_without_resuming() -> None:
    td = detector(silence_duration_ms=500)
    run(td, 0, [0.9] * 5 + [0.0] * PAUSE_FRAMES)
    assert run(td, 384, [0.5 - HYSTERESIS / 2]) == []
    assert (td.state, td.silence_ms) == (VoiceState.PAUSE, 0)
    (stop,) = [s for _, s in run(td, 416, [0.0] * 16)]
    assert stop == SpeechStop(928, speech_after_pause=False)


def test_semantic_vad_complete_score_ends_the_turn_at_once() -> None:
    td = semantic()
    (_, pause) = run(td, 0, [0.9] * 5 + [0.0] * PAUSE_FRAMES)[-1]
    assert isinstance(pause, SpeechPause)
    run(td, 384, [0.0] * 2)  # the model answers two frames later
    assert td.scored(pause.pause_id, COMPLETE_THRESHOLD) == SpeechStop(448)
    assert td.state is VoiceState.SILENCE


@pytest.mark.parametrize("eagerness", ["low", "medium", "auto", "high"])
def test_semantic_vad_incomplete_score_waits_up_to_the_eagerness_maximum(eagerness: str) -> None:
    td = semantic(eagerness)
    (_, pause) = run(td, 0, [0.9] * 5 + [0.0] * PAUSE_FRAMES)[-1]
    assert td.scored(pause.pause_id, COMPLETE_THRESHOLD - 0.01) is None
    wait = SEMANTIC_MAX_WAIT_MS[eagerness]
    frames = -(-wait // FRAME)
    signals = run(td, 384, [0.0] * (frames - PAUSE_FRAMES))
    rescores = len(range(PAUSE_MS + RESCORE_EVERY_MS, wait, RESCORE_EVERY_MS))
    assert [type(s) for _, s in signals] == [SpeechRescore] * rescores + [SpeechStop]
    assert all(s.pause_id == pause.pause_id for _, s in signals[:-1])
    assert signals[-1][0] == 160 + frames * FRAME


def test_semantic_vad_scores_a_pause_again_as_the_silence_goes_on() -> None:
    td = semantic("auto")
    (_, pause) = run(td, 0, [0.9] * 5 + [0.0] * PAUSE_FRAMES)[-1]
    assert td.scored(pause.pause_id, 0.2) is None
    frames = -(-(PAUSE_MS + RESCORE_EVERY_MS) // FRAME) - PAUSE_FRAMES
    signals = run(td, 384, [0.0] * frames)
    rescore_end = 160 + (PAUSE_FRAMES + frames) * FRAME
    assert signals == [(rescore_end, SpeechRescore(rescore_end, pause_id=pause.pause_id))]
    run(td, rescore_end, [0.0] * 2)  # the model answers two frames later
    assert td.scored(pause.pause_id, 0.9) == SpeechStop(rescore_end + 2 * FRAME)


def test_server_vad_pauses_are_never_scored_again() -> None:
    td = detector(silence_duration_ms=2000)
    signals = run(td, 0, [0.9] * 5 + [0.0] * 70)
    assert [type(s) for _, s in signals] == [SpeechStart, SpeechPause, SpeechStop]


def test_eagerness_orders_the_maximum_waits() -> None:
    waits = SEMANTIC_MAX_WAIT_MS
    assert waits["low"] > waits["medium"] == waits["auto"] > waits["high"] > PAUSE_MS


def test_speech_resuming_makes_the_pause_score_stale_and_restarts_the_wait() -> None:
    td = semantic("high")
    (_, pause) = run(td, 0, [0.9] * 5 + [0.0] * PAUSE_FRAMES)[-1]
    run(td, 384, [0.9] * 2)
    assert td.scored(pause.pause_id, 0.99) is None  # for a pause that is over
    # the wait starts again from this silence
    frames = -(-SEMANTIC_MAX_WAIT_MS["high"] // FRAME)
    signals = run(td, 448, [0.0] * frames)
    assert [type(s) for _, s in signals] == [SpeechPause, SpeechRescore, SpeechStop]
    assert signals[-1][0] == 448 + frames * FRAME


def test_a_late_score_after_the_turn_ended_is_ignored() -> None:
    td = semantic("high")
    (_, pause) = run(td, 0, [0.9] * 5 + [0.0] * PAUSE_FRAMES)[-1]
    run(td, 384, [0.0] * 40)
    assert td.state is VoiceState.SILENCE
    assert td.scored(pause.pause_id, 0.99) is None


def test_scores_mean_nothing_to_server_vad_or_without_a_turn_model() -> None:
    for td in (detector(silence_duration_ms=500), semantic(turn_model=False)):
        (_, pause) = run(td, 0, [0.9] * 5 + [0.0] * PAUSE_FRAMES)[-1]
        assert isinstance(pause, SpeechPause)
        assert td.scored(pause.pause_id, 0.99) is None


@pytest.mark.parametrize(
    ("eagerness", "silence_ms"), [("low", 1200), ("medium", 600), ("auto", 600), ("high", 300)]
)
def test_semantic_vad_without_a_turn_model_ends_turns_on_fixed_windows(
    eagerness: str, silence_ms: int
) -> None:
    td = semantic(eagerness, turn_model=False)
    frames = -(-silence_ms // FRAME)
    signals = run(td, 0, [0.9] * 5 + [0.0] * frames)
    assert signals[-1] == (5 * FRAME + frames * FRAME, SpeechStop(160 + frames * FRAME))


def semantic_driver(turn_model: bool = True, eagerness: str = "auto") -> Driver:
    d = Driver(turn_model=turn_model)
    session_update(
        d, audio=audio_input(turn_detection={"type": "semantic_vad", "eagerness": eagerness})
    )
    return d


def test_semantic_vad_pause_asks_the_turn_model_about_the_turn_so_far() -> None:
    d = semantic_driver()
    vad(d, 640, 0.0)
    vad(d, 320, 0.9)
    assert vad(d, PAUSE_FRAMES * FRAME, 0.0) == []
    (score,) = effects_of(d, ScoreTurn)
    (started,) = [e for e in d.log if e["type"] == "input_audio_buffer.speech_started"]
    assert score.item_id == started["item_id"]
    assert (score.start_ms, score.end_ms) == (640 - 300, 960 + PAUSE_FRAMES * FRAME)
    assert effects_of(semantic_driver(turn_model=False), ScoreTurn) == []


def test_semantic_vad_complete_turn_is_committed_and_answered_at_once() -> None:
    d = semantic_driver()
    (started,) = vad(d, 320, 0.9)
    vad(d, PAUSE_FRAMES * FRAME, 0.0)
    (score,) = effects_of(d, ScoreTurn)
    vad(d, 64, 0.0)
    events = d.feed(TurnScored(score.item_id, score.pause_id, 0.9))
    assert types(events) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    assert events[0]["audio_end_ms"] == 320 + PAUSE_FRAMES * FRAME + 64
    assert events[0]["item_id"] == started["item_id"]
    (commit,) = effects_of(d, CommitInputAudio)
    assert commit.end_ms == events[0]["audio_end_ms"]


def test_a_rescore_asks_for_a_score_of_the_longer_silence_and_can_end_the_turn() -> None:
    d = semantic_driver()
    vad(d, 320, 0.9)
    vad(d, PAUSE_FRAMES * FRAME, 0.0)
    (first,) = effects_of(d, ScoreTurn)
    assert d.feed(TurnScored(first.item_id, first.pause_id, 0.2)) == []
    d.effects.clear()
    assert vad(d, RESCORE_EVERY_MS, 0.0) == []  # sent nothing, asked for a score
    (again,) = effects_of(d, ScoreTurn)
    assert (again.item_id, again.pause_id, again.start_ms) == (
        first.item_id,
        first.pause_id,
        first.start_ms,
    )
    rescore_frames = -(-(PAUSE_MS + RESCORE_EVERY_MS) // FRAME)
    assert again.end_ms == first.end_ms + (rescore_frames - PAUSE_FRAMES) * FRAME
    events = d.feed(TurnScored(again.item_id, again.pause_id, 0.9))
    assert types(events)[:2] == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]


def test_semantic_vad_incomplete_or_stale_scores_send_nothing() -> None:
    d = semantic_driver(eagerness="high")
    vad(d, 320, 0.9)
    vad(d, PAUSE_FRAMES * FRAME, 0.0)
    (score,) = effects_of(d, ScoreTurn)
    assert d.feed(TurnScored(score.item_id, score.pause_id, 0.2)) == []
    assert d.feed(TurnScored(score.item_id, score.pause_id + 7, 0.99)) == []
    assert d.feed(TurnScored("item_other", score.pause_id, 0.99)) == []
    vad(d, 64, 0.9)  # speech resumes
    assert d.feed(TurnScored(score.item_id, score.pause_id, 0.99)) == []
    assert d.conn.input_state.value == "speech"
    # the incomplete turn ends after the high-eagerness maximum wait of silence
    frames = -(-SEMANTIC_MAX_WAIT_MS["high"] // FRAME)
    events = vad(d, frames * FRAME, 0.0)
    assert "input_audio_buffer.speech_stopped" in types(events)
