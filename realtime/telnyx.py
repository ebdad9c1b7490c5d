"""Telnyx: a phone number's calls as Realtime sessions, over TeXML and Media Streaming.

Point the number's TeXML application (Voice URL, method POST) at ``POST /telnyx/voice`` (the
routes and the stream's handling are every provider's, ``phone_stream.py``). What is Telnyx's:

- TeXML: an accepted call gets ``<Connect><Stream url="wss://.../telnyx/media/{call_id}/{token}"
  bidirectionalMode="rtp" bidirectionalCodec="PCMU" codec="PCMU" enableReconnect="false"/>
  </Connect>`` and then ``<Redirect>`` to ``/telnyx/after/{call_id}``, which Telnyx follows
  once the server has closed the stream (``<Connect>`` waits for the stream to stop): a
  referred call's ``<Dial>``, any other's ``<Hangup/>``. Refusals are TwiML's (``<Reject>``,
  ``<Say>`` + ``<Hangup/>``), which TeXML reads the same.
- The stream's frames: ``connected``, ``start`` (``stream_id`` on every frame, PCMU at 8000 Hz
  mono), ``media``, ``mark``, ``dtmf``, ``error``, ``stop`` in (snake_case, numbers as
  strings); ``media``, ``mark``, ``clear`` out, without the stream id.
- Webhook signatures (checked when the account's public key is configured):
  ``telnyx-signature-ed25519``, the base64 Ed25519 signature of
  ``{telnyx-timestamp}|{raw body}``, within five minutes of ``telnyx-timestamp``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from .phone import Decision, Outcome
from .phone_stream import Parsed, Provider
from .twilio import dial, refusal, twiml

log = logging.getLogger("realtime.phone")

SIGNATURE_TOLERANCE_S = 300


def public_key(text: str) -> Any:
    """An Ed25519 public key from its base64 (Telnyx's "Public Key"); ``ValueError`` if it is
    not one."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError(f"{len(raw)} bytes, not the 32 of an Ed25519 public key")
    return Ed25519PublicKey.from_public_bytes(raw)


def signature_ok(key: Any, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    from cryptography.exceptions import InvalidSignature

    timestamp = headers.get("telnyx-timestamp", "")
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    try:
        signature = base64.b64decode(headers.get("telnyx-signature-ed25519", ""), validate=True)
        if abs(now - int(timestamp)) > SIGNATURE_TOLERANCE_S:
            return False
        key.verify(signature, timestamp.encode() + b"|" + body)
    except (ValueError, binascii.Error, InvalidSignature):
        return False
    return True


class Telnyx(Provider):
    name = "telnyx"
    key_flag = "--telnyx_public_key"
    account_header = ("X-Telnyx-ConnectionId", "ConnectionId")

    def __init__(self, public_key_text: str | None) -> None:
        self.key = public_key(public_key_text) if public_key_text else None
        #: signatures accepted within the tolerance: a replayed request is refused
        self._seen: dict[bytes, float] = {}

    @property
    def keyed(self) -> bool:
        return self.key is not None

    def verify(
        self, url: str, params: list[tuple[str, str]], body: bytes, headers: Mapping[str, str]
    ) -> bool | None:
        if self.key is None:
            return None
        now = time.time()
        if not signature_ok(self.key, headers, body, now):
            return False
        signature = headers.get("telnyx-signature-ed25519", "").encode()
        for seen, at in list(self._seen.items()):
            if now - at > 2 * SIGNATURE_TOLERANCE_S:
                del self._seen[seen]
        if signature in self._seen:
            log.warning("refused a replayed Telnyx request")
            return False
        self._seen[signature] = now
        return True

    def answer(self, decision: Decision, stream_url: str, after_url: str) -> str:
        if decision.outcome is not Outcome.CONNECT:
            return refusal(decision)
        return twiml(
            f'<Connect><Stream url={quoteattr(stream_url)} bidirectionalMode="rtp" '
            'bidirectionalCodec="PCMU" codec="PCMU" enableReconnect="false">'
            f'<Parameter name="call_id" value={quoteattr(decision.call_id)}/></Stream>'
            f'</Connect><Redirect method="POST">{escape(after_url)}</Redirect>'
        )

    def after(self, target: str | None) -> str:
        return dial(target)

    def start(self, message: Mapping[str, Any]) -> Parsed:
        fmt = (message.get("start") or {}).get("media_format") or {}
        encoding = str(fmt.get("encoding", "")).upper()
        if (
            encoding not in ("PCMU", "AUDIO/X-MULAW")
            or fmt.get("sample_rate") not in (8000, "8000")
            or fmt.get("channels", 1) not in (1, "1")
        ):
            log.warning("a telnyx stream of an unexpected media format %s: ending it", fmt)
            return "stop", None
        return "start", str(message.get("stream_id") or "")

    def other(self, kind: str, message: Mapping[str, Any]) -> Parsed:
        if kind == "error":
            detail = message.get("payload") or message.get("error")
            log.warning("telnyx reported a stream error: %s", detail)
            return None
        return super().other(kind, message)

    def frame(self, stream_id: str, kind: str, value: str | None) -> dict[str, Any]:
        if kind == "media":
            return {"event": "media", "media": {"payload": value}}
        if kind == "mark":
            return {"event": "mark", "mark": {"name": value}}
        return {"event": "clear"}
