"""Phone calls: a call that a telephony provider streams to the server, with call control.

The flow, the same for every provider (``twilio.py`` is Twilio's adapter):

1. The provider asks what to do with an incoming call (Twilio: its voice webhook). The server
   takes a pipeline for it (none free, or draining: a spoken refusal) and gives it a
   ``call_id``. With a call webhook configured it tells the application
   (``realtime.call.incoming``, signed, OpenAI's payload shape), which answers with
   ``POST /v1/realtime/calls/{call_id}/accept`` (a session config) or ``/reject``; with none,
   the call is accepted with the server's default session.
2. An accepted call is connected to the media stream URL, which carries a one-time token;
   the session starts when the stream does.
3. The stream carries the caller's audio in and the answer's out (:class:`PhoneMedia`: paced
   in 20 ms frames, a mark after every few; the provider echoes a mark once the audio before
   it has played, which tells what the caller heard; barge-in clears the provider's buffer).
4. The call ends when the caller hangs up (the stream stops), on ``/hangup``, or on
   ``/refer``: the stream closes and the provider is told where to transfer the call.

A provider adapter supplies the :class:`Line` (its outgoing messages), parses its incoming
messages into the :class:`PhoneCall` methods, and renders :class:`Decision` s.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import secrets
import time
from typing import Any

import attrs
import trio

from protocol import ProtocolError, RealtimeConnection
from protocol import inputs as ins
from protocol.session import deep_merge

from . import audio, webhooks
from .calls import REPORT_QUEUE, Call, CallRefused, Calls
from .input_audio import ENGINE_RATE
from .phone_media import LINE_RATE, PhoneMedia
from .ports import CallMedia, SessionOptions

log = logging.getLogger("realtime.phone")

#: what a caller hears when no line is free, or the server is restarting
BUSY_TEXT = "Sorry, every line is busy right now. Please call again in a few minutes."
RESTARTING_TEXT = "Sorry, this service is restarting. Please call again in a minute."
UNANSWERED_TEXT = "Sorry, nobody can take your call right now. Please try again later."
#: how long after its end a referred call's target is kept for the provider to ask
TRANSFER_KEEP_S = 300.0
#: what ``refer`` takes: a telephone number or a SIP URI
_TARGET = re.compile(r"^(tel:\+?[0-9][0-9().\- ]{2,31}|sips?:[^\s<>\"]{3,255})$")


@attrs.frozen
class PhoneSettings:
    """Phone options from the command line."""

    #: the server's public base URL (``https://voice.example.com``): stream URLs and Twilio's
    #: signature check use it; None: taken from each request's Host
    public_url: str | None = None
    twilio_auth_token: str | None = None  #: checks X-Twilio-Signature when set
    telnyx_public_key: str | None = None  #: checks Telnyx's Ed25519 signatures when set
    webhook_url: str | None = None  #: where ``realtime.call.incoming`` goes; None: accept all
    webhook_secret: str | None = None  #: signs the webhooks
    accept_timeout_s: float = 10.0  #: the application's time to accept or reject
    #: when set, each call starts with a response of these instructions (a greeting)
    greeting: str | None = None
    #: a call is hung up this long after it connected (OpenAI's sessions last an hour)
    max_call_s: float = 3600.0
    stream_timeout_s: float = 10.0  #: an accepted call's time to open its media stream


class Outcome(enum.Enum):
    CONNECT = "connect"  #: answer and connect the media stream
    REJECT = "reject"  #: do not answer (busy or declined)
    REFUSE = "refuse"  #: answer, say why the call cannot be taken, hang up


@attrs.frozen
class Decision:
    """What the provider is told to do with an incoming call."""

    outcome: Outcome
    call_id: str = ""
    stream_token: str = ""  #: CONNECT: the one-time token of the stream URL
    status_code: int = 603  #: REJECT: the SIP status (486/600: busy)
    text: str = ""  #: REFUSE: the sentence spoken


class PhoneCall(Call):
    """A call from a telephony provider: incoming, accepted, streaming, ended."""

    transport = "phone"

    def __init__(self, call_id: str, provider: str, sip_headers: list[dict[str, str]]) -> None:
        super().__init__(call_id)
        self.provider = provider
        self.sip_headers = sip_headers
        self.decided = trio.Event()
        self.decision: Decision | None = None
        self.session: dict[str, Any] = {}  #: the accept's session config
        self.model: str | None = None
        self.transfer_to: str | None = None  #: set by ``refer``
        self.stream_token = ""
        self._media = PhoneMedia(self)
        self.stream_started = trio.Event()
        #: a response's instructions asked for as the call connects: the assistant speaks first
        self.greeting: str | None = None
        self.max_call_s = 3600.0  #: the call ends this long after its stream started

    @property
    def incoming(self) -> bool:
        return not self.decided.is_set()

    def decide(self, decision: Decision) -> None:
        if not self.decided.is_set():
            self.decision = decision
            self.decided.set()

    def media(self) -> CallMedia:
        return self._media

    @property
    def phone_media(self) -> PhoneMedia:
        return self._media

    def configure(self, options: SessionOptions) -> SessionOptions:
        if not self.session and not self.model:
            return options
        return attrs.evolve(
            options,
            model=self.model or options.model,
            session_defaults=deep_merge(options.session_defaults, self.session),
        )

    # --- what the adapter reports from the stream ------------------------------------------

    def started(self) -> None:
        """The stream started: the session begins (with the greeting, if there is one)."""
        self.stream_started.set()
        self.connected.set()
        self.scope.deadline = trio.current_time() + self.max_call_s
        if self.greeting:
            response = {"instructions": self.greeting}
            self.client_event(json.dumps({"type": "response.create", "response": response}))

    def caller_ulaw(self, payload: bytes, resampler: audio.StreamingResampler) -> None:
        """A piece of the caller's μ-law audio."""
        if payload:
            self.caller_audio(resampler(audio.decode(payload, "audio/pcmu")))

    def key_pressed(self, digit: str) -> None:
        """A key press for the session; dropped when half the report queue is taken (a flood
        of them must not crowd out the playout's reports)."""
        if self.reports_send.statistics().current_buffer_used < REPORT_QUEUE // 2:
            self.report(ins.DtmfReceived(digit, int(time.time())))


class PhoneCalls:
    """Incoming phone calls and their control: the provider-neutral half of every adapter."""

    def __init__(self, calls: Calls, settings: PhoneSettings) -> None:
        self.calls = calls
        self.settings = settings
        self._streams: dict[str, PhoneCall] = {}  #: one-time stream tokens
        #: (provider, call_id) -> (target, ended at)
        self._transfers: dict[tuple[str, str], tuple[str, float]] = {}

    async def incoming(self, provider: str, sip_headers: list[dict[str, str]]) -> Decision:
        """A call is ringing: take a pipeline, ask the application, and decide."""
        decision = await self._decide(provider, sip_headers)
        key = (provider, decision.outcome.value)
        self.calls.metrics.phone_calls[key] = self.calls.metrics.phone_calls.get(key, 0) + 1
        return decision

    async def _decide(self, provider: str, sip_headers: list[dict[str, str]]) -> Decision:
        try:
            self.calls.check_open()
            pipeline = self.calls.acquire()
        except CallRefused as refused:
            log.info("phone call refused: %s", refused.error["code"])
            busy = refused.error["code"] == "session_limit_reached"
            return Decision(Outcome.REFUSE, text=BUSY_TEXT if busy else RESTARTING_TEXT)
        call = PhoneCall("rtc_" + secrets.token_hex(12), provider, sip_headers)
        call.greeting = self.settings.greeting
        call.max_call_s = self.settings.max_call_s
        settings = self.settings
        options = attrs.evolve(self.calls.options, transport="phone")
        # from here the call holds the pipeline until it ends (``Calls._serve`` releases it)
        self.calls.start(
            call, pipeline, options, settings.accept_timeout_s + settings.stream_timeout_s
        )
        call.ended_callbacks.append(lambda: self._ended(call))
        if settings.webhook_url is None:
            self._connect(call)
        else:
            # the webhook runs on its own (an application that accepts from inside its webhook
            # handler gets its answer); the provider's request waits only for the decision
            assert self.calls.nursery is not None
            self.calls.nursery.start_soon(self._announce, call)
            try:
                with trio.move_on_after(settings.accept_timeout_s):
                    async with trio.open_nursery() as waiting:

                        async def until(event: trio.Event) -> None:
                            await event.wait()
                            waiting.cancel_scope.cancel()

                        waiting.start_soon(until, call.decided)
                        waiting.start_soon(until, call.ended)
            except BaseException:  # the provider gave up on its request: so does the call
                call.decide(Decision(Outcome.REJECT, call.call_id))
                call.hang_up()
                raise
            if not call.decided.is_set():
                stopping = self.calls.shutdown.is_set() or self.calls.draining.is_set()
                if not call.ended.is_set():
                    log.info("call %s: the application did not decide in time", call.call_id)
                text = RESTARTING_TEXT if stopping else UNANSWERED_TEXT
                call.decide(Decision(Outcome.REFUSE, call.call_id, text=text))
        assert call.decision is not None
        if call.decision.outcome is Outcome.CONNECT and call.ended.is_set():
            return Decision(Outcome.REJECT, call.call_id)  # hung up as soon as accepted
        if call.decision.outcome is not Outcome.CONNECT:
            call.hang_up()
        return call.decision

    async def _announce(self, call: PhoneCall) -> None:
        """``realtime.call.incoming`` to the application; a failure refuses the call."""
        settings = self.settings
        assert settings.webhook_url is not None
        payload = webhooks.event(
            "realtime.call.incoming", {"call_id": call.call_id, "sip_headers": call.sip_headers}
        )
        try:
            status = await webhooks.post(
                settings.webhook_url, settings.webhook_secret, payload, settings.accept_timeout_s
            )
        except Exception as exc:
            log.warning("call %s: the call webhook failed: %s", call.call_id, type(exc).__name__)
            status = 0
        if not 200 <= status < 300:
            call.decide(Decision(Outcome.REFUSE, call.call_id, text=UNANSWERED_TEXT))

    def _connect(self, call: PhoneCall) -> None:
        call.stream_token = secrets.token_urlsafe(24)
        self._streams[call.stream_token] = call
        call.decide(Decision(Outcome.CONNECT, call.call_id, stream_token=call.stream_token))

    def _ended(self, call: PhoneCall) -> None:
        self._streams.pop(call.stream_token, None)
        now = time.monotonic()
        for key, (_, ended) in list(self._transfers.items()):
            if now - ended > TRANSFER_KEEP_S:
                del self._transfers[key]
        if call.transfer_to is not None:
            self._transfers[(call.provider, call.call_id)] = (call.transfer_to, now)

    def claim_stream(self, provider: str, call_id: str, token: str) -> PhoneCall | None:
        """The call of ``provider`` a media stream's token was issued to (once)."""
        call = self._streams.get(token)
        if call is None or call.call_id != call_id or call.provider != provider:
            return None
        return self._streams.pop(token)

    def transfer_of(self, provider: str, call_id: str) -> str | None:
        """Where an ended call of ``provider`` was referred to, for the provider's
        after-stream request."""
        entry = self._transfers.pop((provider, call_id), None)
        return None if entry is None else entry[0]

    # --- call control (``/v1/realtime/calls/{call_id}/...``) --------------------------------

    def _phone_call(self, call_id: str, action: str) -> PhoneCall:
        call = self.calls.live.get(call_id)
        if call is None:
            raise CallRefused(
                404, "call_not_found", f"No live call with id {call_id!r}.", "invalid_request_error"
            )
        if not isinstance(call, PhoneCall):
            raise CallRefused(
                400,
                "invalid_call_state",
                f"Call {call_id!r} is a WebRTC call: it was accepted when it was created, and "
                f"'{action}' applies to phone calls only.",
                "invalid_request_error",
            )
        return call

    def _incoming_call(self, call_id: str, action: str) -> PhoneCall:
        call = self._phone_call(call_id, action)
        if not call.incoming:
            raise CallRefused(
                409,
                "invalid_call_state",
                f"Call {call_id!r} was already accepted or rejected; '{action}' applies to "
                "an incoming call.",
                "invalid_request_error",
            )
        return call

    def accept(self, call_id: str, body: dict[str, Any]) -> None:
        call = self._incoming_call(call_id, "accept")
        session = dict(body)
        if session.get("type", "realtime") != "realtime":
            raise CallRefused(
                400,
                "invalid_value",
                "Invalid 'type': a call's session is of type 'realtime'.",
                "invalid_request_error",
            )
        model = session.pop("model", None)
        if model is not None and not isinstance(model, str):
            raise CallRefused(
                400, "invalid_type", "Invalid 'model': expected a string.", "invalid_request_error"
            )
        defaults = deep_merge(self.calls.options.session_defaults, session)
        try:
            RealtimeConnection(session_defaults=defaults)
        except ProtocolError as exc:
            raise CallRefused(400, exc.code, exc.message, "invalid_request_error") from None
        call.session, call.model = session, model
        self._connect(call)
        log.info("call %s: accepted", call_id)

    def reject(self, call_id: str, status_code: Any) -> None:
        call = self._incoming_call(call_id, "reject")
        if status_code is None:
            status_code = 603
        if isinstance(status_code, bool) or not isinstance(status_code, int):
            raise CallRefused(
                400,
                "invalid_type",
                "Invalid 'status_code': expected an integer SIP status.",
                "invalid_request_error",
            )
        if not 400 <= status_code <= 699:
            raise CallRefused(
                400,
                "invalid_value",
                "Invalid 'status_code': a rejection is a SIP status from 400 to 699.",
                "invalid_request_error",
            )
        call.decide(Decision(Outcome.REJECT, call_id, status_code=status_code))
        log.info("call %s: rejected with %d", call_id, status_code)

    def hang_up(self, call_id: str) -> bool:
        call = self.calls.live.get(call_id)
        if call is None:
            return False
        if isinstance(call, PhoneCall) and call.incoming:
            call.decide(Decision(Outcome.REJECT, call_id, status_code=603))
        call.hang_up()
        return True

    def refer(self, call_id: str, target_uri: Any) -> None:
        call = self._phone_call(call_id, "refer")
        if not isinstance(target_uri, str) or not _TARGET.match(target_uri):
            raise CallRefused(
                400,
                "invalid_value",
                "Invalid 'target_uri': expected a 'tel:' number (tel:+14155550123) or a "
                "'sip:' URI.",
                "invalid_request_error",
            )
        if not call.stream_started.is_set():
            raise CallRefused(
                409,
                "invalid_call_state",
                f"Call {call_id!r} is not connected yet; accept it before referring it.",
                "invalid_request_error",
            )
        call.transfer_to = target_uri
        call.hang_up()
        log.info("call %s: referred to %s", call_id, target_uri)


def line_resampler() -> audio.StreamingResampler:
    """The caller's 8 kHz audio to the engines' rate, one stream each call."""
    return audio.StreamingResampler(LINE_RATE, ENGINE_RATE)
