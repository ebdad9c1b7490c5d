"""Load against the live server: more connections than pipelines, every pipeline busy with a
session that speaks in real time, with engines that cost nothing.

Every accepted session's events are validated (SDK types, ``SequenceChecker``) and counted: each
turn is heard once (speech started/stopped, committed, transcribed) and answered once, and each
answer is event for event and byte for byte the answer a lone session gets. Every other
connection is refused cleanly (``session_limit_reached``, then close code 1013) and retries
until the talkers are done; then the pool is whole again.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from typing import Any

import trio
import trio_websocket

from tests.realtime.harness import (
    Client,
    LiveServer,
    connect,
    fake_pool,
    live_server,
    silence_pcm,
    tone_pcm,
)
from tests.support import validate_with_sdk

PIPELINES = 2
CONNECTIONS = 5 * PIPELINES  #: attempted at once; refused ones retry while the talkers talk
TURNS = 2
TURN_PCM = tone_pcm(500) + silence_pcm(800)  #: one spoken turn, 24 kHz PCM16
CHUNK_MS = 20
RETRY_S = 0.4
TRANSCRIBED = {
    "type": "session.update",
    "session": {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}},
}
ONCE_PER_TURN = (
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.input_audio_transcription.completed",
    "response.created",
    "response.done",
)


def answers(events: list[dict[str, Any]]) -> list[tuple[Counter[str], int]]:
    """Per response, in order: its events by type and the bytes of audio it carried."""
    found: dict[str, tuple[Counter[str], list[int]]] = {}
    for event in events:
        response_id = event.get("response_id") or event.get("response", {}).get("id")
        if response_id is None:
            continue
        kinds, audio = found.setdefault(response_id, (Counter(), [0]))
        kinds[event["type"]] += 1
        if event["type"] == "response.output_audio.delta":
            audio[0] += len(base64.b64decode(event["delta"]))
    return [(kinds, audio[0]) for kinds, audio in found.values()]


async def talk(client: Client) -> list[dict[str, Any]]:
    """``TURNS`` spoken turns, appended in real time while a reader takes every event."""
    await client.send(TRANSCRIBED)
    await client.until("session.updated")
    answered = trio.Event()

    async def read() -> None:
        while sum(e["type"] == "response.done" for e in client.events) < TURNS:
            await client.next(timeout=10)
        answered.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        step = 48 * CHUNK_MS
        pcm = TURN_PCM * TURNS
        began = trio.current_time()
        for index, offset in enumerate(range(0, len(pcm), step)):
            await trio.sleep_until(began + index * CHUNK_MS / 1000)
            chunk = base64.b64encode(pcm[offset : offset + step]).decode()
            await client.send({"type": "input_audio_buffer.append", "audio": chunk})
        with trio.fail_after(10):
            await answered.wait()
    return client.events


async def attempt(server: LiveServer) -> tuple[str, list[dict[str, Any]]]:
    """One connection: refused (checked to be clean) or accepted (then it talks)."""
    async with connect(server) as ws:
        first = json.loads(await ws.get_message())
        validate_with_sdk(first)
        if first["type"] == "error":
            assert first["error"]["code"] == "session_limit_reached", first
            try:
                extra = await ws.get_message()
            except trio_websocket.ConnectionClosed as closed:
                assert closed.reason.code == 1013
            else:
                raise AssertionError(f"a refused connection was sent {extra}")
            return "refused", []
        client = Client(ws)
        client.checker.check(first)
        client.events.append(first)
        return "accepted", await talk(client)


def test_more_connections_than_pipelines_lose_nothing_and_are_refused_cleanly() -> None:
    with live_server(fake_pool(size=PIPELINES)) as server:
        sessions: list[list[dict[str, Any]]] = []
        refusals = 0

        async def alone() -> None:
            outcome, events = await attempt(server)
            assert outcome == "accepted"
            sessions.append(events)

        trio.run(alone)
        reference = answers(sessions.pop())[0]

        async def caller(talking: trio.Event) -> None:
            nonlocal refusals
            while True:
                outcome, events = await attempt(server)
                if outcome == "accepted":
                    sessions.append(events)
                    return
                refusals += 1
                if talking.is_set():
                    return
                await trio.sleep(RETRY_S)

        async def crowd() -> None:
            talking = trio.Event()
            async with trio.open_nursery() as callers:
                for _ in range(CONNECTIONS):
                    callers.start_soon(caller, talking)
                await trio.sleep(0.5)
                assert server.pool.in_use == PIPELINES  # every pipeline is busy
                talking.set()  # callers stop retrying after their next refusal

        trio.run(crowd)

        assert len(sessions) >= PIPELINES
        assert refusals >= CONNECTIONS - PIPELINES
        assert len(sessions) + refusals >= 4 * PIPELINES
        for events in sessions:
            kinds = Counter(e["type"] for e in events)
            assert [kinds[kind] for kind in ONCE_PER_TURN] == [TURNS] * len(ONCE_PER_TURN)
            assert kinds["error"] == 0
            done = [e["response"] for e in events if e["type"] == "response.done"]
            assert [r["status"] for r in done] == ["completed"] * TURNS
            assert answers(events) == [reference] * TURNS  # nothing lost, nothing added

        deadline = time.monotonic() + 5
        while server.pool.in_use or server.metrics.active_sessions:
            assert time.monotonic() < deadline, "the pool was not restored"
            time.sleep(0.01)
        assert server.metrics.sessions_refused == refusals
        assert server.metrics.sessions_total == len(sessions) + 1  # and the lone session
        trio.run(alone)  # the pool takes sessions again
