"""Sans-IO state machine for the OpenAI Realtime API (GA): no I/O, no threads, no numpy."""

from . import effects, events, inputs
from .codec import encode_server_event, parse_client_event
from .connection import Output, RealtimeConnection
from .errors import IllegalTransition, ProtocolError
from .session import SessionConfig, TurnDetection, deep_merge
from .states import (
    INPUT_TRANSITIONS,
    PLAYOUT_TRANSITIONS,
    RESPONSE_TRANSITIONS,
    VOICE_TRANSITIONS,
    InputState,
    Phase,
    PlayoutState,
    VoiceState,
    advance,
)

__all__ = [
    "INPUT_TRANSITIONS",
    "PLAYOUT_TRANSITIONS",
    "RESPONSE_TRANSITIONS",
    "VOICE_TRANSITIONS",
    "IllegalTransition",
    "InputState",
    "Output",
    "Phase",
    "PlayoutState",
    "ProtocolError",
    "RealtimeConnection",
    "SessionConfig",
    "TurnDetection",
    "VoiceState",
    "advance",
    "deep_merge",
    "effects",
    "encode_server_event",
    "events",
    "inputs",
    "parse_client_event",
]
