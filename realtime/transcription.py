"""A session's speech to text, as the shell runs it.

One task transcribes, in the order the machine asked for them, the committed segments and the
``input_audio`` items (``CommitInputAudio``, ``TranscribeItemAudio``), taking a speculation's
transcript where the machine said it stands; between them, it makes live hypotheses of the
speech in progress for the machine to confirm into deltas. When live transcription runs and
when it holds back are the machine's decisions (``TranscribeLive``,
``QuietLiveTranscription``); the cadence (one partial per ``live_interval_ms`` of new audio, at
most one queued, none while the shared STT has finals waiting) is the shell's, as it depends
on the engine's load.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import attrs
import numpy as np
import trio

from engines.base import CancelToken, FloatAudio, Transcript
from protocol import inputs as ins
from protocol.effects import TranscriptionOptions

from .input_audio import ENGINE_RATE, InputTimeline
from .metrics import Metrics
from .noise import denoise
from .pool import Pipeline
from .ports import Feed, SessionOptions
from .speculation import SpeculativeWork, engine_limiter
from .threads import call_in_thread

log = logging.getLogger("realtime.session")


@attrs.frozen
class PartialTranscription:
    """A live hypothesis of the growing segment ``item_id``."""

    item_id: str
    samples: FloatAudio  #: 16 kHz


@attrs.frozen
class FinalTranscription:
    """The transcript of a committed segment (or of an ``input_audio`` item)."""

    item_id: str
    samples: FloatAudio  #: 16 kHz
    transcription: TranscriptionOptions


@attrs.frozen
class HeldTranscription:
    """A committed segment whose transcript a speculation makes (``samples``: the segment,
    for its duration, and transcribed if the speculation ends without a transcript)."""

    item_id: str
    speculation: SpeculativeWork
    samples: FloatAudio  #: 16 kHz
    transcription: TranscriptionOptions


TranscriptionRequest = PartialTranscription | FinalTranscription | HeldTranscription


class Transcriber:
    """The session's transcription task, its queue, and its live transcription."""

    def __init__(
        self,
        session_id: str,
        pipeline: Pipeline,
        options: SessionOptions,
        metrics: Metrics,
        timeline: InputTimeline,
        feed: Feed,
    ) -> None:
        self.session_id = session_id
        self.pipeline = pipeline
        self.options = options
        self.metrics = metrics
        self.timeline = timeline
        self.feed = feed
        self._send, self._receive = trio.open_memory_channel[TranscriptionRequest](64)
        self._live: tuple[str, int] | None = None  # (item_id, start_ms) of live transcription
        self._live_last = 0  # timeline sample of the last partial request
        self._partial_queued = False
        self._live_quiet = False  # the machine holds partials back (QuietLiveTranscription)

    # --- requests ----------------------------------------------------------------------------

    async def final(
        self, item_id: str, samples: np.ndarray, transcription: TranscriptionOptions
    ) -> None:
        """Queue the transcript of a committed segment or an item's audio."""
        await self._send.send(FinalTranscription(item_id, samples, transcription))

    async def held(
        self,
        item_id: str,
        speculation: SpeculativeWork,
        samples: np.ndarray,
        transcription: TranscriptionOptions,
    ) -> None:
        """Queue a committed segment whose transcript ``speculation`` makes."""
        await self._send.send(HeldTranscription(item_id, speculation, samples, transcription))

    def follow(self, item_id: str, start_ms: int) -> None:
        """Live partials of the speech ``item_id``, from ``start_ms`` (``TranscribeLive``)."""
        if self.options.live_transcription:
            self._live = (item_id, start_ms)
            self._live_last = self.timeline.total
            self._live_quiet = False

    def quiet(self, item_id: str, quiet: bool) -> None:
        """Hold partials back, or let them go on (``QuietLiveTranscription``)."""
        if self._live is not None and self._live[0] == item_id:
            self._live_quiet = quiet

    def stop_live(self) -> None:
        """The speech was committed or cleared: no more partials of it."""
        self._live = None

    def maybe_request_partial(self) -> None:
        """After new input audio: queue a partial when one is due."""
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
            self._send.send_nowait(PartialTranscription(item_id, samples))
            self._partial_queued = True
        except trio.WouldBlock:
            pass  # finals are queued; a partial can wait for the next interval

    # --- the engine --------------------------------------------------------------------------

    async def transcribe(
        self,
        samples: np.ndarray,
        held: SpeculativeWork | None = None,
        *,
        speculative: bool = False,
        options: TranscriptionOptions | None = None,
        partial: bool = False,
    ) -> tuple[Transcript, float]:
        """The STT on 16 kHz ``samples`` in a worker thread, within ``engine_timeout_s``
        (waiting for the shared STT included), and the seconds the engine itself took
        (denoising included, where the session asks for it). ``held``: the speculation this
        is for; it and ``speculative`` calls yield to live ones."""
        stt, token = self.pipeline.stt, CancelToken()
        arguments: dict[str, Any] = {} if options is None else options.stt_options()
        if partial:
            arguments["partial"] = True
        noise = None if options is None else options.noise_reduction

        def call() -> tuple[Transcript, float]:
            began = time.monotonic()
            audio = samples if noise is None else denoise(samples, *noise)
            result = stt.transcribe(audio, cancel=token, **arguments)
            return result, time.monotonic() - began

        engine = self.pipeline.stt_limiter
        return await call_in_thread(
            call,
            token,
            limiter=engine.speculative if speculative else engine_limiter(engine, held),
            timeout_s=self.options.engine_timeout_s,
            what="the STT",
        )

    async def run(self) -> None:
        """The transcription task: the queue, in order, until the session ends."""
        async for request in self._receive:
            if isinstance(request, PartialTranscription):
                await self._partial(request)
                continue
            if isinstance(request, HeldTranscription):
                speculation = request.speculation
                await speculation.transcribed.wait()
                if speculation.transcript is not None:
                    self.metrics.stt_seconds.observe(speculation.stt_seconds)
                    await self._done(request.item_id, speculation.transcript, len(request.samples))
                    continue
                request = FinalTranscription(
                    request.item_id, request.samples, request.transcription
                )
            try:
                result, took = await self.transcribe(request.samples, options=request.transcription)
            except Exception as exc:
                self.metrics.engine_errors += 1
                log.exception("session %s: transcription failed", self.session_id)
                await self.feed(ins.TranscriptFailed(request.item_id, str(exc)))
                continue
            self.metrics.stt_seconds.observe(took)
            await self._done(request.item_id, result, len(request.samples))

    async def _partial(self, request: PartialTranscription) -> None:
        self._partial_queued = False
        if self._live is None or self._live[0] != request.item_id:
            return  # the segment was committed or cleared meanwhile
        try:
            result, _ = await self.transcribe(request.samples, partial=True)  # raw: a draft
        except Exception:
            log.exception("session %s: partial transcription failed", self.session_id)
            return
        await self.feed(ins.PartialHypothesis(request.item_id, result.text))

    async def _done(self, item_id: str, result: Transcript, samples: int) -> None:
        """The final transcript of a committed segment of ``samples`` samples."""
        scores = (
            None
            if result.logprobs is None
            else tuple(
                {"token": token, "logprob": logprob, "bytes": list(token.encode())}
                for token, logprob in result.logprobs
            )
        )
        await self.feed(
            ins.TranscriptDone(item_id, result.text.strip(), samples / ENGINE_RATE, scores)
        )
