"""Per-turn OpenTelemetry traces of live sessions: the span tree of a voice turn, a barge-in, a
failed engine, a session that is not traced, and the export over OTLP/HTTP to a receiver on
loopback."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from realtime import Pipeline, PipelinePool
from realtime.tracing import provider_from_environment
from tests.realtime.fakes import FakeLLM, FakeSTT, FakeTTS, FakeVAD
from tests.realtime.harness import Client, live_server, session, silence_pcm, tone_pcm

TRACING = {"workflow_name": "support line", "group_id": "team-7", "metadata": {"customer": "42"}}


def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def pool(**llm: Any) -> PipelinePool:
    fake = FakeLLM(**llm)
    return PipelinePool([Pipeline(0, FakeVAD(), FakeSTT(), fake, FakeTTS(chunk_delay_s=0.01))])


def run(provider: TracerProvider, body: Any, pipelines: PipelinePool | None = None) -> None:
    with live_server(pipelines or pool(), tracer_provider=provider) as server:

        async def main() -> None:
            async with session(server) as client:
                await body(client)

        trio.run(main)


async def speak(client: Client) -> None:
    await client.append(silence_pcm(200) + tone_pcm(600) + silence_pcm(700))


async def traced_question(client: Client) -> None:
    """Tracing on, a typed question and ``response.create``."""
    await client.update_session(tracing="auto")
    await client.user_text("Hello?")
    await client.send({"type": "response.create"})


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def one(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    (span,) = by_name(spans, name)
    return span


def test_a_voice_turn_is_a_span_tree_under_the_session() -> None:
    provider, exporter = traced()

    async def body(client: Client) -> None:
        await client.update_session(tracing=TRACING)
        await speak(client)
        events = await client.until("response.done")
        assert events[-1]["response"]["status"] == "completed"

    run(provider, body)
    spans = exporter.get_finished_spans()
    root = one(spans, "realtime.session")
    turn = one(spans, "realtime.turn")
    assert root.parent is None
    assert turn.parent is not None and turn.parent.span_id == root.context.span_id
    assert turn.context.trace_id == root.context.trace_id
    assert turn.attributes is not None
    assert turn.attributes["realtime.workflow_name"] == "support line"
    assert turn.attributes["realtime.group_id"] == "team-7"
    assert turn.attributes["realtime.metadata.customer"] == "42"
    assert turn.attributes["realtime.turn.trigger"] == "speech"
    assert turn.attributes["realtime.response.status"] == "completed"
    assert turn.attributes["gen_ai.usage.output_tokens"] > 0
    children = {s.name: s for s in spans if s.parent and s.parent.span_id == turn.context.span_id}
    stages = ["realtime.vad", "realtime.stt", "realtime.llm", "realtime.tts", "realtime.delivery"]
    assert sorted(children) == sorted(stages)
    assert turn.start_time is not None and turn.end_time is not None
    for name in stages:
        child = children[name]
        assert child.start_time is not None and child.end_time is not None
        assert turn.start_time <= child.start_time <= child.end_time <= turn.end_time, name
    # in the order a turn runs
    starts = [children[name].start_time or 0 for name in stages]
    assert starts == sorted(starts)
    assert children["realtime.llm"].attributes is not None
    assert children["realtime.llm"].attributes["realtime.llm.first_token_ms"] >= 0
    assert children["realtime.tts"].attributes is not None
    assert children["realtime.tts"].attributes["realtime.tts.first_chunk_ms"] >= 0


def test_a_barge_in_ends_the_turn_cancelled_with_its_event() -> None:
    provider, exporter = traced()

    async def body(client: Client) -> None:
        await traced_question(client)
        await client.until("response.output_audio.delta")
        await speak(client)  # the user talks over the answer
        events = await client.until("response.done")
        assert events[-1]["response"]["status"] == "cancelled"

    run(provider, body, pool(token_delay_s=0.05))
    spans = exporter.get_finished_spans()
    first = min(by_name(spans, "realtime.turn"), key=lambda s: s.start_time or 0)
    assert first.attributes is not None
    assert first.attributes["realtime.turn.trigger"] == "client"
    assert first.attributes["realtime.response.status"] == "cancelled"
    assert first.attributes["realtime.response.status_reason"] == "turn_detected"
    assert [e.name for e in first.events] == ["barge_in", "cancelled"]


def test_a_failed_engine_is_an_error_on_its_turn() -> None:
    provider, exporter = traced()
    pipelines = pool()
    failing = pipelines.pipelines[0].llm
    assert isinstance(failing, FakeLLM)
    failing.fail = True

    async def body(client: Client) -> None:
        await client.update_session(tracing="auto")
        await client.user_text("Hello?")
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert events[-1]["response"]["status"] == "failed"

    run(provider, body, pipelines)
    turn = one(exporter.get_finished_spans(), "realtime.turn")
    assert turn.status.status_code is StatusCode.ERROR
    (failure,) = [e for e in turn.events if e.name == "engine_failure"]
    assert failure.attributes is not None
    assert "fake LLM failure" in str(failure.attributes["message"])


def test_a_session_without_tracing_writes_no_span() -> None:
    provider, exporter = traced()

    async def body(client: Client) -> None:
        await client.user_text("Hello?")
        await client.send({"type": "response.create"})
        await client.until("response.done")

    run(provider, body)
    assert exporter.get_finished_spans() == ()


def test_the_environment_decides_whether_there_are_traces() -> None:
    assert provider_from_environment({}) is None
    endpoint = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"}
    assert provider_from_environment({**endpoint, "OTEL_SDK_DISABLED": "true"}) is None
    assert provider_from_environment({"OTEL_TRACES_EXPORTER": "none"}) is None
    console = provider_from_environment({"OTEL_TRACES_EXPORTER": "console"})
    assert isinstance(console, TracerProvider)
    console.shutdown()
    with pytest.raises(SystemExit, match="unknown exporter"):
        provider_from_environment({"OTEL_TRACES_EXPORTER": "zipkin"})


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """An OTLP/HTTP trace receiver on loopback: the export requests it got."""
    received: list[ExportTraceServiceRequest] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            received.append(request)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    finally:
        server.shutdown()


def test_turns_are_exported_over_otlp_http(monkeypatch: pytest.MonkeyPatch) -> None:
    with otlp_receiver() as (endpoint, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "voice-test")
        provider = provider_from_environment()
        assert provider is not None

        async def body(client: Client) -> None:
            await client.update_session(tracing="auto")
            await client.user_text("Hello?")
            await client.send({"type": "response.create"})
            await client.until("response.done")

        run(provider, body)
        assert provider.force_flush(10_000)
        provider.shutdown()
    spans = [
        (resource.resource, span.name)
        for request in received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = {name for _, name in spans}
    assert {"realtime.session", "realtime.turn", "realtime.llm", "realtime.tts"} <= names
    services = {
        attribute.value.string_value
        for resource, _ in spans
        for attribute in resource.attributes
        if attribute.key == "service.name"
    }
    assert services == {"voice-test"}


def test_speech_without_a_response_is_not_taken_by_a_later_typed_turn() -> None:
    provider, exporter = traced()

    async def body(client: Client) -> None:
        await client.update_session(
            tracing="auto",
            audio={"input": {"turn_detection": {"type": "server_vad", "create_response": False}}},
        )
        await speak(client)
        await client.until("input_audio_buffer.committed")
        await client.user_text("Typed instead")
        await client.send({"type": "response.create"})
        await client.until("response.done")

    run(provider, body)
    turn = one(exporter.get_finished_spans(), "realtime.turn")
    assert turn.attributes is not None
    assert turn.attributes["realtime.turn.trigger"] == "client"
    assert not [s for s in exporter.get_finished_spans() if s.name == "realtime.vad"]


def test_a_turn_still_open_when_the_session_ends_is_written() -> None:
    provider, exporter = traced()

    async def body(client: Client) -> None:
        await traced_question(client)
        await client.until("response.output_audio.delta")

    run(provider, body, pool(token_delay_s=0.2))
    spans = exporter.get_finished_spans()
    turn = one(spans, "realtime.turn")
    assert turn.attributes is not None
    assert turn.attributes["realtime.response.status"] == "session_ended"
    assert one(spans, "realtime.session").end_time is not None
