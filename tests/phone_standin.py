"""Stand-ins for a telephony provider's side of a phone call, written from the providers'
documented formats: Twilio's (:class:`TwilioStandIn`) and Telnyx's (:class:`TelnyxStandIn`,
its TeXML webhook and Media Streaming frames, the same behaviour otherwise).

It does what Twilio does with a number whose voice webhook points at the server: POSTs the
webhook (form fields ``CallSid``, ``AccountSid``, ``From``, ``To``, ``CallStatus``, signed
with ``X-Twilio-Signature`` when it has an auth token), reads the TwiML, opens the
``<Connect><Stream>`` WebSocket, sends ``connected`` and ``start`` (μ-law, 8000 Hz, mono),
streams the caller's audio as ``media`` messages in 20 ms frames in real time, and plays the
server's audio as a phone would: in order, in real time, echoing each ``mark`` once the audio
before it has played (at once when nothing is buffered), and on ``clear`` dropping the buffer
and echoing the marks still in it. Key presses are ``dtmf`` messages, hanging up is ``stop``;
when the server closes the stream, the ``<Connect>`` action URL is requested as Twilio does.

asyncio, for tests and ``scripts/bench_phone.py`` (the server runs in a thread of its own).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import websockets

RATE = 8_000
FRAME = 160  #: 20 ms of μ-law


def twilio_signature(url: str, params: dict[str, str], auth_token: str) -> str:
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(
        hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    ).decode()


def ulaw(samples: np.ndarray) -> bytes:
    """float32 at 8 kHz -> G.711 μ-law (the standard segment encoding, written out here so the
    stand-in does not share the server's codec)."""
    pcm = np.clip(samples, -1, 1) * 32767
    sign = np.where(pcm < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(pcm).astype(np.int32) + 0x84, 0x7FFF)
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def ulaw_energy(data: bytes) -> float:
    """RMS of μ-law bytes (decoded the standard way)."""
    u = ~np.frombuffer(data, np.uint8).astype(np.int32) & 0xFF
    exponent, mantissa = (u >> 4) & 7, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    values = np.where(u & 0x80, -magnitude, magnitude) / 32768
    return float(np.sqrt(np.mean(values**2))) if len(values) else 0.0


def tone(ms: int, amplitude: float = 0.3, hz: float = 300.0) -> bytes:
    n = RATE * ms // 1000
    return ulaw(amplitude * np.sin(2 * np.pi * hz * np.arange(n) / RATE))


def silence(ms: int) -> bytes:
    return b"\xff" * (RATE * ms // 1000)


class TwiML:
    """What the voice webhook answered."""

    def __init__(self, text: str) -> None:
        self.text = text
        root = ET.fromstring(text)
        assert root.tag == "Response", text
        self.verbs = [child.tag for child in root]
        self.stream_url = self.action_url = None
        self.parameters: dict[str, str] = {}
        self.reject_reason = self.said = self.redirect_url = None
        for child in root:
            if child.tag == "Connect":
                self.action_url = child.get("action")
                stream = child.find("Stream")
                assert stream is not None
                self.stream_url = stream.get("url")
                for parameter in stream.findall("Parameter"):
                    self.parameters[parameter.get("name") or ""] = parameter.get("value") or ""
            elif child.tag == "Reject":
                self.reject_reason = child.get("reason", "rejected")
            elif child.tag == "Say":
                self.said = child.text
            elif child.tag == "Redirect":
                self.redirect_url = child.text


class TwilioStandIn:
    """One call, as Twilio carries it."""

    def __init__(
        self, base_url: str, auth_token: str | None = None, voice_path: str = "/twilio/voice"
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth_token = auth_token
        self.voice_path = voice_path
        self.call_sid = "CA" + secrets.token_hex(16)
        self.account_sid = "AC" + secrets.token_hex(16)
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.ws: Any = None
        self.sequence = 0
        self.chunks_sent = 0
        #: the server's audio as it reached us, and as the caller heard it
        self.received = bytearray()
        self.heard = bytearray()
        self.buffer: deque[tuple[str, Any]] = deque()  #: ("audio", bytes) | ("mark", name)
        self.marks_echoed: list[str] = []
        self.clears: list[float] = []  #: monotonic times a clear arrived
        self.heard_at_clear: list[int] = []  #: bytes heard when each clear arrived
        self.media_times: list[float] = []  #: monotonic time each media message arrived
        self.messages: list[dict[str, Any]] = []
        self.arrivals: list[float] = []  #: monotonic time each message arrived
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._audio_ready = asyncio.Event()

    # --- HTTP ----------------------------------------------------------------------------

    async def post(
        self, url: str, form: dict[str, str], signature: str | bytes | None = None
    ) -> httpx.Response:
        body = urlencode(form)
        headers: dict[str, str | bytes] = {"content-type": "application/x-www-form-urlencoded"}
        headers.update(self.sign(url, form, body, signature))
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.post(url, content=body.encode(), headers=headers)

    def sign(
        self, url: str, form: dict[str, str], body: str, signature: str | bytes | None
    ) -> dict[str, str | bytes]:
        """The request's signature headers (``signature`` given: that one, as it is)."""
        if signature is not None:
            return {"X-Twilio-Signature": signature}
        if self.auth_token is not None:
            return {"X-Twilio-Signature": twilio_signature(url, form, self.auth_token)}
        return {}

    def call_form(self) -> dict[str, str]:
        return {
            "CallSid": self.call_sid,
            "AccountSid": self.account_sid,
            "From": "+15551230000",
            "To": "+15557650000",
            "CallStatus": "ringing",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }

    async def ring(self, signature: str | bytes | None = None) -> httpx.Response:
        """The voice webhook, as Twilio requests it when the number is called."""
        return await self.post(self.base_url + self.voice_path, self.call_form(), signature)

    async def after(self, twiml: TwiML) -> TwiML:
        """The <Connect> action, requested once the server closed the stream."""
        assert twiml.action_url is not None
        return await self.follow(twiml.action_url)

    async def follow(self, url: str) -> TwiML:
        form = {**self.call_form(), "CallStatus": "in-progress"}
        response = await self.post(url, form)
        assert response.status_code == 200, response.text
        return TwiML(response.text)

    # --- the media stream ----------------------------------------------------------------

    def _next(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    async def open_stream(self, twiml: TwiML) -> None:
        assert twiml.stream_url is not None
        self.ws = await websockets.connect(twiml.stream_url)
        await self.ws.send(json.dumps(self.connected_frame()))
        await self.ws.send(json.dumps(self.start_frame(twiml)))
        self._tasks = [
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._play()),
        ]

    # the provider's frames (a subclass speaks another provider's dialect)

    def connected_frame(self) -> dict[str, Any]:
        return {"event": "connected", "protocol": "Call", "version": "1.0.0"}

    def start_frame(self, twiml: TwiML) -> dict[str, Any]:
        return {
            "event": "start",
            "sequenceNumber": self._next(),
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": twiml.parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": self.stream_sid,
        }

    def media_frame(self, chunk: bytes, number: int) -> dict[str, Any]:
        return {
            "event": "media",
            "sequenceNumber": self._next(),
            "media": {
                "track": "inbound",
                "chunk": str(number),
                "timestamp": str((number - 1) * 20),
                "payload": base64.b64encode(chunk).decode(),
            },
            "streamSid": self.stream_sid,
        }

    def dtmf_frame(self, digit: str) -> dict[str, Any]:
        return {
            "event": "dtmf",
            "streamSid": self.stream_sid,
            "sequenceNumber": self._next(),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }

    def stop_frame(self) -> dict[str, Any]:
        return {
            "event": "stop",
            "sequenceNumber": self._next(),
            "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            "streamSid": self.stream_sid,
        }

    def mark_frame(self, name: str) -> dict[str, Any]:
        return {
            "event": "mark",
            "sequenceNumber": self._next(),
            "streamSid": self.stream_sid,
            "mark": {"name": name},
        }

    def check_outgoing(self, message: dict[str, Any]) -> None:
        """What the provider requires of the server's frames."""
        assert message.get("streamSid") == self.stream_sid, message

    async def speak(self, audio: bytes, realtime: bool = True) -> None:
        """The caller's audio, in 20 ms media messages at the pace of speech."""
        started = time.monotonic()
        for i, offset in enumerate(range(0, len(audio), FRAME)):
            if realtime:
                await asyncio.sleep(max(0.0, started + i * 0.02 - time.monotonic()))
            await self._send_media(audio[offset : offset + FRAME])

    def microphone(self) -> None:
        """Stream the caller's line without pause from now on, as a phone does: what
        :meth:`say` queues, else silence, 20 ms a frame in real time."""
        self._mic: deque[tuple[bytes, asyncio.Future[tuple[float, float, int]]]] = deque()
        self._tasks.append(asyncio.create_task(self._microphone()))

    async def say(self, audio: bytes) -> tuple[float, float, int]:
        """Queue ``audio`` on the open microphone; returns once it is sent, with the
        monotonic times its first and last frames were sent, and how much of the server's
        audio the caller had heard when the first went (bytes)."""
        done = asyncio.get_running_loop().create_future()
        self._mic.append((audio, done))
        return await done

    async def _microphone(self) -> None:
        clock = time.monotonic()
        current: bytes = b""
        offset, first, heard = 0, 0.0, 0
        future: asyncio.Future[tuple[float, float, int]] | None = None
        while True:
            if future is None and self._mic:
                current, future = self._mic.popleft()
                offset, first = 0, 0.0
            if future is not None:
                chunk = current[offset : offset + FRAME]
                offset += FRAME
            else:
                chunk = silence(20)
            await self._send_media(chunk)
            now = time.monotonic()
            if future is not None:
                if not first:
                    first, heard = now, len(self.heard)
                if offset >= len(current):
                    future.set_result((first, now, heard))
                    future = None
            clock += 0.02
            await asyncio.sleep(max(0.0, clock - time.monotonic()))

    async def _send_media(self, chunk: bytes) -> None:
        self.chunks_sent += 1
        await self.ws.send(json.dumps(self.media_frame(chunk, self.chunks_sent)))

    async def press(self, digit: str) -> None:
        await self.ws.send(json.dumps(self.dtmf_frame(digit)))

    async def hang_up(self) -> None:
        await self.ws.send(json.dumps(self.stop_frame()))
        await self.ws.close()
        await self.end()

    async def end(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _echo(self, name: str) -> None:
        self.marks_echoed.append(name)
        try:
            await self.ws.send(json.dumps(self.mark_frame(name)))
        except websockets.ConnectionClosed:
            pass

    async def _receive(self) -> None:
        try:
            async for text in self.ws:
                message = json.loads(text)
                self.arrivals.append(time.monotonic())
                self.messages.append(message)
                self.check_outgoing(message)
                kind = message["event"]
                if kind == "media":
                    audio = base64.b64decode(message["media"]["payload"])
                    self.media_times.append(time.monotonic())
                    self.received += audio
                    self.buffer.append(("audio", audio))
                    self._audio_ready.set()
                elif kind == "mark":
                    if self.buffer:
                        self.buffer.append(("mark", message["mark"]["name"]))
                    else:
                        await self._echo(message["mark"]["name"])
                elif kind == "clear":
                    self.clears.append(time.monotonic())
                    self.heard_at_clear.append(len(self.heard))
                    remaining = [value for what, value in self.buffer if what == "mark"]
                    self.buffer.clear()
                    for name in remaining:
                        await self._echo(name)
                else:
                    raise AssertionError(f"Twilio refuses {kind!r} on a bidirectional stream")
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()

    async def _play(self) -> None:
        """The phone's speaker: the buffer in order at 8000 samples a second."""
        clock = time.monotonic()
        while True:
            if not self.buffer:
                self._audio_ready.clear()
                await self._audio_ready.wait()
                clock = max(clock, time.monotonic())
            what, value = self.buffer.popleft()
            if what == "mark":
                await self._echo(value)
                continue
            for offset in range(0, len(value), FRAME):  # 20 ms at a time: a clear cuts in
                piece = value[offset : offset + FRAME]
                self.heard += piece
                clock += len(piece) / RATE
                await asyncio.sleep(max(0.0, clock - time.monotonic()))


class TelnyxStandIn(TwilioStandIn):
    """One call, as Telnyx carries it: a TeXML application's webhook (signed with Ed25519 when
    it has a private key), and Telnyx's Media Streaming frames (snake_case, ``stream_id`` on
    every frame it sends, none on the server's)."""

    def __init__(self, base_url: str, private_key: Any = None) -> None:
        super().__init__(base_url, voice_path="/telnyx/voice")
        self.private_key = private_key
        self.clock_skew_s = 0.0  #: how far off our clock is when signing
        self.call_sid = "v3:" + secrets.token_urlsafe(24)
        self.stream_sid = str(uuid.uuid4()).upper()

    def sign(
        self, url: str, form: dict[str, str], body: str, signature: str | bytes | None
    ) -> dict[str, str | bytes]:
        timestamp = str(int(time.time() + self.clock_skew_s))
        if signature is not None:
            return {"telnyx-timestamp": timestamp, "telnyx-signature-ed25519": signature}
        if self.private_key is None:
            return {}
        signed = self.private_key.sign(f"{timestamp}|{body}".encode())
        return {
            "telnyx-timestamp": timestamp,
            "telnyx-signature-ed25519": base64.b64encode(signed).decode(),
        }

    def call_form(self) -> dict[str, str]:
        return {
            "AccountSid": str(uuid.uuid4()),
            "CallSid": self.call_sid,
            "CallSidLegacy": "v3:" + secrets.token_hex(8),
            "From": "+15551230000",
            "To": "+15557650000",
            "ConnectionId": "1234567890",
            "ApiVersion": "2010-04-01",
            "CallStatus": "ringing",
        }

    async def after(self, twiml: TwiML) -> TwiML:
        """The <Redirect> after <Connect>, followed once the stream has stopped."""
        assert twiml.redirect_url is not None
        return await self.follow(twiml.redirect_url)

    def connected_frame(self) -> dict[str, Any]:
        return {"event": "connected", "version": "1.0.0"}

    def start_frame(self, twiml: TwiML) -> dict[str, Any]:
        return {
            "event": "start",
            "sequence_number": self._next(),
            "stream_id": self.stream_sid,
            "start": {
                "user_id": str(uuid.uuid4()),
                "call_control_id": self.call_sid,
                "call_session_id": str(uuid.uuid4()),
                "from": "+15551230000",
                "to": "+15557650000",
                "custom_parameters": twiml.parameters,
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
            },
        }

    def media_frame(self, chunk: bytes, number: int) -> dict[str, Any]:
        return {
            "event": "media",
            "sequence_number": self._next(),
            "stream_id": self.stream_sid,
            "media": {
                "track": "inbound",
                "chunk": str(number),
                "timestamp": str((number - 1) * 20),
                "payload": base64.b64encode(chunk).decode(),
            },
        }

    def dtmf_frame(self, digit: str) -> dict[str, Any]:
        return {
            "event": "dtmf",
            "stream_id": self.stream_sid,
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sequence_number": self._next(),
            "dtmf": {"digit": digit},
        }

    def stop_frame(self) -> dict[str, Any]:
        return {
            "event": "stop",
            "sequence_number": self._next(),
            "stream_id": self.stream_sid,
            "stop": {"user_id": str(uuid.uuid4()), "call_control_id": self.call_sid},
        }

    def mark_frame(self, name: str) -> dict[str, Any]:
        return {
            "event": "mark",
            "stream_id": self.stream_sid,
            "sequence_number": self._next(),
            "mark": {"name": name},
        }

    def check_outgoing(self, message: dict[str, Any]) -> None:
        assert "streamSid" not in message and "stream_id" not in message, message
