"""Speculative starts and the turn model through the live server, on fake engines, and the
engine limiter that keeps speculative work behind live work.

The client streams its audio in steps and, between them, waits until the fake engines have
done the held work: the server decides a turn's end only on audio it has received, so events
that arrive after the step that confirms the turn prove that nothing was sent while held.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing

from engines.base import CancelToken, FloatAudio, LLMEvent, LLMRequest, Transcript
from protocol.speculation import EARLY_TRANSCRIPT_MS
from protocol.turns import PAUSE_MS, RESCORE_EVERY_MS
from realtime import Pipeline, PipelinePool
from realtime.pool import EngineLimiter
from tests.realtime.fakes import FakeLLM, FakeSTT, FakeTTS, FakeVAD
from tests.realtime.harness import Client, live_server, session, silence_pcm, tone_pcm
from tests.support import types

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
SPECULATION_LOG = "realtime.session.speculation"
#: silence that makes a pause (PAUSE_MS = 200, at 32 ms frames) but ends no 500 ms turn
PAUSE_SILENCE_MS = 260


class FakeCountingLLM(FakeLLM):
    """:class:`FakeLLM` that counts its calls and the ones stopped by their cancel token."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.cancelled = 0

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        try:
            yield from super().stream(request, cancel)
        finally:
            if cancel.cancelled:
                self.cancelled += 1


class FakeTurnModel:
    """Says every utterance is complete with one fixed probability, or with the next of a
    list of them (the last one repeating); counts its calls."""

    sample_rate = 16_000

    def __init__(self, probability: float | list[float]) -> None:
        self.probabilities = probability if isinstance(probability, list) else [probability]
        self.calls: list[int] = []

    def probability(self, audio: FloatAudio) -> float:
        self.calls.append(len(audio))
        return self.probabilities[min(len(self.calls), len(self.probabilities)) - 1]


def pool(
    llm: FakeLLM | None = None, tts: FakeTTS | None = None, turn_model: Any = None
) -> PipelinePool:
    pipeline = Pipeline(
        index=0,
        vad=FakeVAD(),
        stt=FakeSTT(),
        llm=llm or FakeCountingLLM(),
        tts=tts or FakeTTS(),
        turn_model=turn_model,
    )
    return PipelinePool([pipeline], transcription_sessions=1)


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (the server runs in a thread of its own)."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


async def server_vad_500(client: Client, **session: Any) -> None:
    await client.update_session(
        audio={
            "input": {
                "transcription": {"model": "whisper-1"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
            }
        },
        **session,
    )


_ID = re.compile(r"^(item|resp|call|conv|sess|event)_[0-9A-Za-z]{21}$")


def comparable(events: list[dict[str, Any]]) -> list[Any]:
    """Events without event ids and times, other ids named by order of appearance, and each run
    of audio deltas as one (how many deltas a cancelled answer sent depends on timing)."""
    names: dict[str, str] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: walk(v) for k, v in value.items() if k not in ("event_id", "delta", "expires_at")
            }
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and _ID.match(value):
            return names.setdefault(value, f"{value.split('_')[0]}#{len(names)}")
        return value

    out: list[Any] = []
    for event in events:
        shown = walk(event)
        if out and shown == out[-1] and event["type"].endswith(".delta"):
            continue
        out.append(shown)
    return out


# --- flows compared with speculation on and off ----------------------------------------------


async def question(client: Client) -> None:
    await server_vad_500(client)
    await client.append(silence_pcm(200) + tone_pcm(800) + silence_pcm(700))
    await client.until("response.done")


async def resumed_question(client: Client) -> None:
    await server_vad_500(client)
    await client.append(tone_pcm(600) + silence_pcm(350) + tone_pcm(400) + silence_pcm(700))
    await client.until("response.done")


async def function_call(client: Client) -> None:
    await server_vad_500(client, tools=[WEATHER_TOOL])
    await client.append(tone_pcm(800) + silence_pcm(700))
    events = await client.until("response.done")
    call = events[-1]["response"]["output"][0]
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call["call_id"], "output": "sun"},
        }
    )
    await client.until("conversation.item.done")
    await client.send({"type": "response.create"})
    await client.until("response.done")


async def barge_in(client: Client) -> None:
    await server_vad_500(client)
    await client.append(tone_pcm(800) + silence_pcm(700))
    await client.until("response.output_audio.delta")
    await client.append(tone_pcm(600) + silence_pcm(700))
    await client.until("response.done")  # the interrupted answer
    await client.until("response.done")  # the answer to the interruption


FLOWS = {
    "question": question,
    "resumed speech": resumed_question,
    "function call": function_call,
    "barge-in": barge_in,
}


def speculation_outcomes(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What became of each speculation, from the server's speculation log lines."""
    return [r.getMessage().split(" ", 3)[-1] for r in caplog.records if r.name == SPECULATION_LOG]


@pytest.mark.parametrize("flow", FLOWS.values(), ids=FLOWS.keys())
def test_speculation_on_and_off_send_the_same_events(
    flow: Any, caplog: pytest.LogCaptureFixture
) -> None:
    seen: dict[bool, list[dict[str, Any]]] = {}
    outcomes: dict[bool, list[str]] = {}
    for speculative in (True, False):
        slow_tts = FakeTTS(chunk_delay_s=0.03)  # the barge-in comes while the answer plays
        caplog.clear()
        with (
            caplog.at_level(logging.DEBUG, logger=SPECULATION_LOG),
            live_server(
                pool(tts=slow_tts), speculative=speculative, live_transcription=False
            ) as server,
        ):

            async def body() -> None:
                async with session(server) as client:
                    await flow(client)
                    seen[speculative] = client.events  # noqa: B023

            trio.run(body)
        outcomes[speculative] = speculation_outcomes(caplog)
    assert comparable(seen[True]) == comparable(seen[False])
    assert "response.created" in types(seen[True])
    assert "used" in outcomes[True] and outcomes[False] == []


# --- what is held, and when it goes ----------------------------------------------------------


def test_held_answer_is_made_at_the_pause_and_sent_only_after_the_turn_ends() -> None:
    llm, tts = FakeCountingLLM(), FakeTTS()
    with live_server(pool(llm, tts), live_transcription=False) as server:

        async def body() -> None:
            async with session(server) as client:
                await server_vad_500(client)
                await client.append(tone_pcm(800) + silence_pcm(PAUSE_SILENCE_MS))
                (started,) = await client.until("input_audio_buffer.speech_started")
                await eventually(lambda: len(tts.texts) == 1)  # the first piece is spoken
                assert llm.requests[-1].messages[-1].content == "what is the weather in paris"
                await client.append(silence_pcm(400))
                events = await client.until("response.done")
                assert types(events)[:3] == [
                    "input_audio_buffer.speech_stopped",
                    "input_audio_buffer.committed",
                    "conversation.item.added",
                ]
                assert events[0]["item_id"] == started["item_id"]
                done = events[-1]["response"]
                assert done["status"] == "completed"
                transcript = done["output"][0]["content"][0]["transcript"]
                assert transcript.strip() == "Hello there. I am a test double, speaking slowly."
                assert len(llm.requests) == 1  # the held answer was the answer
                assert llm.cancelled == 0

        trio.run(body)


def test_resumed_speech_cancels_the_held_work_and_sends_nothing_for_it() -> None:
    llm = FakeCountingLLM(token_delay_s=0.05)
    with live_server(pool(llm), live_transcription=False) as server:

        async def body() -> None:
            async with session(server) as client:
                await server_vad_500(client)
                await client.append(tone_pcm(600) + silence_pcm(PAUSE_SILENCE_MS))
                await client.until("input_audio_buffer.speech_started")
                await eventually(lambda: len(llm.requests) == 1)  # generating, held
                await client.append(tone_pcm(400))
                await eventually(lambda: llm.cancelled == 1)
                await client.append(silence_pcm(700))
                events = await client.until("response.done")
                assert types(events)[0] == "input_audio_buffer.speech_stopped"
                assert types(events).count("response.created") == 1
                assert events[-1]["response"]["status"] == "completed"
                assert (len(llm.requests), llm.cancelled) == (2, 1)

        trio.run(body)


class SpanSTT(FakeSTT):
    """Says how many ms of audio it heard, so a transcript tells which span it came from."""

    def transcribe(self, audio: FloatAudio, **options: Any) -> Transcript:
        super().transcribe(audio, **options)
        return Transcript(f"heard {len(audio) * 1000 // 16_000} ms", len(audio) / 16_000)


def heard_ms(events: list[dict[str, Any]]) -> int:
    (completed,) = [e for e in events if e["type"].endswith("transcription.completed")]
    return int(completed["transcript"].split()[1])


def span_pool(stt: SpanSTT) -> PipelinePool:
    return PipelinePool([Pipeline(0, FakeVAD(), stt, FakeCountingLLM(), FakeTTS())])


def test_the_pause_takes_the_transcript_started_early_in_the_same_silence() -> None:
    stt = SpanSTT()
    with live_server(span_pool(stt), live_transcription=False) as server:

        async def body() -> None:
            async with session(server) as client:
                await server_vad_500(client)
                await client.append(tone_pcm(800) + silence_pcm(800))
                events = await client.until("response.done")
                # transcribed once, from EARLY_TRANSCRIPT_MS into the silence, not from the
                # pause (PAUSE_MS into it) where the speculation started
                assert [partial for _, partial in stt.calls] == [False]
                assert 800 + EARLY_TRANSCRIPT_MS <= heard_ms(events) < 800 + PAUSE_MS
                assert events[-1]["response"]["status"] == "completed"

        trio.run(body)


def test_speech_after_an_early_transcript_makes_it_stale() -> None:
    stt = SpanSTT()
    with live_server(span_pool(stt), live_transcription=False) as server:

        async def body() -> None:
            async with session(server) as client:
                await server_vad_500(client)
                # an early transcript starts in the 150 ms gap, then speech comes back
                await client.append(tone_pcm(600) + silence_pcm(150) + tone_pcm(400))
                await client.append(silence_pcm(800))
                events = await client.until("response.done")
                # the transcript is the one started in the second silence: all the speech
                assert heard_ms(events) >= 600 + 150 + 400 + EARLY_TRANSCRIPT_MS
                assert events[-1]["response"]["status"] == "completed"

        trio.run(body)


def test_a_held_function_call_is_released_only_after_the_turn_ends() -> None:
    llm = FakeCountingLLM()
    with live_server(pool(llm), live_transcription=False) as server:

        async def body() -> None:
            async with session(server) as client:
                await server_vad_500(client, tools=[WEATHER_TOOL])
                await client.append(tone_pcm(800) + silence_pcm(PAUSE_SILENCE_MS))
                await client.until("input_audio_buffer.speech_started")
                await eventually(lambda: len(llm.requests) == 1)
                await client.append(silence_pcm(400))
                events = await client.until("response.done")
                kinds = types(events)
                assert kinds[0] == "input_audio_buffer.speech_stopped"
                assert kinds.index("response.function_call_arguments.done") > kinds.index(
                    "response.created"
                )
                assert events[-1]["response"]["output"][0]["name"] == "get_weather"
                assert len(llm.requests) == 1

        trio.run(body)


def test_a_client_leaving_mid_speculation_stops_it_and_frees_the_pipeline() -> None:
    llm = FakeCountingLLM(token_delay_s=0.05)
    the_pool = pool(llm)
    with live_server(the_pool, live_transcription=False) as server:

        async def body() -> None:
            async with session(server) as client:
                await server_vad_500(client)
                await client.append(tone_pcm(600) + silence_pcm(PAUSE_SILENCE_MS))
                await client.until("input_audio_buffer.speech_started")
                await eventually(lambda: len(llm.requests) == 1)
            await eventually(lambda: the_pool.in_use == 0 and llm.cancelled == 1)

        trio.run(body)


def test_transcription_session_takes_its_transcript_from_the_speculation() -> None:
    stt = FakeSTT()
    the_pool = PipelinePool([Pipeline(index=0, vad=FakeVAD(), stt=stt)], 1)
    with live_server(the_pool, live_transcription=False) as server:

        async def body() -> None:
            async with session(server, "?intent=transcription") as client:
                await client.update_session(
                    "transcription",
                    audio={
                        "input": {
                            "transcription": {"model": "whisper-1"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                        }
                    },
                )
                await client.append(tone_pcm(800) + silence_pcm(PAUSE_SILENCE_MS))
                await eventually(lambda: len(stt.calls) == 1)
                await client.append(silence_pcm(400))
                events = await client.until("conversation.item.input_audio_transcription.completed")
                assert events[-1]["transcript"] == "what is the weather in paris"
                assert len(stt.calls) == 1  # the speculative transcript stood

        trio.run(body)


# --- semantic_vad with a turn model ----------------------------------------------------------


async def semantic_high(client: Client) -> None:
    await client.update_session(
        audio={"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}
    )


def test_semantic_vad_ends_a_complete_turn_at_the_pause() -> None:
    model = FakeTurnModel(0.9)
    with live_server(pool(turn_model=model), live_transcription=False) as server:

        async def body() -> None:
            async with session(server) as client:
                await semantic_high(client)
                await client.append(tone_pcm(800) + silence_pcm(300))
                events = await client.until("response.done")
                stopped = next(e for e in events if e["type"].endswith("speech_stopped"))
                # ended on the model's word, long before high eagerness' 1000 ms of silence
                assert stopped["audio_end_ms"] <= 800 + 300
                assert len(model.calls) == 1
                assert events[-1]["response"]["status"] == "completed"

        trio.run(body)


def test_semantic_vad_waits_out_an_incomplete_turn() -> None:
    model = FakeTurnModel(0.1)
    with live_server(pool(turn_model=model), live_transcription=False) as server:

        async def body() -> None:
            async with session(server) as client:
                await semantic_high(client)
                await client.append(tone_pcm(800) + silence_pcm(300))
                await eventually(lambda: len(model.calls) == 1)
                await client.append(silence_pcm(800))
                events = await client.until("response.done")
                assert types(events)[0] == "input_audio_buffer.speech_started"
                stopped = next(e for e in events if e["type"].endswith("speech_stopped"))
                assert stopped["audio_end_ms"] >= 800 + 1000  # high eagerness' longest wait

        trio.run(body)


def test_semantic_vad_ends_the_turn_when_a_later_score_of_the_pause_finds_it_complete() -> None:
    model = FakeTurnModel([0.1, 0.9])
    with live_server(pool(turn_model=model), live_transcription=False) as server:

        async def body() -> None:
            async with session(server) as client:
                await client.update_session(
                    audio={"input": {"turn_detection": {"type": "semantic_vad"}}}  # auto: 2 s
                )
                await client.append(tone_pcm(800) + silence_pcm(1500))
                events = await client.until("response.done")
                stopped = next(e for e in events if e["type"].endswith("speech_stopped"))
                # the second score, after PAUSE_MS + RESCORE_EVERY_MS of silence, ended it
                assert 800 + PAUSE_MS + RESCORE_EVERY_MS <= stopped["audio_end_ms"] < 800 + 1000
                assert len(model.calls) == 2 and model.calls[1] > model.calls[0]

        trio.run(body)


# --- live work before speculative work on a shared engine ------------------------------------


def test_engine_limiter_serves_live_calls_before_speculative_ones() -> None:
    async def body() -> None:
        engine = EngineLimiter()
        order: list[str] = []
        release = trio.Event()

        async def use(name: str, limiter: Any) -> None:
            await trio.to_thread.run_sync(order.append, name, limiter=limiter)

        async def hold() -> None:
            await engine.acquire_on_behalf_of("holder")
            await release.wait()
            engine.release_on_behalf_of("holder")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(use, "speculative 1", engine.speculative)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(use, "live 1", engine)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(use, "speculative 2", engine.speculative)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(use, "live 2", engine)
            await trio.testing.wait_all_tasks_blocked()
            stats = engine.statistics()
            assert (stats.borrowed_tokens, stats.tasks_waiting, stats.speculative_waiting) == (
                1,
                4,
                2,
            )
            release.set()
        assert order == ["live 1", "live 2", "speculative 1", "speculative 2"]
        assert engine.statistics().borrowed_tokens == 0

    trio.run(body)


def test_a_speculative_call_does_not_jump_ahead_of_waiting_speculative_calls() -> None:
    async def body() -> None:
        engine = EngineLimiter()
        await engine.acquire_on_behalf_of("holder")
        waiting = []

        async def wait(name: str) -> None:
            await engine.speculative.acquire_on_behalf_of(name)
            waiting.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, "first")
            await trio.testing.wait_all_tasks_blocked()
            engine.release_on_behalf_of("holder")  # handed to the waiting one
            nursery.start_soon(wait, "second")
            await trio.testing.wait_all_tasks_blocked()
            assert waiting == ["first"]
            engine.release_on_behalf_of("first")
        assert waiting == ["first", "second"]

    trio.run(body)


def test_a_cancelled_waiter_leaves_the_engine_to_the_next() -> None:
    async def body() -> None:
        engine = EngineLimiter()
        await engine.acquire_on_behalf_of("holder")
        with trio.move_on_after(0.01):
            await engine.acquire_on_behalf_of("gone")
        assert engine.statistics().tasks_waiting == 0
        engine.release_on_behalf_of("holder")
        await engine.speculative.acquire_on_behalf_of("next")
        assert engine.statistics().borrowed_tokens == 1
        with pytest.raises(RuntimeError):
            engine.release_on_behalf_of("gone")

    trio.run(body)
