"""Twilio: a phone number's calls as Realtime sessions, over bidirectional Media Streams.

Point the number's "A call comes in" webhook at ``POST /twilio/voice`` (the routes and the
stream's handling are every provider's, ``phone_stream.py``). What is Twilio's:

- TwiML: an accepted call gets ``<Connect action=".../twilio/after/{call_id}"><Stream
  url="wss://.../twilio/media/{call_id}/{token}"/></Connect>`` (Twilio's stream URLs take no
  query string); a rejected one ``<Reject>``; one the server cannot take a spoken sentence
  and ``<Hangup/>``. The ``<Connect>`` action, requested when the server closes the stream,
  answers a referred call's ``<Dial>``.
- The stream's messages: ``connected``, ``start`` (``streamSid``, μ-law at 8000 Hz mono),
  ``media``, ``mark``, ``dtmf``, ``stop`` in; ``media``, ``mark``, ``clear`` out, each with
  the ``streamSid``.
- ``X-Twilio-Signature`` (checked when an auth token is configured): base64 HMAC-SHA1, keyed
  with the token, of the URL Twilio requested followed by every form field's name and value
  in name order.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape, quoteattr

from .phone import Decision, Outcome
from .phone_stream import Parsed, Provider, dial_target

log = logging.getLogger("realtime.phone")


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


def twiml(body: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>'


def refusal(decision: Decision) -> str:
    """A decision other than CONNECT, in TwiML (TeXML reads it the same)."""
    if decision.outcome is Outcome.REJECT:
        reason = "busy" if decision.status_code in (486, 600) else "rejected"
        return twiml(f'<Reject reason="{reason}"/>')
    return twiml(f"<Say>{escape(decision.text)}</Say><Hangup/>")


def dial(target: str | None) -> str:
    """After the stream: transfer a referred call, hang up any other (TwiML and TeXML)."""
    if target is None:
        return twiml("<Hangup/>")
    kind, address = dial_target(target)
    noun = "Number" if kind == "number" else "Sip"
    return twiml(f"<Dial><{noun}>{escape(address)}</{noun}></Dial>")


class Twilio(Provider):
    name = "twilio"
    key_flag = "--twilio_auth_token"
    account_header = ("X-Twilio-AccountSid", "AccountSid")

    def __init__(self, auth_token: str | None) -> None:
        self.auth_token = auth_token

    @property
    def keyed(self) -> bool:
        return self.auth_token is not None

    def verify(
        self, url: str, params: list[tuple[str, str]], body: bytes, headers: Mapping[str, str]
    ) -> bool | None:
        if self.auth_token is None:
            return None
        offered = headers.get("x-twilio-signature", "")
        return bool(offered) and signature_ok(url, params, self.auth_token, offered)

    def answer(self, decision: Decision, stream_url: str, after_url: str) -> str:
        if decision.outcome is not Outcome.CONNECT:
            return refusal(decision)
        return twiml(
            f"<Connect action={quoteattr(after_url)}><Stream url={quoteattr(stream_url)}>"
            f'<Parameter name="call_id" value={quoteattr(decision.call_id)}/></Stream></Connect>'
        )

    def after(self, target: str | None) -> str:
        return dial(target)

    def start(self, message: Mapping[str, Any]) -> Parsed:
        start = message.get("start") or {}
        fmt = start.get("mediaFormat") or {}
        found = (fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels"))
        if found != ("audio/x-mulaw", 8000, 1):
            log.warning("a twilio stream of an unexpected media format %s: ending it", fmt)
            return "stop", None
        return "start", str(start.get("streamSid") or message.get("streamSid") or "")

    def frame(self, stream_id: str, kind: str, value: str | None) -> dict[str, Any]:
        if kind == "media":
            return {"event": "media", "streamSid": stream_id, "media": {"payload": value}}
        if kind == "mark":
            return {"event": "mark", "streamSid": stream_id, "mark": {"name": value}}
        return {"event": "clear", "streamSid": stream_id}
