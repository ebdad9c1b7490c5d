"""One Realtime session: the protocol machine, its engine pipeline and its tasks, in one nursery.

Tasks: the reader (client frames -> machine, and input audio -> 16 kHz timeline -> VAD frames
-> machine, cutting committed segments), the transcription task (final and live STT), one task
per response, each in its own cancel scope, at most one speculation task (the turn's work
started at a pause, held until the machine confirms the turn: ``realtime/speculation.py``) and
the turn model's scoring; the caller pumps the outbox to the client.
Every machine call happens on the Trio thread, so its outputs are put in the outbox in the
order the machine produced them, whichever task made the call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import numpy as np
import trio

from engines.base import CancelToken, EngineError, EngineFailed, Transcript
from protocol import RealtimeConnection, encode_server_event
from protocol import effects as fx
from protocol import events as ev
from protocol import inputs as ins
from protocol.connection import Output
from protocol.effects import ResponsePlan

from . import audio
from .generation import ResponseGenerator
from .input_audio import ENGINE_RATE, InputTimeline
from .metrics import Metrics
from .outbox import Outbox, SlowClient
from .pool import Pipeline
from .speculation import EarlyTranscript, SpeculativeWork, engine_limiter
from .threads import call_in_thread
from .transcription_requests import (
    FinalTranscription,
    HeldTranscription,
    PartialTranscription,
    TranscriptionRequest,
)

log = logging.getLogger("realtime.session")
#: one debug line per speculation: used or wasted (scripts/bench_turns.py counts them)
speculation_log = logging.getLogger("realtime.session.speculation")


class EventPort(Protocol):
    """A transport's incoming event side: the client's frames (outgoing ones use the Outbox)."""

    async def receive(self) -> str | bytes: ...


class CallMedia(Protocol):
    """A WebRTC call's audio, seen from its session (see ``realtime.calls``)."""

    #: the caller's audio: float32 mono chunks at ``ENGINE_RATE``
    audio_in: trio.MemoryReceiveChannel[np.ndarray]
    #: "started" / "stopped" as the answer's audio plays out on the track
    playout: trio.MemoryReceiveChannel[str]

    def play(self, samples: np.ndarray) -> None:
        """Queue float32 mono samples at ``PLAYOUT_RATE``."""
        ...

    async def clear(self) -> int:
        """Flush the queued output; returns the samples dropped."""
        ...


PLAYOUT_RATE = 48_000  #: Hz of a WebRTC call's output track


@attrs.frozen
class SessionOptions:
    model: str = "gpt-realtime"
    voice: str = "alloy"
    session_type: str = "realtime"  #: or "transcription"
    #: a partial session object laid over OpenAI's session defaults (from the CLI flags)
    session_defaults: dict[str, Any] = attrs.Factory(dict)
    #: the same for transcription sessions (input audio settings only)
    transcription_defaults: dict[str, Any] = attrs.Factory(dict)
    live_transcription: bool = True
    live_interval_ms: int = 500
    output_chunk_ms: int = 40
    #: start a turn's transcription and response at its first pause, holding them until the
    #: turn is confirmed; clients see the same events either way, only sooner
    speculative: bool = True
    transport: str = "websocket"  #: or "webrtc": audio on the call's tracks (``media``)
    outbox_high_water: int = 512  #: events queued for the client before producers wait
    send_timeout_s: float = 15.0  #: one frame not accepted by the client for this long ends it
    engine_timeout_s: float = 30.0


def _single_cause(error: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (a nursery's wrapping)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _code(failure: BaseException) -> str:
    """The ``error.code`` of a response that ``failure`` ended: the engine's own
    (``engine_failed`` for a worker that died), else ``engine_error``."""
    return failure.code if isinstance(failure, EngineError) else EngineError.code


class SessionRunner:
    """Runs one session until the client leaves, stops reading, or the server shuts down.

    The caller owns the connection: it pumps ``outbox`` to the client in a task of its own and
    returns the pipeline to the pool when :meth:`run` returns.
    """

    def __init__(
        self,
        port: EventPort,
        pipeline: Pipeline,
        options: SessionOptions,
        metrics: Metrics,
        outbox: Outbox,
        shutdown: trio.Event | None = None,
        media: CallMedia | None = None,
    ) -> None:
        self.port = port
        self.media = media
        self.pipeline = pipeline
        self.options = options
        self.metrics = metrics
        self.shutdown = shutdown if shutdown is not None else trio.Event()
        transcription = options.session_type == "transcription"
        self.conn = RealtimeConnection(
            model=options.model,
            voice=options.voice,
            session_type=options.session_type,
            session_defaults=(
                options.transcription_defaults if transcription else options.session_defaults
            ),
            speculation=options.speculative,
            turn_model=pipeline.turn_model is not None,
            transport=options.transport,
        )
        self.session_id = self.conn.session.wire["id"]
        self.outbox = outbox
        self._stt_send, self._stt_receive = trio.open_memory_channel[TranscriptionRequest](64)
        self._responses: dict[str, tuple[trio.CancelScope, CancelToken]] = {}
        self._response_ended = trio.lowlevel.ParkingLot()  # a response task's entry went
        self._speculations: dict[str, SpeculativeWork] = {}
        self._generator = ResponseGenerator(
            pipeline,
            self.metrics,
            engine_timeout_s=options.engine_timeout_s,
            output_chunk_ms=options.output_chunk_ms,
        )
        # input audio state
        self.timeline = InputTimeline()
        self._resampler: audio.StreamingResampler | None = None
        self._resampler_format = ""
        self._vad_pending = np.zeros(0, np.float32)
        self._vad_position = 0  # samples consumed by the VAD
        self._live: tuple[str, int] | None = None  # (item_id, start_ms) of live transcription
        self._live_last = 0  # timeline sample of the last partial request
        self._partial_queued = False
        self._live_quiet = False  # the machine holds partials back (QuietLiveTranscription)
        self._early: EarlyTranscript | None = None
        self._nursery: trio.Nursery | None = None
        #: whether the session ended on an unexpected exception (the client was sent an error)
        self.failed = False
        #: when the VAD last ended a user turn; the next response's first audio measures from it
        self._turn_ended_at: float | None = None
        # WebRTC: the track audio being reported to the machine, and the output's resampler
        self._media_samples = np.zeros(0, np.float32)
        self._playout_resampler: tuple[str, audio.StreamingResampler] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        log.info("session %s started on pipeline %d", self.session_id, self.pipeline.index)
        started = time.monotonic()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._apply(self.conn.start())
                nursery.start_soon(self._transcription_task)
                nursery.start_soon(self._shutdown_watch)
                if self.media is not None:
                    nursery.start_soon(self._media_audio, self.media)
                    nursery.start_soon(self._playout_marks, self.media)
                await self._reader()
                nursery.cancel_scope.cancel()
        except* SlowClient:
            log.warning("session %s: client stopped reading; closing", self.session_id)
        except* Exception as failure:
            # an engine run inline (the VAD) or a bug: this session cannot go on, the others can
            self.failed = True
            log.exception("session %s failed; closing it", self.session_id)
            cause = _single_cause(failure)
            error = ev.Error(
                error_type="server_error",
                code="session_failed",
                message=f"The session failed on the server: {str(cause) or type(cause).__name__}",
            )
            self.outbox.put(encode_server_event(error))
        finally:
            for scope, token in self._responses.values():
                token.cancel()
                scope.cancel()
            for speculation in self._speculations.values():
                speculation.cancel()
            log.info("session %s ended after %.1f s", self.session_id, time.monotonic() - started)

    async def _shutdown_watch(self) -> None:
        """On server shutdown: let the active response finish (the server bounds the wait)."""
        await self.shutdown.wait()
        while self._responses:
            await self._response_ended.park()
        await self.outbox.drain(timeout_s=2.0)
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    # --- client side -------------------------------------------------------------------------

    async def _reader(self) -> None:
        while True:
            frame = await self.port.receive()
            await self._apply(self.conn.receive_frame(frame))

    async def _apply(self, output: Output) -> None:
        """Send the events (in order) and carry out the effects of one machine call."""
        for event in output.events:
            self.outbox.put(encode_server_event(event))
            if isinstance(event, ev.InputAudioBufferSpeechStopped):
                self._turn_ended_at = time.monotonic()
            if isinstance(event, ev.Error) and event.error_type == "invalid_request_error":
                self.metrics.protocol_errors += 1
                log.info("session %s: %s (%s)", self.session_id, event.code, event.message)
        for effect in output.effects:
            if isinstance(
                effect,
                fx.AppendInputAudio
                | fx.ClearInputAudio
                | fx.CommitInputAudio
                | fx.TranscribeLive
                | fx.QuietLiveTranscription,
            ):
                # Input audio is handled right here, in the task that fed the machine (the
                # reader): resampling and ~0.1 ms of VAD per 32 ms frame cost less than a hop
                # to another task, and the order of appends, commits and clears is kept.
                await self._audio_effect(effect)
            elif isinstance(effect, fx.TranscribeItemAudio):
                samples = audio.StreamingResampler(audio.WIRE_RATE[effect.format], ENGINE_RATE)(
                    audio.decode(effect.audio, effect.format)
                )
                await self._stt_send.send(
                    FinalTranscription(effect.item_id, samples, effect.transcription)
                )
            elif isinstance(effect, fx.StartResponse):
                self._start_response(effect.response_id, effect.plan, effect.speculation_id)
            elif isinstance(effect, fx.CancelResponse):
                self._cancel_response(effect.response_id, effect.reason)
            elif isinstance(effect, fx.StartSpeculation):
                self._start_speculation(effect)
            elif isinstance(effect, fx.CancelSpeculation):
                self._cancel_speculation(effect.speculation_id)
            elif isinstance(effect, fx.TranscribeEarly):
                self._transcribe_early(effect)
            elif isinstance(effect, fx.CancelEarlyTranscription):
                self._cancel_early(effect.early_id)
            elif isinstance(effect, fx.ScoreTurn):
                self._score_turn(effect)
            elif isinstance(effect, fx.AcceptMediaAudio):
                await self._ingest(self._media_samples, effect.detect_speech)
            elif isinstance(effect, fx.PlayAudio):
                self._play(effect)
            elif isinstance(effect, fx.ClearPlayout):
                assert self.media is not None
                dropped = await self.media.clear()
                await self._apply(self.conn.feed(ins.PlayoutCleared(dropped * 1000 / PLAYOUT_RATE)))
        await self.outbox.wait_for_room()

    # --- WebRTC media ------------------------------------------------------------------------

    async def _media_audio(self, media: CallMedia) -> None:
        """The caller's track audio enters the input timeline as appends would."""
        async for samples in media.audio_in:
            self._media_samples = samples
            await self._apply(self.conn.feed(ins.MediaAudio(len(samples) * 1000 / ENGINE_RATE)))

    async def _playout_marks(self, media: CallMedia) -> None:
        async for mark in media.playout:
            result = ins.PlayoutStarted() if mark == "started" else ins.PlayoutStopped()
            await self._apply(self.conn.feed(result))

    def _play(self, effect: fx.PlayAudio) -> None:
        assert self.media is not None
        if self._playout_resampler is None or self._playout_resampler[0] != effect.format:
            resampler = audio.StreamingResampler(audio.WIRE_RATE[effect.format], PLAYOUT_RATE)
            self._playout_resampler = (effect.format, resampler)
        self.media.play(self._playout_resampler[1](audio.decode(effect.audio, effect.format)))

    # --- input audio -------------------------------------------------------------------------

    async def _audio_effect(self, effect: Any) -> None:
        if isinstance(effect, fx.AppendInputAudio):
            await self._append(effect)
        elif isinstance(effect, fx.CommitInputAudio):
            self._live = None
            samples = self.timeline.slice(effect.start_ms, effect.end_ms)
            self.timeline.drop_before(effect.end_ms)
            speculation = self._speculations.get(effect.speculation_id or "")
            if speculation is not None:
                speculation.transcript_claimed = True
                if speculation.request.plan is None:  # its transcript was all it was for
                    del self._speculations[speculation.id]
                    speculation_log.debug(
                        "session %s: %s transcript used", self.session_id, speculation.id
                    )
                await self._stt_send.send(
                    HeldTranscription(effect.item_id, speculation, samples, effect.transcription)
                )
                return
            await self._stt_send.send(
                FinalTranscription(effect.item_id, samples, effect.transcription)
            )
        elif isinstance(effect, fx.ClearInputAudio):
            self._live = None
            self.timeline.drop_before(self.timeline.total * 1000 // ENGINE_RATE)
        elif isinstance(effect, fx.TranscribeLive):
            if self.options.live_transcription:
                self._live = (effect.item_id, effect.start_ms)
                self._live_last = self.timeline.total
                self._live_quiet = False
        elif isinstance(effect, fx.QuietLiveTranscription):
            if self._live is not None and self._live[0] == effect.item_id:
                self._live_quiet = effect.quiet

    async def _append(self, effect: fx.AppendInputAudio) -> None:
        if self._resampler is None or self._resampler_format != effect.format:
            self._resampler = audio.StreamingResampler(audio.WIRE_RATE[effect.format], ENGINE_RATE)
            self._resampler_format = effect.format
        await self._ingest(
            self._resampler(audio.decode(effect.audio, effect.format)), effect.detect_speech
        )

    async def _ingest(self, samples: np.ndarray, detect_speech: bool) -> None:
        """Input audio at ``ENGINE_RATE`` joins the timeline (and the VAD when detecting)."""
        self.timeline.append(samples)
        if detect_speech:
            await self._run_vad(samples)
        else:
            self._vad_position = self.timeline.total
            self._vad_pending = np.zeros(0, np.float32)
        self._maybe_request_partial()

    async def _run_vad(self, samples: np.ndarray) -> None:
        vad = self.pipeline.vad
        size = vad.frame_samples
        pending = (
            np.concatenate([self._vad_pending, samples]) if len(self._vad_pending) else samples
        )
        offset = 0
        while len(pending) - offset >= size:
            frame = pending[offset : offset + size]
            offset += size
            self._vad_position += size
            # ~0.1 ms per frame: cheaper inline than a thread hop, and it keeps barge-in prompt
            probability = vad.probability(frame)
            result = ins.VadFrame(
                end_ms=self._vad_position * 1000 // ENGINE_RATE,
                duration_ms=size * 1000 // ENGINE_RATE,
                probability=probability,
            )
            await self._apply(self.conn.feed(result))
        self._vad_pending = pending[offset:].copy()

    def _maybe_request_partial(self) -> None:
        if self._live is None or self._partial_queued or self._live_quiet:
            return
        if self.pipeline.stt_limiter.statistics().tasks_waiting:
            return  # the shared STT has finals waiting: partials yield to them
        interval = self.options.live_interval_ms * ENGINE_RATE // 1000
        if self.timeline.total - self._live_last < interval:
            return
        item_id, start_ms = self._live
        self._live_last = self.timeline.total
        samples = self.timeline.slice(start_ms, self.timeline.total * 1000 // ENGINE_RATE)
        try:
            self._stt_send.send_nowait(PartialTranscription(item_id, samples))
            self._partial_queued = True
        except trio.WouldBlock:
            pass  # finals are queued; a partial can wait for the next interval

    def _transcribe_early(self, request: fx.TranscribeEarly) -> None:
        assert self._nursery is not None
        if self._early is not None:
            self._early.cancel()  # (the machine dropped it already; never both at once)
        self._early = early = EarlyTranscript(request)
        samples = self.timeline.slice(request.start_ms, request.end_ms)
        self._nursery.start_soon(self._early_transcript_task, early, samples)

    def _cancel_early(self, early_id: str) -> None:
        if self._early is not None and self._early.id == early_id:
            self._early.cancel()
            self._early = None

    async def _early_transcript_task(self, early: EarlyTranscript, samples: np.ndarray) -> None:
        with early.scope:
            try:
                options = early.request.transcription.stt_options()
                early.result = await self._transcribe(samples, speculative=True, **options)
            except Exception:
                log.warning("session %s: early transcription failed", self.session_id)
        early.done.set()

    # --- transcription -----------------------------------------------------------------------

    async def _transcribe(
        self,
        samples: np.ndarray,
        held: SpeculativeWork | None = None,
        *,
        speculative: bool = False,
        **options: Any,
    ) -> tuple[Transcript, float]:
        """The STT on 16 kHz ``samples`` in a worker thread, within ``engine_timeout_s``
        (waiting for the shared STT included), and the seconds the engine itself took.
        ``held``: the speculation this is for; it and ``speculative`` calls yield to live
        ones."""
        stt, token = self.pipeline.stt, CancelToken()

        def call() -> tuple[Transcript, float]:
            began = time.monotonic()
            result = stt.transcribe(samples, cancel=token, **options)
            return result, time.monotonic() - began

        engine = self.pipeline.stt_limiter
        return await call_in_thread(
            call,
            token,
            limiter=engine.speculative if speculative else engine_limiter(engine, held),
            timeout_s=self.options.engine_timeout_s,
            what="the STT",
        )

    async def _transcription_task(self) -> None:
        async for request in self._stt_receive:
            if isinstance(request, PartialTranscription):
                self._partial_queued = False
                if self._live is None or self._live[0] != request.item_id:
                    continue  # the segment was committed or cleared meanwhile
                try:
                    result, _ = await self._transcribe(request.samples, partial=True)
                except Exception:
                    log.exception("session %s: partial transcription failed", self.session_id)
                    continue
                hypothesis = ins.PartialHypothesis(request.item_id, result.text)
                await self._apply(self.conn.feed(hypothesis))
                continue
            if isinstance(request, HeldTranscription):
                speculation = request.speculation
                await speculation.transcribed.wait()
                if speculation.transcript is not None:
                    self.metrics.stt_seconds.observe(speculation.stt_seconds)
                    await self._transcript_done(
                        request.item_id, speculation.transcript, len(request.samples)
                    )
                    continue
                request = FinalTranscription(
                    request.item_id, request.samples, request.transcription
                )
            try:
                result, took = await self._transcribe(
                    request.samples,
                    **request.transcription.stt_options(),
                )
            except Exception as exc:
                self.metrics.engine_errors += 1
                log.exception("session %s: transcription failed", self.session_id)
                await self._apply(self.conn.feed(ins.TranscriptFailed(request.item_id, str(exc))))
                continue
            self.metrics.stt_seconds.observe(took)
            await self._transcript_done(request.item_id, result, len(request.samples))

    async def _transcript_done(self, item_id: str, result: Transcript, samples: int) -> None:
        """The final transcript of a committed segment of ``samples`` samples."""
        scores = (
            None
            if result.logprobs is None
            else tuple(
                {"token": token, "logprob": logprob, "bytes": list(token.encode())}
                for token, logprob in result.logprobs
            )
        )
        await self._apply(
            self.conn.feed(
                ins.TranscriptDone(item_id, result.text.strip(), samples / ENGINE_RATE, scores)
            )
        )

    # --- responses ---------------------------------------------------------------------------

    def _start_response(
        self, response_id: str, plan: ResponsePlan, speculation_id: str | None = None
    ) -> None:
        """Start the response's task; from the held work of ``speculation_id`` when that
        is still usable (it failed or is gone: the engines start anew)."""
        assert self._nursery is not None
        self.metrics.turns += 1
        speculation = self._speculations.pop(speculation_id or "", None)
        if speculation is not None and speculation.usable:
            speculation_log.debug("session %s: %s used", self.session_id, speculation.id)
            scope = trio.CancelScope()
            self._responses[response_id] = (scope, speculation.token)
            self._nursery.start_soon(self._held_response_task, response_id, speculation, scope)
            return
        if speculation is not None:
            self._drop(speculation)
        scope, token = trio.CancelScope(), CancelToken()
        self._responses[response_id] = (scope, token)
        self._nursery.start_soon(self._response_task, response_id, plan, scope, token)

    def _cancel_response(self, response_id: str, reason: str) -> None:
        if reason == "turn_detected":
            self.metrics.barge_ins += 1
        else:
            self.metrics.responses_cancelled += 1
        entry = self._responses.get(response_id)
        if entry is not None:
            scope, token = entry
            token.cancel()
            scope.cancel()

    async def _response_task(
        self, response_id: str, plan: ResponsePlan, scope: trio.CancelScope, token: CancelToken
    ) -> None:
        started = time.monotonic()
        try:
            with scope:
                try:
                    emit = self._live_output(response_id, started)
                    await self._generator.generate(response_id, plan, token, emit)
                except Exception as exc:
                    cause = _single_cause(exc)
                    if isinstance(cause, SlowClient):
                        raise cause from None  # the client's doing, not the engines': it ends
                    await self._response_failed(response_id, cause)
        finally:
            token.cancel()
            self._responses.pop(response_id, None)
            self._response_ended.unpark_all()
        log.info(
            "session %s: response %s ended after %.2f s%s",
            self.session_id,
            response_id,
            time.monotonic() - started,
            " (cancelled)" if scope.cancelled_caught else "",
        )

    async def _response_failed(self, response_id: str, failure: BaseException) -> None:
        """Count, log and report (``response.done`` failed, then ``error``) an engine failure
        that ended a response. A worker's death is one line (its supervisor logged how it
        died); anything else is logged with its traceback."""
        self.metrics.engine_errors += 1
        if isinstance(failure, EngineFailed):
            log.error("session %s: response %s failed: %s", self.session_id, response_id, failure)
        else:
            log.error(
                "session %s: response %s failed",
                self.session_id,
                response_id,
                exc_info=(type(failure), failure, failure.__traceback__),
            )
        message = str(failure) or type(failure).__name__
        await self._apply(self.conn.feed(ins.ResponseFailed(response_id, message, _code(failure))))

    def _live_output(
        self, response_id: str, started: float
    ) -> Callable[[ins.EngineResult], Awaitable[None]]:
        """A response's ``emit``: its results go to the machine (and so to the client); the
        first audio is timed from the response's start and from the end of the user's turn."""
        turn_ended_at = self._turn_ended_at
        self._turn_ended_at = None
        first_audio = True

        async def emit(result: ins.EngineResult) -> None:
            nonlocal first_audio
            if first_audio and isinstance(result, ins.AudioOut) and result.audio:
                first_audio = False
                now = time.monotonic()
                self.metrics.time_to_first_audio.observe(now - started)
                if turn_ended_at is not None:
                    self.metrics.end_of_turn_to_first_audio.observe(now - turn_ended_at)
            await self._apply(self.conn.feed(result))

        return emit

    # --- speculation -------------------------------------------------------------------------

    def _start_speculation(self, request: fx.StartSpeculation) -> None:
        assert self._nursery is not None
        speculation = SpeculativeWork(
            request, self.timeline.slice(request.start_ms, request.end_ms)
        )
        early = self._early
        if early is not None and early.id == request.early_id:
            speculation.early, self._early = early, None
            speculation_log.debug(
                "session %s: %s early transcript", self.session_id, request.speculation_id
            )
        self._speculations[request.speculation_id] = speculation
        self._nursery.start_soon(self._speculation_task, speculation)

    def _cancel_speculation(self, speculation_id: str) -> None:
        speculation = self._speculations.pop(speculation_id, None)
        if speculation is not None:
            self._drop(speculation)

    def _drop(self, speculation: SpeculativeWork) -> None:
        """The machine wants nothing more of ``speculation`` than, perhaps, its transcript."""
        if speculation.transcript_claimed:
            speculation_log.debug("session %s: %s transcript used", self.session_id, speculation.id)
            if not speculation.transcribed.is_set():
                speculation.response_wanted = False  # a commit still waits for the transcript
                return
        else:
            speculation_log.debug("session %s: %s wasted", self.session_id, speculation.id)
        speculation.cancel()

    async def _speculation_task(self, speculation: SpeculativeWork) -> None:
        """Transcribe the span, tell the machine, then generate the response into the hold."""
        request = speculation.request
        failure: BaseException | None = None
        try:
            with speculation.scope:
                try:
                    early = speculation.early
                    if early is not None:
                        await early.done.wait()
                    if early is not None and early.result is not None:
                        result, took = early.result
                    else:
                        result, took = await self._transcribe(
                            speculation.samples,
                            speculation,
                            **request.transcription.stt_options(),
                        )
                except Exception:
                    log.warning("session %s: speculative transcription failed", self.session_id)
                    return  # the commit transcribes its segment itself
                speculation.transcript, speculation.stt_seconds = result, took
                transcript = result.text.strip()
                await self._apply(
                    self.conn.feed(ins.SpeculationTranscribed(request.speculation_id, transcript))
                )
                speculation.transcribed.set()
                if not speculation.response_wanted:
                    return
                try:
                    await self._generator.generate(
                        request.speculation_id,
                        request.response_plan(transcript),
                        speculation.token,
                        speculation.hold,
                        speculation,
                    )
                except Exception as exc:
                    failure = _single_cause(exc)
                    if isinstance(failure, SlowClient):
                        raise failure from None
                    if speculation.held:
                        log.warning(
                            "session %s: speculative response failed (%s); it starts anew",
                            self.session_id,
                            failure,
                        )
        finally:
            speculation.transcribed.set()
            complete = any(isinstance(r, ins.ResponseComplete) for r in speculation.results)
            if failure is None and speculation.response_wanted and not complete:
                failure = RuntimeError("the speculative response stopped before it completed")
            speculation.finish(failure)

    async def _held_response_task(
        self, response_id: str, speculation: SpeculativeWork, scope: trio.CancelScope
    ) -> None:
        """A response from a speculation: replay what it holds, then follow it to its end."""
        started = time.monotonic()
        try:
            with scope:
                speculation.release()
                emit = self._live_output(response_id, started)
                sent = 0
                while True:
                    while sent < len(speculation.results):
                        result = speculation.results[sent]
                        sent += 1
                        await emit(attrs.evolve(result, response_id=response_id))
                    if speculation.finished:
                        break
                    await speculation.changed()
                if speculation.failure is not None:
                    await self._response_failed(response_id, speculation.failure)
        finally:
            speculation.cancel()
            self._responses.pop(response_id, None)
            self._response_ended.unpark_all()
        log.info(
            "session %s: response %s ended after %.2f s%s (started at a pause)",
            self.session_id,
            response_id,
            time.monotonic() - started,
            " (cancelled)" if scope.cancelled_caught else "",
        )

    # --- turn model --------------------------------------------------------------------------

    def _score_turn(self, effect: fx.ScoreTurn) -> None:
        model = self.pipeline.turn_model
        assert self._nursery is not None and model is not None
        samples = self.timeline.slice(effect.start_ms, effect.end_ms)
        self._nursery.start_soon(self._score_task, effect.item_id, effect.pause_id, samples)

    async def _score_task(self, item_id: str, pause_id: int, samples: np.ndarray) -> None:
        """The turn model's P(complete) in a worker thread, back to the machine; if it fails,
        the turn ends on the eagerness' longest wait instead.

        A speculation on the same speech transcribes it first: its answer can't be out before
        its transcript, LLM and TTS are, so a decision that comes after its transcript costs
        no time, while the two sharing the CPU would slow the transcript down. A pause then
        has to outlast the transcription (about 450 ms on two cores with Whisper tiny.en) to
        end the turn: speech resuming before makes the score stale."""
        model, token = self.pipeline.turn_model, CancelToken()
        assert model is not None
        for speculation in list(self._speculations.values()):
            if speculation.request.item_id == item_id:
                await speculation.transcribed.wait()
        try:
            probability = await call_in_thread(
                lambda: model.probability(samples),
                token,
                limiter=self.pipeline.turn_limiter,
                timeout_s=self.options.engine_timeout_s,
                what="the turn model",
            )
        except Exception:
            self.metrics.engine_errors += 1
            log.exception("session %s: the turn model failed", self.session_id)
            return
        await self._apply(self.conn.feed(ins.TurnScored(item_id, pause_id, probability)))
