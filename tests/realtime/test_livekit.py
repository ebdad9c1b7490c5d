"""LiveKit Agents' OpenAI realtime client (``livekit-plugins-openai``), unmodified, against the
live server: its ``RealtimeSession`` as an ``AgentSession`` drives it, without a LiveKit room.

A text reply (``generate_reply()``, which sends ``"instructions": null``), a spoken turn pushed
as audio frames, a barge-in cut with the client's own ``truncate``, and a tool call with its
follow-up; each asserts that the client saw no error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.realtime.harness import LiveServer, fake_pool, live_server, silence_pcm, tone_pcm

try:
    import aiohttp
    from livekit import rtc
    from livekit.agents import llm
    from livekit.plugins import openai as lk_openai
except ImportError as error:
    pytest.skip(
        f"livekit-plugins-openai (in the [test] extra) is not importable: {error}",
        allow_module_level=True,
    )

#: LiveKit's realtime audio: 24 kHz mono PCM16
RATE = 24_000
FRAME_MS = 20


def frames(pcm: bytes) -> list[rtc.AudioFrame]:
    """24 kHz PCM16 as LiveKit audio frames of 20 ms."""
    size = RATE * FRAME_MS // 1000 * 2
    return [
        rtc.AudioFrame(pcm[i : i + size], RATE, 1, len(pcm[i : i + size]) // 2)
        for i in range(0, len(pcm) - size + 1, size)
    ]


@asynccontextmanager
async def realtime_session(server: LiveServer) -> AsyncIterator[tuple[Any, list[Any]]]:
    """A LiveKit RealtimeSession on the server, and the errors it reports."""
    async with aiohttp.ClientSession() as http:
        model = lk_openai.realtime.RealtimeModel(
            base_url=f"http://127.0.0.1:{server.port}/v1",
            api_key="any",
            http_session=http,
        )
        session = model.session()
        errors: list[Any] = []
        session.on("error", errors.append)
        try:
            yield session, errors
        finally:
            await session.aclose()
            await model.aclose()


async def reply_text(generation: llm.GenerationCreatedEvent) -> tuple[str, int]:
    """The transcript of a generation's messages, and the bytes of audio that came with it."""
    text, audio = "", 0
    async for message in generation.message_stream:

        async def read_audio(stream: Any = message.audio_stream) -> int:
            size = 0
            async for frame in stream:
                size += len(frame.data) * 2
            return size

        reading = asyncio.ensure_future(read_audio())
        async for chunk in message.text_stream:
            text += chunk
        audio += await reading
    return text, audio


def run(body: Any, server_pool: Any = None) -> None:
    with live_server(server_pool) as server:
        asyncio.run(asyncio.wait_for(body(server), 60))


def test_generate_reply_with_no_instructions_answers() -> None:
    async def body(server: LiveServer) -> None:
        async with realtime_session(server) as (session, errors):
            generation = await session.generate_reply()
            text, audio = await reply_text(generation)
            assert text.strip() == "Hello there. I am a test double, speaking slowly."
            assert audio > 0
            assert errors == []

    run(body)


def test_a_spoken_turn_is_answered() -> None:
    async def body(server: LiveServer) -> None:
        async with realtime_session(server) as (session, errors):
            created: asyncio.Future[llm.GenerationCreatedEvent] = asyncio.Future()
            session.on(
                "generation_created", lambda event: created.done() or created.set_result(event)
            )
            for frame in frames(tone_pcm(600) + silence_pcm(800)):
                session.push_audio(frame)
                await asyncio.sleep(0)
            text, audio = await reply_text(await asyncio.wait_for(created, 20))
            assert text.strip() and audio > 0
            assert errors == []

    run(body)


def test_barge_in_with_the_clients_own_truncate_keeps_the_session_going() -> None:
    async def body(server: LiveServer) -> None:
        async with realtime_session(server) as (session, errors):
            generation = await session.generate_reply()
            messages = generation.message_stream.__aiter__()
            message = await messages.__anext__()
            audio = message.audio_stream.__aiter__()
            await audio.__anext__()  # the answer is streaming
            session.interrupt()
            session.truncate(message_id=message.message_id, modalities=["audio"], audio_end_ms=20)
            async for _ in message.text_stream:
                pass
            # the next reply works as usual
            text, sound = await reply_text(await session.generate_reply())
            assert text.strip() and sound > 0
            assert errors == []

    run(body, fake_pool(token_delay_s=0.05))


@llm.function_tool
async def get_weather(city: str) -> str:
    """Weather of a city."""
    return f"Sunny in {city}."


def test_a_tool_call_and_its_follow_up() -> None:
    async def body(server: LiveServer) -> None:
        async with realtime_session(server) as (session, errors):
            await session.update_tools([get_weather])
            chat = session.chat_ctx.copy()
            chat.add_message(role="user", content="What is the weather in Paris?")
            await session.update_chat_ctx(chat)
            generation = await session.generate_reply()
            calls = [call async for call in generation.function_stream]
            await reply_text(generation)
            assert [call.name for call in calls] == ["get_weather"]
            chat = session.chat_ctx.copy()
            chat.items.append(
                llm.FunctionCallOutput(
                    call_id=calls[0].call_id, name="get_weather", output="Sunny.", is_error=False
                )
            )
            await session.update_chat_ctx(chat)
            text, _ = await reply_text(await session.generate_reply())
            assert text.strip() == "It is sunny in Paris."
            assert errors == []

    run(body)
