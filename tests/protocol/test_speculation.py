"""protocol/speculation.py: speculative starts at a pause, held until the turn is confirmed.

A :class:`FakeShell` carries out the machine's effects the way the I/O shell does (at once, in
order): it reports the speculative transcript, satisfies commits from it when told to, and
records which responses were told to use held output. Every event goes through the Driver's
SDK validation and ``SequenceChecker``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from protocol import inputs as ins
from protocol.effects import (
    CancelEarlyTranscription,
    CancelResponse,
    CancelSpeculation,
    CommitInputAudio,
    StartResponse,
    StartSpeculation,
    TranscribeEarly,
)
from protocol.speculation import EARLY_TRANSCRIPT_MS, same_words
from protocol.turns import PAUSE_MS
from tests.protocol.steps import (
    SILENCE,
    SPEECH,
    audio_input,
    created_id,
    response_create,
    session_update,
    speak_audio,
    user_text,
    vad,
)
from tests.support import Driver, types

QUESTION = "What is the weather in Paris?"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
#: the frame (32 ms) at which PAUSE_MS of silence is reached
PAUSE_FRAMES_MS = -(-PAUSE_MS // 32) * 32


class FakeShell:
    """Runs a Driver and answers its transcription and speculation effects."""

    def __init__(
        self,
        *,
        speculation: bool = True,
        transcribe: Callable[[int, int], str] = lambda start, end: QUESTION,
        **driver: Any,
    ) -> None:
        self.d = Driver(speculation=speculation, **driver)
        self.transcribe = transcribe
        self.held: dict[str, StartSpeculation] = {}
        self.held_transcripts: dict[str, str] = {}
        self.cancelled: list[str] = []
        self.starts: list[StartResponse] = []
        self.auto_transcribe = True
        self._seen = len(self.d.effects)

    @property
    def log(self) -> list[dict[str, Any]]:
        return self.d.log

    def settle(self) -> list[dict[str, Any]]:
        """Carry out every effect not handled yet (and those their results cause)."""
        events: list[dict[str, Any]] = []
        while self._seen < len(self.d.effects):
            effect = self.d.effects[self._seen]
            self._seen += 1
            if isinstance(effect, StartSpeculation):
                self.held[effect.speculation_id] = effect
                text = self.transcribe(effect.start_ms, effect.end_ms)
                self.held_transcripts[effect.speculation_id] = text
                events += self.d.feed(ins.SpeculationTranscribed(effect.speculation_id, text))
            elif isinstance(effect, CancelSpeculation):
                self.cancelled.append(effect.speculation_id)
            elif isinstance(effect, CommitInputAudio) and self.auto_transcribe:
                if effect.speculation_id is not None:
                    text = self.held_transcripts[effect.speculation_id]
                else:
                    text = self.transcribe(effect.start_ms, effect.end_ms)
                seconds = (effect.end_ms - effect.start_ms) / 1000
                events += self.d.feed(ins.TranscriptDone(effect.item_id, text, seconds))
            elif isinstance(effect, StartResponse):
                self.starts.append(effect)
        return events

    def vad(self, ms: int, probability: float) -> list[dict[str, Any]]:
        return vad(self.d, ms, probability) + self.settle()

    def send(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        return self.d.send(event) + self.settle()

    def feed(self, result: ins.EngineResult) -> list[dict[str, Any]]:
        return self.d.feed(result) + self.settle()

    def effects(self, kind: type) -> list[Any]:
        return [e for e in self.d.effects if isinstance(e, kind)]

    def answer(self, response_id: str, pieces: tuple[str, ...] = ("Hi", " there.")) -> None:
        speak_audio(self.d, response_id, pieces)
        self.feed(ins.ResponseComplete(response_id, 10, 2))


def window(shell: FakeShell, silence_ms: int = 500, **session: Any) -> None:
    """server_vad with a silence window longer than the pause, and input transcription."""
    turn_detection = {"type": "server_vad", "silence_duration_ms": silence_ms}
    session_update(
        shell.d,
        audio=audio_input(
            transcription={"model": "whisper-1"}, turn_detection=turn_detection, **session
        ),
    )
    shell.settle()


_ID = re.compile(r"^(item|resp|call|conv|sess)_[0-9A-Za-z]{21}$")


def comparable(events: list[dict[str, Any]]) -> list[Any]:
    """The events without event ids, their other ids named by order of appearance."""
    names: dict[str, str] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items() if k != "event_id"}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and _ID.match(value):
            return names.setdefault(value, f"{value.split('_')[0]}#{len(names)}")
        return value

    return [walk(event) for event in events]


def both(flow: Callable[[FakeShell], None], **shell: Any) -> tuple[FakeShell, FakeShell]:
    """``flow`` with speculation on and off; their events must be the same."""
    on, off = FakeShell(speculation=True, **shell), FakeShell(speculation=False, **shell)
    flow(on)
    flow(off)
    assert comparable(on.log) == comparable(off.log)
    assert off.held == {} and off.cancelled == []
    return on, off


# --- starting, holding, abandoning -----------------------------------------------------------


def test_a_pause_starts_a_held_speculation_that_sends_nothing() -> None:
    shell = FakeShell()
    window(shell)
    user_text(shell.d, "Hello?")
    shell.vad(320, SILENCE)
    (started,) = shell.vad(320, SPEECH)
    before = len(shell.log)
    assert shell.vad(PAUSE_FRAMES_MS, SILENCE) == []
    assert len(shell.log) == before
    (speculation,) = shell.effects(StartSpeculation)
    assert speculation.item_id == started["item_id"]
    assert (speculation.start_ms, speculation.end_ms) == (320 - 300, 640 + PAUSE_FRAMES_MS)
    assert speculation.plan is not None
    assert [item.id for item in speculation.plan.context] == [shell.log[-2]["item"]["id"]]
    plan = speculation.response_plan("Hi")
    assert (plan.context[-1].id, plan.context[-1].text) == (started["item_id"], "Hi")
    assert shell.effects(StartResponse) == []


def test_no_speculation_when_the_turn_ends_no_later_than_the_pause() -> None:
    shell = FakeShell()
    window(shell, silence_ms=PAUSE_MS)
    shell.vad(320, SPEECH)
    assert types(shell.vad(320, SILENCE))[0] == "input_audio_buffer.speech_stopped"
    assert shell.effects(StartSpeculation) == []


def test_speculation_off_means_no_speculation_effects() -> None:
    shell = FakeShell(speculation=False)
    window(shell)
    shell.vad(320, SPEECH)
    shell.vad(600, SILENCE)
    assert shell.effects(StartSpeculation) == [] and shell.effects(CancelSpeculation) == []
    (commit,) = shell.effects(CommitInputAudio)
    assert commit.speculation_id is None


def test_no_speculation_without_turn_detection() -> None:
    shell = FakeShell()
    session_update(shell.d, audio=audio_input(turn_detection=None))
    shell.d.append(b"\0\0" * 24 * 600)
    shell.d.vad(0, 600, SPEECH)
    assert shell.effects(StartSpeculation) == []


def test_resumed_speech_abandons_the_speculation_with_nothing_sent() -> None:
    shell = FakeShell()
    window(shell)
    shell.vad(320, SPEECH)
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    (first,) = shell.effects(StartSpeculation)
    before = len(shell.log)
    assert shell.vad(64, SPEECH) == []
    assert len(shell.log) == before
    assert shell.cancelled == [first.speculation_id]
    # the next pause of the same turn may speculate again, on the longer span
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    second = shell.effects(StartSpeculation)[-1]
    assert second.speculation_id != first.speculation_id
    assert (second.item_id, second.start_ms) == (first.item_id, first.start_ms)
    assert second.end_ms > first.end_ms
    shell.vad(320, SILENCE)
    (commit,) = shell.effects(CommitInputAudio)
    assert commit.speculation_id == second.speculation_id
    (start,) = shell.effects(StartResponse)
    assert start.speculation_id == second.speculation_id


def test_one_speech_frame_after_the_pause_keeps_the_speculation_but_not_its_transcript() -> None:
    shell = FakeShell()
    window(shell)
    shell.vad(320, SPEECH)
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    (speculation,) = shell.effects(StartSpeculation)
    shell.vad(32, SPEECH)  # a click: too short to resume speech
    assert shell.cancelled == []
    shell.vad(512, SILENCE)
    (commit,) = shell.effects(CommitInputAudio)
    assert commit.speculation_id is None  # transcribed anew
    (start,) = shell.effects(StartResponse)
    assert start.speculation_id == speculation.speculation_id  # the same words: it stands


def test_different_words_at_confirmation_restart_the_response() -> None:
    def transcribe(start: int, end: int) -> str:
        return "I want to book a flight" if end < 700 else "I want to book a flight to Paris."

    shell = FakeShell(transcribe=transcribe)
    window(shell)
    shell.vad(320, SPEECH)
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    (speculation,) = shell.effects(StartSpeculation)
    shell.vad(32, SPEECH)
    shell.vad(512, SILENCE)
    (start,) = shell.effects(StartResponse)
    assert start.speculation_id is None
    assert shell.cancelled == [speculation.speculation_id]
    assert start.plan.context[-1].text == "I want to book a flight to Paris."


def test_held_response_stands_only_for_the_same_plan() -> None:
    shell = FakeShell()
    window(shell)
    shell.vad(320, SPEECH)
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    (speculation,) = shell.effects(StartSpeculation)
    shell.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Hi"}})
    shell.vad(320, SILENCE)
    (start,) = shell.effects(StartResponse)
    assert start.speculation_id is None
    assert start.plan.instructions == "Hi"
    assert shell.cancelled == [speculation.speculation_id]


def test_changed_transcription_settings_transcribe_the_turn_anew() -> None:
    shell = FakeShell()
    window(shell)
    shell.vad(320, SPEECH)
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    session_update(
        shell.d, audio=audio_input(transcription={"model": "whisper-1", "language": "en"})
    )
    shell.vad(320, SILENCE)
    (commit,) = shell.effects(CommitInputAudio)
    assert (commit.speculation_id, commit.transcription.language) == (None, "en")


@pytest.mark.parametrize(
    "interrupt",
    [
        {"type": "input_audio_buffer.clear"},
        {"type": "input_audio_buffer.commit"},
        {"type": "response.create"},
        {"type": "response.create", "response": {"conversation": "none"}},
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        },
    ],
    ids=["clear", "commit", "response", "out-of-band response", "vad off"],
)
def test_client_events_during_the_pause_abandon_the_speculation(interrupt: dict[str, Any]) -> None:
    shell = FakeShell()
    window(shell)
    shell.vad(320, SPEECH)
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    (speculation,) = shell.effects(StartSpeculation)
    shell.send(interrupt)
    assert shell.cancelled == [speculation.speculation_id]
    assert all(start.speculation_id is None for start in shell.effects(StartResponse))
    assert all(commit.speculation_id is None for commit in shell.effects(CommitInputAudio))


def test_no_speculation_while_a_response_is_in_progress() -> None:
    shell = FakeShell()
    session_update(
        shell.d,
        audio=audio_input(
            turn_detection={
                "type": "server_vad",
                "silence_duration_ms": 500,
                "interrupt_response": False,
            }
        ),
    )
    user_text(shell.d, "Tell me a story.")
    rid = created_id(response_create(shell.d))
    shell.settle()
    shell.vad(320, SPEECH)
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    assert shell.effects(StartSpeculation) == []
    shell.vad(320, SILENCE)  # the turn ends while the story goes on
    shell.answer(rid)
    starts = shell.effects(StartResponse)
    assert [s.speculation_id for s in starts] == [None, None]


def test_a_response_cancelled_before_it_starts_abandons_its_speculation() -> None:
    shell = FakeShell()
    window(shell)
    shell.auto_transcribe = False  # the transcript is still on its way
    shell.vad(320, SPEECH)
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    (speculation,) = shell.effects(StartSpeculation)
    events = shell.vad(320, SILENCE)
    assert "response.created" in types(events)
    shell.vad(320, SPEECH)  # barge-in: the waiting response is cancelled
    (cancel,) = shell.effects(CancelResponse)
    assert cancel.reason == "turn_detected"
    assert shell.cancelled == [speculation.speculation_id]


def test_transcription_session_speculates_the_transcript_only() -> None:
    shell = FakeShell(session_type="transcription")
    shell.send(
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {
                    "input": {
                        "transcription": {"model": "whisper-1"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                    }
                },
            },
        }
    )
    shell.vad(320, SPEECH)
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    (speculation,) = shell.effects(StartSpeculation)
    assert speculation.plan is None
    events = shell.vad(320, SILENCE)
    (commit,) = shell.effects(CommitInputAudio)
    assert commit.speculation_id == speculation.speculation_id
    assert shell.cancelled == []
    completed = [e for e in events if e["type"].endswith("transcription.completed")]
    assert completed[0]["transcript"] == QUESTION


def test_create_response_false_speculates_the_transcript_only() -> None:
    shell = FakeShell()
    session_update(
        shell.d,
        audio=audio_input(
            turn_detection={
                "type": "server_vad",
                "silence_duration_ms": 500,
                "create_response": False,
            }
        ),
    )
    shell.vad(320, SPEECH)
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    (speculation,) = shell.effects(StartSpeculation)
    assert speculation.plan is None
    shell.vad(320, SILENCE)
    assert shell.effects(CommitInputAudio)[0].speculation_id == speculation.speculation_id
    assert shell.effects(StartResponse) == [] and shell.cancelled == []


def test_create_response_switched_off_mid_pause_drops_the_held_response() -> None:
    shell = FakeShell()
    window(shell)
    shell.vad(320, SPEECH)
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    (speculation,) = shell.effects(StartSpeculation)
    session_update(
        shell.d,
        audio=audio_input(
            turn_detection={
                "type": "server_vad",
                "silence_duration_ms": 500,
                "create_response": False,
            }
        ),
    )
    shell.vad(320, SILENCE)
    (commit,) = shell.effects(CommitInputAudio)
    assert commit.speculation_id == speculation.speculation_id  # its transcript still stands
    assert shell.cancelled == [speculation.speculation_id]  # its response is not wanted
    assert shell.effects(StartResponse) == []


def test_late_speculative_transcript_is_ignored() -> None:
    shell = FakeShell()
    window(shell)
    shell.vad(320, SPEECH)
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    (speculation,) = shell.effects(StartSpeculation)
    shell.vad(64, SPEECH)
    assert shell.feed(ins.SpeculationTranscribed(speculation.speculation_id, "late")) == []
    assert shell.d.conn.speculation is None


# --- the same events with and without speculation --------------------------------------------


def voice_question(shell: FakeShell) -> None:
    window(shell)
    shell.vad(320, SILENCE)
    shell.vad(640, SPEECH)
    shell.vad(640, SILENCE)
    (start,) = shell.starts
    shell.answer(start.response_id, ("It is", " sunny."))


def resumed_question(shell: FakeShell) -> None:
    window(shell)
    shell.vad(640, SPEECH)
    shell.vad(320, SILENCE)  # a pause shorter than the window
    shell.vad(320, SPEECH)
    shell.vad(640, SILENCE)
    (start,) = shell.starts
    shell.answer(start.response_id)


def function_call_turn(shell: FakeShell) -> None:
    window(shell)
    shell.send({"type": "session.update", "session": {"type": "realtime", "tools": [WEATHER_TOOL]}})
    shell.vad(640, SPEECH)
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    before = len(shell.log)
    shell.vad(320, SILENCE)
    assert types(shell.log[before:])[0] == "input_audio_buffer.speech_stopped"
    (start,) = shell.starts
    shell.feed(ins.ToolCallOut(start.response_id, "call_1", "get_weather", '{"city": "Paris"}'))
    shell.feed(ins.ResponseComplete(start.response_id, 10, 5))
    shell.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        }
    )
    rid = created_id(shell.send({"type": "response.create"}))
    shell.answer(rid, ("Sunny.",))


def barge_in(shell: FakeShell) -> None:
    window(shell)
    shell.vad(640, SPEECH)
    shell.vad(640, SILENCE)
    (first,) = shell.starts
    speak_audio(shell.d, first.response_id)
    shell.vad(320, SPEECH)  # over the answer: it is cancelled
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    shell.vad(320, SILENCE)
    second = shell.starts[-1]
    assert second.response_id != first.response_id
    shell.answer(second.response_id)


def test_a_spoken_question_sends_the_same_events_with_and_without_speculation() -> None:
    on, off = both(voice_question)
    (start,) = on.starts
    assert start.speculation_id is not None and on.cancelled == []
    assert off.starts[0].speculation_id is None


def test_resumed_speech_sends_the_same_events_with_and_without_speculation() -> None:
    on, _ = both(resumed_question)
    first, second = on.effects(StartSpeculation)
    assert on.cancelled == [first.speculation_id]
    assert on.starts[0].speculation_id == second.speculation_id


def test_a_function_call_turn_sends_the_same_events_with_and_without_speculation() -> None:
    on, _ = both(function_call_turn)
    (speculation,) = on.effects(StartSpeculation)
    assert speculation.plan is not None and speculation.plan.tools == (WEATHER_TOOL,)
    # the held call is released with the confirmed response only
    assert on.starts[0].speculation_id == speculation.speculation_id
    stopped = types(on.log).index("input_audio_buffer.speech_stopped")
    assert types(on.log).index("response.function_call_arguments.done") > stopped


def test_barge_in_sends_the_same_events_with_and_without_speculation() -> None:
    on, _ = both(barge_in)
    assert [s.speculation_id is not None for s in on.starts] == [True, True]
    statuses = [e["response"]["status"] for e in on.log if e["type"] == "response.done"]
    assert statuses == ["cancelled", "completed"]


#: the frame (32 ms) at which EARLY_TRANSCRIPT_MS of silence is reached
EARLY_FRAMES_MS = -(-EARLY_TRANSCRIPT_MS // 32) * 32


def test_the_turn_is_transcribed_early_and_the_pause_takes_that_transcript() -> None:
    shell = FakeShell()
    window(shell)
    (started,) = shell.vad(320, SPEECH)
    shell.vad(EARLY_FRAMES_MS - 32, SILENCE)
    assert shell.effects(TranscribeEarly) == []
    shell.vad(32, SILENCE)
    (early,) = shell.effects(TranscribeEarly)
    assert early.item_id == started["item_id"]
    assert (early.start_ms, early.end_ms) == (0, 320 + EARLY_FRAMES_MS)
    assert early.transcription.logprobs is False
    shell.vad(PAUSE_FRAMES_MS - EARLY_FRAMES_MS, SILENCE)
    (speculation,) = shell.effects(StartSpeculation)
    assert speculation.early_id == early.early_id
    assert speculation.end_ms >= early.end_ms
    shell.vad(320, SILENCE)  # the turn ends: the early transcript was taken, nothing to drop
    assert shell.effects(TranscribeEarly) == [early]
    assert shell.effects(CancelEarlyTranscription) == []


def test_speech_coming_back_drops_the_early_transcript_and_the_next_silence_asks_again() -> None:
    shell = FakeShell()
    window(shell)
    shell.vad(320, SPEECH)
    shell.vad(EARLY_FRAMES_MS + 32, SILENCE)
    (first,) = shell.effects(TranscribeEarly)
    shell.vad(32, SPEECH)  # one frame: not a resumed turn, but the silence is over
    assert shell.effects(CancelEarlyTranscription) == [CancelEarlyTranscription(first.early_id)]
    shell.vad(PAUSE_FRAMES_MS, SILENCE)
    second = shell.effects(TranscribeEarly)[-1]
    assert second.early_id != first.early_id and second.end_ms > first.end_ms
    (speculation,) = shell.effects(StartSpeculation)
    assert speculation.early_id == second.early_id


def test_no_early_transcript_when_no_pause_would_speculate() -> None:
    off = FakeShell(speculation=False)
    window(off)
    off.vad(320, SPEECH)
    off.vad(600, SILENCE)
    short = FakeShell()
    window(short, silence_ms=PAUSE_MS)  # the turn ends at the pause: nothing to speculate
    short.vad(320, SPEECH)
    short.vad(320, SILENCE)
    assert off.effects(TranscribeEarly) == [] and short.effects(TranscribeEarly) == []


def test_changed_transcription_settings_keep_the_pause_from_the_early_transcript() -> None:
    shell = FakeShell()
    window(shell)
    shell.vad(320, SPEECH)
    shell.vad(EARLY_FRAMES_MS, SILENCE)
    (early,) = shell.effects(TranscribeEarly)
    session_update(
        shell.d, audio=audio_input(transcription={"model": "whisper-1", "language": "fr"})
    )
    shell.vad(PAUSE_FRAMES_MS - EARLY_FRAMES_MS, SILENCE)
    (speculation,) = shell.effects(StartSpeculation)
    assert speculation.early_id is None
    assert speculation.transcription.language == "fr" and early.transcription.language is None


def test_same_words_ignores_case_punctuation_and_whitespace() -> None:
    assert same_words("What is the weather in Paris?", "  what is the  weather in paris")
    assert not same_words("What is the weather in Paris?", "What is the weather in")
