"""Steps of a conversation told to a :class:`~tests.support.Driver`, shared by the protocol tests.

Every event these steps make the machine emit goes through the Driver's SDK validation and
``SequenceChecker``, so a flow test only has to assert what is particular to it.
"""

from __future__ import annotations

import json
from typing import Any

from protocol import RealtimeConnection
from protocol import inputs as ins
from protocol.effects import StartResponse
from tests.support import Driver, pcm_ms

Wire = dict[str, Any]

#: VAD speech probabilities well above and below the default threshold (0.5)
SPEECH, SILENCE = 0.9, 0.0


def message(role: str, text: str, **fields: Any) -> Wire:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}], **fields}


def session_update(d: Driver, event_id: str | None = None, **session: Any) -> list[Wire]:
    event: Wire = {"type": "session.update", "session": {"type": "realtime", **session}}
    if event_id is not None:
        event["event_id"] = event_id
    return d.send(event)


def audio_input(**fields: Any) -> Wire:
    """``session.audio.input`` settings."""
    return {"input": fields}


def create_item(d: Driver, item: Wire, **extra: Any) -> list[Wire]:
    return d.send({"type": "conversation.item.create", "item": item, **extra})


def user_text(d: Driver, text: str = "Hello?", **item: Any) -> list[Wire]:
    return create_item(d, message("user", text, **item))


def response_create(d: Driver, event_id: str | None = None, **response: Any) -> list[Wire]:
    event: Wire = {"type": "response.create"}
    if response:
        event["response"] = response
    if event_id is not None:
        event["event_id"] = event_id
    return d.send(event)


def created_id(events: list[Wire]) -> str:
    """The id of the one response created in ``events``."""
    (rid,) = [e["response"]["id"] for e in events if e["type"] == "response.created"]
    return rid


def effects_of(d: Driver, kind: type) -> list[Any]:
    return [e for e in d.effects if isinstance(e, kind)]


def start_of(d: Driver, response_id: str) -> StartResponse:
    (start,) = [e for e in effects_of(d, StartResponse) if e.response_id == response_id]
    return start


def text_turn(d: Driver, text: str = "Hello?", **response: Any) -> str:
    """A user text item and ``response.create``; returns the started response's id."""
    user_text(d, text)
    rid = created_id(response_create(d, **response))
    start_of(d, rid)
    return rid


def speak_audio(
    d: Driver, rid: str, pieces: tuple[str, ...] = ("Hi", " there."), chunk_ms: int = 20
) -> list[Wire]:
    """One ``AudioOut`` of ``chunk_ms`` per transcript piece."""
    out: list[Wire] = []
    for piece in pieces:
        out += d.feed(ins.AudioOut(rid, pcm_ms(chunk_ms), piece))
    return out


def vad(d: Driver, ms: int, probability: float) -> list[Wire]:
    """Append ``ms`` of 24 kHz PCM16 and feed VAD frames over it at one speech probability."""
    start = int(d.conn.timeline_ms)
    d.append(pcm_ms(ms))
    return d.vad(start, start + ms, probability)


def voice_turn(d: Driver, speech_ms: int = 320, silence_ms: int = 320) -> list[Wire]:
    """Speech then silence through server VAD: the events of a whole spoken user turn."""
    return vad(d, speech_ms, SPEECH) + vad(d, silence_ms, SILENCE)


def state_of(conn: RealtimeConnection) -> tuple[Any, ...]:
    """Everything a rejected client event must leave as it was."""
    return (
        json.dumps(conn.session.to_wire(), sort_keys=True),
        tuple(json.dumps(item.to_wire(), sort_keys=True) for item in conn.conversation),
        conn.input_state,
        conn.timeline_ms,
        conn.buffer_start_ms,
        conn.speech_item_id,
        tuple((rid, run.phase, len(run.output)) for rid, run in conn.responses.items()),
        conn.default_response_id,
        frozenset(conn.pending_transcripts),
    )
