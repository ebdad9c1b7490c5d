"""Phone calls from Telnyx (TeXML and Media Streaming), with the Telnyx stand-in of
``tests/phone_standin.py`` and the fake engines: the adapter beside Twilio's, the same call."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from realtime.phone import BUSY_TEXT, PhoneSettings
from tests.phone_standin import TelnyxStandIn, TwilioStandIn, TwiML, silence, tone, ulaw_energy
from tests.realtime.harness import LiveServer, fake_pool, live_server
from tests.realtime.test_phone import LONG_REPLY, base, health, sideband, wait_for


def telnyx_keys() -> tuple[Ed25519PrivateKey, PhoneSettings]:
    """A signing key for the stand-in, and settings checking with its public half."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key, PhoneSettings(telnyx_public_key=base64.b64encode(public).decode())


async def refer(server: LiveServer, call_id: str, target: str) -> None:
    """The application refers the call (the server's API key is ``sk-app``)."""
    request = urllib.request.Request(
        f"{base(server)}/v1/realtime/calls/{call_id}/refer",
        data=json.dumps({"target_uri": target}).encode(),
        headers={"Authorization": "Bearer sk-app", "Content-Type": "application/json"},
        method="POST",
    )
    await asyncio.to_thread(urllib.request.urlopen, request, None, 10)


async def connected_call(server: LiveServer, **standin: Any) -> tuple[TelnyxStandIn, TwiML]:
    telnyx = TelnyxStandIn(base(server), **standin)
    response = await telnyx.ring()
    assert response.status_code == 200, response.text
    texml = TwiML(response.text)
    assert texml.verbs == ["Connect", "Redirect"], texml.text
    await telnyx.open_stream(texml)
    return telnyx, texml


def test_a_telnyx_call_streams_rtp_both_ways_answers_clears_and_passes_keys() -> None:
    with live_server(fake_pool(1, reply=LONG_REPLY)) as server:

        async def body() -> None:
            telnyx, texml = await connected_call(server)
            call_id = texml.parameters["call_id"]
            stream = texml.text
            # bidirectional RTP in PCMU, no reconnect: a closed stream moves on to <Redirect>
            for attribute in (
                'bidirectionalMode="rtp"',
                'bidirectionalCodec="PCMU"',
                'codec="PCMU"',
                'enableReconnect="false"',
            ):
                assert attribute in stream, stream
            media = f"ws://127.0.0.1:{server.port}/telnyx/media/{call_id}/"
            assert (texml.stream_url or "").startswith(media)
            assert texml.redirect_url == f"{base(server)}/telnyx/after/{call_id}"
            async with sideband(server, call_id) as app:
                await telnyx.speak(silence(200) + tone(600) + silence(900))
                await app.until("output_audio_buffer.started")
                await wait_for(lambda: len(telnyx.heard) >= 8000)
                assert ulaw_energy(bytes(telnyx.received)) > 0.1
                await telnyx.speak(tone(600))  # barge-in
                await app.until("output_audio_buffer.cleared")
                truncated = await app.until("conversation.item.truncated")
                assert telnyx.clears
                heard_ms = len(telnyx.heard) / 8
                assert heard_ms - 300 <= truncated["audio_end_ms"] <= heard_ms + 1
                await telnyx.press("3")
                dtmf = await app.until("input_audio_buffer.dtmf_event_received")
                assert dtmf["event"] == "3"
                # the server's frames are Telnyx's: no stream id, media/mark/clear only
                assert {m["event"] for m in telnyx.messages} <= {"media", "mark", "clear"}
                await telnyx.hang_up()
            after = await telnyx.after(texml)
            assert after.verbs == ["Hangup"]
            await wait_for(lambda: health(server)["pipelines_in_use"] == 0)

        asyncio.run(body())


def test_a_referred_telnyx_call_is_dialled_by_the_redirect() -> None:
    with live_server(fake_pool(1), api_key="sk-app") as server:

        async def body() -> None:
            telnyx, texml = await connected_call(server)
            call_id = texml.parameters["call_id"]
            await wait_for(lambda: health(server)["active_sessions"] == 1)
            await refer(server, call_id, "sip:desk@pbx.example.com")
            await asyncio.wait_for(telnyx.closed.wait(), 10)
            after = await telnyx.after(texml)
            assert after.verbs == ["Dial"]
            assert "<Sip>sip:desk@pbx.example.com</Sip>" in after.text
            await telnyx.end()

        asyncio.run(body())


def test_telnyx_signatures_are_checked_when_a_public_key_is_set() -> None:
    key, phone = telnyx_keys()
    with live_server(fake_pool(1), phone=phone) as server:

        async def body() -> None:
            assert (await TelnyxStandIn(base(server)).ring()).status_code == 403  # unsigned
            other = Ed25519PrivateKey.generate()
            assert (await TelnyxStandIn(base(server), other).ring()).status_code == 403
            forged = TelnyxStandIn(base(server))
            assert (await forged.ring(signature=base64.b64encode(b"x" * 64))).status_code == 403
            stale = TelnyxStandIn(base(server), key)
            stale.clock_skew_s = -600  # signed ten minutes ago: a replay
            assert (await stale.ring()).status_code == 403
            assert health(server)["pipelines_in_use"] == 0
            telnyx, texml = await connected_call(server, private_key=key)
            await telnyx.hang_up()
            after = await telnyx.after(texml)  # signed too
            assert after.verbs == ["Hangup"]

        asyncio.run(body())


def test_a_telnyx_caller_beyond_the_pool_hears_why() -> None:
    with live_server(fake_pool(1)) as server:

        async def body() -> None:
            first, _ = await connected_call(server)
            busy = TwiML((await TelnyxStandIn(base(server)).ring()).text)
            assert busy.verbs == ["Say", "Hangup"] and busy.said == BUSY_TEXT
            await first.hang_up()

        asyncio.run(body())


@pytest.mark.parametrize(
    "media_format",
    [{"encoding": "OPUS", "sample_rate": 16000, "channels": 1}, {"encoding": "PCMU"}],
)
def test_a_telnyx_stream_in_another_format_is_ended(media_format: dict[str, Any]) -> None:
    with live_server(fake_pool(1)) as server:

        async def body() -> None:
            telnyx = TelnyxStandIn(base(server))
            texml = TwiML((await telnyx.ring()).text)
            start = telnyx.start_frame
            telnyx.start_frame = lambda t: {  # type: ignore[method-assign]
                **start(t),
                "start": {**start(t)["start"], "media_format": media_format},
            }
            await telnyx.open_stream(texml)
            await asyncio.wait_for(telnyx.closed.wait(), 10)
            await telnyx.end()
            started = time.monotonic()
            while health(server)["pipelines_in_use"] and time.monotonic() - started < 10:
                await asyncio.sleep(0.05)
            assert health(server)["pipelines_in_use"] == 0

        asyncio.run(body())


def test_a_replayed_telnyx_webhook_is_refused() -> None:
    key, phone = telnyx_keys()
    with live_server(fake_pool(2), phone=phone) as server:

        async def body() -> None:
            telnyx = TelnyxStandIn(base(server), key)
            form = telnyx.call_form()
            url = base(server) + "/telnyx/voice"
            timestamp = str(int(time.time()))
            payload = urlencode(form)
            signed = key.sign(f"{timestamp}|{payload}".encode())
            headers = {
                "content-type": "application/x-www-form-urlencoded",
                "telnyx-timestamp": timestamp,
                "telnyx-signature-ed25519": base64.b64encode(signed).decode(),
            }
            async with httpx.AsyncClient() as client:
                first = await client.post(url, content=payload.encode(), headers=headers)
                again = await client.post(url, content=payload.encode(), headers=headers)
            assert (first.status_code, again.status_code) == (200, 403)

        asyncio.run(body())


def test_with_only_twilio_keyed_the_unchecked_telnyx_routes_are_not_served() -> None:
    with live_server(fake_pool(1), phone=PhoneSettings(twilio_auth_token="tw")) as server:

        async def body() -> None:
            assert (await TelnyxStandIn(base(server)).ring()).status_code == 404
            twilio = TwilioStandIn(base(server), auth_token="tw")
            assert (await twilio.ring()).status_code == 200

        asyncio.run(body())


def test_a_calls_stream_and_transfer_belong_to_its_own_provider() -> None:
    with live_server(fake_pool(2), api_key="sk-app") as server:

        async def body() -> None:
            twilio = TwilioStandIn(base(server))
            twiml = TwiML((await twilio.ring()).text)
            assert twiml.stream_url is not None
            # the Twilio call's stream token on Telnyx's path opens nothing
            with pytest.raises(websockets.InvalidStatus):
                await websockets.connect(twiml.stream_url.replace("/twilio/", "/telnyx/"))
            await twilio.open_stream(twiml)  # the token was not used up by the attempt
            call_id = twiml.parameters["call_id"]
            await wait_for(lambda: health(server)["active_sessions"] == 1)
            await refer(server, call_id, "tel:+14155550123")
            await asyncio.wait_for(twilio.closed.wait(), 10)
            # Telnyx's after-stream route knows nothing of a Twilio call's transfer
            other = await TelnyxStandIn(base(server)).follow(
                f"{base(server)}/telnyx/after/{call_id}"
            )
            assert other.verbs == ["Hangup"]
            after = await twilio.after(twiml)
            assert "<Number>+14155550123</Number>" in after.text
            await twilio.end()

        asyncio.run(body())
