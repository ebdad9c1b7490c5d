"""Webhooks to the application, signed as OpenAI signs its own (the Standard Webhooks scheme).

Each request carries ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``,
keyed with the secret (a ``whsec_`` secret is base64 after its prefix; any other is used as
its UTF-8 bytes). The ``openai`` SDK's ``client.webhooks.unwrap`` verifies them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

log = logging.getLogger("realtime.webhooks")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a webhook secret (a ``whsec_`` secret that is not base64 raises
    ``ValueError``)."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_") :], validate=True)
    return secret.encode("utf-8")


def sign(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header of one request."""
    content = f"{webhook_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def event(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """A webhook event object as OpenAI shapes them."""
    return {
        "object": "event",
        "id": "evt_" + secrets.token_hex(12),
        "type": event_type,
        "created_at": int(time.time()),
        "data": data,
    }


async def post(url: str, secret: str | None, payload: dict[str, Any], timeout_s: float) -> int:
    """POST one event; returns the HTTP status (raises ``httpx.HTTPError`` when the
    application cannot be reached). Unsigned when no secret is configured."""
    body = json.dumps(payload, separators=(",", ":"))
    webhook_id = "wh_" + secrets.token_hex(12)
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "realtime-voice-server",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
    }
    if secret:
        headers["webhook-signature"] = sign(secret, webhook_id, timestamp, body)
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        response = await client.post(url, content=body.encode(), headers=headers)
    parts = urlsplit(url)
    log.info(
        "webhook %s -> %s://%s: %d",
        payload.get("type"),
        parts.scheme,
        parts.netloc.rpartition("@")[2],
        response.status_code,
    )
    return response.status_code
