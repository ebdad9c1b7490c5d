"""What every telephony provider's adapter shares: its three routes and its media stream.

A provider (:class:`Provider`: ``twilio.py``, ``telnyx.py``) is reached at ``/{name}/...``:

- ``POST /{name}/voice``: the provider's call webhook. The request's signature is checked
  (when the provider's key is configured), the call is announced and decided
  (``phone.PhoneCalls.incoming``), and the decision is answered in the provider's markup: for
  an accepted call, a stream to ``wss://.../{name}/media/{call_id}/{token}`` (the token is
  one-time; the call id in the path and the ``X-Realtime-Call-Id`` header let a load
  balancer keep the call on its replica).
- ``/{name}/media/{call_id}/{token}`` (WebSocket): the media stream. The adapter parses each
  message into what happened (start, audio, mark, key, stop); outgoing media, marks and
  clears go through a bounded queue and one sender task (:class:`StreamLine`).
- ``POST /{name}/after/{call_id}``: requested by the provider once the server has closed the
  stream: a referred call's transfer, any other's hang-up.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from .phone import Decision, Outcome, PhoneCall, PhoneCalls, line_resampler
from .ports import Receive, Send

log = logging.getLogger("realtime.phone")

CLOSE_POLICY = 1008  #: a stream refused at its handshake
#: providers send 20 ms (160 bytes) of audio a message; anything far larger is not theirs
MAX_PAYLOAD = 8_000
MAX_MESSAGE = 16_384
#: outgoing messages queued for a stream (media, marks): ~8 s of audio
OUTGOING_QUEUE = 500

#: what a stream message says: ("start", stream id), ("audio", μ-law bytes), ("mark", name),
#: ("key", digit), ("stop", None); None for one that changes nothing
Parsed = tuple[str, Any] | None


class Provider(abc.ABC):
    """One telephony provider's formats. Parsers raise ``ValueError`` (or ``TypeError``,
    ``AttributeError``) on a malformed message, which is then dropped."""

    name = ""  #: the routes' prefix: ``/{name}/voice`` ...
    key_flag = ""  #: the flag that gives the key its webhooks are checked with

    @property
    @abc.abstractmethod
    def keyed(self) -> bool:
        """Whether a key to check the provider's signatures with is configured."""

    @property
    def media_path(self) -> str:
        return f"/{self.name}/media/"

    # --- the webhook side ----------------------------------------------------------------

    @abc.abstractmethod
    def verify(
        self, url: str, params: list[tuple[str, str]], body: bytes, headers: Mapping[str, str]
    ) -> bool | None:
        """Whether the provider signed this request to ``url``; None when no key to check
        it with is configured."""

    #: the webhook's account field, announced as this header
    account_header = ("X-Account", "AccountSid")

    def incoming(self, form: Mapping[str, str]) -> tuple[str, list[dict[str, str]]] | None:
        """The provider's call id and the SIP-like headers announced for the call (None:
        not a call webhook). Twilio's and TeXML's webhooks share their field names."""
        call_sid = form.get("CallSid", "")
        if not call_sid:
            return None
        header, field = self.account_header
        return call_sid, [
            {"name": "From", "value": form.get("From", "")},
            {"name": "To", "value": form.get("To", "")},
            {"name": "Call-ID", "value": call_sid},
            {"name": header, "value": form.get(field, "")},
        ]

    @abc.abstractmethod
    def answer(self, decision: Decision, stream_url: str, after_url: str) -> str:
        """The markup carrying out a decision (``stream_url`` for a connected call)."""

    @abc.abstractmethod
    def after(self, target: str | None) -> str:
        """The markup once the stream has closed: transfer to ``target``, or hang up."""

    # --- the stream side -----------------------------------------------------------------

    def parse(self, message: Mapping[str, Any]) -> Parsed:
        """One message from the provider: media, marks, key presses and stops are alike."""
        kind = message.get("event")
        if kind == "media":
            media = message.get("media") or {}
            if media.get("track", "inbound") not in ("inbound", "inbound_track"):
                return None
            return "audio", ulaw_payload(media)
        if kind == "mark":
            name = (message.get("mark") or {}).get("name")
            return ("mark", name) if isinstance(name, str) else None
        if kind == "dtmf":
            digit = (message.get("dtmf") or {}).get("digit")
            return ("key", digit) if isinstance(digit, str) else None
        if kind == "start":
            return self.start(message)
        if kind == "stop":
            return "stop", None
        if kind == "connected":
            return None
        return self.other(str(kind), message)

    @abc.abstractmethod
    def start(self, message: Mapping[str, Any]) -> Parsed:
        """The ``start`` message: ("start", stream id), or ("stop", None) for a stream the
        server cannot take (another audio format)."""

    def other(self, kind: str, message: Mapping[str, Any]) -> Parsed:
        """A message of another kind."""
        raise ValueError(f"an unknown {self.name} message {kind!r}")

    @abc.abstractmethod
    def frame(self, stream_id: str, kind: str, value: str | None) -> dict[str, Any]:
        """An outgoing message: ``kind`` is "media" (base64 μ-law), "mark" (a name), "clear"."""


def dial_target(target: str) -> tuple[str, str]:
    """A refer's ``tel:`` or ``sip:`` target as ("number", "+1...") or ("sip", "sip:...")."""
    if target.startswith("tel:"):
        return "number", "".join(c for c in target[4:] if c.isdigit() or c == "+")
    return "sip", target


def ulaw_payload(media: Mapping[str, Any]) -> bytes:
    """A media message's base64 μ-law, bounded."""
    payload = base64.b64decode(media.get("payload") or "")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a media payload of {len(payload)} bytes")
    return payload


# --- the HTTP routes --------------------------------------------------------------------------


def register(app: QuartTrio, phone: PhoneCalls, provider: Provider) -> None:
    settings = phone.settings
    warned: list[bool] = []
    name = provider.name

    def base_url() -> str:
        if settings.public_url:
            return settings.public_url.rstrip("/")
        proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0]
        return f"{proto.strip().lower()}://{request.host}"

    async def refused_signature() -> Response | None:
        """403 unless the provider signed the request (when its key is configured)."""
        form = await request.form
        params = [(key, value) for key in form for value in form.getlist(key)]
        query = request.query_string.decode("latin-1")
        url = base_url() + request.path + (f"?{query}" if query else "")
        raw = await request.get_data()
        body = raw if isinstance(raw, bytes) else raw.encode()
        headers = {key.lower(): value for key, value in request.headers.items()}
        verified = provider.verify(url, params, body, headers)
        if verified is None:
            if not warned:
                warned.append(True)
                log.warning(
                    "%s's requests are not verified: anyone who finds /%s/voice can place "
                    "calls on this server (set %s)",
                    name,
                    name,
                    provider.key_flag,
                )
            return None
        if verified:
            return None
        log.warning("refused a request to %s: bad signature", request.path)
        return Response("Invalid signature.", status=403, content_type="text/plain")

    def xml(text: str) -> Response:
        return Response(text, content_type="text/xml")

    async def voice() -> Response:
        refused = await refused_signature()
        if refused is not None:
            return refused
        call = provider.incoming(await request.form)
        if call is None:
            return Response("Not a call webhook.", status=400, content_type="text/plain")
        provider_call_id, sip_headers = call
        decision = await phone.incoming(name, sip_headers)
        outcome = decision.outcome.value
        log.info("%s call %s: %s (%s)", name, provider_call_id, outcome, decision.call_id)
        base = base_url()
        scheme, rest = base.split("://", 1)
        ws_base = ("wss" if scheme.lower() == "https" else "ws") + "://" + rest
        stream_url = f"{ws_base}{provider.media_path}{decision.call_id}/{decision.stream_token}"
        after_url = f"{base}/{name}/after/{decision.call_id}"
        response = xml(provider.answer(decision, stream_url, after_url))
        if decision.outcome is Outcome.CONNECT:
            response.headers["X-Realtime-Call-Id"] = decision.call_id
        return response

    async def after(call_id: str) -> Response:
        refused = await refused_signature()
        if refused is not None:
            return refused
        return xml(provider.after(phone.transfer_of(name, call_id)))

    app.add_url_rule(f"/{name}/voice", f"{name}_voice", voice, methods=["POST"])
    app.add_url_rule(f"/{name}/after/<call_id>", f"{name}_after", after, methods=["POST"])


# --- the media stream -------------------------------------------------------------------------


class StreamLine:
    """Outgoing stream messages, queued in the order the call's
    :class:`~realtime.phone_media.PhoneMedia` makes them and sent by :meth:`pump`. A stream
    that stops taking them (the queue full: several seconds of audio behind) ends its call."""

    def __init__(
        self, provider: Provider, send: Send, stream_id: str, stuck: Callable[[], None]
    ) -> None:
        self._provider = provider
        self._send = send
        self.stream_id = stream_id
        self._stuck = stuck
        self._out, self._queued = trio.open_memory_channel[str](OUTGOING_QUEUE)
        self.closed = False  #: the stream ended: nothing more is sent

    def _message(self, kind: str, value: str | None) -> None:
        if self.closed:
            return
        try:
            self._out.send_nowait(json.dumps(self._provider.frame(self.stream_id, kind, value)))
        except trio.WouldBlock:
            log.warning("stream %s stopped taking audio; ending its call", self.stream_id)
            self.closed = True
            self._stuck()

    def send_media(self, ulaw: bytes) -> None:
        self._message("media", base64.b64encode(ulaw).decode("ascii"))

    def send_mark(self, name: str) -> None:
        self._message("mark", name)

    def send_clear(self) -> None:
        self._message("clear", None)

    async def pump(self) -> None:
        async for text in self._queued:
            await self._send({"type": "websocket.send", "text": text})


class MediaStream:
    """One media stream, joined to the call its token was issued to."""

    def __init__(self, provider: Provider, call: PhoneCall, send: Send) -> None:
        self.provider = provider
        self.call = call
        self.send = send
        self.resampler = line_resampler()
        self.line: StreamLine | None = None
        self.bad_messages = 0

    def handle(self, message: Mapping[str, Any], nursery: trio.Nursery) -> bool:
        """One message from the provider; False when the stream has stopped."""
        event = message.get("event")
        if event == "media" and self.line is None:
            return True  # audio before the stream started: nothing to join it to yet
        if event == "start" and self.line is not None:
            raise ValueError("a second start")
        parsed = self.provider.parse(message)
        if parsed is None:
            return True
        kind, value = parsed
        call = self.call
        if kind == "audio" and self.line is not None:
            call.caller_ulaw(value, self.resampler)
        elif kind == "mark":
            call.phone_media.marked(value)
        elif kind == "key":
            call.key_pressed(value)
        elif kind == "start" and self.line is None:
            self.line = StreamLine(self.provider, self.send, str(value), call.hang_up)
            log.info("call %s: %s stream %s started", call.call_id, self.provider.name, value)
            call.started()
            nursery.start_soon(self.line.pump)
            nursery.start_soon(call.phone_media.pace, self.line)
        elif kind == "stop":
            log.info("call %s: the caller hung up (stream stopped)", call.call_id)
            return False
        return True


async def media_stream(
    phone: PhoneCalls,
    provider: Provider,
    scope: Mapping[str, Any],
    receive: Receive,
    send: Send,
) -> None:
    """The WebSocket at ``/{name}/media/{call_id}/{token}`` (raw ASGI, like ``/v1/realtime``)."""
    if (await receive())["type"] != "websocket.connect":
        return
    call_id, _, token = str(scope["path"])[len(provider.media_path) :].partition("/")
    call = phone.claim_stream(provider.name, call_id, token)
    if call is None or call.ended.is_set():
        log.warning("refused a %s media stream with an unknown or used token", provider.name)
        await send({"type": "websocket.close", "code": CLOSE_POLICY})
        return
    await send({"type": "websocket.accept"})
    stream = MediaStream(provider, call, send)
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
                except (
                    ValueError,
                    binascii.Error,
                    AttributeError,
                    TypeError,
                    RecursionError,
                    ArithmeticError,
                ):
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
