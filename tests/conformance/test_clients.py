"""Real clients against the live server, end to end, as their users run them.

- the ``openai`` SDK's sync client (``tests/realtime/test_sdk.py`` has its async client's voice
  turn and text tool call, and the sync client's text turn): a spoken turn, then a spoken
  question answered through a function call; and the async client's spoken function call;
- the ``openai-agents`` Python SDK: a ``RealtimeAgent`` with a function tool under
  ``RealtimeRunner``;
- the ``@openai/agents`` JavaScript SDK's ``OpenAIRealtimeWebSocket`` under Node
  (``js/agents_client.mjs``), and with a hosted MCP tool that the server calls
  (``js/agents_mcp_client.mjs``), approvals included.

The clients speak: a short greeting, a longer question about the weather, or both, which the
fake speech recogniser below tells apart by their length. Every server event is checked on the
way: by the SDK's types and :class:`~protocol.invariants.SequenceChecker`, or by the Agents
SDKs' own validation, whose failures the tests collect.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI, OpenAI

from engines.base import FloatAudio, Transcript
from protocol.invariants import SequenceChecker
from realtime import Pipeline, PipelinePool
from tests import mcp_servers
from tests.realtime.fakes import FakeLLM, FakeSTT, FakeTTS, FakeVAD, ScriptedLLM
from tests.realtime.harness import LiveServer, live_server, silence_pcm, tone_pcm
from tests.realtime.test_sdk import wire
from tests.realtime.test_server import WEATHER_TOOL

JS = Path(__file__).resolve().parent / "js"
GREETING = "hello there"
QUESTION = "what is the weather in paris"
#: the fake LLM's answers: to anything but the weather, and to the get_weather result
REPLY = "Hello there. I am a test double, speaking slowly."
AFTER_TOOL = "It is sunny in Paris."
#: 24 kHz PCM16 bytes of the fake TTS's answer to the greeting: 9 words of 80 ms
REPLY_BYTES = 9 * 0.08 * 48_000


class FakeGreetingOrQuestionSTT(FakeSTT):
    """Hears less than 1.5 s of audio as a greeting and longer audio as the weather question
    (a committed segment holds the whole utterance: its silences too)."""

    def transcribe(self, audio: FloatAudio, **options: Any) -> Transcript:
        text = GREETING if len(audio) < 1.5 * self.sample_rate else QUESTION
        return FakeSTT(text).transcribe(audio, **options)


def two_question_pool() -> PipelinePool:
    pipeline = Pipeline(
        index=0, vad=FakeVAD(), stt=FakeGreetingOrQuestionSTT(), llm=FakeLLM(), tts=FakeTTS()
    )
    return PipelinePool([pipeline], transcription_sessions=1)


def greeting() -> bytes:
    return silence_pcm(200) + tone_pcm(300) + silence_pcm(700)


def question() -> bytes:
    return silence_pcm(200) + tone_pcm(1600) + silence_pcm(700)


def chunks(pcm: bytes) -> list[str]:
    """``pcm`` as base64 appends of 100 ms."""
    return [base64.b64encode(pcm[i : i + 4800]).decode() for i in range(0, len(pcm), 4800)]


def audio_of(events: list[Any]) -> bytes:
    return b"".join(
        base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta"
    )


def test_sync_sdk_spoken_turn_then_spoken_function_call_round_trip() -> None:
    with live_server(two_question_pool()) as server:
        client = OpenAI(api_key="any", base_url=f"http://127.0.0.1:{server.port}/v1")
        checker = SequenceChecker()

        def until_done(conn: Any) -> list[Any]:
            events = []
            for event in conn:
                checker.check(wire(event))
                events.append(event)
                if event.type == "response.done":
                    return events
            raise AssertionError("the connection closed before response.done")

        with client.realtime.connect(model="gpt-realtime") as conn:
            checker.check(wire(conn.recv()))
            for chunk in chunks(greeting()):
                conn.input_audio_buffer.append(audio=chunk)
            events = until_done(conn)
            kinds = [e.type for e in events]
            assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created")
            assert events[-1].response.output[0].content[0].transcript == REPLY
            assert len(audio_of(events)) == pytest.approx(REPLY_BYTES, rel=0.1)

            conn.session.update(session={"type": "realtime", "tools": [WEATHER_TOOL]})
            for chunk in chunks(question()):
                conn.input_audio_buffer.append(audio=chunk)
            events = until_done(conn)
            (call,) = events[-1].response.output
            assert (call.type, call.name, json.loads(call.arguments)) == (
                "function_call",
                "get_weather",
                {"city": "Paris"},
            )
            conn.conversation.item.create(
                item={"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
            )
            conn.response.create()
            events = until_done(conn)
            assert events[-1].response.output[0].content[0].transcript == AFTER_TOOL
            assert audio_of(events)


def test_async_sdk_spoken_question_is_answered_through_a_function_call() -> None:
    with live_server(two_question_pool()) as server:

        async def body() -> None:
            client = AsyncOpenAI(api_key="any", base_url=f"http://127.0.0.1:{server.port}/v1")
            checker = SequenceChecker()

            async def until_done(conn: Any) -> list[Any]:
                events = []
                async for event in conn:
                    checker.check(wire(event))
                    events.append(event)
                    if event.type == "response.done":
                        return events
                raise AssertionError("the connection closed before response.done")

            async with client.realtime.connect(model="gpt-realtime") as conn:
                checker.check(wire(await conn.recv()))
                await conn.session.update(
                    session={
                        "type": "realtime",
                        "tools": [WEATHER_TOOL],
                        "audio": {"input": {"transcription": {"model": "whisper-1"}}},
                    }
                )
                for chunk in chunks(question()):
                    await conn.input_audio_buffer.append(audio=chunk)
                events = await until_done(conn)
                transcribed = [
                    e.transcript
                    for e in events
                    if e.type == "conversation.item.input_audio_transcription.completed"
                ]
                assert transcribed == [QUESTION]
                (call,) = events[-1].response.output
                assert call.type == "function_call" and call.status == "completed"
                await conn.conversation.item.create(
                    item={
                        "type": "function_call_output",
                        "call_id": call.call_id,
                        "output": "sunny",
                    }
                )
                await conn.response.create()
                events = await until_done(conn)
                assert events[-1].response.output[0].content[0].transcript == AFTER_TOOL

        asyncio.run(body())


class WarningLogs(logging.Handler):
    """Warnings and errors of the Agents SDK's logger (it logs an error for each server event
    that fails its validation)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def weather_agent(name: str, instructions: str) -> tuple[Any, list[str]]:
    """An ``openai-agents`` RealtimeAgent with a get_weather function tool (tracing off), and
    the cities the tool was called for (skips without the [agents] extra)."""
    agents = pytest.importorskip("agents", reason="openai-agents is in the [agents] extra")
    from agents.realtime import RealtimeAgent

    agents.set_tracing_disabled(True)
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Weather of a city."""
        calls.append(city)
        return "sunny"

    return RealtimeAgent(name=name, instructions=instructions, tools=[get_weather]), calls


@contextmanager
def agents_sdk_warnings() -> Iterator[WarningLogs]:
    """The Agents SDK's warnings and errors while the block runs."""
    logs = WarningLogs()
    sdk_logger = logging.getLogger("openai.agents")
    level = sdk_logger.level
    sdk_logger.addHandler(logs)
    sdk_logger.setLevel(logging.WARNING)
    try:
        yield logs
    finally:
        sdk_logger.removeHandler(logs)
        sdk_logger.setLevel(level)


def test_openai_agents_realtime_runner_completes_a_spoken_turn_and_a_tool_call() -> None:
    agent, calls = weather_agent("assistant", "Answer briefly.")
    with agents_sdk_warnings() as logs, live_server(two_question_pool()) as server:
        answers, problems, audio = asyncio.run(run_agent(agent, server))
    assert problems == []
    assert [r.getMessage() for r in logs.records] == []
    assert calls == ["Paris"]
    assert answers == [REPLY, AFTER_TOOL]
    assert audio > REPLY_BYTES / 2


async def run_agent(agent: Any, server: LiveServer) -> tuple[list[str], list[str], int]:
    """The runner's session through the two turns: the answers (the transcripts of the
    completed assistant items), the error and exception events, the audio bytes received."""
    from agents.realtime import RealtimeRunner
    from agents.realtime.items import AssistantMessageItem

    runner = RealtimeRunner(agent, config={"tracing_disabled": True})
    config = {"url": server.url + "?model=gpt-realtime", "api_key": "sk-local-test"}
    # by item id, as first completed: the SDK truncates the greeting's item when the question
    # starts while it still "plays" that answer (its clock, not ours), and reports it again
    answers: dict[str, str] = {}
    problems: list[str] = []
    audio = 0
    async with await runner.run(model_config=config) as session:  # type: ignore[arg-type]
        for turn, utterance in enumerate((greeting(), question()), 1):
            for i in range(0, len(utterance), 4800):
                await session.send_audio(utterance[i : i + 4800])
            async with asyncio.timeout(20):
                async for event in session:
                    if event.type == "error":
                        problems.append(repr(event.error))
                    elif event.type == "audio":
                        audio += len(event.audio.data)
                    elif event.type == "raw_model_event" and event.data.type == "exception":
                        problems.append(f"{event.data.context}: {event.data.exception!r}")
                    elif event.type == "raw_model_event" and event.data.type == "item_updated":
                        item = event.data.item
                        if isinstance(item, AssistantMessageItem) and item.status == "completed":
                            transcript = getattr(item.content[0], "transcript", None)
                            if transcript:
                                answers.setdefault(item.item_id, transcript)
                    if len(answers) == turn:
                        break
    return list(answers.values()), problems, audio


def install_js_packages() -> str:
    """Node's path, with the JavaScript clients' packages installed (skips without node)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node (20 or later) runs the @openai/agents client; it is not installed")
    if not (JS / "node_modules").exists():
        npm = shutil.which("npm")
        assert npm is not None, "npm installs the @openai/agents client; it comes with node"
        # the exact versions of package-lock.json, from the npm registry
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True
        )
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stderr}"
    return node


def node_summary(
    server: LiveServer, script: str = "agents_client.mjs", *args: str
) -> dict[str, Any]:
    """Runs a JavaScript client (``script`` with ``args``) against ``server``; its JSON
    summary."""
    node = install_js_packages()
    result = subprocess.run(
        [node, script, server.url + "?model=gpt-realtime", *args],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stdout.strip().splitlines()
    assert lines, f"no summary from the client (exit {result.returncode}):\n{result.stderr}"
    summary: dict[str, Any] = json.loads(lines[-1])
    summary["exit"] = result.returncode
    summary["stderr"] = result.stderr
    return summary


def test_openai_agents_js_websocket_transport_completes_a_spoken_turn_and_a_tool_call() -> None:
    with live_server(two_question_pool()) as server:
        summary = node_summary(server)
    assert summary["errors"] == [], summary
    assert summary["schemaFailures"] == [], summary
    assert summary["exit"] == 0, summary["stderr"]
    assert summary["toolCalls"] == [{"name": "get_weather", "city": "Paris"}]
    assert summary["turns"] == [REPLY, AFTER_TOOL]
    assert summary["audioBytes"] > REPLY_BYTES
    assert {"session.created", "response.function_call_arguments.done"} <= set(
        summary["eventTypes"]
    )


@pytest.mark.parametrize("approval", ["never", "always"])
def test_openai_agents_js_hosted_mcp_tool_is_listed_called_and_answered(approval: str) -> None:
    """The SDK's hosted MCP tool: the server lists and calls it; the SDK approves when asked
    and, once the call is done, asks for the answer by itself (its default)."""
    llm = ScriptedLLM({"weather": [("forecast", {"city": "Oslo"})]})
    pipeline = Pipeline(index=0, vad=FakeVAD(), stt=FakeSTT(QUESTION), llm=llm, tts=FakeTTS())
    with mcp_servers.serving() as mcp_url, live_server(PipelinePool([pipeline])) as server:
        summary = node_summary(server, "agents_mcp_client.mjs", mcp_url, approval)
    assert summary["errors"] == [], summary
    assert summary["schemaFailures"] == [], summary
    assert summary["exit"] == 0, summary["stderr"]
    assert summary["listed"] == ["forecast", "add", "slow", "broken"]
    assert summary["approvals"] == (["forecast"] if approval == "always" else [])
    (call,) = summary["mcpCalls"]
    assert (call["name"], json.loads(call["arguments"])) == ("forecast", {"city": "Oslo"})
    assert call["output"] == "Sunny in Oslo, 21 degrees"
    assert summary["answers"] == ["The tools said: Sunny in Oslo, 21 degrees."]
    assert {"mcp_list_tools.completed", "response.mcp_call.completed"} <= set(summary["eventTypes"])
