"""Replicas behind real HAProxy on loopback, with the shipped ``deploy/haproxy/haproxy.cfg``
(only its replica list replaced): sessions spread over the replicas, a session beyond their
capacity is refused cleanly, a draining replica keeps its live session while new ones go
elsewhere, and a WebRTC call's later requests reach the replica that holds the call."""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import subprocess
import tempfile
import time
import types
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from realtime import AppSettings, SessionOptions
from realtime.calls import CallSettings
from scripts.bench_capacity import haproxy_config
from tests.mcp_servers import free_port
from tests.realtime.harness import Client, LiveServer, connect, fake_pool, session

HAPROXY = shutil.which("haproxy")
pytestmark = pytest.mark.skipif(
    HAPROXY is None,
    reason="haproxy is not installed (Debian: apt-get install haproxy; .ci/run installs it)",
)
CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "haproxy.cfg"
VOICES = ("alloy", "ash", "ballad")  #: one per replica: session.created says which one answered
CHECK_S = 1.5  #: the health checks' interval (1 s) and some: every replica has been checked


def render(ports: Sequence[int], bind_port: int) -> str:
    """The shipped configuration with loopback replicas and a loopback frontend."""
    text = haproxy_config(
        CONFIG.read_text(), [f"127.0.0.1:{p}" for p in ports], f"127.0.0.1:{bind_port}"
    )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2 * 4000 + 100:  # too few descriptors for the shipped maxconn: fewer connections
        text = text.replace("maxconn 4000", f"maxconn {(hard - 100) // 2}")
    return text


def open_files() -> None:
    """In HAProxy's process: its open-file limit as high as allowed (it needs two descriptors
    per connection of its ``maxconn``; something in a test run may have lowered the soft
    limit), as an operator's ``ulimit -n`` would."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def get(url: str, method: str = "GET", body: bytes | None = None, **headers: str) -> Any:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


@contextmanager
def balancer(replicas: Sequence[LiveServer]) -> Iterator[types.SimpleNamespace]:
    """HAProxy in front of ``replicas``; yields what the harness connects to (``url``) and
    its ``http`` base URL, once every replica has been health-checked."""
    assert HAPROXY is not None
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "haproxy.cfg"
        config.write_text(render([r.port for r in replicas], port))
        log = (Path(tmp) / "haproxy.log").open("w")
        process = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=log, preexec_fn=open_files
        )
        lb = types.SimpleNamespace(
            url=f"ws://127.0.0.1:{port}/v1/realtime", http=f"http://127.0.0.1:{port}"
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                assert process.poll() is None, (Path(tmp) / "haproxy.log").read_text()
                try:
                    if get(f"{lb.http}/ready")[0] == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "HAProxy did not start"
                time.sleep(0.1)
            time.sleep(CHECK_S)
            yield lb
        finally:
            process.terminate()
            process.wait(5)
            log.close()


def replica_set(count: int, **settings: Any) -> list[LiveServer]:
    return [
        LiveServer(
            fake_pool(1), AppSettings(session=SessionOptions(voice=VOICES[i]), **settings)
        ).start()
        for i in range(count)
    ]


def voice_of(client: Client) -> str:
    return str(client.created["session"]["audio"]["output"]["voice"])


async def turn(client: Client) -> str:
    await client.user_text("Hello?")
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    return str(events[-1]["response"]["status"])


def test_sessions_spread_a_full_set_refuses_cleanly_and_a_drain_keeps_its_session() -> None:
    replicas = replica_set(3)
    try:
        with balancer(replicas) as lb:

            async def body() -> None:
                async with AsyncExitStack() as stack:
                    clients = [await stack.enter_async_context(session(lb)) for _ in range(3)]
                    assert sorted(voice_of(c) for c in clients) == sorted(VOICES)
                    assert [r.metrics.active_sessions for r in replicas] == [1, 1, 1]
                    await trio.sleep(CHECK_S)  # every replica is full now, and checked so
                    async with connect(lb) as refused:
                        error = json.loads(await refused.get_message())
                        assert error["error"]["code"] == "session_limit_reached"

                    # drain the first client's replica; free the other two
                    draining = replicas[VOICES.index(voice_of(clients[0]))]
                    draining.begin_drain(timeout_s=30)
                    for client in clients[1:]:
                        await client.ws.aclose()
                    await trio.sleep(CHECK_S)
                    # the live session on the draining replica goes on
                    assert await turn(clients[0]) == "completed"
                    # new sessions go to the others
                    async with session(lb) as newcomer:
                        assert voice_of(newcomer) != voice_of(clients[0])
                        assert await turn(newcomer) == "completed"
                    await clients[0].ws.aclose()
                # its last session ended: the drained replica exits
                await trio.to_thread.run_sync(draining._thread.join, 10)
                assert not draining._thread.is_alive()

            trio.run(body)
    finally:
        for replica in replicas:
            replica.stop()


def test_a_webrtc_calls_requests_reach_the_replica_that_holds_it() -> None:
    """Its sideband WebSocket and its hang-up go through the balancer to its replica."""
    pytest.importorskip("aiortc", reason="the [webrtc] extra is not installed")
    import websockets

    from tests.realtime.test_webrtc import Caller

    loopback = CallSettings(host_addresses=("127.0.0.1",), connect_timeout_s=20.0)
    replicas = replica_set(3, calls=loopback)
    try:
        with balancer(replicas) as lb:

            async def body() -> None:
                callers = []
                locations = []
                for _ in range(3):
                    caller = Caller()
                    callers.append(caller)
                    status, headers, _ = await asyncio.to_thread(
                        get,
                        f"{lb.http}/v1/realtime/calls?model=gpt-realtime",
                        "POST",
                        (await caller.offer()).encode(),
                        **{"Content-Type": "application/sdp"},
                    )
                    assert status == 201
                    locations.append({k.lower(): v for k, v in headers.items()}["location"])
                # one call per replica, each replica full now
                assert [r.pool.in_use for r in replicas] == [1, 1, 1]
                await asyncio.sleep(CHECK_S)
                # a sideband connection joins its call on its replica: nothing is refused
                for location in locations:
                    call_id = location.rsplit("/", 1)[1]
                    url = f"ws://127.0.0.1:{lb.http.rsplit(':', 1)[1]}/v1/realtime"
                    async with websockets.connect(f"{url}?call_id={call_id}") as sideband:
                        with pytest.raises(TimeoutError):
                            refused = await asyncio.wait_for(sideband.recv(), 0.5)
                            pytest.fail(f"the sideband was refused: {refused}")
                for location in locations:
                    status, _, body = await asyncio.to_thread(get, f"{lb.http}{location}", "DELETE")
                    assert status == 200, body
                deadline = time.monotonic() + 5
                while any(r.pool.in_use for r in replicas) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert [r.pool.in_use for r in replicas] == [0, 0, 0]
                for caller in callers:
                    await caller.close()

            asyncio.run(body())
    finally:
        for replica in replicas:
            replica.stop()


def test_a_phone_calls_stream_control_and_action_reach_the_replica_that_holds_it() -> None:
    """Each replica answers one call (the second from Telnyx, the others from Twilio); its
    media stream, its sideband, its refer and the request the provider makes once the stream
    has closed all go through the balancer to it."""
    import websockets

    from realtime.phone import BUSY_TEXT
    from tests.phone_standin import TelnyxStandIn, TwilioStandIn, TwiML

    replicas = replica_set(3)
    try:
        with balancer(replicas) as lb:

            async def body() -> None:
                calls = []
                for number in range(3):
                    twilio = (TelnyxStandIn if number == 1 else TwilioStandIn)(lb.http)
                    twiml = TwiML((await twilio.ring()).text)
                    assert twiml.verbs[0] == "Connect", twiml.text
                    assert twiml.stream_url is not None
                    assert twiml.stream_url.startswith(lb.url.rsplit("/v1", 1)[0])
                    await twilio.open_stream(twiml)  # refused by any other replica
                    calls.append((twilio, twiml))
                assert [r.pool.in_use for r in replicas] == [1, 1, 1]
                await asyncio.sleep(CHECK_S)
                busy = TwiML((await TwilioStandIn(lb.http).ring()).text)
                assert busy.said == BUSY_TEXT  # every replica full: one says so
                for number, (twilio, twiml) in enumerate(calls):
                    call_id = twiml.parameters["call_id"]
                    async with websockets.connect(f"{lb.url}?call_id={call_id}") as sideband:
                        await twilio.press(str(number))
                        event = json.loads(await asyncio.wait_for(sideband.recv(), 10))
                        assert event["type"] == "input_audio_buffer.dtmf_event_received"
                        assert event["event"] == str(number)
                    target = json.dumps({"target_uri": f"tel:+1415555010{number}"}).encode()
                    status, _, text = await asyncio.to_thread(
                        get, f"{lb.http}/v1/realtime/calls/{call_id}/refer", "POST", target
                    )
                    assert status == 200, text
                    await asyncio.wait_for(twilio.closed.wait(), 10)
                    after = await twilio.after(twiml)
                    assert f"<Number>+1415555010{number}</Number>" in after.text
                    await twilio.end()

            asyncio.run(body())
    finally:
        for replica in replicas:
            replica.stop()


def test_with_one_replica_dead_and_the_rest_full_a_refusal_is_prompt() -> None:
    replicas = replica_set(2)
    try:
        with balancer(replicas) as lb:
            replicas[1].stop()

            async def body() -> None:
                async with session(lb) as live:
                    assert voice_of(live) == VOICES[0]
                    await trio.sleep(2 * CHECK_S + 2)  # the checks see one full, one dead
                    for _ in range(3):
                        began = time.monotonic()
                        async with connect(lb) as refused:
                            error = json.loads(await refused.get_message())
                        assert error["error"]["code"] == "session_limit_reached"
                        assert time.monotonic() - began < 1.0

            trio.run(body)
    finally:
        for replica in replicas:
            replica.stop()
