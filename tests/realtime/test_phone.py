"""Phone calls over Twilio Media Streams, with the Twilio stand-in (``tests/phone_standin.py``)
and the fake engines: TwiML, the media stream, marks, barge-in, DTMF, call control, webhooks,
signatures, tokens and a full pool."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from aiohttp import web
from openai import AsyncOpenAI

from protocol.invariants import SequenceChecker
from realtime import AppSettings
from realtime.phone import BUSY_TEXT, UNANSWERED_TEXT, PhoneSettings
from tests.phone_standin import TwilioStandIn, TwiML, silence, tone, ulaw_energy
from tests.protocol.test_flows import AUDIO_END, AUDIO_FIRST_CHUNK, USER_TURN_COMMITTED
from tests.realtime.harness import LiveServer, fake_pool, health, live_server
from tests.support import validate_with_sdk
from tests.webhook_receiver import receiving

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGhlLXBob25lLXRlc3Rz"
LONG_REPLY = " ".join(["word"] * 50)  #: 4 s of the fake TTS


def base(server: LiveServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def connected_call(server: LiveServer, **standin: Any) -> tuple[TwilioStandIn, TwiML]:
    twilio = TwilioStandIn(base(server), **standin)
    response = await twilio.ring()
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    twiml = TwiML(response.text)
    assert twiml.verbs == ["Connect"], twiml.text
    await twilio.open_stream(twiml)
    return twilio, twiml


class Sideband:
    """The application's WebSocket on the live call; every event is checked with the SDK's
    types and the protocol's sequence rules as it arrives."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.checker = SequenceChecker(strict_start=False)

    async def until(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                event = json.loads(await self.ws.recv())
                validate_with_sdk(event)
                self.checker.check(event)
                self.events.append(event)
                if event["type"] == kind:
                    return event

    def types(self) -> list[str]:
        return [event["type"] for event in self.events]


@asynccontextmanager
async def sideband(server: LiveServer, call_id: str) -> AsyncIterator[Sideband]:
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?call_id={call_id}"
    async with websockets.connect(url) as ws:
        yield Sideband(ws)


async def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


# --- a call without a webhook: accepted with the default session ------------------------------


def test_a_phone_call_answers_in_ulaw_reports_playout_from_marks_and_passes_dtmf() -> None:
    with live_server(fake_pool(1)) as server:

        async def body() -> None:
            twilio, twiml = await connected_call(server)
            call_id = twiml.parameters["call_id"]
            assert twiml.stream_url is not None and "?" not in twiml.stream_url
            assert twiml.action_url == f"{base(server)}/twilio/after/{call_id}"
            assert health(server)["pipelines_in_use"] == 1
            async with sideband(server, call_id) as app:
                await twilio.speak(silence(200) + tone(600) + silence(900))
                await app.until("response.done")
                stopped = await app.until("output_audio_buffer.stopped")
                # the buffer stopped once the caller had heard all of it, marks echoed
                assert len(twilio.heard) == len(twilio.received) > 0
                assert twilio.marks_echoed and stopped["response_id"]
                types = app.types()
                # the turn's events in order (deltas and the buffer's events come between)
                core = [t for t in types if not t.endswith("delta") and "buffer.st" not in t]
                first_chunk = [t for t in AUDIO_FIRST_CHUNK if not t.endswith("delta")]
                assert core == [
                    "input_audio_buffer.speech_started",
                    *USER_TURN_COMMITTED,
                    *first_chunk,
                    *AUDIO_END,
                ]
                started = types.index("output_audio_buffer.started")
                assert types.index("response.content_part.added") < started
                assert types.index("response.done") < types.index("output_audio_buffer.stopped")
                assert "response.output_audio.delta" not in types  # the audio went to the line
                media = [m for m in twilio.messages if m["event"] == "media"]
                assert all(len(m["media"]["payload"]) <= 216 for m in media)  # <= 160 bytes
                assert ulaw_energy(bytes(twilio.received)) > 0.1  # the fake TTS's tone
                # 720 ms of answer, paced: it took about that long to arrive
                assert twilio.media_times[-1] - twilio.media_times[0] > 0.5
                await twilio.press("5")
                dtmf = await app.until("input_audio_buffer.dtmf_event_received")
                assert dtmf["event"] == "5"
                assert abs(dtmf["received_at"] - time.time()) < 5
                await twilio.hang_up()
            await wait_for(lambda: health(server)["pipelines_in_use"] == 0)

        asyncio.run(body())


def test_barge_in_clears_the_line_and_truncates_the_answer_to_what_was_heard() -> None:
    with live_server(fake_pool(1, reply=LONG_REPLY)) as server:

        async def body() -> None:
            twilio, twiml = await connected_call(server)
            async with sideband(server, twiml.parameters["call_id"]) as app:
                await twilio.speak(silence(200) + tone(600) + silence(900))
                await app.until("output_audio_buffer.started")
                await wait_for(lambda: len(twilio.heard) >= 8000)  # a second heard
                await twilio.speak(tone(600))
                cleared = await app.until("output_audio_buffer.cleared")
                truncated = await app.until("conversation.item.truncated")
                assert twilio.clears, "the server never sent clear"
                heard_ms = len(twilio.heard) / 8
                # what the caller heard, to the marks' precision (60 ms) plus a round trip (and
                # a busy machine's delays); never more: what was sent but not heard is cut
                assert heard_ms - 300 <= truncated["audio_end_ms"] <= heard_ms + 1
                assert cleared["response_id"]
                # nothing of the cleared answer reached the caller after the clear
                clear_at = twilio.clears[0]
                heard_then = len(twilio.heard)
                await asyncio.sleep(0.3)
                later = [t for t in twilio.media_times if t > clear_at]
                assert len(twilio.heard) - heard_then <= 160 * len(later)
                await twilio.hang_up()

        asyncio.run(body())


def test_a_broken_stream_message_is_ignored_and_the_call_goes_on() -> None:
    with live_server(fake_pool(1)) as server:

        async def body() -> None:
            twilio, twiml = await connected_call(server)
            async with sideband(server, twiml.parameters["call_id"]) as app:
                for junk in (
                    "not json",
                    "[1, 2]",
                    json.dumps({"event": "media", "media": {"payload": "%%%"}}),
                    json.dumps({"event": "media", "media": None}),
                    json.dumps({"event": "teleport"}),
                    json.dumps({"event": "mark", "mark": {"name": 7}}),
                    json.dumps({"event": "dtmf", "dtmf": {"digit": "%"}}),
                    json.dumps({"event": "media", "media": {"payload": "/" * 40_000}}),
                    "[" * 100_000,
                ):
                    await twilio.ws.send(junk)
                await twilio.press("#")
                dtmf = await app.until("input_audio_buffer.dtmf_event_received")
                assert dtmf["event"] == "#"
                assert not any(e["type"] == "error" for e in app.events)
                await twilio.hang_up()

        asyncio.run(body())


# --- stream tokens, signatures, a full pool ----------------------------------------------------


def test_a_stream_needs_its_one_time_token() -> None:
    with live_server(fake_pool(2)) as server:

        async def body() -> None:
            with pytest.raises(websockets.InvalidStatus):
                await websockets.connect(f"ws://127.0.0.1:{server.port}/twilio/media/made-up")
            ringing = TwilioStandIn(base(server))
            other = TwiML((await ringing.ring()).text)
            assert other.stream_url is not None
            _, _, other_token = other.stream_url.rpartition("/")
            twilio, twiml = await connected_call(server)
            assert twiml.stream_url is not None
            # another call's token does not open this call's stream
            wrong = twiml.stream_url.rpartition("/")[0] + "/" + other_token
            with pytest.raises(websockets.InvalidStatus):
                await websockets.connect(wrong)
            with pytest.raises(websockets.InvalidStatus):  # used once already
                await websockets.connect(twiml.stream_url)
            await twilio.hang_up()

        asyncio.run(body())


def test_twilio_signatures_are_checked_when_an_auth_token_is_set() -> None:
    phone = PhoneSettings(twilio_auth_token="tw-token")
    with live_server(fake_pool(1), phone=phone) as server:

        async def body() -> None:
            unsigned = TwilioStandIn(base(server))
            assert (await unsigned.ring()).status_code == 403
            forged = TwilioStandIn(base(server), auth_token="another-token")
            assert (await forged.ring()).status_code == 403
            odd = TwilioStandIn(base(server))
            assert (await odd.ring(signature=("é" * 28).encode())).status_code == 403
            assert health(server)["pipelines_in_use"] == 0
            twilio, twiml = await connected_call(server, auth_token="tw-token")
            bad = await twilio.post(twiml.action_url or "", twilio.call_form(), "bad")
            assert bad.status_code == 403
            await twilio.hang_up()
            after = await twilio.after(twiml)  # signed: answered
            assert after.verbs == ["Hangup"]

        asyncio.run(body())


def test_a_call_beyond_the_pool_hears_why_and_is_hung_up() -> None:
    with live_server(fake_pool(1)) as server:

        async def body() -> None:
            first, _ = await connected_call(server)
            refused = TwiML((await TwilioStandIn(base(server)).ring()).text)
            assert refused.verbs == ["Say", "Hangup"]
            assert refused.said == BUSY_TEXT
            with urllib.request.urlopen(f"{base(server)}/metrics") as response:
                metrics = response.read().decode()
            assert 'realtime_phone_calls_total{provider="twilio",outcome="connect"} 1' in metrics
            assert 'realtime_phone_calls_total{provider="twilio",outcome="refuse"} 1' in metrics
            assert "realtime_calls_live 1" in metrics
            await first.hang_up()
            await wait_for(lambda: health(server)["pipelines_in_use"] == 0)
            again, _ = await connected_call(server)  # the slot is free again
            await again.hang_up()

        asyncio.run(body())


# --- call control: webhooks, accept, reject, hangup, refer -----------------------------------


@asynccontextmanager
async def application(
    on_call: Callable[[Any], Awaitable[None]], status: int = 200, accept_inside: bool = False
) -> AsyncIterator[tuple[str, list[Any]]]:
    """The application's webhook receiver: verifies each webhook with the ``openai`` SDK
    (a bad signature raises) and hands the event to ``on_call``, after answering (or, with
    ``accept_inside``, before: the handler calls the server back while its webhook waits)."""
    seen: list[Any] = []
    tasks: list[asyncio.Task[None]] = []
    verifier = AsyncOpenAI(api_key="unused", webhook_secret=SECRET)

    async def receive(request: web.Request) -> web.Response:
        body = await request.text()
        event = verifier.webhooks.unwrap(body, dict(request.headers))
        seen.append(event)
        if accept_inside:
            await on_call(event)
        else:
            tasks.append(asyncio.create_task(on_call(event)))
        return web.Response(status=status)

    async with receiving(receive) as url:
        yield url, seen
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result  # an assertion of the application's


def webhook_server(url: str, **phone: Any) -> Any:
    settings = PhoneSettings(webhook_url=url, webhook_secret=SECRET, **phone)
    return live_server(fake_pool(1, reply=LONG_REPLY), phone=settings, api_key="sk-app")


def sdk_client(server: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="sk-app", base_url=f"{base(server)}/v1", webhook_secret=SECRET)


@pytest.mark.parametrize("inside", [False, True], ids=["after_answering", "inside_the_handler"])
def test_the_application_accepts_a_call_with_its_session_and_runs_it_over_the_sideband(
    inside: bool,
) -> None:
    clients: list[AsyncOpenAI] = []

    async def accept(event: Any) -> None:
        await clients[0].realtime.calls.accept(
            event.data.call_id, type="realtime", instructions="You answer the phone."
        )

    async def body() -> None:
        async with application(accept, accept_inside=inside) as (url, seen):
            with webhook_server(url) as server:
                client = sdk_client(server)
                clients.append(client)
                twilio, twiml = await connected_call(server)
                (event,) = seen
                assert event.type == "realtime.call.incoming"
                call_id = event.data.call_id
                assert twiml.parameters["call_id"] == call_id
                headers = {h.name: h.value for h in event.data.sip_headers}
                assert headers["From"] == "+15551230000" and headers["Call-ID"] == twilio.call_sid
                async with client.realtime.connect(call_id=call_id) as app:
                    await app.session.update(session={"type": "realtime"})
                    updated = await app.recv()
                    assert updated.type == "session.updated"
                    assert updated.session.instructions == "You answer the phone."
                    await twilio.press("9")
                    async for server_event in app:
                        if server_event.type == "input_audio_buffer.dtmf_event_received":
                            assert server_event.event == "9"
                            break
                    await client.realtime.calls.hangup(call_id)
                    await asyncio.wait_for(twilio.closed.wait(), 10)
                after = await twilio.after(twiml)
                assert after.verbs == ["Hangup"]
                await twilio.end()

    asyncio.run(body())


def test_a_rejected_call_is_not_answered_and_frees_its_slot() -> None:
    clients: list[AsyncOpenAI] = []

    async def reject(event: Any) -> None:
        await clients[0].realtime.calls.reject(event.data.call_id, status_code=486)

    async def body() -> None:
        async with application(reject) as (url, _):
            with webhook_server(url) as server:
                clients.append(sdk_client(server))
                twiml = TwiML((await TwilioStandIn(base(server)).ring()).text)
                assert twiml.verbs == ["Reject"] and twiml.reject_reason == "busy"
                await wait_for(lambda: health(server)["pipelines_in_use"] == 0)

    asyncio.run(body())


@pytest.mark.parametrize("status", [200, 500])
def test_an_application_that_does_not_decide_has_its_caller_told_so(status: int) -> None:
    async def nothing(event: Any) -> None:
        pass

    async def body() -> None:
        async with application(nothing, status=status) as (url, seen):
            with webhook_server(url, accept_timeout_s=1.0) as server:
                started = time.monotonic()
                twiml = TwiML((await TwilioStandIn(base(server)).ring()).text)
                assert twiml.verbs == ["Say", "Hangup"] and twiml.said == UNANSWERED_TEXT
                assert len(seen) == 1
                if status == 500:  # a failed webhook is not waited out
                    assert time.monotonic() - started < 0.9
                await wait_for(lambda: health(server)["pipelines_in_use"] == 0)

    asyncio.run(body())


def test_an_unreachable_webhook_is_a_spoken_refusal() -> None:
    with webhook_server("http://127.0.0.1:9/webhook") as server:

        async def body() -> None:
            twiml = TwiML((await TwilioStandIn(base(server)).ring()).text)
            assert twiml.verbs == ["Say", "Hangup"]
            await wait_for(lambda: health(server)["pipelines_in_use"] == 0)

        asyncio.run(body())


def test_call_control_errors_are_openai_shaped_and_change_nothing() -> None:
    decided: list[str] = []
    clients: list[AsyncOpenAI] = []

    async def check(event: Any) -> None:
        client, call_id = clients[0], event.data.call_id
        raw = client.realtime.calls.with_raw_response
        keyless = AsyncOpenAI(api_key="wrong", base_url=str(client.base_url))
        with pytest.raises(Exception) as no_key:
            await keyless.realtime.calls.accept(call_id, type="realtime")
        assert getattr(no_key.value, "status_code", None) == 401
        with pytest.raises(Exception) as bad:
            await raw.accept(call_id, type="realtime", audio={"output": {"voice": 7}})  # type: ignore[dict-item]
        assert getattr(bad.value, "status_code", None) == 400
        assert bad.value.body["code"]  # type: ignore[attr-defined]
        with pytest.raises(Exception) as refer_early:
            await client.realtime.calls.refer(call_id, target_uri="tel:+14155550123")
        assert getattr(refer_early.value, "status_code", None) == 409
        with pytest.raises(Exception) as unknown:
            await client.realtime.calls.accept("rtc_unknown", type="realtime")
        assert getattr(unknown.value, "status_code", None) == 404
        await client.realtime.calls.accept(call_id, type="realtime")  # still incoming: works
        with pytest.raises(Exception) as twice:
            await client.realtime.calls.reject(call_id)
        assert getattr(twice.value, "status_code", None) == 409
        decided.append(call_id)

    async def body() -> None:
        async with application(check) as (url, _):
            with webhook_server(url) as server:
                clients.append(sdk_client(server))
                twilio, twiml = await connected_call(server)
                await wait_for(lambda: bool(decided))
                assert decided == [twiml.parameters["call_id"]]
                await twilio.hang_up()

    asyncio.run(body())


def test_refer_transfers_the_call_through_the_connect_action() -> None:
    with live_server(fake_pool(1), api_key="sk-app") as server:

        async def body() -> None:
            client = sdk_client(server)
            twilio, twiml = await connected_call(server)
            call_id = twiml.parameters["call_id"]
            await wait_for(lambda: health(server)["active_sessions"] == 1)
            with pytest.raises(Exception) as bad:
                await client.realtime.calls.refer(call_id, target_uri="mailto:someone")
            assert getattr(bad.value, "status_code", None) == 400
            await client.realtime.calls.refer(call_id, target_uri="tel:+14155550123")
            await asyncio.wait_for(twilio.closed.wait(), 10)
            after = await twilio.after(twiml)
            assert after.verbs == ["Dial"]
            assert "<Number>+14155550123</Number>" in after.text
            await twilio.end()
            await wait_for(lambda: health(server)["pipelines_in_use"] == 0)

        asyncio.run(body())


def test_a_drain_lets_a_live_phone_call_finish_and_tells_new_callers_to_call_back() -> None:
    from realtime.phone import RESTARTING_TEXT

    server = LiveServer(fake_pool(2), AppSettings()).start()
    try:

        async def body() -> None:
            twilio, twiml = await connected_call(server)
            server.begin_drain(timeout_s=30, notice_s=0.0)
            await asyncio.sleep(0.3)
            refused = TwiML((await TwilioStandIn(base(server)).ring()).text)
            assert refused.verbs == ["Say", "Hangup"] and refused.said == RESTARTING_TEXT
            async with sideband(server, twiml.parameters["call_id"]) as app:
                await twilio.speak(silence(200) + tone(600) + silence(900))  # a new turn
                done = await app.until("response.done")
                assert done["response"]["status"] == "completed"
            await twilio.hang_up()
            began = time.monotonic()
            await asyncio.to_thread(server._thread.join, 10)  # its end ends the drain
            assert time.monotonic() - began < 5

        asyncio.run(body())
        assert not server._thread.is_alive()
    finally:
        server.stop()


def test_a_greeting_makes_the_assistant_speak_first() -> None:
    pool = fake_pool(1)
    greeting = "Greet the caller and ask how you can help."
    with live_server(pool, phone=PhoneSettings(greeting=greeting)) as server:

        async def body() -> None:
            twilio, _ = await connected_call(server)
            # no word from the caller: the answer comes to the line all the same
            await wait_for(lambda: len(twilio.received) > 2000)
            (llm,) = [p.llm for p in pool.pipelines]
            assert llm.requests[0].instructions == greeting
            await twilio.hang_up()

        asyncio.run(body())


def test_a_call_is_hung_up_at_its_maximum_length() -> None:
    with live_server(fake_pool(1), phone=PhoneSettings(max_call_s=1.0)) as server:

        async def body() -> None:
            twilio, twiml = await connected_call(server)
            began = time.monotonic()
            await asyncio.wait_for(twilio.closed.wait(), 10)
            assert 0.9 < time.monotonic() - began < 8  # not before its time
            after = await twilio.after(twiml)
            assert after.verbs == ["Hangup"]
            await twilio.end()
            await wait_for(lambda: health(server)["pipelines_in_use"] == 0)

        asyncio.run(body())
