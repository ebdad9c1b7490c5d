"""Every state of the protocol machine and every transition between them, in one place.

Four machines make up a connection's state; each is an enum of states and a table
``TRANSITIONS[state][trigger] -> next state``:

- the input audio buffer (:data:`INPUT_TRANSITIONS`): whether uncommitted audio is held and
  whether the VAD is inside speech;
- the voice in that audio (:data:`VOICE_TRANSITIONS`), as the turn detector
  (``turns.py``) follows it frame by frame: silence, the onset of speech, speech, a pause;
- each response (:data:`RESPONSE_TRANSITIONS`): waiting for its input, generating, done;
- a WebRTC call's output audio buffer (:data:`PLAYOUT_TRANSITIONS`): idle, queued, playing,
  run dry.

The modules that own each machine decide *which* trigger an event or a result fires; a state
changes only through :func:`advance`, which raises :class:`IllegalTransition` for a trigger
the table does not allow in the current state. Such a trigger is a bug in the caller (the
shell fed the machine something out of order), never bad client input: invalid client events
are refused earlier, with a ``ProtocolError``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

from .errors import IllegalTransition


class InputState(enum.Enum):
    EMPTY = "empty"  #: no uncommitted audio
    HAS_AUDIO = "has_audio"  #: uncommitted audio, no speech detected in it
    SPEECH = "speech"  #: the VAD is inside a speech segment


INPUT_TRANSITIONS: Mapping[InputState, Mapping[str, InputState]] = {
    InputState.EMPTY: {"append": InputState.HAS_AUDIO, "clear": InputState.EMPTY},
    InputState.HAS_AUDIO: {
        "append": InputState.HAS_AUDIO,
        "speech_started": InputState.SPEECH,
        "commit": InputState.EMPTY,
        "clear": InputState.EMPTY,
        "idle_timeout": InputState.EMPTY,
    },
    InputState.SPEECH: {
        "append": InputState.SPEECH,
        "speech_stopped": InputState.EMPTY,
        "commit": InputState.EMPTY,
        "clear": InputState.EMPTY,
        "vad_off": InputState.HAS_AUDIO,
    },
}


class VoiceState(enum.Enum):
    SILENCE = "silence"
    ONSET = "onset"  #: speech frames seen, not long enough yet
    SPEECH = "speech"
    PAUSE = "pause"  #: speech, then a short silence: the turn may be over


#: ``reset`` (the buffer was committed or cleared, or the turn ended) is allowed everywhere
VOICE_TRANSITIONS: Mapping[VoiceState, Mapping[str, VoiceState]] = {
    VoiceState.SILENCE: {"speech_frame": VoiceState.ONSET, "reset": VoiceState.SILENCE},
    VoiceState.ONSET: {
        "onset_lost": VoiceState.SILENCE,
        "speech_started": VoiceState.SPEECH,
        "reset": VoiceState.SILENCE,
    },
    VoiceState.SPEECH: {
        "paused": VoiceState.PAUSE,
        "turn_ended": VoiceState.SILENCE,
        "reset": VoiceState.SILENCE,
    },
    VoiceState.PAUSE: {
        "resumed": VoiceState.SPEECH,
        "turn_ended": VoiceState.SILENCE,
        "reset": VoiceState.SILENCE,
    },
}


class Phase(enum.Enum):
    """A response's phase."""

    WAITING_INPUT = "waiting_input"  #: created; waiting for transcripts of its context
    GENERATING = "generating"
    DONE = "done"


RESPONSE_TRANSITIONS: Mapping[Phase, Mapping[str, Phase]] = {
    Phase.WAITING_INPUT: {"start": Phase.GENERATING, "cancel": Phase.DONE, "fail": Phase.DONE},
    Phase.GENERATING: {
        "output": Phase.GENERATING,
        "complete": Phase.DONE,
        "cancel": Phase.DONE,
        "fail": Phase.DONE,
    },
    Phase.DONE: {},
}


class PlayoutState(enum.Enum):
    IDLE = "idle"  #: nothing queued
    QUEUED = "queued"  #: audio queued, not yet playing
    PLAYING = "playing"  #: audio playing out
    DRY = "dry"  #: the buffer ran dry before its response was done; more may come


PLAYOUT_TRANSITIONS: Mapping[PlayoutState, Mapping[str, PlayoutState]] = {
    PlayoutState.IDLE: {"queue": PlayoutState.QUEUED},
    PlayoutState.QUEUED: {
        "queue": PlayoutState.QUEUED,
        "start": PlayoutState.PLAYING,
        "clear": PlayoutState.IDLE,
    },
    PlayoutState.PLAYING: {
        "queue": PlayoutState.PLAYING,
        "dry": PlayoutState.DRY,
        "drain": PlayoutState.IDLE,
        "clear": PlayoutState.IDLE,
    },
    PlayoutState.DRY: {
        "queue": PlayoutState.QUEUED,
        "drain": PlayoutState.IDLE,
        "clear": PlayoutState.IDLE,
    },
}

#: every machine: its table and what its states are called in errors
MACHINES: Mapping[type[enum.Enum], tuple[Mapping[enum.Enum, Mapping[str, enum.Enum]], str]] = {
    InputState: (INPUT_TRANSITIONS, "state"),  # type: ignore[dict-item]
    VoiceState: (VOICE_TRANSITIONS, "state"),  # type: ignore[dict-item]
    Phase: (RESPONSE_TRANSITIONS, "phase"),  # type: ignore[dict-item]
    PlayoutState: (PLAYOUT_TRANSITIONS, "state"),  # type: ignore[dict-item]
}

State = TypeVar("State", InputState, VoiceState, Phase, PlayoutState)


def advance(state: State, trigger: str, subject: str) -> State:
    """The state that ``trigger`` leads to from ``state``, by its machine's table; an
    :class:`IllegalTransition` naming ``subject`` ("response resp_1", "playout", ...) when
    the table has no such transition."""
    table, noun = MACHINES[type(state)]
    try:
        return table[state][trigger]  # type: ignore[return-value]
    except KeyError:
        raise IllegalTransition(
            f"{subject}: {trigger!r} is not allowed in {noun} {state.value}"
        ) from None


__all__ = [
    "INPUT_TRANSITIONS",
    "MACHINES",
    "PLAYOUT_TRANSITIONS",
    "RESPONSE_TRANSITIONS",
    "VOICE_TRANSITIONS",
    "InputState",
    "Phase",
    "PlayoutState",
    "VoiceState",
    "advance",
]
