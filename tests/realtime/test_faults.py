"""Faults against the live server: engines that raise, hang or are slow in each stage, clients
that vanish or stop reading, and a shutdown during active sessions.

Each server has two pipelines: the first session gets the faulty one, a second session runs a
turn on the healthy one at the same time and must not notice. Every fault ends as the protocol
requires, the pool is whole again afterwards, and the server logs nothing at ERROR but the
failures it was made to meet.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio_websocket

from realtime import AppSettings, Pipeline, PipelinePool, SessionOptions
from tests.realtime.fakes import (
    FakeLLM,
    FakeSTT,
    FakeTTS,
    FakeVAD,
    Fault,
    FaultyLLM,
    FaultySTT,
    FaultyTTS,
)
from tests.realtime.harness import Client, LiveServer, connect, live_server, silence_pcm, tone_pcm
from tests.support import types

TIMEOUT_S = 1.0  #: engine_timeout_s of these servers: a hung engine fails a turn this fast
TRANSCRIBED = {
    "type": "session.update",
    "session": {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}},
}
#: the server's own lines at ERROR for the failures these tests cause on purpose
EXPECTED_ERRORS = {
    "stt": r"session \S+: (partial )?transcription failed",
    "llm": r"session \S+: response \S+ failed",
    "tts": r"session \S+: response \S+ failed",
    "vad": r"session \S+ failed; closing it",
}
SERVER_LOGGERS = ("realtime", "hypercorn", "quart", "trio")


def run(test: Callable[[], Awaitable[None]]) -> None:
    trio.run(test)


def pool_with(stage: str | None = None, fault: Fault | None = None) -> PipelinePool:
    """Two pipelines: the first (taken by the first session) meets ``fault`` in ``stage``."""
    fault = fault or Fault()
    faulty = Pipeline(
        index=0,
        vad=FakeVAD(),
        stt=FaultySTT(fault) if stage == "stt" else FakeSTT(),
        llm=FaultyLLM(fault) if stage == "llm" else FakeLLM(),
        tts=FaultyTTS(fault) if stage == "tts" else FakeTTS(),
    )
    healthy = Pipeline(index=1, vad=FakeVAD(), stt=FakeSTT(), llm=FakeLLM(), tts=FakeTTS())
    return PipelinePool([faulty, healthy], transcription_sessions=2)


async def start(ws: trio_websocket.WebSocketConnection) -> Client:
    client = Client(ws)
    assert (await client.next())["type"] == "session.created"
    await client.send(TRANSCRIBED)
    assert (await client.next())["type"] == "session.updated"
    return client


async def voice_turn(client: Client) -> list[dict[str, Any]]:
    await client.append(tone_pcm(800) + silence_pcm(700))
    return await client.until("response.done", timeout=15)


async def text_turn(client: Client, **response: Any) -> list[dict[str, Any]]:
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Say hello"}],
            },
        }
    )
    await client.send({"type": "response.create", "response": response})
    return await client.until("response.done", timeout=15)


async def healthy_turn(
    server: LiveServer, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """A second session takes the healthy pipeline (started once it has), and a voice turn of
    it completes, transcript and all."""
    async with connect(server) as ws:
        client = await start(ws)
        task_status.started()
        events = await voice_turn(client)
        assert events[-1]["response"]["status"] == "completed"
        assert "conversation.item.input_audio_transcription.completed" in types(events)


def wait_until_idle(server: LiveServer, timeout_s: float = 5.0) -> None:
    """The server thread is alive and every pipeline is back in the pool."""
    deadline = time.monotonic() + timeout_s
    while server.pool.in_use or server.metrics.active_sessions:
        assert time.monotonic() < deadline, "the pool was not restored"
        time.sleep(0.01)
    assert server._thread.is_alive()


def server_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.split(".")[0] in SERVER_LOGGERS
    ]


def assert_only_expected_errors(caplog: pytest.LogCaptureFixture, stage: str | None) -> None:
    logged = server_errors(caplog)
    unexpected = [m for m in logged if stage is None or not re.fullmatch(EXPECTED_ERRORS[stage], m)]
    assert not unexpected, unexpected


async def faulty_turn(client: Client, stage: str, text_only: bool = False) -> list[dict[str, Any]]:
    """The turn that meets the fault: spoken for the STT, typed for the LLM and TTS."""
    if stage == "stt":
        return await voice_turn(client)
    return await text_turn(client, output_modalities=["text"] if text_only else ["audio"])


def assert_failed_as_required(stage: str, events: list[dict[str, Any]], message: str) -> None:
    """A failed transcription still answers the turn; a failed LLM or TTS fails the response."""
    done = events[-1]["response"]
    if stage == "stt":
        (failed,) = [e for e in events if e["type"].endswith("transcription.failed")]
        assert message in failed["error"]["message"]
        assert done["status"] == "completed"
    else:
        assert done["status"] == "failed"
        assert message in done["status_details"]["error"]["message"]


@pytest.mark.parametrize(
    ("stage", "mode", "after"),
    [
        *((stage, mode, 0) for stage in ("stt", "llm", "tts") for mode in ("raise", "slow")),
        ("llm", "raise", 2),  # mid-stream: a transcription is one call, it has no middle
        ("tts", "raise", 2),
    ],
)
def test_an_engine_that_raises_or_is_slow_ends_the_turn_as_the_protocol_requires(
    caplog: pytest.LogCaptureFixture, stage: str, mode: str, after: int
) -> None:
    fault = Fault(mode, after=after, delay_s=0.3 if stage == "stt" else 0.08)
    with live_server(pool_with(stage, fault), engine_timeout_s=TIMEOUT_S) as server:

        async def body() -> None:
            async with connect(server) as ws:
                client = await start(ws)
                async with trio.open_nursery() as nursery:
                    await nursery.start(healthy_turn, server)
                    # text deltas reach the client as they come; spoken ones may not, when
                    # the LLM fails before the TTS has voiced them
                    text_only = stage == "llm" and after > 0
                    events = await faulty_turn(client, stage, text_only)
                if mode == "slow":
                    assert events[-1]["response"]["status"] == "completed"
                else:
                    assert_failed_as_required(stage, events, f"fake {stage.upper()} failure")
                    if stage != "stt":
                        error = await client.next()
                        assert (error["type"], error["error"]["type"]) == ("error", "server_error")
                    if after:  # the output streamed before the failure was closed properly
                        assert events[-1]["response"]["output"]
                fault.mode = None
                events = await text_turn(client)
                assert events[-1]["response"]["status"] == "completed"

        run(body)
        wait_until_idle(server)
    assert fault.most_running == 1
    assert_only_expected_errors(caplog, None if mode == "slow" else stage)
    if mode == "raise":
        assert server.metrics.engine_errors == 1


@pytest.mark.parametrize("stage", ["stt", "llm", "tts"])
def test_a_hung_engine_is_abandoned_after_the_engine_timeout_and_never_run_twice_at_once(
    caplog: pytest.LogCaptureFixture, stage: str
) -> None:
    """A worker thread can't be killed: the turn fails after ``engine_timeout_s`` and the
    thread is left to return on its own, keeping its engine; a turn meanwhile fails in the same
    time instead of running the engine alongside it. Once it returns, turns work again."""
    fault = Fault("hang", after=1 if stage == "tts" else 0)
    message = "the STT gave no result" if stage == "stt" else "engine produced nothing for 1 s"
    with live_server(pool_with(stage, fault), engine_timeout_s=TIMEOUT_S) as server:

        async def body() -> None:
            async with connect(server) as ws:
                client = await start(ws)
                async with trio.open_nursery() as nursery:
                    await nursery.start(healthy_turn, server)
                    began = time.monotonic()
                    events = await faulty_turn(client, stage)
                    assert time.monotonic() - began < TIMEOUT_S + 2.5
                assert_failed_as_required(stage, events, message)
                assert fault.running == 1  # the hung call, abandoned
                events = await faulty_turn(client, stage)  # the engine is still busy
                assert_failed_as_required(stage, events, message)
                fault.mode = None
                fault.release()
                with trio.fail_after(2):
                    while fault.running:
                        await trio.sleep(0.01)
                events = await faulty_turn(client, stage)
                assert events[-1]["response"]["status"] == "completed"
                if stage == "stt":
                    assert "conversation.item.input_audio_transcription.completed" in types(events)

        try:
            run(body)
        finally:
            fault.release()
        wait_until_idle(server)
    assert fault.calls == 1 and fault.most_running == 1
    assert_only_expected_errors(caplog, stage)


def test_a_hung_engine_does_not_keep_its_pipeline_when_the_client_leaves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fault = Fault("hang")
    with live_server(pool_with("llm", fault), engine_timeout_s=30) as server:

        async def body() -> None:
            async with connect(server) as ws:
                client = await start(ws)
                await client.send({"type": "response.create"})
                await client.until("response.created")
                while not fault.entered.is_set():
                    await trio.sleep(0.01)

        try:
            run(body)
            wait_until_idle(server)  # long before engine_timeout_s
            assert fault.running == 1
        finally:
            fault.release()
    assert_only_expected_errors(caplog, None)


def test_a_vad_that_raises_ends_its_session_with_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The VAD runs inline in the session's reader: its failure ends that session (an error
    event, then close code 1011), not the others."""

    class FaultyVAD(FakeVAD):
        def probability(self, frame: Any) -> float:
            raise RuntimeError("fake VAD failure")

    pool = pool_with()
    pool.pipelines[0].vad = FaultyVAD()
    with live_server(pool) as server:

        async def body() -> None:
            async with connect(server) as ws:
                client = await start(ws)
                async with trio.open_nursery() as nursery:
                    await nursery.start(healthy_turn, server)
                    await client.append(tone_pcm(100))
                    error = await client.next()
                    assert error["error"]["type"] == "server_error"
                    assert error["error"]["code"] == "session_failed"
                    assert "fake VAD failure" in error["error"]["message"]
                    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                        await client.next()
                    assert closed.value.reason.code == 1011

        run(body)
        wait_until_idle(server)
    assert len(server_errors(caplog)) == 1
    assert_only_expected_errors(caplog, "vad")


@pytest.mark.parametrize("how", ["abort", "close"])
def test_a_client_that_leaves_during_tts_frees_its_pipeline_and_stops_the_tts(
    caplog: pytest.LogCaptureFixture, how: str
) -> None:
    fault = Fault("slow", delay_s=0.05)
    with live_server(pool_with("tts", fault)) as server:
        tts = server.pool.pipelines[0].tts
        assert isinstance(tts, FaultyTTS)

        async def leave_during_tts() -> None:
            async with connect(server) as ws:
                client = await start(ws)
                await client.send({"type": "response.create"})
                await client.until("response.output_audio.delta")
                if how == "abort":
                    await ws._stream.aclose()  # the TCP connection drops, no close frame
                else:
                    await ws.aclose()

        async def body() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(healthy_turn, server)
                await leave_during_tts()

        run(body)
        wait_until_idle(server)
        deadline = time.monotonic() + 1
        while fault.running:  # the abandoned worker returns at its next chunk
            assert time.monotonic() < deadline, "the TTS went on after its client left"
            time.sleep(0.01)
        produced = tts.produced
        time.sleep(0.2)
        assert tts.produced == produced
        assert produced < 10  # the reply is ten words: it was cut short
    assert server.metrics.engine_errors == 0
    assert_only_expected_errors(caplog, None)


def test_a_client_that_stops_reading_mid_response_is_closed_without_an_engine_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = pool_with()
    pool.pipelines[0].llm = FakeLLM(reply=" ".join(["word"] * 5000))
    with live_server(pool, send_timeout_s=0.5, outbox_high_water=16) as server:

        async def body() -> None:
            async with connect(server) as ws:
                await ws.get_message()
                await ws.send_message('{"type": "response.create"}')
                async with trio.open_nursery() as nursery:
                    await nursery.start(healthy_turn, server)  # while the answer piles up
                with trio.fail_after(10):
                    while server.metrics.active_sessions:
                        await trio.sleep(0.02)  # ended while this client is still connected

        run(body)
        wait_until_idle(server)
    assert any("client stopped reading" in r.getMessage() for r in caplog.records)
    assert server.metrics.engine_errors == 0
    assert_only_expected_errors(caplog, None)


def test_shutdown_lets_responses_end_then_closes_every_session_with_1001(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = pool_with()
    pool.pipelines[0].llm = FakeLLM(token_delay_s=0.03)
    server = LiveServer(pool, AppSettings()).start()
    closed: list[int] = []

    async def until_closed(client: Client) -> None:
        with trio.fail_after(3):  # the grace period is 2 s
            try:
                while True:
                    await client.next()
            except trio_websocket.ConnectionClosed as error:
                closed.append(error.reason.code)

    async def body() -> None:
        async with connect(server) as ws_a, connect(server) as ws_b:
            speaking = await start(ws_a)
            idle = await start(ws_b)
            await speaking.send({"type": "response.create"})
            await speaking.until("response.output_audio.delta")
            server.begin_shutdown()
            events = await speaking.until("response.done")
            assert events[-1]["response"]["status"] == "completed"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(until_closed, speaking)
                nursery.start_soon(until_closed, idle)

    try:
        run(body)
        server._thread.join(3)
        assert not server._thread.is_alive()
    finally:
        server.stop()
    assert closed == [1001, 1001]
    assert server.pool.in_use == 0
    assert_only_expected_errors(caplog, None)


def test_shutdown_is_bounded_by_its_grace_period_even_with_a_hung_engine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fault = Fault("hang")
    server = LiveServer(
        pool_with("llm", fault), AppSettings(session=SessionOptions(engine_timeout_s=30))
    ).start()

    async def body() -> None:
        async with connect(server) as ws:
            client = await start(ws)
            await client.send({"type": "response.create"})
            await client.until("response.created")
            while not fault.entered.is_set():
                await trio.sleep(0.01)
            began = time.monotonic()
            server.begin_shutdown()
            with trio.fail_after(4), pytest.raises(trio_websocket.ConnectionClosed):
                while True:
                    await client.next()
            assert time.monotonic() - began < 3.5  # the grace period is 2 s

    try:
        run(body)
        server._thread.join(3)
        assert not server._thread.is_alive()
    finally:
        fault.release()
        server.stop()
    assert_only_expected_errors(caplog, None)
