"""One Realtime session: feed the protocol machine, carry out its effects.

The runner owns the machine (``protocol.RealtimeConnection``) and the session's nursery. Its
reader feeds the machine the client's frames; every task that gets a result from an engine
feeds it too (:meth:`SessionRunner.feed`). Each call's output goes through :meth:`_apply`:
its events to the outbox in the machine's order, its effects to the room that carries them
out:

- input audio (append, commit, clear; a call's track audio): ``input_audio.InputAudio``,
  right here in the task that fed the machine, its VAD frames fed back at once;
- transcription (final, live, held): ``transcription.Transcriber`` and its task;
- responses, their model and their MCP calls in tasks under the response's cancel scopes:
  ``responses.ResponseTasks``;
- remote MCP servers (listing, connections): ``mcp_session.McpConnections``;
- speculations and early transcripts: ``speculation.SpeculationTasks``;
- the turn model's scores, and a WebRTC call's output audio: here;
- the session's trace (``tracing.SessionTrace``), fed every event and the generator's marks.

Every machine call happens on the Trio thread, so its outputs reach the outbox in the order
the machine produced them, whichever task made the call. The caller pumps the outbox to the
client.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import trio

from engines.base import CancelToken
from protocol import Output, RealtimeConnection, encode_server_event
from protocol import effects as fx
from protocol import events as ev
from protocol import inputs as ins

from . import audio
from .generation import ResponseGenerator
from .input_audio import ENGINE_RATE, InputAudio
from .mcp_session import McpConnections
from .metrics import Metrics
from .outbox import Outbox, SlowClient, single_cause
from .pool import Pipeline
from .ports import CallMedia, EventPort, SessionOptions
from .responses import ResponseTasks
from .speculation import SpeculationTasks
from .threads import call_in_thread
from .tracing import SessionTrace
from .transcription import Transcriber

log = logging.getLogger("realtime.session")

__all__ = ["CallMedia", "EventPort", "SessionOptions", "SessionRunner"]


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
        self.input = InputAudio(pipeline.vad)
        self.timeline = self.input.timeline
        self.trace = (
            SessionTrace(options.tracer_provider, self.session_id)
            if options.tracer_provider is not None
            else None
        )
        generator = ResponseGenerator(
            pipeline,
            self.metrics,
            engine_timeout_s=options.engine_timeout_s,
            output_chunk_ms=options.output_chunk_ms,
            mark=self.trace.mark if self.trace is not None else None,
        )
        self.transcriber = Transcriber(
            self.session_id, pipeline, options, metrics, self.timeline, self.feed
        )
        self.mcp = McpConnections(
            self.session_id,
            self.feed,
            connect_timeout_s=options.mcp_connect_timeout_s,
            call_timeout_s=options.mcp_call_timeout_s,
            allowed_urls=options.mcp_allowed_urls,
        )
        self.responses = ResponseTasks(self.session_id, metrics, generator, self.feed, self.mcp)
        self.speculations = SpeculationTasks(
            self.session_id, self.transcriber, generator, self.feed
        )
        self._nursery: trio.Nursery | None = None
        #: whether the session ended on an unexpected exception (the client was sent an error)
        self.failed = False
        # a call: the output's resampler (the session's output format to the line's rate)
        self._playout_resampler: tuple[str, audio.StreamingResampler] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        log.info("session %s started on pipeline %d", self.session_id, self.pipeline.index)
        started = time.monotonic()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.mcp.run)
                await self._apply(self.conn.start())
                nursery.start_soon(self.transcriber.run)
                nursery.start_soon(self._shutdown_watch)
                if self.media is not None:
                    nursery.start_soon(self._media_audio, self.media)
                    nursery.start_soon(self._line_reports, self.media)
                await self._reader()
                nursery.cancel_scope.cancel()
        except* SlowClient:
            log.warning("session %s: client stopped reading; closing", self.session_id)
        except* Exception as failure:
            # an engine run inline (the VAD) or a bug: this session cannot go on, the others can
            self.failed = True
            log.exception("session %s failed; closing it", self.session_id)
            cause = single_cause(failure)
            error = ev.Error(
                error_type="server_error",
                code="session_failed",
                message=f"The session failed on the server: {str(cause) or type(cause).__name__}",
            )
            self.outbox.put(encode_server_event(error))
        finally:
            self.responses.cancel_all()
            self.speculations.cancel_all()
            if self.trace is not None:
                self.trace.end()
            log.info("session %s ended after %.1f s", self.session_id, time.monotonic() - started)

    async def _shutdown_watch(self) -> None:
        """On server shutdown: let the active response finish (the server bounds the wait)."""
        await self.shutdown.wait()
        await self.responses.wait_all_ended()
        await self.outbox.drain(timeout_s=2.0)
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    # --- the machine -------------------------------------------------------------------------

    async def _reader(self) -> None:
        while True:
            frame = await self.port.receive()
            await self._apply(self.conn.receive_frame(frame))

    async def feed(self, result: ins.EngineResult) -> None:
        """An engine's result to the machine, and what the machine answers carried out."""
        if self.trace is not None:
            self.trace.observe_result(result)
        await self._apply(self.conn.feed(result))

    async def _apply(self, output: Output) -> None:
        """Send the events (in order) and carry out the effects of one machine call."""
        for event in output.events:
            self.outbox.put(encode_server_event(event))
            if self.trace is not None:
                self.trace.observe(event)
            if isinstance(event, ev.InputAudioBufferSpeechStopped):
                self.responses.turn_ended()
            if isinstance(event, ev.Error) and event.error_type == "invalid_request_error":
                self.metrics.protocol_errors += 1
                log.info("session %s: %s (%s)", self.session_id, event.code, event.message)
        for effect in output.effects:
            await self._carry_out(effect)
        await self.outbox.wait_for_room()

    async def _carry_out(self, effect: fx.Effect) -> None:
        nursery = self._nursery
        assert nursery is not None
        if isinstance(effect, fx.AppendInputAudio):
            # Input audio is handled right here, in the task that fed the machine (the
            # reader): resampling and ~0.1 ms of VAD per 32 ms frame cost less than a hop
            # to another task, and the order of appends, commits and clears is kept.
            samples = self.input.decode(effect.audio, effect.format)
            await self._ingest(samples, effect.detect_speech)
        elif isinstance(effect, fx.AcceptMediaAudio):
            await self._ingest(self.input.media_samples, effect.detect_speech)
        elif isinstance(effect, fx.CommitInputAudio):
            self.transcriber.stop_live()
            samples = self.timeline.slice(effect.start_ms, effect.end_ms)
            self.timeline.drop_before(effect.end_ms)
            speculation = self.speculations.claim_transcript(effect.speculation_id)
            if speculation is not None:
                await self.transcriber.held(
                    effect.item_id, speculation, samples, effect.transcription
                )
            else:
                await self.transcriber.final(effect.item_id, samples, effect.transcription)
        elif isinstance(effect, fx.ClearInputAudio):
            self.transcriber.stop_live()
            self.input.clear()
        elif isinstance(effect, fx.TranscribeLive):
            self.transcriber.follow(effect.item_id, effect.start_ms)
        elif isinstance(effect, fx.QuietLiveTranscription):
            self.transcriber.quiet(effect.item_id, effect.quiet)
        elif isinstance(effect, fx.TranscribeItemAudio):
            samples = audio.StreamingResampler(audio.WIRE_RATE[effect.format], ENGINE_RATE)(
                audio.decode(effect.audio, effect.format)
            )
            await self.transcriber.final(effect.item_id, samples, effect.transcription)
        elif isinstance(effect, fx.StartResponse):
            speculation = self.speculations.take_for_response(effect.speculation_id)
            if speculation is not None and self.trace is not None:
                self.trace.alias(speculation.id, effect.response_id)
            self.responses.start(nursery, effect, speculation)
        elif isinstance(effect, fx.CallMcpTool):
            self.responses.call(nursery, effect)
        elif isinstance(effect, fx.ContinueResponse):
            self.responses.continue_round(nursery, effect)
        elif isinstance(effect, fx.ListMcpTools):
            self.mcp.list_tools(effect)
        elif isinstance(effect, fx.CloseMcpServer):
            self.mcp.close(effect.key)
        elif isinstance(effect, fx.CancelResponse):
            self.responses.cancel(effect.response_id, effect.reason)
        elif isinstance(effect, fx.StartSpeculation):
            samples = self.timeline.slice(effect.start_ms, effect.end_ms)
            self.speculations.start(nursery, effect, samples)
        elif isinstance(effect, fx.CancelSpeculation):
            self.speculations.cancel(effect.speculation_id)
        elif isinstance(effect, fx.TranscribeEarly):
            samples = self.timeline.slice(effect.start_ms, effect.end_ms)
            self.speculations.transcribe_early(nursery, effect, samples)
        elif isinstance(effect, fx.CancelEarlyTranscription):
            self.speculations.cancel_early(effect.early_id)
        elif isinstance(effect, fx.ScoreTurn):
            samples = self.timeline.slice(effect.start_ms, effect.end_ms)
            nursery.start_soon(self._score_task, effect.item_id, effect.pause_id, samples)
        elif isinstance(effect, fx.PlayAudio):
            self._play(effect)
        elif isinstance(effect, fx.ClearPlayout):
            assert self.media is not None
            dropped = await self.media.clear()
            await self.feed(ins.PlayoutCleared(dropped * 1000 / self.media.rate))
        else:
            raise TypeError(f"no one carries out {type(effect).__name__}")

    async def _ingest(self, samples: np.ndarray, detect_speech: bool) -> None:
        """Input audio at ``ENGINE_RATE`` joins the timeline; its VAD frames go to the
        machine as they are scored (~0.1 ms a frame: cheaper inline than a thread hop, and
        it keeps barge-in prompt)."""
        for frame in self.input.ingest(samples, detect_speech):
            await self.feed(frame)
        self.transcriber.maybe_request_partial()

    # --- a call's media -----------------------------------------------------------------------

    async def _media_audio(self, media: CallMedia) -> None:
        """The caller's track audio enters the input timeline as appends would."""
        async for samples in media.audio_in:
            self.input.media_samples = samples
            await self.feed(ins.MediaAudio(len(samples) * 1000 / ENGINE_RATE))

    async def _line_reports(self, media: CallMedia) -> None:
        async for report in media.reports:
            await self.feed(report)

    def _play(self, effect: fx.PlayAudio) -> None:
        assert self.media is not None
        if self._playout_resampler is None or self._playout_resampler[0] != effect.format:
            resampler = audio.StreamingResampler(audio.WIRE_RATE[effect.format], self.media.rate)
            self._playout_resampler = (effect.format, resampler)
        self.media.play(self._playout_resampler[1](audio.decode(effect.audio, effect.format)))

    # --- turn model --------------------------------------------------------------------------

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
        await self.speculations.transcribed(item_id)
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
        await self.feed(ins.TurnScored(item_id, pause_id, probability))
