"""Shared test helpers: SDK validation of server events and a driver for the protocol machine."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from protocol import RealtimeConnection, encode_server_event
from protocol import inputs as ins
from protocol.effects import Effect
from protocol.invariants import SequenceChecker

SERVER_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
SHARED = Path(__file__).resolve().parents[2] / "shared"
TRACES = Path(__file__).resolve().parent / "data" / "traces"


def validate_with_sdk(wire: dict[str, Any]) -> Any:
    """Parse a server event with the official SDK's union, as the Agents SDKs do."""
    model = SERVER_EVENT_ADAPTER.validate_python(wire)
    assert model.type == wire["type"]
    return model


def pcm_ms(ms: int) -> bytes:
    """``ms`` of 24 kHz PCM16 silence."""
    return b"\x00\x00" * (24 * ms)


class Driver:
    """Runs a RealtimeConnection, checking every event it emits on the way out."""

    def __init__(self, **kwargs: Any) -> None:
        self.conn = RealtimeConnection(**kwargs)
        self.checker = SequenceChecker()
        self.log: list[dict[str, Any]] = []
        self.effects: list[Effect] = []
        self._take(self.conn.start())

    def _take(self, output: Any) -> list[dict[str, Any]]:
        wires = []
        for event in output.events:
            wire = json.loads(encode_server_event(event))
            validate_with_sdk(wire)
            self.checker.check(wire)
            wires.append(wire)
        self.log += wires
        self.effects += output.effects
        self.last_effects = list(output.effects)
        return wires

    def send(self, event: dict[str, Any] | str | bytes) -> list[dict[str, Any]]:
        frame = event if isinstance(event, str | bytes) else json.dumps(event)
        return self._take(self.conn.receive_frame(frame))

    def feed(self, result: ins.EngineResult) -> list[dict[str, Any]]:
        return self._take(self.conn.feed(result))

    def append(self, audio: bytes) -> list[dict[str, Any]]:
        return self.send(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}
        )

    def vad(self, start_ms: int, end_ms: int, probability: float) -> list[dict[str, Any]]:
        """VAD frames of 32 ms covering [start_ms, end_ms) with one probability."""
        out = []
        t = start_ms
        while t < end_ms:
            out += self.feed(ins.VadFrame(end_ms=t + 32, duration_ms=32, probability=probability))
            t += 32
        return out

    def effect(self, kind: type) -> Any:
        found = [e for e in self.last_effects if isinstance(e, kind)]
        assert len(found) == 1, f"expected one {kind.__name__} in {self.last_effects}"
        return found[0]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]
