"""Readiness and draining, as a load balancer and an orchestrator see them: ``/ready`` answers
503 when a new session would not be served, and a draining server takes no new session while
its live ones go on."""

from __future__ import annotations

import json
import time
import types
import urllib.error
import urllib.request
from typing import Any

import trio
import trio_websocket

from realtime import AppSettings
from tests.realtime.harness import LiveServer, connect, fake_pool, session


def http_get(server: LiveServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def ready(server: LiveServer) -> tuple[int, dict[str, Any]]:
    status, body = http_get(server, "/ready")
    return status, json.loads(body)


def metric(server: LiveServer, name: str) -> float:
    _, text = http_get(server, "/metrics")
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def test_ready_answers_503_while_every_pipeline_is_in_use() -> None:
    server = LiveServer(fake_pool(1), AppSettings()).start()
    try:
        assert ready(server) == (200, {"status": "ready", "pipelines": 1, "pipelines_free": 1})

        async def body() -> None:
            async with session(server):
                status, state = await trio.to_thread.run_sync(ready, server)
                assert (status, state["status"], state["pipelines_free"]) == (503, "full", 0)
                in_use = await trio.to_thread.run_sync(metric, server, "realtime_pool_in_use")
                assert in_use == 1

        trio.run(body)
        deadline = time.monotonic() + 5
        while ready(server)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready(server)[0] == 200
    finally:
        server.stop()


def test_draining_refuses_new_sessions_while_live_ones_go_on_to_their_end() -> None:
    server = LiveServer(fake_pool(2), AppSettings()).start()
    try:

        async def body() -> None:
            async with session(server) as live:
                server.begin_drain(timeout_s=30)
                await trio.sleep(0.2)
                status, state = await trio.to_thread.run_sync(ready, server)
                assert (status, state["status"]) == (503, "draining")
                assert await trio.to_thread.run_sync(metric, server, "realtime_draining") == 1
                async with connect(server) as refused:
                    error = json.loads(await refused.get_message())
                    assert error["error"]["code"] == "server_shutting_down"
                # the live session goes on: a whole new turn
                await live.user_text("Hello?")
                await live.send({"type": "response.create"})
                events = await live.until("response.done")
                assert events[-1]["response"]["status"] == "completed"
            # its end ends the drain: the server shuts down without waiting out the 30 s
            began = time.monotonic()
            await trio.to_thread.run_sync(server._thread.join, 10)
            assert time.monotonic() - began < 5

        trio.run(body)
        assert not server._thread.is_alive()
    finally:
        server.stop()


def test_a_drain_that_runs_out_closes_the_sessions_left_with_1001() -> None:
    server = LiveServer(fake_pool(1), AppSettings()).start()
    try:

        async def body() -> None:
            async with session(server) as live:
                server.begin_drain(timeout_s=0.5)
                with trio.fail_after(5):
                    try:
                        while True:
                            await live.next()
                    except trio_websocket.ConnectionClosed as closed:
                        assert closed.reason.code == 1001

        trio.run(body)
        server._thread.join(10)
        assert not server._thread.is_alive()
    finally:
        server.stop()


def test_a_drain_gives_notice_on_readiness_before_it_refuses() -> None:
    server = LiveServer(fake_pool(2), AppSettings()).start()
    try:

        async def body() -> None:
            async with session(server):
                server.begin_drain(timeout_s=30, notice_s=1.0)
                await trio.sleep(0.1)
                status, state = await trio.to_thread.run_sync(ready, server)
                assert (status, state["status"]) == (503, "draining")
                # during the notice a balancer that has not seen the 503 yet is still served
                async with session(server) as late:
                    assert late.created["type"] == "session.created"
                await trio.sleep(1.2)
                async with connect(server) as refused:
                    error = json.loads(await refused.get_message())
                    assert error["error"]["code"] == "server_shutting_down"

        trio.run(body)
    finally:
        server.stop()


def test_readiness_counts_only_free_healthy_pipelines_and_can_ignore_capacity() -> None:
    pool = fake_pool(2)
    server = LiveServer(pool, AppSettings()).start()
    try:

        async def body() -> None:
            async with session(server):
                # the other pipeline's engines are down: no session would be served
                pool._free[0].workers = (types.SimpleNamespace(healthy=False),)  # type: ignore[assignment]
                status, state = await trio.to_thread.run_sync(ready, server)
                assert (status, state["status"], state["pipelines_free"]) == (503, "full", 0)
                status, body = await trio.to_thread.run_sync(
                    http_get, server, "/ready?ignore_capacity=1"
                )
                assert status == 200 and json.loads(body)["status"] == "ready"

        trio.run(body)
    finally:
        server.stop()
