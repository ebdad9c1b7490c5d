"""The live server with fake engines, driven by raw WebSocket clients."""

from __future__ import annotations

import base64
import json
import urllib.request

import trio
import trio_websocket

from realtime import AppSettings
from tests.realtime.harness import (
    Client,
    LiveServer,
    connect,
    fake_pool,
    live_server,
    session,
    silence_pcm,
    tone_pcm,
)
from tests.support import types

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def run(test):  # type: ignore[no-untyped-def]
    """Run an async test body under trio."""
    return trio.run(test)


def test_session_created_is_the_first_frame() -> None:
    with live_server() as server:

        async def body() -> None:
            async with connect(server) as ws:
                client = Client(ws)
                first = await client.next()
                assert first["type"] == "session.created"
                assert first["session"]["model"] == "gpt-realtime"
                assert first["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"

        run(body)


def test_text_turn_streams_audio_and_transcript() -> None:
    with live_server() as server:

        async def body() -> None:
            async with session(server) as client:
                await client.user_text("Say hello")
                await client.send({"type": "response.create"})
                events = await client.until("response.done")
                kinds = types(events)
                assert kinds[:3] == [
                    "conversation.item.added",
                    "conversation.item.done",
                    "response.created",
                ]
                assert "response.output_audio.delta" in kinds
                done = events[-1]["response"]
                assert done["status"] == "completed"
                transcript = done["output"][0]["content"][0]["transcript"]
                assert transcript.strip() == "Hello there. I am a test double, speaking slowly."

        run(body)


def test_text_only_turn_streams_text() -> None:
    with live_server() as server:

        async def body() -> None:
            async with session(server) as client:
                await client.send(
                    {
                        "type": "session.update",
                        "session": {"type": "realtime", "output_modalities": ["text"]},
                    }
                )
                assert (await client.next())["type"] == "session.updated"
                await client.send({"type": "response.create"})
                events = await client.until("response.done")
                kinds = types(events)
                assert "response.output_audio.delta" not in kinds
                text = "".join(
                    e["delta"] for e in events if e["type"] == "response.output_text.delta"
                )
                assert text == "Hello there. I am a test double, speaking slowly."

        run(body)


def test_voice_turn_from_audio_with_live_transcription() -> None:
    with live_server() as server:

        async def body() -> None:
            async with session(server) as client:
                await client.update_session(
                    audio={"input": {"transcription": {"model": "whisper-1"}}}
                )
                await client.append(silence_pcm(200) + tone_pcm(1500) + silence_pcm(700))
                events = await client.until("response.done", timeout=20)
                kinds = types(events)
                order = [
                    "input_audio_buffer.speech_started",
                    "input_audio_buffer.speech_stopped",
                    "input_audio_buffer.committed",
                    "conversation.item.added",
                    "conversation.item.done",
                    "response.created",
                ]
                assert [k for k in kinds if k in order][: len(order)] == order
                deltas = [e for e in events if e["type"].endswith("transcription.delta")]
                completed = [e for e in events if e["type"].endswith("transcription.completed")]
                assert len(deltas) >= 2  # at least one live partial, then the final remainder
                assert completed[0]["transcript"] == "what is the weather in paris"
                assert "".join(d["delta"] for d in deltas) == completed[0]["transcript"]
                started = next(e for e in events if e["type"].endswith("speech_started"))
                stopped = next(e for e in events if e["type"].endswith("speech_stopped"))
                assert 150 <= started["audio_start_ms"] <= 260
                assert stopped["audio_end_ms"] >= 1700
                assert events[-1]["response"]["status"] == "completed"

        run(body)


def test_function_call_round_trip() -> None:
    with live_server() as server:

        async def body() -> None:
            async with session(server) as client:
                await client.send(
                    {
                        "type": "session.update",
                        "session": {"type": "realtime", "tools": [WEATHER_TOOL]},
                    }
                )
                await client.next()
                await client.user_text("what is the weather")
                await client.send({"type": "response.create"})
                events = await client.until("response.done")
                call = events[-1]["response"]["output"][0]
                assert (call["type"], call["name"], json.loads(call["arguments"])) == (
                    "function_call",
                    "get_weather",
                    {"city": "Paris"},
                )
                await client.send(
                    {
                        "type": "conversation.item.create",
                        "item": {
                            "type": "function_call_output",
                            "call_id": call["call_id"],
                            "output": '{"sky": "sunny"}',
                        },
                    }
                )
                await client.send({"type": "response.create"})
                events = await client.until("response.done")
                answer = events[-1]["response"]["output"][0]["content"][0]["transcript"]
                assert answer.strip() == "It is sunny in Paris."

        run(body)


def test_barge_in_cancels_the_response_and_sends_nothing_after_done() -> None:
    with live_server(fake_pool(token_delay_s=0.05)) as server:

        async def body() -> None:
            async with session(server) as client:
                await client.send({"type": "response.create"})
                await client.until("response.output_audio.delta")
                await client.append(tone_pcm(400))
                events = await client.until("response.done")
                assert "input_audio_buffer.speech_started" in types(events)
                done = events[-1]["response"]
                assert done["status"] == "cancelled"
                assert done["status_details"]["reason"] == "turn_detected"
                cancelled_id = done["id"]
                await client.append(silence_pcm(600))
                later = await client.until("response.created", timeout=20)
                assert all(e.get("response_id") != cancelled_id for e in later)

        run(body)


def test_truncate_while_the_answer_streams_stops_its_audio_and_the_turn_goes_on() -> None:
    """pipecat's and the openai SDK's interruption: truncate the assistant item whose audio is
    still arriving; no error, and none of that item's audio after ``...truncated``."""
    with live_server(fake_pool(token_delay_s=0.05)) as server:

        async def body() -> None:
            async with session(server) as client:
                await client.user_text("Tell me something.")
                await client.send({"type": "response.create"})
                events = await client.until("response.output_audio.delta")
                item_id = events[-1]["item_id"]
                await client.send(
                    {
                        "type": "conversation.item.truncate",
                        "event_id": "t1",
                        "item_id": item_id,
                        "content_index": 0,
                        "audio_end_ms": 20,
                    }
                )
                events = await client.until("conversation.item.truncated")
                assert events[-1]["audio_end_ms"] == 20
                after = await client.until("response.done", timeout=20)
                assert "error" not in types(events + after)
                assert not [
                    e
                    for e in after
                    if e["type"].startswith("response.output_audio") and e["type"].endswith("delta")
                ]
                assert after[-1]["response"]["status"] == "completed"
                await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
                retrieved = await client.until("conversation.item.retrieved")
                heard = retrieved[-1]["item"]["content"][0]["transcript"]
                assert heard == "Hello there. "
                await client.user_text("And then?")
                await client.send({"type": "response.create"})
                assert (await client.until("response.done", timeout=20))[-1]["response"][
                    "status"
                ] == "completed"

        run(body)


def test_idle_timeout_answers_a_silent_user() -> None:
    with live_server() as server:

        async def body() -> None:
            async with session(server) as client:
                turn_detection = {"type": "server_vad", "idle_timeout_ms": 5000}
                await client.update_session(audio={"input": {"turn_detection": turn_detection}})
                await client.user_text("Say hello")
                await client.send({"type": "response.create"})
                events = await client.until("response.done")
                audio_ms = sum(
                    len(base64.b64decode(e["delta"])) // 48
                    for e in events
                    if e["type"] == "response.output_audio.delta"
                )
                await client.append(silence_pcm(audio_ms + 5_500), chunk_ms=100)
                events = await client.until("input_audio_buffer.timeout_triggered")
                triggered = events[-1]
                assert triggered["audio_end_ms"] - triggered["audio_start_ms"] >= 5_000
                events = await client.until("response.done", timeout=20)
                assert "error" not in types(events)
                assert events[-1]["response"]["status"] == "completed"

        run(body)


def test_client_cancel() -> None:
    with live_server(fake_pool(token_delay_s=0.05)) as server:

        async def body() -> None:
            async with session(server) as client:
                await client.send({"type": "response.create"})
                await client.until("response.created")
                await client.send({"type": "response.cancel", "event_id": "c1"})
                events = await client.until("response.done")
                assert events[-1]["response"]["status_details"]["reason"] == "client_cancelled"
                await client.send({"type": "response.cancel", "event_id": "c2"})
                error = await client.next()
                assert error["error"]["code"] == "response_cancel_not_active"
                assert error["error"]["event_id"] == "c2"

        run(body)


def test_garbage_then_a_normal_turn() -> None:
    garbage = [
        "not json",
        b"\x00\x01binary",
        "{}",
        "[]",
        '{"type": "nope"}',
        '{"type": "session.update", "session": {"type": "realtime", "bogus": 1}}',
        '{"type": "input_audio_buffer.append", "audio": "!!!"}',
        '{"type": "input_audio_buffer.commit"}',
        '{"type": "response.cancel"}',
        '{"type": "conversation.item.delete", "item_id": "item_missing"}',
        json.dumps(
            {
                "type": "conversation.item.truncate",
                "item_id": "x",
                "content_index": 0,
                "audio_end_ms": 5,
            }
        ),
        '{"type": "conversation.item.create", "item": {"type": "message"}}',
        '{"type": "response.create", "response": {"conversation": "other"}}',
        json.dumps(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 8000}}},
                },
            }
        ),
        '{"type": "session.update"}',
        '{"type": 5}',
        '{"type": "conversation.item.retrieve"}',
        '"just a string"',
        '{"type": "response.create", "response": {"max_output_tokens": 0}}',
        '{"type": "session.update", "session": {"type": "realtime", "tools": [{"type": "mcp"}]}}',
    ]
    with live_server() as server:

        async def body() -> None:
            async with session(server) as client:
                for frame in garbage:
                    await client.send(frame)
                    event = await client.next()
                    assert event["type"] == "error", frame
                    assert event["error"]["code"], frame
                await client.send({"type": "response.create"})
                events = await client.until("response.done")
                assert events[-1]["response"]["status"] == "completed"
                assert server.metrics.protocol_errors == len(garbage)

        run(body)


def test_pool_refusal_and_reuse() -> None:
    with live_server(fake_pool(size=1)) as server:

        async def body() -> None:
            async with connect(server) as ws:
                first = Client(ws)
                assert (await first.next())["type"] == "session.created"
                async with connect(server) as ws2:
                    refused = json.loads(await ws2.get_message())
                    assert refused["error"]["code"] == "session_limit_reached"
                    try:
                        await ws2.get_message()
                    except trio_websocket.ConnectionClosed as closed:
                        assert closed.reason.code == 1013
                    else:
                        raise AssertionError("the refused connection stayed open")
            await trio.sleep(0.2)
            async with connect(server) as ws3:
                assert json.loads(await ws3.get_message())["type"] == "session.created"

        run(body)
        assert server.metrics.sessions_refused == 1


def test_clients_closing_as_the_server_closes_never_take_the_server_down() -> None:
    # A client that closes the moment it is refused races the server's own close: hypercorn's
    # trio worker once ended the whole server on it (BusyResourceError); 200 tries hit it.
    with live_server(fake_pool(size=1)) as server:

        async def body() -> None:
            async with connect(server) as ws:
                assert json.loads(await ws.get_message())["type"] == "session.created"
                for _ in range(200):
                    async with connect(server) as refused:
                        event = json.loads(await refused.get_message())
                        assert event["error"]["code"] == "session_limit_reached"
            await trio.sleep(0.2)
            async with session(server) as client:
                await client.send({"type": "response.create"})
                done = (await client.until("response.done"))[-1]
                assert done["response"]["status"] == "completed"

        run(body)
        assert server.metrics.sessions_refused == 200


def test_api_key_is_checked_from_header_and_subprotocol() -> None:
    with live_server(api_key="sekrit") as server:

        async def body() -> None:
            async with connect(server, headers=[("Authorization", "Bearer wrong")]) as ws:
                event = json.loads(await ws.get_message())
                assert event["error"]["code"] == "invalid_api_key"
            async with connect(server, headers=[("Authorization", "Bearer sekrit")]) as ws:
                assert json.loads(await ws.get_message())["type"] == "session.created"
            async with connect(
                server, subprotocols=["realtime", "openai-insecure-api-key.sekrit"]
            ) as ws:
                assert ws.subprotocol == "realtime"
                assert json.loads(await ws.get_message())["type"] == "session.created"

        run(body)


def test_client_that_stops_reading_is_disconnected() -> None:
    with live_server(fake_pool(), send_timeout_s=0.5, outbox_high_water=16) as server:

        async def body() -> None:
            async with connect(server) as ws:
                await ws.get_message()
                big = "x" * 1_000_000
                await ws.send_message(
                    json.dumps(
                        {
                            "type": "conversation.item.create",
                            "item": {
                                "id": "item_big",
                                "type": "message",
                                "role": "user",
                                "content": [{"type": "input_text", "text": big}],
                            },
                        }
                    )
                )
                # ~60 MB of answers that this client never reads
                for _ in range(30):
                    await ws.send_message(
                        '{"type": "conversation.item.retrieve", "item_id": "item_big"}'
                    )
                with trio.fail_after(10):
                    while server.metrics.active_sessions:
                        await trio.sleep(0.1)
                assert server.metrics.active_sessions == 0  # ended while still connected

        run(body)
        assert server.pool.in_use == 0


def test_health_and_metrics() -> None:
    with live_server() as server:
        health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health"))
        assert health["status"] == "ok" and health["pipelines"] == 1
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read().decode()
        assert "realtime_active_sessions 0" in text
        assert "realtime_time_to_first_audio_seconds_count" in text


def test_engine_failure_fails_the_response_and_the_session_goes_on() -> None:
    pool = fake_pool()
    llm = pool.pipelines[0].llm
    with live_server(pool) as server:

        async def body() -> None:
            async with session(server) as client:
                llm.fail = True  # type: ignore[attr-defined]
                await client.send({"type": "response.create"})
                events = await client.until("response.done")
                done = events[-1]["response"]
                assert done["status"] == "failed"
                assert "fake LLM failure" in done["status_details"]["error"]["message"]
                error = await client.next()
                assert (error["type"], error["error"]["type"]) == ("error", "server_error")
                llm.fail = False  # type: ignore[attr-defined]
                await client.send({"type": "response.create"})
                events = await client.until("response.done")
                assert events[-1]["response"]["status"] == "completed"

        run(body)
        assert server.metrics.engine_errors == 1


def test_transcription_failure_is_reported_and_the_turn_still_answers() -> None:
    pool = fake_pool()
    stt = pool.pipelines[0].stt
    stt.fail = True  # type: ignore[attr-defined]
    with live_server(pool) as server:

        async def body() -> None:
            async with session(server) as client:
                await client.update_session(
                    audio={"input": {"transcription": {"model": "whisper-1"}}}
                )
                await client.append(tone_pcm(800) + silence_pcm(600))
                events = await client.until("response.done", timeout=20)
                failed = [e for e in events if e["type"].endswith("transcription.failed")]
                assert failed and failed[0]["error"]["message"] == "fake transcription failure"
                assert events[-1]["response"]["status"] == "completed"

        run(body)


def test_shutdown_lets_the_active_response_finish_then_closes() -> None:
    server = LiveServer(fake_pool(token_delay_s=0.03), AppSettings()).start()

    async def body() -> None:
        async with session(server) as client:
            await client.send({"type": "response.create"})
            await client.until("response.output_audio.delta")
            server.begin_shutdown()
            events = await client.until("response.done")
            assert events[-1]["response"]["status"] == "completed"
            with trio.fail_after(5):
                try:
                    while True:
                        await client.next()
                except trio_websocket.ConnectionClosed as closed:
                    assert closed.reason.code == 1001

    try:
        run(body)
    finally:
        server.stop()
