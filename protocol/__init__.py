"""Sans-IO state machine for the OpenAI Realtime API (GA): no I/O, no threads, no numpy."""

from . import effects, events, inputs
from .codec import encode_server_event, parse_client_event
from .connection import INPUT_TRANSITIONS, InputState, Output, RealtimeConnection
from .errors import IllegalTransition, ProtocolError
from .responses import RESPONSE_TRANSITIONS, Phase
from .session import SessionConfig, TurnDetection, deep_merge

__all__ = [
    "INPUT_TRANSITIONS",
    "RESPONSE_TRANSITIONS",
    "IllegalTransition",
    "InputState",
    "Output",
    "Phase",
    "ProtocolError",
    "RealtimeConnection",
    "SessionConfig",
    "TurnDetection",
    "deep_merge",
    "effects",
    "encode_server_event",
    "events",
    "inputs",
    "parse_client_event",
]
