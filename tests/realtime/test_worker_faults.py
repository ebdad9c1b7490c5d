"""Engine workers dying under a live server: the session whose engine died gets its response
failed with ``engine_failed`` and goes on, the other sessions see nothing, the server lives,
and the worker is back for the next turn. On the test doubles and on the embedded engines,
each in worker processes as the server runs them by default."""

from __future__ import annotations

import functools
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from engines.workers import EngineWorker, WorkerLLM, WorkerSTT, WorkerTTS, start_all
from realtime import Pipeline, PipelinePool
from realtime.cli import build_worker_pool, parse_args
from tests.engines import worker_fakes
from tests.engines.test_workers import wait_for
from tests.realtime.fakes import FakeLLM, FakeSTT, FakeTTS, FakeVAD
from tests.realtime.harness import Client, LiveServer, health, live_server, session

#: eight words a sentence, so that speech starts while the LLM still writes
SENTENCE = "This sentence has eight words in it."
REPLY = " ".join([SENTENCE] * 5)


def worker_pool(size: int) -> PipelinePool:
    """``size`` pipelines of test doubles, their STT, LLM and TTS each in a worker."""
    chains = [
        (
            EngineWorker(f"pipeline {i} stt", FakeSTT, backoff_s=(0.05, 0.5)),
            EngineWorker(
                f"pipeline {i} llm",
                functools.partial(FakeLLM, reply=REPLY, token_delay_s=0.03),
                backoff_s=(0.05, 0.5),
            ),
            EngineWorker(
                f"pipeline {i} tts",
                functools.partial(FakeTTS, chunk_delay_s=0.04),
                backoff_s=(0.05, 0.5),
            ),
        )
        for i in range(size)
    ]
    start_all([worker for chain in chains for worker in chain])
    return PipelinePool(
        [Pipeline.of_workers(i, FakeVAD(), *chain) for i, chain in enumerate(chains)]
    )


@pytest.fixture
def fake_server() -> Iterator[tuple[LiveServer, PipelinePool]]:
    pool = worker_pool(3)
    try:
        with live_server(pool) as server:
            yield server, pool
    finally:
        pool.close()


def worker(pool: PipelinePool, name: str) -> EngineWorker:
    return next(w for w in pool.workers() if w.name == name)


async def ask(client: Client, text: str = "Tell me something.") -> None:
    await client.user_text(text)
    await client.next()  # conversation.item.added
    await client.next()  # conversation.item.done
    await client.send({"type": "response.create"})


async def completes_a_turn(client: Client) -> None:
    await ask(client)
    events = await client.until("response.done", timeout=30)
    assert events[-1]["response"]["status"] == "completed", events[-1]
    assert not [e for e in events if e["type"] == "error"]


async def until_the_failure(client: Client) -> list[dict[str, Any]]:
    """Events up to and including the ``error`` that follows a failed ``response.done``."""
    events = await client.until("response.done", timeout=30)
    events.append(await client.next())
    return events


def assert_failed_by(events: list[dict[str, Any]], engine: str, cause: str) -> None:
    done, error = events[-2], events[-1]
    assert done["type"] == "response.done"
    assert done["response"]["status"] == "failed"
    details = done["response"]["status_details"]["error"]
    assert details["type"] == "server_error"
    assert details["code"] == "engine_failed"
    assert details["message"] == f"the {engine} worker died: {cause}"
    assert error["type"] == "error"
    assert error["error"]["type"] == "server_error"
    assert error["error"]["code"] == "engine_failed"
    assert f"the {engine} worker died: {cause}" in error["error"]["message"]
    assert [e["type"] for e in events].count("error") == 1


async def nothing_arrives(client: Client, seconds: float = 0.3) -> None:
    with pytest.raises(trio.TooSlowError):
        await client.next(timeout=seconds)


@pytest.mark.parametrize(
    ("stage", "signum", "cause"),
    [
        ("llm", signal.SIGSEGV, "SIGSEGV"),
        ("llm", signal.SIGKILL, "SIGKILL (OOM killer or kill -9)"),
        ("tts", signal.SIGSEGV, "SIGSEGV"),
    ],
)
def test_a_worker_dying_mid_response_fails_only_that_response(
    fake_server: tuple[LiveServer, PipelinePool], stage: str, signum: int, cause: str
) -> None:
    server, pool = fake_server

    async def main() -> None:
        async with session(server) as a, session(server) as b, session(server) as c:
            await ask(b)  # b is mid-turn while a's engine dies
            await ask(a)
            await a.until("response.output_audio.delta", timeout=15)
            await b.until("response.output_audio.delta", timeout=15)
            victim = worker(pool, f"pipeline 0 {stage}")
            os.kill(victim.pid, signum)
            failed = await until_the_failure(a)
            assert_failed_by(failed, f"pipeline 0 {stage}", cause)
            assert all(e["type"] != "response.output_audio.delta" for e in failed[-2:])
            b_turn = await b.until("response.done", timeout=30)
            assert b_turn[-1]["response"]["status"] == "completed"
            assert not [e for e in b.events if e["type"] == "error"]
            await nothing_arrives(c)
            await nothing_arrives(a)  # nothing of the failed response comes after its error
            # every session goes on; a's next turn waits for its worker's restart
            for client in (a, b, c):
                await completes_a_turn(client)
            assert victim.restarts == 1 and victim.crashes == 1

    trio.run(main)
    state = health(server)
    assert state["status"] == "ok" and state["pipelines_healthy"] == 3
    restarted = [w for w in state["engine_workers"] if w["restarts"]]
    assert [(w["engine"], w["last_exit"]) for w in restarted] == [(f"pipeline 0 {stage}", cause)]


def test_worker_metrics_count_restarts_per_engine(
    fake_server: tuple[LiveServer, PipelinePool],
) -> None:
    server, pool = fake_server
    victim = worker(pool, "pipeline 1 tts")
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(lambda: victim.restarts == 1 and victim.healthy)
    url = f"http://127.0.0.1:{server.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    assert 'realtime_engine_worker_restarts_total{engine="pipeline 1 tts"} 1' in text
    assert 'realtime_engine_worker_crashes_total{engine="pipeline 1 tts"} 1' in text
    assert 'realtime_engine_worker_restarts_total{engine="pipeline 0 tts"} 0' in text
    assert 'realtime_engine_worker_up{engine="pipeline 1 tts"} 1' in text
    assert "realtime_pipelines_healthy 3" in text


def test_a_pipeline_with_an_engine_down_is_not_given_to_new_sessions(
    fake_server: tuple[LiveServer, PipelinePool],
) -> None:
    server, pool = fake_server
    failing = worker(pool, "pipeline 0 llm")
    failing.close()  # down for good: as a worker that could not restart
    assert not pool.pipelines[0].healthy

    async def main() -> None:
        async with session(server) as a, session(server) as b:
            assert health(server)["status"] == "degraded"
            assert health(server)["pipelines_healthy"] == 2
            for client in (a, b):
                await completes_a_turn(client)

    trio.run(main)
    wait_for(lambda: pool.in_use == 0)  # the server releases a pipeline after the socket closes


@pytest.fixture(scope="module")
def embedded_workers() -> Iterator[PipelinePool]:
    """Two pipelines of the embedded engines in worker processes, built as the server's
    command line builds them (Piper's noise off, so speech is the same on every run)."""
    args = parse_args(
        ["--num_pipelines", "2", "--tts_noise_scale", "0", "--tts_noise_w_scale", "0"]
    )
    try:
        pool = build_worker_pool(args, transcription_sessions=2)
    except Exception as error:  # the [embedded] extra is not installed
        pytest.skip(str(error))
    try:
        yield pool
    finally:
        pool.close()


def test_embedded_llm_segfault_fails_the_response_and_the_next_turn_answers(
    embedded_workers: PipelinePool,
) -> None:
    pool = embedded_workers
    llm = worker(pool, "pipeline 0 llm")
    assert llm.info["type"] == "LlamaCppLLM"

    async def main(server: LiveServer) -> None:
        async with session(server) as a, session(server) as b:
            await ask(a, "Tell me a long story about a dragon and a knight.")
            await a.until("response.output_audio.delta", timeout=60)
            os.kill(llm.pid, signal.SIGSEGV)
            failed = await until_the_failure(a)
            assert_failed_by(failed, "pipeline 0 llm", "SIGSEGV")
            await nothing_arrives(b)
            for client in (a, b):
                await ask(client, "What is the capital of France?")
                events = await client.until("response.done", timeout=60)
                assert events[-1]["response"]["status"] in ("completed", "incomplete")
                assert any(e["type"] == "response.output_audio.delta" for e in events)

    with live_server(pool) as server:
        trio.run(main, server)
    assert llm.restarts == 1 and llm.last_exit == "SIGSEGV"
    assert pool.healthy == 2


def test_a_hung_llm_worker_fails_its_response_and_is_replaced(tmp_path: Path) -> None:
    """A native call that never returns: the session gives up at its engine timeout, the
    worker that still says nothing is killed and restarted, and the next turn answers."""
    build = functools.partial(worker_fakes.FakeHangsOnce, str(tmp_path / "hung"))
    llm = EngineWorker("pipeline 0 llm", build, call_timeout_s=1.5, backoff_s=(0.05, 0.5))
    stt, tts = EngineWorker("pipeline 0 stt", FakeSTT), EngineWorker("pipeline 0 tts", FakeTTS)
    start_all([stt, llm, tts])
    pipeline = Pipeline(
        index=0,
        vad=FakeVAD(),
        stt=WorkerSTT(stt),
        llm=WorkerLLM(llm),
        tts=WorkerTTS(tts),
        workers=(stt, llm, tts),
    )
    pool = PipelinePool([pipeline])

    async def main(server: LiveServer) -> None:
        async with session(server) as client:
            await ask(client)
            failed = await until_the_failure(client)
            assert failed[-2]["response"]["status"] == "failed"
            assert "engine produced nothing for 1 s" in failed[-1]["error"]["message"]
            await completes_a_turn(client)

    try:
        with live_server(pool, engine_timeout_s=1.0) as server:
            trio.run(main, server)
    finally:
        pool.close()
    assert llm.restarts == 1
    assert llm.last_exit == "killed: it answered nothing for 1.5 s"
