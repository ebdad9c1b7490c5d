"""Replays the client side of every recorded flow against the live server and compares what
our server sends with what OpenAI's sent (``tests/data/traces``, ids T1-T9 of its sources.md).

All flows run once per module against one live server with the fake engines; each test then
reads the comparison of its flow. Differences that ``allowances.py`` lists are legitimate; any
other one fails its flow's test with an explanation per field.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
import trio
import trio_websocket

from tests.conformance.allowances import ALLOWANCES
from tests.conformance.compare import ELISION, Comparison
from tests.conformance.traces import (
    observed_errors,
    openapi_examples,
    probe_capture,
    voice_session,
)
from tests.realtime.harness import (
    Client,
    LiveServer,
    connect,
    fake_pool,
    live_server,
    session,
    silence_pcm,
    tone_pcm,
)
from tests.realtime.test_server import WEATHER_TOOL

#: API reference examples that sources.md records as stale: they fail the SDK's own types
STALE_EXAMPLES = frozenset({"response.output_item.done", "conversation.item.retrieved"})

#: the order of a function-call response as PROTOCOL.md F1 states it (no trace records one)
F1_ORDER = (
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "conversation.item.done",
    "response.output_item.done",
    "response.done",
)

Flow = Callable[[LiveServer, Comparison], Awaitable[list[dict[str, Any]]]]
#: the comparison of every kind of event ours sent in the flows with the API reference's example
EXAMPLES = "T1 API reference examples"


async def step(
    client: Client, frames: Sequence[dict[str, Any] | str | bytes], until: str
) -> list[dict[str, Any]]:
    """Send a step's frames, then read our server's events up to one of type ``until``."""
    for frame in frames:
        await client.send(frame)
    return await client.until(until, timeout=20)


def terminal(reference: Sequence[dict[str, Any]]) -> str:
    """The event that ends a step: the reference's last (rate limits aside: ours has none)."""
    return [e["type"] for e in reference if e["type"] != "rate_limits.updated"][-1]


def spoken(lead_ms: int, speech_ms: int) -> bytes:
    """Silence, a tone the fake VAD hears as speech, and the silence that ends the turn."""
    return silence_pcm(lead_ms) + tone_pcm(speech_ms) + silence_pcm(700)


async def t2_voice_session(server: LiveServer, comparison: Comparison) -> list[dict[str, Any]]:
    """T2: session.created, a session.update of the instructions, two server-VAD turns."""
    recorded = voice_session()
    async with session(server) as client:
        comparison.streams([recorded.created], [client.created], source="T2")
        # the recorded session.updated differs from session.created in its instructions only
        update = {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": recorded.updated["session"]["instructions"],
            },
        }
        ours = await step(client, [update], "session.updated")
        comparison.streams([recorded.updated], ours, source="T2")
        await client.append(spoken(1000, 2400))
        ours = await client.until("response.done", timeout=20)
        comparison.streams(recorded.first_turn, ours, source="T2 first turn", truncated=True)
        for sample in recorded.first_turn_samples:
            # the transcript.done the recorder kept is from another of its sessions: no linkage
            linked = sample.get("response_id", "") in json.dumps(recorded.first_turn)
            comparison.sample(sample, ours, source="T2 first turn", link=linked)
        await client.append(spoken(1000, 2400))
        ours = await client.until("response.done", timeout=20)
        comparison.streams(recorded.second_turn, ours, source="T2", truncated=True)
        return client.events


async def t3_text_turns_and_errors(
    server: LiveServer, comparison: Comparison
) -> list[dict[str, Any]]:
    """T3 probe 8: a text turn, four invalid client messages, a second text turn."""
    first, *steps = probe_capture()[8]
    async with session(server) as client:
        comparison.streams(first.server, [client.created], source="T3")
        for recorded in steps:
            ours = await step(client, recorded.client, terminal(recorded.server))
            comparison.streams(recorded.server, ours, source="T3")
        return client.events


async def t3_transcription_session(
    server: LiveServer, comparison: Comparison
) -> list[dict[str, Any]]:
    """T3 probe 7: a transcription session, 17 appends of 200 ms, a commit during speech."""
    first, update, commit = probe_capture()[7]
    async with session(server, query="?intent=transcription") as client:
        comparison.streams(first.server, [client.created], source="T3")
        await client.send(update.client[0])
        ours = [await client.next()]
        # the capture's speech starts with its audio and lasts past the commit
        await client.append(tone_pcm(17 * 200), chunk_ms=200)
        ours += await client.until(terminal(update.server), timeout=20)
        comparison.streams(update.server, ours, source="T3")
        ours = await step(client, commit.client, terminal(commit.server))
        comparison.streams(commit.server, ours, source="T3")
        return client.events


async def t1_function_call(server: LiveServer, comparison: Comparison) -> list[dict[str, Any]]:
    """A function-call round trip: the order of F1, the shapes of T1's argument examples."""
    examples = openapi_examples("server")
    async with session(server) as client:
        await step(
            client,
            [{"type": "session.update", "session": {"type": "realtime", "tools": [WEATHER_TOOL]}}],
            "session.updated",
        )
        await client.user_text("what is the weather in Paris")
        await client.until("conversation.item.done")
        ours = await step(client, [{"type": "response.create"}], "response.done")
        comparison.streams([{"type": kind, ELISION: True} for kind in F1_ORDER], ours, source="F1")
        for kind in (
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
        ):
            comparison.sample(examples[kind], ours, source="T1", link=True)
        call = ours[-1]["response"]["output"][0]
        output = {
            "type": "function_call_output",
            "call_id": call["call_id"],
            "output": '{"sky": "sunny"}',
        }
        ours = await step(
            client, [{"type": "conversation.item.create", "item": output}], "conversation.item.done"
        )
        # a created item is answered as in T3: added, then done, and no response
        comparison.streams(
            [
                {"type": kind, ELISION: True}
                for kind in ("conversation.item.added", "conversation.item.done")
            ],
            ours,
            source="T3",
        )
        ours = await step(client, [{"type": "response.create"}], "response.done")
        assert ours[-1]["response"]["status"] == "completed"
        return client.events


async def t1_item_operations(server: LiveServer, comparison: Comparison) -> list[dict[str, Any]]:
    """The API reference's client examples that clear the input buffer and truncate, retrieve
    and delete an item, sent as they are but for the item id; our answers against its server
    examples (the one for conversation.item.retrieved is stale: see STALE_EXAMPLES)."""
    requests = openapi_examples("client")
    answers = openapi_examples("server")
    async with session(server) as client:
        await client.append(silence_pcm(200))
        ours = await step(
            client, [requests["input_audio_buffer.clear"]], "input_audio_buffer.cleared"
        )
        comparison.sample(answers["input_audio_buffer.cleared"], ours, source="T1")
        ours = await step(client, [{"type": "response.create"}], "response.done")
        item_id = ours[-1]["response"]["output"][0]["id"]
        truncate = {**requests["conversation.item.truncate"], "item_id": item_id}
        ours = await step(client, [truncate], "conversation.item.truncated")
        comparison.sample(answers["conversation.item.truncated"], ours, source="T1")
        retrieve = {**requests["conversation.item.retrieve"], "item_id": item_id}
        ours = await step(client, [retrieve], "conversation.item.retrieved")
        assert ours[-1]["item"]["id"] == item_id
        delete = {**requests["conversation.item.delete"], "item_id": item_id}
        ours = await step(client, [delete], "conversation.item.deleted")
        comparison.sample(answers["conversation.item.deleted"], ours, source="T1")
        return client.events


async def observed_error_replays(
    server: LiveServer, comparison: Comparison
) -> list[dict[str, Any]]:
    """Each recorded error of ``observed_errors.jsonl``, caused the way its source caused it."""
    triggers: dict[str, list[dict[str, Any] | str | bytes]] = {
        "T4": [{"type": "response.create"}],
        "T5": [{"type": "response.create", "event_id": "response_create_c069c3bd839f"}],
        "T6": [{"type": "session.update", "session": {"instructions": "Be brief."}}],
        "T1": [{"event_id": "event_567"}],
        "T3 live capture probe 8: unknown client event type": [{"type": "nope"}],
        "T3 live capture probe 8: non-JSON text frame": ["not json"],
        "T3 live capture probe 8: unknown session field": [
            {"type": "session.update", "session": {"type": "realtime", "bogus_field": 1}}
        ],
        "T3 live capture probe 8: binary frame": [bytes(64)],
    }
    #: these two were recorded with a response active (a second response.create)
    during_a_response = {"T4", "T5"}
    async with session(server) as client:
        for observed in observed_errors():
            if observed.event is None or observed.trace_id == "T9":
                continue  # code lists (T7, T8) and another server's refusal (T9): tests below
            frames = triggers.get(observed.source, triggers.get(observed.trace_id))
            assert frames is not None, f"no trigger for the recorded error {observed.source!r}"
            if observed.trace_id in during_a_response:
                await step(
                    client, [{"type": "response.create", "event_id": "first"}], "response.created"
                )
            ours = await step(client, frames, "error")
            comparison.streams([observed.event], [ours[-1]], source=observed.trace_id)
            if observed.trace_id in during_a_response:
                rest = await client.until("response.done", timeout=20)
                assert [e["type"] for e in rest].count("response.created") == 0
                assert rest[-1]["response"]["status"] == "completed"  # B3: the first goes on
        return client.events


FLOWS: dict[str, Flow] = {
    "T2 voice session": t2_voice_session,
    "T3 text turns and errors": t3_text_turns_and_errors,
    "T3 transcription session": t3_transcription_session,
    "F1/T1 function call": t1_function_call,
    "T1 item operations": t1_item_operations,
    "observed errors": observed_error_replays,
}


def replay_all() -> dict[str, tuple[Comparison, list[dict[str, Any]]]]:
    """Each flow's comparison and the events our server sent in it."""
    results: dict[str, tuple[Comparison, list[dict[str, Any]]]] = {}
    # answers slow enough to be still going when a flow sends a second response.create
    with live_server(fake_pool(size=2, token_delay_s=0.04)) as server:

        async def main() -> None:
            for name, flow in FLOWS.items():
                comparison = Comparison(ALLOWANCES)
                results[name] = (comparison, await flow(server, comparison))

        trio.run(main)
    # every kind of event the flows got from us against the API reference's example of it
    ours = [event for _, events in results.values() for event in events]
    examples = Comparison(ALLOWANCES)
    kinds = {event["type"] for event in ours}
    for kind, example in openapi_examples("server").items():
        if kind in kinds and kind not in STALE_EXAMPLES:
            examples.sample(example, ours, source="T1")
    results[EXAMPLES] = (examples, [])
    return results


@pytest.fixture(scope="module")
def replayed() -> dict[str, tuple[Comparison, list[dict[str, Any]]]]:
    return replay_all()


@pytest.mark.parametrize("name", [*FLOWS, EXAMPLES])
def test_recorded_flow_is_replayed_with_the_same_events(
    name: str, replayed: dict[str, tuple[Comparison, list[dict[str, Any]]]]
) -> None:
    comparison, _ = replayed[name]
    assert comparison.compared, f"{name}: no event was compared"
    assert not comparison.differences, f"{name} differs from its recording:\n{comparison.report()}"


def test_every_allowance_is_needed(
    replayed: dict[str, tuple[Comparison, list[dict[str, Any]]]],
) -> None:
    used = {
        id(allowance) for comparison, _ in replayed.values() for _, allowance in comparison.allowed
    }
    unused = [a for a in ALLOWANCES if id(a) not in used and not a.in_some_runs]
    assert not unused, f"allowances no flow needs any more (remove them): {unused}"


def test_error_codes_pipecat_and_livekit_rely_on_are_ours() -> None:
    codes = {o.trace_id: o.codes for o in observed_errors() if o.codes}
    with live_server(fake_pool(token_delay_s=0.04)) as server:

        async def body() -> None:
            async with session(server) as client:
                cancel = await step(client, [{"type": "response.cancel"}], "error")
                await step(client, [{"type": "response.create"}], "response.created")
                second = await step(client, [{"type": "response.create"}], "error")
                await client.until("response.done", timeout=20)
                commit = await step(client, [{"type": "input_audio_buffer.commit"}], "error")
            # pipecat goes on after exactly these two codes (T7); livekit knows this one (T8)
            assert {cancel[-1]["error"]["code"], second[-1]["error"]["code"]} == set(codes["T7"])
            assert (commit[-1]["error"]["code"],) == codes["T8"]

        trio.run(body)


def test_pool_refusal_carries_the_code_of_the_recorded_cascaded_server() -> None:
    (refusal,) = [o for o in observed_errors() if o.trace_id == "T9"]
    recorded = refusal.event
    assert recorded is not None and refusal.close is not None
    with live_server(fake_pool(size=1)) as server:

        async def body() -> None:
            async with session(server):
                async with connect(server) as ws:
                    refused = json.loads(await ws.get_message())
                    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                        await ws.get_message()
            # T9 puts the code in error.type, which breaks clients (sources.md): ours puts it
            # in error.code, as OpenAI does with every code (PROTOCOL section 3)
            assert refused["error"]["code"] == recorded["error"]["type"]
            assert refused["error"]["type"] == "invalid_request_error"
            # T9 closes with 1008 (policy violation); ours with 1013 (try again later)
            assert closed.value.reason is not None and closed.value.reason.code == 1013

        trio.run(body)
