"""A live server on a free port, in a thread of its own, with the fake engines."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import numpy as np
import trio
import trio_websocket

from protocol.invariants import SequenceChecker
from realtime import AppSettings, Pipeline, PipelinePool, SessionOptions
from realtime.calls import CallSettings
from realtime.phone import PhoneSettings
from realtime.server import ServerThread
from tests.realtime.fakes import FakeLLM, FakeSTT, FakeTTS, FakeVAD
from tests.support import validate_with_sdk


def fake_pool(size: int = 1, transcription_sessions: int = 2, **llm: Any) -> PipelinePool:
    return PipelinePool(
        [
            Pipeline(index=i, vad=FakeVAD(), stt=FakeSTT(), llm=FakeLLM(**llm), tts=FakeTTS())
            for i in range(size)
        ],
        transcription_sessions,
    )


#: the server in a thread of its own, on a free loopback port
LiveServer = ServerThread


@contextmanager
def live_server(pool: PipelinePool | None = None, **session: Any) -> Iterator[LiveServer]:
    api_key = session.pop("api_key", None)
    calls = session.pop("calls", CallSettings(host_addresses=("127.0.0.1",)))
    phone = session.pop("phone", PhoneSettings())
    settings = AppSettings(
        api_key=api_key, session=SessionOptions(**session), calls=calls, phone=phone
    )
    server = LiveServer(pool or fake_pool(), settings).start()
    try:
        yield server
    finally:
        server.stop()


def health(server: LiveServer) -> dict[str, Any]:
    """The live server's ``GET /health``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=10) as reply:
        result: dict[str, Any] = json.load(reply)
    return result


def tone_pcm(ms: int, amplitude: float = 0.3) -> bytes:
    """``ms`` of a 300 Hz tone as 24 kHz PCM16 (the fake VAD hears it as speech)."""
    n = 24 * ms
    samples = amplitude * np.sin(2 * np.pi * 300 * np.arange(n) / 24_000)
    return (samples * 32767).astype("<i2").tobytes()


def silence_pcm(ms: int) -> bytes:
    return b"\x00\x00" * (24 * ms)


class Client:
    """A raw trio-websocket client that checks every server event it receives."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.checker = SequenceChecker()
        self.events: list[dict[str, Any]] = []
        self.created: dict[str, Any] = {}

    async def send(self, event: dict[str, Any] | str | bytes) -> None:
        await self.ws.send_message(event if isinstance(event, str | bytes) else json.dumps(event))

    async def update_session(self, kind: str = "realtime", **session: Any) -> dict[str, Any]:
        """``session.update`` and its ``session.updated``; returns the effective session."""
        await self.send({"type": "session.update", "session": {"type": kind, **session}})
        updated = await self.next()
        assert updated["type"] == "session.updated", updated
        return dict(updated["session"])

    async def user_text(self, text: str) -> None:
        """A user message item, as ``conversation.item.create``."""
        await self.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}],
                },
            }
        )

    async def append(self, pcm: bytes, chunk_ms: int = 20) -> None:
        step = 48 * chunk_ms
        for i in range(0, len(pcm), step):
            await self.send(
                {
                    "type": "input_audio_buffer.append",
                    "audio": base64.b64encode(pcm[i : i + step]).decode(),
                }
            )

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            event = json.loads(await self.ws.get_message())
        validate_with_sdk(event)
        self.checker.check(event)
        self.events.append(event)
        return event

    async def until(self, kind: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Events up to and including the next one of type ``kind``."""
        seen = []
        with trio.fail_after(timeout):
            while True:
                event = await self.next(timeout)
                seen.append(event)
                if event["type"] == kind:
                    return seen


@asynccontextmanager
async def session(server: LiveServer, query: str = "?model=gpt-realtime") -> AsyncIterator[Client]:
    """A checked client whose ``session.created`` has been read (``client.created``)."""
    async with connect(server, query=query) as ws:
        client = Client(ws)
        client.created = await client.next()
        assert client.created["type"] == "session.created"
        yield client


def connect(
    server: LiveServer,
    *,
    headers: list[tuple[str, str]] | None = None,
    subprotocols: list[str] | None = None,
    query: str = "?model=gpt-realtime",
) -> Any:
    """``async with connect(server) as ws:`` -- a raw WebSocket to the live server."""
    return trio_websocket.open_websocket_url(
        server.url + query, extra_headers=headers or [], subprotocols=subprotocols
    )
