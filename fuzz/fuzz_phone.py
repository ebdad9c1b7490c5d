"""Hypothesis drives a live server's phone media streams (Twilio's and Telnyx's): whatever
arrives on a phone call's stream, the call ends cleanly and the server stays whole.

A case is one call (the voice webhook, then the stream opened by a provider's stand-in of
``tests/phone_standin.py``) and a few steps on its stream: speech and silence, key presses
(valid keys and not), marks (current, stale, foreign, malformed), Twilio's messages with a field
of the wrong type or shape, JSON that is not an object, text that is not JSON, binary frames, a
second ``start``; then the caller hangs up (``stop``), closes the socket, drops it, or the
application hangs up. After each case: the server thread is alive and logged nothing at ERROR,
``/health`` shows every pipeline free again, and a fresh call passes a key press to its
sideband.

``FUZZ_PHONE_EXAMPLES=500 python -m pytest fuzz/fuzz_phone.py`` runs longer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from fuzz_live import ErrorLog, wait_until_idle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.phone_standin import TelnyxStandIn, TwilioStandIn, TwiML, silence, tone
from tests.realtime.harness import LiveServer, fake_pool, live_server

PHONE_SETTINGS = settings(
    max_examples=int(os.environ.get("FUZZ_PHONE_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
mark_names = st.one_of(
    st.sampled_from(["0:160", "0:480", "1:160", "0:999999999", "7:0", "0:-5", ":", "0:", "x:1"]),
    st.text(max_size=30),
)
EVENTS = ("connected", "start", "media", "mark", "dtmf", "stop", "clear", "teleport")

steps = st.one_of(
    st.tuples(st.just("speech"), st.integers(20, 600)),
    st.tuples(st.just("silence"), st.integers(20, 600)),
    st.tuples(
        st.just("dtmf"), st.one_of(st.sampled_from(list("0123456789*#ABCD")), st.text(max_size=3))
    ),
    st.tuples(st.just("mark"), mark_names),
    st.tuples(
        st.just("shape"),
        st.tuples(
            st.sampled_from(EVENTS),
            st.sampled_from(["media", "mark", "dtmf", "start", "stop"]),
            json_values,
        ),
    ),
    st.tuples(st.just("json"), json_values),
    st.tuples(st.just("text"), st.text(max_size=200)),
    st.tuples(st.just("binary"), st.binary(max_size=200)),
    st.tuples(st.just("big"), st.integers(1, 3)),
)
endings = st.sampled_from(["stop", "close", "drop", "application"])


async def step(twilio: TwilioStandIn, kind: str, value: Any) -> None:
    ws = twilio.ws
    if kind == "speech":
        await twilio.speak(tone(value), realtime=False)
    elif kind == "silence":
        await twilio.speak(silence(value), realtime=False)
    elif kind == "dtmf":
        await twilio.press(value)
    elif kind == "mark":
        await ws.send(
            json.dumps({"event": "mark", "streamSid": twilio.stream_sid, "mark": {"name": value}})
        )
    elif kind == "shape":
        event, field, body = value
        await ws.send(json.dumps({"event": event, "streamSid": twilio.stream_sid, field: body}))
    elif kind == "json":
        await ws.send(json.dumps(value))
    elif kind == "text":
        await ws.send(value)
    elif kind == "binary":
        await ws.send(value)
    elif kind == "big":  # a media payload of a few MB
        await ws.send(
            json.dumps({"event": "media", "media": {"payload": "/" * (value * 1_000_000)}})
        )


async def one_call(
    server: LiveServer, case: list[tuple[str, Any]], ending: str, provider: str
) -> None:
    base = f"http://127.0.0.1:{server.port}"
    twilio = (TelnyxStandIn if provider == "telnyx" else TwilioStandIn)(base)
    twiml = TwiML((await twilio.ring()).text)
    assert twiml.verbs[0] == "Connect", twiml.text
    await twilio.open_stream(twiml)
    try:
        for kind, value in case:
            await step(twilio, kind, value)
    except websockets.ConnectionClosed:
        pass  # the server may end a call whose stream stopped (a fuzzed "stop")
    if ending == "stop":
        try:
            await twilio.hang_up()
        except websockets.ConnectionClosed:
            await twilio.end()
    elif ending == "close":
        await twilio.ws.close()
        await twilio.end()
    elif ending == "drop":
        twilio.ws.transport.abort()
        await twilio.end()
    else:
        call_id = twiml.parameters["call_id"]
        request = urllib.request.Request(
            f"{base}/v1/realtime/calls/{call_id}/hangup", method="POST"
        )
        try:
            await asyncio.to_thread(urllib.request.urlopen, request, None, 10)
        except urllib.error.HTTPError as error:
            assert error.code == 404  # a fuzzed "stop" ended it first
        await asyncio.wait_for(twilio.closed.wait(), 10)
        await twilio.end()


async def a_key_press_gets_through(server: LiveServer) -> None:
    twilio = TwilioStandIn(f"http://127.0.0.1:{server.port}")
    twiml = TwiML((await twilio.ring()).text)
    assert twiml.verbs == ["Connect"], twiml.text
    await twilio.open_stream(twiml)
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?call_id={twiml.parameters['call_id']}"
    async with websockets.connect(url) as sideband:
        await twilio.press("7")
        async with asyncio.timeout(10):
            while True:
                event = json.loads(await sideband.recv())
                if event["type"] == "input_audio_buffer.dtmf_event_received":
                    assert event["event"] == "7"
                    break
    await twilio.hang_up()


@pytest.fixture(scope="module")
def phone_server() -> Iterator[tuple[LiveServer, ErrorLog]]:
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    try:
        with live_server(fake_pool(1)) as server:
            yield server, errors
    finally:
        logging.getLogger().removeHandler(errors)


@PHONE_SETTINGS
@given(
    case=st.lists(steps, max_size=8),
    ending=endings,
    provider=st.sampled_from(["twilio", "telnyx"]),
)
def test_any_stream_leaves_the_server_whole(
    phone_server: tuple[LiveServer, ErrorLog],
    case: list[tuple[str, Any]],
    ending: str,
    provider: str,
) -> None:
    server, errors = phone_server
    asyncio.run(one_call(server, case, ending, provider))
    wait_until_idle(server, timeout_s=10.0)
    assert server._thread.is_alive()
    asyncio.run(a_key_press_gets_through(server))
    wait_until_idle(server, timeout_s=10.0)
    logged = errors.take()
    assert not logged, logged
