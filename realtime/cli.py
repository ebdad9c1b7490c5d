"""``python -m realtime``: engine loading and the server (the flags are ``flags.py``)."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from engines.base import VAD, EngineError, TurnModel
from engines.choice import (
    build_llm,
    build_stt,
    build_tts,
    build_turn_model,
    drop_none,
)
from engines.embedded import default_threads
from engines.workers import (
    EngineWorker,
)
from engines.workers.supervisor import MissingDependencyReported
from protocol import ProtocolError, RealtimeConnection

from .endpoint import AppSettings
from .flags import (
    call_settings,
    mcp_allowed_urls,
    parse_args,
    parser,
    phone_settings,
    session_defaults,
    transcription_defaults,
)
from .input_audio import ENGINE_RATE
from .pool import Pipeline, PipelinePool
from .server import serve_until_signal
from .session import SessionOptions
from .tracing import provider_from_environment

log = logging.getLogger("realtime")

#: how much longer than --engine_timeout_s an engine worker may stay silent in a call before it
#: is killed as hung: the session gives up on the call and cancels it at the timeout, and a
#: worker that is only slow ends the call within this grace
WORKER_KILL_GRACE_S = 2.0

#: transcription sessions per pipeline when --num_transcription_sessions is not given, measured
#: with scripts/bench_transcription.py on 2 cores (Whisper tiny.en): with live partials one
#: session keeps final transcripts under 1 s at p90; with finals only, three do
TRANSCRIPTION_SESSIONS_PER_PIPELINE = {True: 1, False: 3}


def engine_threads(args: argparse.Namespace, engine: str) -> int:
    """CPU threads of ``engine`` ("stt", "llm", "tts"): its own flag, else ``--threads``, else
    the embedded engines' measured default (other engines: up to two)."""
    embedded = {"stt": args.stt == "whisper", "llm": args.llm == "llama_cpp", "tts": True}
    default = default_threads(engine if embedded[engine] else None)
    return int(getattr(args, f"{engine}_threads") or args.threads or default)


def _load_vad(args: argparse.Namespace) -> VAD:
    from engines import embedded

    return embedded.load_vad(**drop_none({"model_path": args.vad_model_path}))


def build_pipeline(
    args: argparse.Namespace, index: int, turn_model: TurnModel | None = None
) -> Pipeline:
    """One engine chain in this process; ``turn_model`` (for ``semantic_vad``) is shared by
    all of them."""
    vad = _load_vad(args)
    stt = build_stt(args, engine_threads(args, "stt"))
    llm = build_llm(args, engine_threads(args, "llm"))
    tts = build_tts(args, engine_threads(args, "tts"))
    if vad.sample_rate != ENGINE_RATE or stt.sample_rate != ENGINE_RATE:
        raise SystemExit(f"the VAD and STT engines must take {ENGINE_RATE} Hz audio")
    return Pipeline(index=index, vad=vad, stt=stt, llm=llm, tts=tts, turn_model=turn_model)


def build_worker_pool(args: argparse.Namespace, transcription_sessions: int) -> PipelinePool:
    """``--num_pipelines`` engine chains whose STT, LLM, TTS and turn model each run in a
    supervised worker process. The VAD, a few microseconds a frame, stays in this process.
    Parakeet and the turn model serve every pipeline from one worker, as they serve every
    pipeline from one loaded model in-process. Every worker loads at once, side by side."""
    stt_threads, llm_threads, tts_threads = (engine_threads(args, e) for e in ("stt", "llm", "tts"))
    call_timeout_s = args.engine_timeout_s + WORKER_KILL_GRACE_S

    def worker(name: str, build: Callable[[], Any]) -> EngineWorker:
        return EngineWorker(name, build, call_timeout_s=call_timeout_s)

    stt_shared = (
        worker("stt", functools.partial(build_stt, args, stt_threads))
        if args.stt == "parakeet"
        else None
    )
    chains = [
        (
            stt_shared
            or worker(f"pipeline {i} stt", functools.partial(build_stt, args, stt_threads)),
            worker(f"pipeline {i} llm", functools.partial(build_llm, args, llm_threads)),
            worker(f"pipeline {i} tts", functools.partial(build_tts, args, tts_threads)),
        )
        for i in range(args.num_pipelines)
    ]
    turn = worker("turn model", functools.partial(build_turn_model, args))
    engines = list({id(w): w for chain in chains for w in chain}.values())
    started = [turn, *engines]
    try:
        for each in started:
            each.spawn()
        try:
            turn.wait_ready()
        except MissingDependencyReported as error:
            log.warning("no turn model: %s. semantic_vad ends turns after fixed silences", error)
            started.remove(turn)
        for each in engines:
            each.wait_ready()
        for each in engines:
            log.info(
                "%s=%s loaded in its worker (pid %s) in %.2f s",
                each.name,
                each.info["type"],
                each.pid,
                each.load_seconds,
            )
        turn_worker = turn if turn in started else None
        pipelines = [
            Pipeline.of_workers(i, _load_vad(args), stt, llm, tts, turn_worker)
            for i, (stt, llm, tts) in enumerate(chains)
        ]
    except BaseException:
        for each in started:
            each.close()
        raise
    if pipelines[0].stt.sample_rate != ENGINE_RATE:
        raise SystemExit(f"the STT engine must take {ENGINE_RATE} Hz audio")
    if stt_shared is None:
        return PipelinePool(pipelines, transcription_sessions)
    # one STT worker: its calls from every pipeline take turns through one limiter
    shared_limiter = pipelines[0].stt_limiter
    return PipelinePool(
        [attrs.evolve(p, stt_limiter=shared_limiter) for p in pipelines], transcription_sessions
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # faster-whisper logs every transcription call at INFO (live partials: several a second)
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    if args.num_pipelines < 1:
        raise SystemExit("--num_pipelines must be at least 1")
    try:
        RealtimeConnection(session_defaults=session_defaults(args))
    except ProtocolError as exc:
        raise SystemExit(f"invalid session default ({exc.param}): {exc.message}") from None
    mcp_urls = mcp_allowed_urls(args)
    tracer_provider = provider_from_environment()  # a bad OTEL_* setting stops us before loading
    started = time.perf_counter()
    try:
        transcription_sessions = args.num_transcription_sessions
        if transcription_sessions is None:
            per_pipeline = TRANSCRIPTION_SESSIONS_PER_PIPELINE[args.enable_live_transcription]
            transcription_sessions = per_pipeline * args.num_pipelines
        if args.engine_workers:
            pool = build_worker_pool(args, transcription_sessions)
        else:
            from engines.smart_turn import load_turn_model

            turn_model = load_turn_model(args.turn_model_path)
            pool = PipelinePool.build(
                args.num_pipelines,
                lambda i: build_pipeline(args, i, turn_model),
                transcription_sessions,
            )
    except (EngineError, ValueError) as exc:  # MissingDependency included
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    log.info(
        "%d pipeline(s) ready in %.2f s: vad=%s stt=%s llm=%s tts=%s",
        pool.size,
        time.perf_counter() - started,
        args.vad,
        args.stt,
        args.llm,
        args.tts,
    )
    if tracer_provider is not None:
        log.info("OpenTelemetry traces on: sessions whose 'tracing' is set are traced")
    settings = AppSettings(
        api_key=args.api_key or None,
        calls=call_settings(args),
        phone=phone_settings(args),
        session=SessionOptions(
            model=args.model,
            session_defaults=session_defaults(args),
            transcription_defaults=transcription_defaults(args),
            voice=args.voice,
            live_transcription=args.enable_live_transcription,
            speculative=args.speculative,
            send_timeout_s=args.send_timeout_s,
            engine_timeout_s=args.engine_timeout_s,
            mcp_connect_timeout_s=args.mcp_connect_timeout_s,
            mcp_call_timeout_s=args.mcp_call_timeout_s,
            mcp_allowed_urls=mcp_urls,
            tracer_provider=tracer_provider,
        ),
    )
    try:
        trio.run(
            lambda: serve_until_signal(
                pool,
                settings,
                host=args.ws_host,
                port=args.ws_port,
                graceful_timeout_s=args.graceful_timeout_s,
                drain_timeout_s=args.drain_timeout_s,
            )
        )
    finally:
        pool.close()
        if tracer_provider is not None:
            tracer_provider.shutdown()  # the spans still queued go out


__all__ = [
    "build_llm",
    "build_pipeline",
    "build_stt",
    "build_tts",
    "build_worker_pool",
    "engine_threads",
    "main",
    "parse_args",
    "parser",
    "session_defaults",
]
