"""Per-turn traces with OpenTelemetry: where each turn's time went.

:func:`provider_from_environment` configures the official SDK from the standard ``OTEL_*``
variables (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_TRACES_EXPORTER``, ``OTEL_SERVICE_NAME``, the exporter's headers and protocol, ...); with
none of them set there is no tracing at all. A session is traced while its ``tracing`` field is
set (``"auto"``, or an object whose ``workflow_name``, ``group_id`` and ``metadata`` the spans
carry), as OpenAI's server does: ``tracing: null`` (the default, unless ``--tracing auto``)
traces nothing.

One trace per session::

    realtime.session                     the whole session
      realtime.turn                      one response, from the user's speech (or its creation)
        realtime.vad                     speech started -> the VAD's end of turn
        realtime.stt                     the end of turn -> the final transcript
        realtime.llm                     the model's request -> its last token (first token, tokens)
        realtime.tts                     the first piece asked -> the last audio (first chunk)
        realtime.delivery                the first output sent -> response.done

A turn's span ends with its response: its status (``completed``, ``cancelled`` with the reason,
a barge-in event when the user's speech cut it, ``failed`` as an error status) and tokens. The
spans are built when the turn ends, from the times the session observed: the session's events
(:meth:`SessionTrace.observe`) and the generator's marks (:meth:`SessionTrace.mark`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import attrs
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import Span, Status, StatusCode

from protocol import events as ev
from protocol import inputs as ins

SERVICE_NAME = "realtime-voice-server"
#: the variables that turn tracing on (any of them set)
_TURNED_ON_BY = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
)


def provider_from_environment(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """A tracer provider as the ``OTEL_*`` variables describe it; None when they ask for none
    (nothing set, ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if not any(env.get(name) for name in _TURNED_ON_BY):
        return None
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    if names == ["none"]:
        return None
    attributes = env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    named = bool(env.get("OTEL_SERVICE_NAME")) or "service.name=" in attributes
    # the SDK reads both variables itself; the server's name only where neither gives one
    resource = Resource.create({} if named else {"service.name": SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    for name in names:
        if name == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(env)))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            raise SystemExit(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (otlp, console)")
    return provider


def _otlp_exporter(env: Mapping[str, str]) -> Any:
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # the endpoint, headers and timeout come from the environment
    if protocol != "grpc":
        raise SystemExit(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported")
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )
    except ImportError:
        raise SystemExit(
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc"
        ) from None
    return GrpcSpanExporter()


def _now() -> int:
    return time.time_ns()


@attrs.define
class _Speech:
    """A user turn's speech, from its start to its transcript."""

    started: int
    item_id: str
    stopped: int | None = None
    transcribed: int | None = None


@attrs.define
class _Turn:
    """What one response's turn observed, by the time it happened (ns since the epoch)."""

    response_id: str
    created: int
    speech: _Speech | None = None
    marks: dict[str, int] = attrs.Factory(dict)
    first_output: int | None = None
    barge_in: int | None = None


class SessionTrace:
    """The trace of one session: fed its events and the generator's marks, it writes a span
    per turn under the session's span once each turn's response is done."""

    def __init__(self, provider: TracerProvider, session_id: str) -> None:
        self.tracer = provider.get_tracer("realtime")
        self.session_id = session_id
        self.root: Span | None = None
        self.settings: Any = None  #: the session's ``tracing`` (None: not traced)
        self._speech: _Speech | None = None
        self._turns: dict[str, _Turn] = {}
        #: generator marks of work that a response took over (a speculation's), by its id
        self._aliases: dict[str, str] = {}
        self._early_marks: dict[str, dict[str, int]] = {}

    # --- what the session sees -------------------------------------------------------------

    def observe(self, event: ev.ServerEvent) -> None:
        """One event the session sends (in order)."""
        now = _now()
        if isinstance(event, ev.SessionCreated | ev.SessionUpdated):
            self._configure(event.session.get("tracing"), now)
        elif isinstance(event, ev.InputAudioBufferSpeechStarted):
            self._speech = _Speech(now, event.item_id)
            for turn in self._turns.values():
                turn.barge_in = turn.barge_in or now
        elif isinstance(event, ev.InputAudioBufferSpeechStopped):
            if self._speech is not None and self._speech.item_id == event.item_id:
                self._speech.stopped = now
        elif isinstance(event, ev.ConversationItemAdded):
            item = event.item
            if (
                self._speech is not None
                and item.id != self._speech.item_id
                and getattr(item, "role", None) == "user"
            ):
                self._speech = None  # the user typed instead: the next turn is not the speech's
        elif isinstance(event, ev.TranscriptionCompleted | ev.TranscriptionFailed):
            self._transcribed(event.item_id, now)
        elif isinstance(event, ev.ResponseCreated):
            response_id = event.response["id"]
            speech = self._speech if self._speech and self._speech.stopped else None
            if speech is not None:
                self._speech = None
            turn = _Turn(response_id, now, speech)
            turn.marks.update(self._early_marks.pop(response_id, {}))
            self._turns[response_id] = turn
        elif isinstance(event, ev.ResponseOutputAudioDelta | ev.ResponseOutputTextDelta):
            turn = self._turns.get(event.response_id)
            if turn is not None and turn.first_output is None:
                turn.first_output = now
        elif isinstance(event, ev.ResponseDone):
            turn = self._turns.pop(event.response["id"], None)
            if turn is not None:
                self._write_turn(turn, event.response, now)
            for work_id in [w for w, r in self._aliases.items() if r == event.response["id"]]:
                del self._aliases[work_id]

    def observe_result(self, result: ins.EngineResult) -> None:
        """One engine result the session's machine is fed (a transcript arrives as one even
        when the session sends no transcription events)."""
        if isinstance(result, ins.TranscriptDone | ins.TranscriptFailed):
            self._transcribed(result.item_id, _now())

    def _transcribed(self, item_id: str, now: int) -> None:
        for speech in [self._speech, *(t.speech for t in self._turns.values())]:
            if speech is not None and speech.item_id == item_id:
                speech.transcribed = speech.transcribed or now

    def mark(self, work_id: str, stage: str) -> None:
        """The generator reached ``stage`` (``llm.start``, ``llm.first_token``, ``llm.end``,
        ``tts.start``, ``tts.first_chunk``, ``tts.end``) for ``work_id``: a response, or a
        speculation that one may take over. The first time of each stage counts."""
        now = _now()
        response_id = self._aliases.get(work_id, work_id)
        turn = self._turns.get(response_id)
        if turn is None and work_id not in self._early_marks:
            _bounded(self._early_marks)  # a speculation no response took leaves its marks
            self._early_marks[work_id] = {}
        marks = turn.marks if turn is not None else self._early_marks[work_id]
        if stage.endswith(".end"):
            marks[stage] = now
        else:
            marks.setdefault(stage, now)

    def alias(self, work_id: str, response_id: str) -> None:
        """The response ``response_id`` continues the work of speculation ``work_id``."""
        _bounded(self._aliases)
        self._aliases[work_id] = response_id
        early = self._early_marks.pop(work_id, {})
        turn = self._turns.get(response_id)
        if turn is not None:
            for stage, at in early.items():
                turn.marks.setdefault(stage, at)

    def end(self) -> None:
        """The session ended: its turns still open end with it, then its span."""
        now = _now()
        for turn in list(self._turns.values()):
            self._write_turn(turn, {"id": turn.response_id, "status": "session_ended"}, now)
        self._turns.clear()
        if self.root is not None:
            self.root.end(end_time=now)
            self.root = None

    # --- spans -----------------------------------------------------------------------------

    def _configure(self, tracing: Any, now: int) -> None:
        if tracing is None or self.root is not None:
            self.settings = tracing if self.root is None else self.settings
            return
        self.settings = tracing
        attributes: dict[str, Any] = {"realtime.session.id": self.session_id}
        attributes.update(_tracing_attributes(tracing))
        self.root = self.tracer.start_span(
            "realtime.session", attributes=attributes, start_time=now
        )

    def _write_turn(self, turn: _Turn, response: dict[str, Any], now: int) -> None:
        if self.root is None:
            return
        speech = turn.speech
        begins = speech.started if speech is not None else turn.created
        status = response.get("status", "")
        details = response.get("status_details") or {}
        usage = response.get("usage") or {}
        attributes: dict[str, Any] = {
            "realtime.session.id": self.session_id,
            "realtime.response.id": turn.response_id,
            "realtime.response.status": status,
            "realtime.turn.trigger": "speech" if speech is not None else "client",
        }
        if details.get("reason"):
            attributes["realtime.response.status_reason"] = details["reason"]
        if usage:
            attributes["gen_ai.usage.input_tokens"] = usage.get("input_tokens", 0)
            attributes["gen_ai.usage.output_tokens"] = usage.get("output_tokens", 0)
        attributes.update(_tracing_attributes(self.settings))
        parent = trace.set_span_in_context(self.root)
        span = self.tracer.start_span(
            "realtime.turn", context=parent, attributes=attributes, start_time=begins
        )
        inside = trace.set_span_in_context(span)

        def child(name: str, start: int | None, end: int | None, **attributes: Any) -> None:
            if start is not None and end is not None and end >= start:
                self.tracer.start_span(
                    name, context=inside, attributes=attributes, start_time=start
                ).end(end_time=end)

        if speech is not None:
            child("realtime.vad", speech.started, speech.stopped)
            child("realtime.stt", speech.stopped, speech.transcribed)
        marks = turn.marks
        llm: dict[str, Any] = {}
        if (first_token := _ms(marks, "llm.start", "llm.first_token")) is not None:
            llm["realtime.llm.first_token_ms"] = first_token
        if usage:
            llm["gen_ai.usage.output_tokens"] = usage.get("output_tokens", 0)
        child("realtime.llm", marks.get("llm.start"), marks.get("llm.end", now), **llm)
        tts: dict[str, Any] = {}
        if (first_chunk := _ms(marks, "tts.start", "tts.first_chunk")) is not None:
            tts["realtime.tts.first_chunk_ms"] = first_chunk
        child("realtime.tts", marks.get("tts.start"), marks.get("tts.end", now), **tts)
        child("realtime.delivery", turn.first_output, now)
        if status == "cancelled":
            reason = details.get("reason", "")
            if reason == "turn_detected" and turn.barge_in is not None:
                span.add_event("barge_in", timestamp=turn.barge_in)
            span.add_event("cancelled", {"reason": reason}, timestamp=now)
        elif status == "failed":
            error = details.get("error") or {}
            span.add_event(
                "engine_failure",
                {"code": error.get("code", ""), "message": error.get("message", "")},
                timestamp=now,
            )
            span.set_status(Status(StatusCode.ERROR, error.get("message", "the response failed")))
        span.end(end_time=now)


#: what a session's trace remembers of work no turn has claimed (speculations dropped)
_MAX_PENDING = 32


def _bounded(pending: dict[str, Any]) -> None:
    """Make room for one more entry: the oldest go beyond ``_MAX_PENDING``."""
    while len(pending) >= _MAX_PENDING:
        del pending[next(iter(pending))]


def _ms(marks: dict[str, int], start: str, end: str) -> float | None:
    """Milliseconds from mark ``start`` to mark ``end``, if both were reached."""
    if start not in marks or end not in marks:
        return None
    return (marks[end] - marks[start]) / 1e6


def _tracing_attributes(tracing: Any) -> dict[str, Any]:
    """The session's ``tracing`` object as span attributes."""
    if not isinstance(tracing, dict):
        return {"realtime.tracing": "auto"} if tracing == "auto" else {}
    out: dict[str, Any] = {}
    if tracing.get("workflow_name"):
        out["realtime.workflow_name"] = tracing["workflow_name"]
    if tracing.get("group_id"):
        out["realtime.group_id"] = tracing["group_id"]
    for key, value in (tracing.get("metadata") or {}).items():
        out[f"realtime.metadata.{key}"] = (
            value if isinstance(value, str | int | float | bool) else json.dumps(value)
        )
    return out
