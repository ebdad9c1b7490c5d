"""The Agents SDKs' SIP flow, as their users run it against OpenAI, on a phone call: the
``openai-agents`` Python SDK here, the ``@openai/agents`` JavaScript SDK's ``OpenAIRealtimeSIP``
in ``js/agents_sip_client.mjs``.

The application receives ``realtime.call.incoming`` (verified with the ``openai`` SDK),
accepts the call with the payload ``OpenAIRealtimeSIPModel.build_initial_session_payload``
builds from its agent, and attaches a ``RealtimeRunner`` with ``OpenAIRealtimeSIPModel`` to
the live call (the sideband). The caller is the Twilio stand-in: it asks about the weather in
8 kHz μ-law; the agent's function tool runs in the application; the answer comes back to the
caller's line as μ-law.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from openai import AsyncOpenAI

from realtime.phone import PhoneSettings
from tests.conformance.test_clients import (
    AFTER_TOOL,
    JS,
    agents_sdk_warnings,
    install_js_packages,
    two_question_pool,
    weather_agent,
)
from tests.phone_standin import TwilioStandIn, TwiML, silence, tone, ulaw_energy
from tests.realtime.harness import live_server
from tests.webhook_receiver import receiving

SECRET = "whsec_" + "YWdlbnRzLXNpcC10ZXN0LXNlY3JldA=="
KEY = "sk-app"


def test_openai_agents_sip_model_answers_a_phone_call_with_its_agent_and_tool() -> None:
    agent, calls = weather_agent("phone", "Answer the phone.")
    from agents.realtime import RealtimeRunner
    from agents.realtime.items import AssistantMessageItem
    from agents.realtime.openai_realtime import OpenAIRealtimeSIPModel

    answers: list[str] = []
    problems: list[str] = []

    async def body() -> None:
        ports: dict[str, int] = {}
        attached = asyncio.Event()
        done = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []

        async def run_agent(call_id: str) -> None:
            client = AsyncOpenAI(api_key=KEY, base_url=f"http://127.0.0.1:{ports['server']}/v1")
            payload = await OpenAIRealtimeSIPModel.build_initial_session_payload(agent)
            await client.realtime.calls.accept(call_id, **payload.model_dump(exclude_none=True))
            runner = RealtimeRunner(agent, model=OpenAIRealtimeSIPModel())
            url = f"ws://127.0.0.1:{ports['server']}/v1/realtime?call_id={call_id}"
            config: Any = {"call_id": call_id, "url": url, "api_key": KEY}
            async with await runner.run(model_config=config) as session:
                attached.set()
                async with asyncio.timeout(30):
                    async for event in session:
                        if event.type == "error":
                            problems.append(repr(event.error))
                        elif event.type == "raw_model_event" and event.data.type == "exception":
                            problems.append(f"{event.data.context}: {event.data.exception!r}")
                        elif event.type == "raw_model_event" and event.data.type == "item_updated":
                            item = event.data.item
                            if (
                                isinstance(item, AssistantMessageItem)
                                and item.status == "completed"
                            ):
                                transcript = getattr(item.content[0], "transcript", None)
                                if transcript and transcript not in answers:
                                    answers.append(transcript)
                                    if transcript == AFTER_TOOL:
                                        break
            done.set()

        verifier = AsyncOpenAI(api_key="unused", webhook_secret=SECRET)

        async def webhook(request: web.Request) -> web.Response:
            event = verifier.webhooks.unwrap(await request.text(), dict(request.headers))
            assert event.type == "realtime.call.incoming"
            tasks.append(asyncio.create_task(run_agent(event.data.call_id)))
            return web.Response(status=200)

        async with receiving(webhook) as hook:
            phone = PhoneSettings(webhook_url=hook, webhook_secret=SECRET)
            with live_server(two_question_pool(), phone=phone, api_key=KEY) as server:
                ports["server"] = server.port
                twilio = TwilioStandIn(f"http://127.0.0.1:{server.port}")
                twiml = TwiML((await twilio.ring()).text)
                assert twiml.verbs == ["Connect"], twiml.text
                await twilio.open_stream(twiml)
                await asyncio.wait_for(attached.wait(), 10)
                heard_before = len(twilio.received)
                # the weather question: long enough for the fake recogniser to hear it so
                await twilio.speak(silence(200) + tone(1600) + silence(900))
                await asyncio.wait_for(done.wait(), 30)
                await asyncio.sleep(0.5)
                # "It is sunny in Paris.": 5 words of 80 ms from the fake TTS, in μ-law
                assert len(twilio.received) - heard_before >= 0.4 * 8000 * 0.9
                assert ulaw_energy(bytes(twilio.received[heard_before:])) > 0.1
                await twilio.hang_up()
            for task in tasks:
                await task

    with agents_sdk_warnings() as logs:
        asyncio.run(body())
    assert problems == []
    assert [r.getMessage() for r in logs.records] == []
    assert calls == ["Paris"]
    assert answers[-1] == AFTER_TOOL


def test_openai_agents_js_sip_transport_answers_a_phone_call_with_its_agent_and_tool() -> None:
    """The same flow with the JavaScript SDK's ``OpenAIRealtimeSIP`` (``js/agents_sip_client.mjs``
    under Node): it accepts with ``buildInitialConfig(agent)`` and attaches to the call."""
    node = install_js_packages()
    outputs: list[str] = []
    stderr: list[str] = []

    async def body() -> None:
        attached = asyncio.Event()
        processes: list[asyncio.subprocess.Process] = []
        readers: list[asyncio.Task[None]] = []

        async def drain_stderr(process: asyncio.subprocess.Process) -> None:
            assert process.stderr is not None
            async for line in process.stderr:
                stderr.append(line.decode().rstrip())

        async def read(process: asyncio.subprocess.Process) -> None:
            assert process.stdout is not None
            async for line in process.stdout:
                text = line.decode().strip()
                outputs.append(text)
                if text.startswith("{") and json.loads(text).get("attached"):
                    attached.set()

        async def webhook(request: web.Request) -> web.Response:
            event = verifier.webhooks.unwrap(await request.text(), dict(request.headers))
            process = await asyncio.create_subprocess_exec(
                node,
                "agents_sip_client.mjs",
                base_url[0],
                event.data.call_id,
                cwd=JS,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            processes.append(process)
            readers.append(asyncio.create_task(read(process)))
            readers.append(asyncio.create_task(drain_stderr(process)))
            return web.Response(status=200)

        verifier = AsyncOpenAI(api_key="unused", webhook_secret=SECRET)
        base_url: list[str] = []
        try:
            async with receiving(webhook) as hook:
                phone = PhoneSettings(webhook_url=hook, webhook_secret=SECRET)
                with live_server(two_question_pool(), phone=phone, api_key=KEY) as server:
                    base_url.append(f"http://127.0.0.1:{server.port}")
                    twilio = TwilioStandIn(base_url[0])
                    twiml = TwiML((await twilio.ring()).text)
                    assert twiml.verbs == ["Connect"], twiml.text
                    await twilio.open_stream(twiml)
                    try:
                        await asyncio.wait_for(attached.wait(), 20)
                    except TimeoutError:
                        pytest.fail(f"the SIP client never attached: {outputs} {stderr[-20:]}")
                    heard_before = len(twilio.received)
                    await twilio.speak(silence(200) + tone(1600) + silence(900))
                    (process,) = processes
                    assert await asyncio.wait_for(process.wait(), 30) == 0, (outputs, stderr[-20:])
                    await asyncio.gather(*readers)
                    await asyncio.sleep(0.5)
                    assert len(twilio.received) - heard_before >= 0.4 * 8000 * 0.9
                    await twilio.hang_up()
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()

    asyncio.run(body())
    summary = json.loads(outputs[-1])
    assert summary["errors"] == []
    assert summary["schemaFailures"] == []
    assert summary["toolCalls"] == [{"name": "get_weather", "city": "Paris"}]
    assert summary["turns"][-1] == AFTER_TOOL
