"""protocol/states.py: every machine's table, and the one ``advance`` that walks them."""

from __future__ import annotations

import enum
from collections.abc import Mapping

import pytest

from protocol import IllegalTransition
from protocol.states import (
    INPUT_TRANSITIONS,
    MACHINES,
    PLAYOUT_TRANSITIONS,
    RESPONSE_TRANSITIONS,
    VOICE_TRANSITIONS,
    InputState,
    Phase,
    PlayoutState,
    VoiceState,
    advance,
)

#: each machine's state when it is created
INITIAL = {
    InputState: InputState.EMPTY,
    VoiceState: VoiceState.SILENCE,
    Phase: Phase.WAITING_INPUT,
    PlayoutState: PlayoutState.IDLE,
}


def triggers_of(table: Mapping[enum.Enum, Mapping[str, enum.Enum]]) -> set[str]:
    return {trigger for row in table.values() for trigger in row}


@pytest.mark.parametrize("machine", list(MACHINES), ids=lambda m: m.__name__)
def test_every_state_has_a_row_and_every_target_is_a_state(machine: type[enum.Enum]) -> None:
    table, _ = MACHINES[machine]
    assert set(table) == set(machine)
    for row in table.values():
        assert all(isinstance(target, machine) for target in row.values())


@pytest.mark.parametrize("machine", list(MACHINES), ids=lambda m: m.__name__)
def test_every_state_is_reachable_from_the_initial_one(machine: type[enum.Enum]) -> None:
    table, _ = MACHINES[machine]
    seen, frontier = {INITIAL[machine]}, [INITIAL[machine]]
    while frontier:
        for target in table[frontier.pop()].values():
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(machine)


@pytest.mark.parametrize("machine", list(MACHINES), ids=lambda m: m.__name__)
def test_advance_follows_the_table_and_refuses_everything_else(machine: type[enum.Enum]) -> None:
    table, noun = MACHINES[machine]
    for state in machine:
        for trigger in sorted(triggers_of(table)):
            if trigger in table[state]:
                assert advance(state, trigger, "subject") is table[state][trigger]
            else:
                expected = f"subject: '{trigger}' is not allowed in {noun} {state.value}"
                with pytest.raises(IllegalTransition) as refused:
                    advance(state, trigger, "subject")
                assert str(refused.value) == expected


def test_a_done_response_accepts_nothing() -> None:
    assert RESPONSE_TRANSITIONS[Phase.DONE] == {}
    for trigger in ("complete", "cancel", "fail"):
        assert RESPONSE_TRANSITIONS[Phase.GENERATING][trigger] is Phase.DONE


def test_the_voice_can_be_reset_in_any_state_and_a_turn_ends_only_from_speech() -> None:
    assert all(row["reset"] is VoiceState.SILENCE for row in VOICE_TRANSITIONS.values())
    ending = {state for state, row in VOICE_TRANSITIONS.items() if "turn_ended" in row}
    assert ending == {VoiceState.SPEECH, VoiceState.PAUSE}
    assert VOICE_TRANSITIONS[VoiceState.ONSET]["speech_started"] is VoiceState.SPEECH


def test_the_input_buffer_and_playout_clear_to_empty_from_every_state_with_something() -> None:
    assert all(row["clear"] is InputState.EMPTY for row in INPUT_TRANSITIONS.values())
    busy = [state for state in PlayoutState if state is not PlayoutState.IDLE]
    assert all(PLAYOUT_TRANSITIONS[state]["clear"] is PlayoutState.IDLE for state in busy)
