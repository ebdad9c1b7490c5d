"""The flows of the golden traces: what the client does, against the fake engines.

``scripts/record_golden.py`` records them into ``tests/data/golden``; ``test_golden.py`` records
them again and compares. Each flow also asserts what its golden file cannot show (the audio
format of G.711 output, for one), so a recording that breaks those is never written.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import numpy as np
import trio
import trio_websocket

from realtime import PipelinePool
from realtime.audio import decode, encode
from tests.conformance.golden import Recorder, TraceClient, normalise
from tests.realtime.harness import fake_pool, live_server, silence_pcm, tone_pcm

TRANSCRIPTION = "?intent=transcription"
#: a response of the fake engines: 9 words of 80 ms of tone
ANSWER_S = 9 * 0.08
#: seconds a token where the client interrupts: the answer is still going when the interruption
#: arrives, even on a busy machine
SLOW_TOKEN_S = 0.08


@attrs.frozen
class Scenario:
    name: str
    description: str
    run: Callable[[Recorder], Awaitable[None]]
    pool: Callable[[], PipelinePool] = fake_pool


def record(scenario: Scenario) -> list[dict[str, Any]]:
    """A fresh recording of ``scenario``, normalised as golden files are."""
    with live_server(scenario.pool()) as server:
        recorder = Recorder(server)
        trio.run(scenario.run, recorder)
    return normalise(recorder.frames)


async def append(client: TraceClient, audio: bytes, chunk_bytes: int) -> None:
    """``audio`` in ``input_audio_buffer.append`` events of ``chunk_bytes`` each."""
    for i in range(0, len(audio), chunk_bytes):
        chunk = base64.b64encode(audio[i : i + chunk_bytes]).decode()
        await client.send({"type": "input_audio_buffer.append", "audio": chunk})


async def speak(client: TraceClient, speech_ms: int, silence_ms: int = 700) -> None:
    """Speech the fake VAD hears (a tone), then the silence that ends the turn, in 100 ms
    appends of 24 kHz PCM16."""
    await append(client, tone_pcm(speech_ms) + silence_pcm(silence_ms), chunk_bytes=4800)


async def barge_in(recorder: Recorder) -> None:
    async with recorder.connect() as client:
        await client.send({"type": "response.create", "event_id": "create_1"})
        await client.until("response.output_audio.delta")
        await speak(client, 400, silence_ms=0)
        events = await client.until("response.done")
        done = events[-1]["response"]
        assert (done["status"], done["status_details"]["reason"]) == ("cancelled", "turn_detected")
        await append(client, silence_pcm(700), chunk_bytes=4800)
        events = await client.until("response.done", timeout=20)
        assert events[-1]["response"]["status"] == "completed"


async def client_cancel(recorder: Recorder) -> None:
    """The interruption of the JavaScript Agents SDK (PROTOCOL section 5): cancel without a
    response id, truncate what was played, retrieve the item; then a cancel of nothing."""
    async with recorder.connect() as client:
        await client.send({"type": "response.create", "event_id": "create_1"})
        first = await client.until("response.output_audio.delta")
        item_id = first[-1]["item_id"]
        await client.send({"type": "response.cancel", "event_id": "cancel_1"})
        events = await client.until("response.done")
        assert events[-1]["response"]["status_details"]["reason"] == "client_cancelled"
        truncate = {
            "type": "conversation.item.truncate",
            "event_id": "truncate_1",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 40,
        }
        await client.send(truncate)
        await client.until("conversation.item.truncated")
        retrieve = {
            "type": "conversation.item.retrieve",
            "event_id": "retrieve_1",
            "item_id": item_id,
        }
        await client.send(retrieve)
        await client.until("conversation.item.retrieved")
        await client.send({"type": "response.cancel", "event_id": "cancel_2"})
        error = (await client.until("error"))[-1]["error"]
        assert (error["code"], error["event_id"]) == ("response_cancel_not_active", "cancel_2")


async def out_of_band(recorder: Recorder) -> None:
    """A response outside the conversation (``conversation: "none"``), then one inside it:
    the out-of-band item is in neither the conversation nor its ``previous_item_id`` chain."""
    async with recorder.connect() as client:
        await client.user_text("Remember the word apple.")
        created = await client.until("conversation.item.done")
        user_item = created[-1]["item"]["id"]
        await client.send(
            {
                "type": "response.create",
                "event_id": "summary_1",
                "response": {
                    "conversation": "none",
                    "output_modalities": ["text"],
                    "instructions": "Summarise the conversation in one sentence.",
                    "metadata": {"purpose": "summary"},
                    "input": [
                        {"type": "item_reference", "id": user_item},
                        {
                            "type": "message",
                            "role": "user",
                            "content": [{"type": "input_text", "text": "Summarise."}],
                        },
                    ],
                },
            }
        )
        events = await client.until("response.done")
        response = events[-1]["response"]
        assert response["conversation_id"] is None
        assert response["metadata"] == {"purpose": "summary"}
        assert not any(e["type"].startswith("conversation.item") for e in events)
        await client.send({"type": "response.create", "event_id": "create_1"})
        events = await client.until("response.done")
        added = next(e for e in events if e["type"] == "conversation.item.added")
        assert added["previous_item_id"] == user_item


async def pool_refusal(recorder: Recorder) -> None:
    """A second voice session while the only pipeline is taken; the slot is free once the
    first session ends."""
    async with recorder.connect() as first:
        async with recorder.connect(refused=True) as second:
            error = await second.next()
            assert error["error"]["code"] == "session_limit_reached"
            try:
                await second.next()
            except trio_websocket.ConnectionClosed as closed:
                assert closed.reason is not None and closed.reason.code == 1013  # try again later
            else:
                raise AssertionError("the refused connection stayed open")
        await first.user_text("Still here?")
        await first.until("conversation.item.done")
    with trio.fail_after(10):
        while recorder.server.pool.in_use:
            await trio.sleep(0.01)
    async with recorder.connect():
        pass


def _g711(fmt: str) -> Callable[[Recorder], Awaitable[None]]:
    async def flow(recorder: Recorder) -> None:
        """G.711 in and out: a spoken turn at 8 kHz, one byte a sample both ways."""
        async with recorder.connect() as client:
            audio_format = {"format": {"type": fmt}}
            session = {"type": "realtime", "audio": {"input": audio_format, "output": audio_format}}
            await client.send({"type": "session.update", "session": session})
            updated = (await client.until("session.updated"))[-1]["session"]
            assert updated["audio"]["output"]["format"] == {"type": fmt}
            t = np.arange(8_000) / 8_000
            tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
            speech = encode(tone, fmt) + encode(np.zeros(5_600, np.float32), fmt)
            await append(client, speech, chunk_bytes=800)  # 100 ms at 8 kHz
            events = await client.until("response.done", timeout=20)
            out = b"".join(
                base64.b64decode(e["delta"])
                for e in events
                if e["type"] == "response.output_audio.delta"
            )
            # one byte a sample at 8 kHz: the answer's duration in bytes, and not silence
            assert abs(len(out) / 8_000 - ANSWER_S) < 0.1, len(out)
            assert float(np.sqrt(np.mean(decode(out, fmt) ** 2))) > 0.1

    return flow


async def transcription(recorder: Recorder) -> None:
    """A transcription session: server VAD turns speech into transcribed items, no answers."""
    async with recorder.connect(TRANSCRIPTION) as client:
        session = {
            "type": "transcription",
            "audio": {"input": {"transcription": {"model": "whisper-1", "language": "en"}}},
        }
        await client.send({"type": "session.update", "session": session})
        await client.until("session.updated")
        await append(client, silence_pcm(200) + tone_pcm(1200), chunk_bytes=4800)
        # a live partial while the user still speaks: the silence that ends the turn waits for
        # it, so that the trace has the partial before speech_stopped in every recording
        await client.until("conversation.item.input_audio_transcription.delta", timeout=20)
        await append(client, silence_pcm(700), chunk_bytes=4800)
        events = await client.until(
            "conversation.item.input_audio_transcription.completed", timeout=20
        )
        assert events[-1]["transcript"] == "what is the weather in paris"
        assert not any(e["type"].startswith("response.") for e in client.events)


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "barge_in",
            "speech during a spoken answer cancels it (turn_detected) and becomes the next turn",
            barge_in,
            lambda: fake_pool(token_delay_s=SLOW_TOKEN_S),
        ),
        Scenario(
            "client_cancel",
            "response.cancel, truncate and retrieve of the cut item, then a cancel of nothing",
            client_cancel,
            lambda: fake_pool(token_delay_s=SLOW_TOKEN_S),
        ),
        Scenario(
            "out_of_band",
            'a response with conversation "none" beside the conversation, then one in it',
            out_of_band,
        ),
        Scenario(
            "pool_refusal",
            "session_limit_reached and close 1013 while the only pipeline is taken",
            pool_refusal,
            lambda: fake_pool(size=1),
        ),
        Scenario("g711_pcmu", "mu-law audio in and out", _g711("audio/pcmu")),
        Scenario("g711_pcma", "A-law audio in and out", _g711("audio/pcma")),
        Scenario(
            "transcription",
            "?intent=transcription: speech is committed and transcribed, never answered",
            transcription,
        ),
    )
}
