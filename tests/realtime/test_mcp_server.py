"""Remote MCP tools through the live server: real MCP servers (the ``mcp`` SDK's own, on
loopback ports) and a scripted LLM test double that calls their tools. Every event the client
receives is validated against the SDK's union and the sequence checker."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from openai import AsyncOpenAI

from engines.embedded import EmbeddedEngines
from protocol.invariants import SequenceChecker
from realtime import Pipeline, PipelinePool
from realtime.audio import StreamingResampler, decode
from realtime.input_audio import ENGINE_RATE
from tests import mcp_servers
from tests.mcp_servers import free_port
from tests.realtime.fakes import FakeSTT, FakeTTS, FakeVAD, ScriptedLLM
from tests.realtime.harness import Client, live_server, session, silence_pcm
from tests.realtime.test_embedded_voice import normalise, spoken_pcm
from tests.support import types, validate_with_sdk

SCRIPT: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "forecast": [("forecast", {"city": "Oslo"})],
    "wait": [("slow", {"seconds": 30})],
    "sensor": [("broken", {})],
    "both": [("home__forecast", {"city": "Oslo"}), ("office__add", {"a": 2, "b": 3})],
}
SUNNY = "Sunny in Oslo, 21 degrees"
#: a loopback port nothing listens on
DEAD = f"http://127.0.0.1:{free_port()}/mcp"


def scripted_pool() -> PipelinePool:
    llm = ScriptedLLM(SCRIPT)
    return PipelinePool([Pipeline(index=0, vad=FakeVAD(), stt=FakeSTT(), llm=llm, tts=FakeTTS())])


def mcp_tool(url: str, label: str = "weather", **fields: Any) -> dict[str, Any]:
    return {
        "type": "mcp",
        "server_label": label,
        "server_url": url,
        "require_approval": "never",
        **fields,
    }


def run_session(body: Callable[[Client], Awaitable[None]], **options: Any) -> None:
    with live_server(scripted_pool(), **options) as server:

        async def main() -> None:
            async with session(server) as client:
                await body(client)

        trio.run(main)


async def configure(
    client: Client, *tools: dict[str, Any], listings: int | None = None
) -> list[dict[str, Any]]:
    """``session.update`` with ``tools`` (text output); the events until ``listings`` (every
    tool's, by default) have ended, a failed listing's ``error`` included."""
    await client.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "output_modalities": ["text"], "tools": list(tools)},
        }
    )
    events: list[dict[str, Any]] = []
    ended = 0
    while ended < (len(tools) if listings is None else listings):
        event = await client.next(timeout=20)
        events.append(event)
        ended += event["type"] in ("mcp_list_tools.completed", "mcp_list_tools.failed")
        if event["type"] == "mcp_list_tools.failed":  # its error comes right after it
            events.append(await client.next())
            assert events[-1]["type"] == "error"
    return events


async def ask(client: Client, text: str) -> list[dict[str, Any]]:
    """A user message and ``response.create``; the events until ``response.done``."""
    await client.user_text(text)
    await client.send({"type": "response.create"})
    return await client.until("response.done", timeout=20)


async def follow_up(client: Client) -> list[dict[str, Any]]:
    """``response.create`` after the calls answered, as OpenAI's clients send it: the model
    answers with the results."""
    await client.send({"type": "response.create"})
    return await client.until("response.done", timeout=20)


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def test_a_listed_tool_is_called_and_the_model_answers_with_its_result() -> None:
    async def body(client: Client) -> None:
        with mcp_servers.serving() as url:
            events = await configure(client, mcp_tool(url))
            assert types(events) == [
                "session.updated",
                "conversation.item.added",
                "mcp_list_tools.in_progress",
                "conversation.item.done",
                "mcp_list_tools.completed",
            ]
            listed = events[3]["item"]
            assert [t["name"] for t in listed["tools"]] == ["forecast", "add", "slow", "broken"]
            assert listed["tools"][0]["annotations"]["readOnlyHint"] is True

            events = await ask(client, "The forecast, please")
            kinds = types(events)
            assert [k for k in kinds if k.startswith("response.mcp_call")] == [
                "response.mcp_call_arguments.delta",
                "response.mcp_call_arguments.done",
                "response.mcp_call.in_progress",
                "response.mcp_call.completed",
            ]
            done = events[-1]["response"]
            assert done["status"] == "completed"
            (call,) = done["output"]
            assert (call["type"], call["name"], call["output"], call["error"]) == (
                "mcp_call",
                "forecast",
                SUNNY,
                None,
            )
            assert json.loads(call["arguments"]) == {"city": "Oslo"}
            assert text_of(await follow_up(client)) == f"The tools said: {SUNNY}."

    run_session(body)


def test_an_unreachable_server_fails_its_listing_and_the_session_goes_on() -> None:
    async def body(client: Client) -> None:
        with mcp_servers.serving() as url:
            events = await configure(client, mcp_tool(DEAD, "gone"), mcp_tool(url))
            failed = [e for e in events if e["type"] == "mcp_list_tools.failed"]
            assert len(failed) == 1
            (error,) = [e["error"] for e in events if e["type"] == "error"]
            assert error["code"] == "mcp_list_tools_failed"
            assert "gone" in error["message"]
            await ask(client, "The forecast, please")
            assert text_of(await follow_up(client)) == f"The tools said: {SUNNY}."

    run_session(body)


def test_a_tool_that_raises_fails_its_call_and_the_model_is_told() -> None:
    async def body(client: Client) -> None:
        with mcp_servers.serving() as url:
            await configure(client, mcp_tool(url))
            events = await ask(client, "Check the sensor")
            assert "response.mcp_call.failed" in types(events)
            call = events[-1]["response"]["output"][0]
            assert call["output"] is None
            assert call["error"]["type"] == "tool_execution_error"
            assert "the sensor is offline" in call["error"]["message"]
            assert "the sensor is offline" in text_of(await follow_up(client))

    run_session(body)


def test_a_cancel_abandons_a_slow_call_and_the_server_stays_usable() -> None:
    async def body(client: Client) -> None:
        with mcp_servers.serving() as url:
            await configure(client, mcp_tool(url))
            await client.user_text("Please wait for it")
            await client.send({"type": "response.create"})
            await client.until("response.mcp_call.in_progress")
            cancelled_at = time.monotonic()
            await client.send({"type": "response.cancel"})
            # the tool sleeps 30 s: a response.done well before means the call was abandoned
            events = await client.until("response.done", timeout=10)
            assert time.monotonic() - cancelled_at < 10
            assert "response.mcp_call.failed" in types(events)
            assert events[-1]["response"]["status"] == "cancelled"
            # the next call on the same server works
            await ask(client, "The forecast, please")
            assert text_of(await follow_up(client)) == f"The tools said: {SUNNY}."

    run_session(body)


def test_two_servers_tools_of_one_name_are_told_apart_by_label() -> None:
    async def body(client: Client) -> None:
        with mcp_servers.serving() as home, mcp_servers.serving("sse") as office:
            await configure(client, mcp_tool(home, "home"), mcp_tool(office, "office"))
            events = await ask(client, "Both, please")
            calls = [o for o in events[-1]["response"]["output"] if o["type"] == "mcp_call"]
            assert [(c["server_label"], c["name"], c["output"]) for c in calls] == [
                ("home", "forecast", SUNNY),
                ("office", "add", "5"),
            ]
            assert text_of(await follow_up(client)) == f"The tools said: {SUNNY}; 5."

    run_session(body)


@pytest.mark.parametrize("approve", [True, False])
def test_approval_requested_then_answered_by_the_client(approve: bool) -> None:
    async def body(client: Client) -> None:
        with mcp_servers.serving() as url:
            await configure(client, mcp_tool(url, require_approval="always"))
            await client.user_text("The forecast, please")
            await client.send({"type": "response.create"})
            events = await client.until("response.output_item.done")
            request = events[-1]["item"]
            assert request["type"] == "mcp_approval_request"
            assert "response.mcp_call.in_progress" not in types(events)
            answer = {
                "type": "mcp_approval_response",
                "approval_request_id": request["id"],
                "approve": approve,
            }
            if not approve:
                answer["reason"] = "not today"
            # the response waits for the answer, and makes the approved call itself
            await client.send({"type": "conversation.item.create", "item": answer})
            events = await client.until("response.done", timeout=20)
            output = events[-1]["response"]["output"]
            if approve:
                assert [o["type"] for o in output] == ["mcp_approval_request", "mcp_call"]
                assert output[1]["approval_request_id"] == request["id"]
                assert output[1]["output"] == SUNNY
                assert text_of(await follow_up(client)) == f"The tools said: {SUNNY}."
            else:
                assert [o["type"] for o in output] == ["mcp_approval_request"]
                said = text_of(await follow_up(client))
                assert "declined" in said and "not today" in said

    run_session(body)


def test_credentials_reach_the_mcp_server_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = "t0k3n-never-echoed"

    async def body(client: Client) -> None:
        with mcp_servers.serving(token=token) as url:
            good = mcp_tool(url, authorization=token, headers={"X-Test": "h3ader-secret"})
            events = await configure(client, good)
            assert events[-1]["type"] == "mcp_list_tools.completed"
            assert ("/mcp", f"Bearer {token}", "h3ader-secret") in mcp_servers.SEEN
            events += await ask(client, "The forecast, please")
            bad = mcp_tool(url, "wrong", authorization="wr0ng-secret")
            events += await configure(client, good, bad, listings=1)
            (error,) = [e["error"] for e in events if e["type"] == "error"]
            assert "401" in error["message"]
            sent = json.dumps(client.events)
            for secret in (token, "h3ader-secret", "wr0ng-secret"):
                assert secret not in sent
                assert secret not in caplog.text

    caplog.set_level("DEBUG")
    run_session(body)


def test_openai_sdk_client_hears_a_spoken_answer_that_used_the_tool(
    embedded: EmbeddedEngines,
) -> None:
    """A spoken question through the official SDK, the real embedded VAD, STT and TTS, the
    scripted LLM calling the MCP tool; the answer's audio, transcribed, carries its result."""
    llm = ScriptedLLM({"weather": [("forecast", {"city": "Oslo"})]})
    pipeline = Pipeline(index=0, vad=embedded.vad, stt=embedded.stt, llm=llm, tts=embedded.tts)
    question = spoken_pcm(embedded, "What is the weather like in Oslo?")
    with mcp_servers.serving() as url, live_server(PipelinePool([pipeline])) as server:

        async def body() -> list[Any]:
            client = AsyncOpenAI(api_key="any", base_url=f"http://127.0.0.1:{server.port}/v1")
            events: list[Any] = []
            async with client.realtime.connect(model="gpt-realtime") as conn:
                await conn.session.update(
                    session={
                        "type": "realtime",
                        "tools": [
                            {
                                "type": "mcp",
                                "server_label": "weather",
                                "server_url": url,
                                "require_approval": "never",
                            }
                        ],
                    }
                )
                async for event in conn:
                    events.append(event)
                    if event.type in ("mcp_list_tools.completed", "mcp_list_tools.failed"):
                        break
                audio = silence_pcm(300) + question + silence_pcm(900)
                for start in range(0, len(audio), 4800):
                    chunk = base64.b64encode(audio[start : start + 4800]).decode()
                    await conn.input_audio_buffer.append(audio=chunk)
                async for event in conn:
                    events.append(event)
                    if event.type == "response.done":
                        break
                # the call answered: the model speaks with its result when asked, as with
                # OpenAI's server (the Agents SDKs ask by themselves)
                await conn.response.create()
                async for event in conn:
                    events.append(event)
                    if event.type == "response.done":
                        break
            return events

        events = asyncio.run(body())
    checker = SequenceChecker()
    for event in events:
        wire = json.loads(event.model_dump_json(exclude_unset=True))
        validate_with_sdk(wire)
        checker.check(wire)
    kinds = [e.type for e in events]
    assert "mcp_list_tools.completed" in kinds
    assert kinds.index("response.mcp_call.completed") < kinds.index("response.output_audio.delta")
    first, second = [e.response for e in events if e.type == "response.done"]
    (call,) = first.output
    assert (call.type, call.name, call.output) == ("mcp_call", "forecast", SUNNY)
    assert second.status == "completed"
    (answer,) = second.output
    assert answer.content[0].transcript == f"The tools said: {SUNNY}."
    pcm = b"".join(
        base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta"
    )
    samples = StreamingResampler(24_000, ENGINE_RATE)(decode(pcm, "audio/pcm"))
    heard = normalise(embedded.stt.transcribe(samples).text)
    assert "sunny" in heard and "oslo" in heard, heard


def test_the_operator_limits_the_urls_sessions_may_reach() -> None:
    with mcp_servers.serving() as allowed, mcp_servers.serving() as other:
        with live_server(scripted_pool(), mcp_allowed_urls=(allowed,)) as server:

            async def main() -> None:
                async with session(server) as client:
                    events = await configure(client, mcp_tool(allowed), mcp_tool(other, "other"))
                    (error,) = [e["error"] for e in events if e["type"] == "error"]
                    assert "other" in error["message"]
                    assert "does not allow" in error["message"]
                    await ask(client, "The forecast, please")
                    assert text_of(await follow_up(client)) == f"The tools said: {SUNNY}."

            trio.run(main)


def test_a_server_whose_tool_list_cannot_be_read_fails_its_listing_only() -> None:
    async def body(client: Client) -> None:
        with mcp_servers.serving(app=mcp_servers.unreadable_server) as url:
            events = await configure(client, mcp_tool(url, "odd"))
            (error,) = [e["error"] for e in events if e["type"] == "error"]
            assert "could not be read" in error["message"]
            events = await ask(client, "Hello")
            assert text_of(events) == "No tool for that."

    run_session(body)


def test_a_server_dropped_while_it_connects_ends_its_listing_and_the_session_goes_on() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/mcp"

        async def body(client: Client) -> None:
            await client.update_session(tools=[mcp_tool(url)], output_modalities=["text"])
            await client.until("mcp_list_tools.in_progress")
            await trio.sleep(0.3)  # connecting
            events = [await client.update_session(tools=[])]
            events += [await client.next(), await client.next()]
            assert [e.get("type") for e in events[1:]] == [
                "conversation.item.done",
                "mcp_list_tools.failed",
            ]
            assert text_of(await ask(client, "Hello")) == "No tool for that."

        run_session(body)


def test_a_session_that_ends_while_a_server_connects_ends_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as silent, live_server(scripted_pool()) as server:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/mcp"

        async def main() -> None:
            async with session(server) as client:
                await client.update_session(tools=[mcp_tool(url), mcp_tool(DEAD, "gone")])
                await client.until("mcp_list_tools.in_progress")
            await trio.sleep(0.5)  # the server notices the client left

        trio.run(main)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
