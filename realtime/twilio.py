"""Twilio: a phone number's calls as Realtime sessions, over bidirectional Media Streams.

Point the number's "A call comes in" webhook at ``POST /twilio/voice``. The routes:

- ``POST /twilio/voice``: answers with TwiML. An accepted call gets
  ``<Connect action=...><Stream url="wss://.../twilio/media/{call_id}/{token}"/></Connect>``
  (the token is one-time; Twilio's stream URLs take no query string; the call id in the path
  and the ``X-Realtime-Call-Id`` header let a load balancer keep a call on its replica); a
  rejected one ``<Reject>``; one
  the server cannot take (no free pipeline, draining, the application silent) a spoken
  sentence and ``<Hangup/>``.
- ``/twilio/media/{call_id}/{token}`` (WebSocket): Twilio's messages in (``connected``, ``start``,
  ``media``, ``mark``, ``dtmf``, ``stop``) and out (``media``, ``mark``, ``clear``);
  μ-law at 8 kHz both ways.
- ``POST /twilio/after/{call_id}``: the ``<Connect>`` verb's action, requested when the
  server closes the stream: a referred call's ``<Dial>``, any other ``<Hangup/>``.

With an auth token configured, both POST routes check ``X-Twilio-Signature``: base64
HMAC-SHA1, keyed with the token, of the URL Twilio requested followed by every form field's
name and value in name order.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape, quoteattr

import trio
from quart import Response, request
from quart_trio import QuartTrio

from .phone import Decision, Outcome, PhoneCall, PhoneCalls, line_resampler

log = logging.getLogger("realtime.twilio")

VOICE_PATH = "/twilio/voice"
MEDIA_PATH = "/twilio/media/"
AFTER_PATH = "/twilio/after/"
CLOSE_POLICY = 1008
#: Twilio sends 20 ms (160 bytes) of audio a message; anything far larger is not Twilio
MAX_PAYLOAD = 8_000
MAX_MESSAGE = 16_384
#: outgoing messages queued for a stream (media, marks): ~8 s of audio
OUTGOING_QUEUE = 500

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# --- signatures -------------------------------------------------------------------------------


def signature(url: str, params: list[tuple[str, str]], auth_token: str) -> str:
    """Twilio's ``X-Twilio-Signature`` of a request to ``url`` with form ``params``."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _url_variants(url: str) -> list[str]:
    """The URL as given, with its scheme's default port added, and with any port removed:
    Twilio is known to sign some requests either way."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    default = 443 if parts.scheme == "https" else 80
    with_port = parts._replace(netloc=f"{host}:{parts.port or default}")
    without = parts._replace(netloc=host)
    return list(dict.fromkeys([url, urlunsplit(with_port), urlunsplit(without)]))


def signature_ok(url: str, params: list[tuple[str, str]], auth_token: str, offered: str) -> bool:
    offered_bytes = offered.encode("utf-8", "replace")
    return any(
        hmac.compare_digest(signature(variant, params, auth_token).encode(), offered_bytes)
        for variant in _url_variants(url)
    )


# --- TwiML ------------------------------------------------------------------------------------


def twiml(body: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>'


def render(decision: Decision, base_url: str) -> str:
    """The TwiML that carries out an incoming call's decision."""
    if decision.outcome is Outcome.CONNECT:
        scheme, rest = base_url.split("://", 1)
        ws_base = ("wss" if scheme.lower() == "https" else "ws") + "://" + rest
        stream = quoteattr(f"{ws_base}{MEDIA_PATH}{decision.call_id}/{decision.stream_token}")
        action = quoteattr(f"{base_url}{AFTER_PATH}{decision.call_id}")
        call_id = quoteattr(decision.call_id)
        return twiml(
            f"<Connect action={action}><Stream url={stream}>"
            f'<Parameter name="call_id" value={call_id}/></Stream></Connect>'
        )
    if decision.outcome is Outcome.REJECT:
        reason = "busy" if decision.status_code in (486, 600) else "rejected"
        return twiml(f'<Reject reason="{reason}"/>')
    return twiml(f"<Say>{escape(decision.text)}</Say><Hangup/>")


def dial(target: str | None) -> str:
    """After the stream: transfer a referred call, hang up any other."""
    if target is None:
        return twiml("<Hangup/>")
    if target.startswith("tel:"):
        number = "".join(c for c in target[4:] if c.isdigit() or c == "+")
        return twiml(f"<Dial><Number>{escape(number)}</Number></Dial>")
    return twiml(f"<Dial><Sip>{escape(target)}</Sip></Dial>")


# --- HTTP routes ------------------------------------------------------------------------------


def register(app: QuartTrio, phone: PhoneCalls) -> None:
    settings = phone.settings

    warned: list[bool] = []

    def base_url() -> str:
        if settings.public_url:
            return settings.public_url.rstrip("/")
        proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0]
        return f"{proto.strip().lower()}://{request.host}"

    async def refused_signature() -> Response | None:
        """403 unless Twilio signed the request (when an auth token is configured)."""
        token = settings.twilio_auth_token
        if token is None:
            if not warned:
                warned.append(True)
                log.warning(
                    "Twilio's requests are not verified: anyone who finds %s can place calls "
                    "on this server (set --twilio_auth_token)",
                    VOICE_PATH,
                )
            return None
        form = await request.form
        params = [(name, value) for name in form for value in form.getlist(name)]
        query = request.query_string.decode("latin-1")
        url = base_url() + request.path + (f"?{query}" if query else "")
        offered = request.headers.get("X-Twilio-Signature", "")
        if offered and signature_ok(url, params, token, offered):
            return None
        log.warning("refused a request to %s: bad X-Twilio-Signature", request.path)
        return Response("Invalid X-Twilio-Signature.", status=403, content_type="text/plain")

    def xml(text: str) -> Response:
        return Response(text, content_type="text/xml")

    @app.post(VOICE_PATH)
    async def voice() -> Response:
        refused = await refused_signature()
        if refused is not None:
            return refused
        form = await request.form
        call_sid = form.get("CallSid", "")
        if not call_sid:
            return Response("CallSid is missing.", status=400, content_type="text/plain")
        sip_headers = [
            {"name": "From", "value": form.get("From", "")},
            {"name": "To", "value": form.get("To", "")},
            {"name": "Call-ID", "value": call_sid},
            {"name": "X-Twilio-AccountSid", "value": form.get("AccountSid", "")},
        ]
        decision = await phone.incoming("twilio", sip_headers)
        log.info("twilio call %s: %s (%s)", call_sid, decision.outcome.value, decision.call_id)
        response = xml(render(decision, base_url()))
        if decision.outcome is Outcome.CONNECT:
            response.headers["X-Realtime-Call-Id"] = decision.call_id
        return response

    @app.post(AFTER_PATH + "<call_id>")
    async def after(call_id: str) -> Response:
        refused = await refused_signature()
        if refused is not None:
            return refused
        return xml(dial(phone.transfer_of(call_id)))


# --- the media stream -------------------------------------------------------------------------


class TwilioLine:
    """Outgoing stream messages, queued in the order the call's
    :class:`~realtime.phone_media.PhoneMedia` makes them and sent by :meth:`pump`. A stream
    that stops taking them (the queue full: several seconds of audio behind) ends its call."""

    def __init__(self, send: Send, stream_sid: str, stuck: Callable[[], None]) -> None:
        self._send = send
        self.stream_sid = stream_sid
        self._stuck = stuck
        self._out, self._queued = trio.open_memory_channel[str](OUTGOING_QUEUE)
        self.closed = False  #: the stream ended: nothing more is sent

    def _message(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        message["streamSid"] = self.stream_sid
        try:
            self._out.send_nowait(json.dumps(message))
        except trio.WouldBlock:
            log.warning("stream %s stopped taking audio; ending its call", self.stream_sid)
            self.closed = True
            self._stuck()

    def send_media(self, ulaw: bytes) -> None:
        payload = base64.b64encode(ulaw).decode("ascii")
        self._message({"event": "media", "media": {"payload": payload}})

    def send_mark(self, name: str) -> None:
        self._message({"event": "mark", "mark": {"name": name}})

    def send_clear(self) -> None:
        self._message({"event": "clear"})

    async def pump(self) -> None:
        async for text in self._queued:
            await self._send({"type": "websocket.send", "text": text})


class MediaStream:
    """One Twilio media stream, joined to the call its token was issued to."""

    def __init__(self, call: PhoneCall, send: Send) -> None:
        self.call = call
        self.send = send
        self.resampler = line_resampler()
        self.line: TwilioLine | None = None
        self.bad_messages = 0

    def handle(self, message: Mapping[str, Any], nursery: trio.Nursery) -> bool:
        """One message from Twilio; False when the stream has stopped."""
        call, kind = self.call, message.get("event")
        if kind == "media" and self.line is not None:
            media = message.get("media") or {}
            if media.get("track", "inbound") in ("inbound", "inbound_track"):
                payload = base64.b64decode(media.get("payload") or "")
                if len(payload) > MAX_PAYLOAD:
                    raise ValueError(f"a media payload of {len(payload)} bytes")
                call.caller_ulaw(payload, self.resampler)
        elif kind == "mark":
            name = (message.get("mark") or {}).get("name")
            if isinstance(name, str):
                call.phone_media.marked(name)
        elif kind == "dtmf":
            digit = (message.get("dtmf") or {}).get("digit")
            if isinstance(digit, str):
                call.key_pressed(digit)
        elif kind == "start" and self.line is None:
            start = message.get("start") or {}
            fmt = start.get("mediaFormat") or {}
            if (fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels")) != (
                "audio/x-mulaw",
                8000,
                1,
            ):
                log.warning("call %s: unexpected media format %s", call.call_id, fmt)
                return False
            self.line = TwilioLine(self.send, str(start.get("streamSid") or ""), call.hang_up)
            log.info(
                "call %s: stream %s of twilio call %s started",
                call.call_id,
                self.line.stream_sid,
                start.get("callSid"),
            )
            call.started()
            nursery.start_soon(self.line.pump)
            nursery.start_soon(call.phone_media.pace, self.line)
        elif kind == "stop":
            log.info("call %s: the caller hung up (stream stopped)", call.call_id)
            return False
        elif kind != "connected":
            self.bad_messages += 1
        return True


async def media_stream(
    phone: PhoneCalls, scope: Mapping[str, Any], receive: Receive, send: Send
) -> None:
    """The WebSocket at ``/twilio/media/{call_id}/{token}`` (raw ASGI, like ``/v1/realtime``)."""
    if (await receive())["type"] != "websocket.connect":
        return
    call_id, _, token = str(scope["path"])[len(MEDIA_PATH) :].partition("/")
    call = phone.claim_stream(call_id, token)
    if call is None or call.ended.is_set():
        log.warning("refused a media stream with an unknown or used token")
        await send({"type": "websocket.close", "code": CLOSE_POLICY})
        return
    await send({"type": "websocket.accept"})
    stream = MediaStream(call, send)
    disconnected = False
    try:
        async with trio.open_nursery() as nursery:

            async def end_with_call() -> None:
                await call.ended.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(end_with_call)
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    disconnected = True
                    break
                if message["type"] != "websocket.receive":
                    continue
                try:
                    text = message.get("text") or message.get("bytes") or ""
                    if len(text) > MAX_MESSAGE:
                        raise ValueError(f"a message of {len(text)} characters")
                    parsed = json.loads(text)
                    if not isinstance(parsed, dict):
                        raise TypeError("not a JSON object")
                    if not stream.handle(parsed, nursery):
                        break
                except (ValueError, binascii.Error, AttributeError, TypeError, RecursionError):
                    stream.bad_messages += 1
            nursery.cancel_scope.cancel()
    finally:
        call.hang_up()
        if stream.line is not None:
            stream.line.closed = True
        if stream.bad_messages:
            log.warning("call %s: %d unreadable stream messages", call.call_id, stream.bad_messages)
    if not disconnected:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await send({"type": "websocket.close", "code": 1000})
