"""WebRTC audio: the caller's track in, the answer's paced 48 kHz track out.

Both run in the WebRTC loop (:mod:`realtime.rtc_loop`). aiortc decodes the caller's Opus to
48 kHz frames (browsers send stereo) and encodes what :class:`OutboundAudioTrack` yields;
this module only converts samples, paces the output every 20 ms and keeps the output
buffer's state (playing or idle) that ``output_audio_buffer.*`` events report.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
from collections.abc import Callable

import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .audio import StreamingResampler

log = logging.getLogger("realtime.rtc")

OPUS_RATE = 48_000  #: Hz of WebRTC audio on both tracks
FRAME_MS = 20  #: one output frame's duration
FRAME_SAMPLES = OPUS_RATE * FRAME_MS // 1000  #: samples per output frame (960)

Float32 = npt.NDArray[np.float32]


def frame_to_mono(frame: av.AudioFrame) -> Float32:
    """One decoded frame -> float32 mono samples in [-1, 1] at ``frame.sample_rate``."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:  # packed: one row of interleaved samples
        data = data.reshape(-1, channels).T
    if np.issubdtype(data.dtype, np.integer):
        scale = np.float32(1.0 / (np.iinfo(data.dtype).max + 1))
        samples = data.astype(np.float32) * scale
    else:
        samples = data.astype(np.float32, copy=False)
    return samples.mean(axis=0, dtype=np.float32) if channels > 1 else samples[0]


async def read_inbound(
    track: MediaStreamTrack, rate: int, deliver: Callable[[Float32], None]
) -> None:
    """Read the caller's audio track until it ends, handing ``deliver`` float32 mono chunks
    at ``rate`` Hz (one per received frame, 20 ms for Opus)."""
    resampler: StreamingResampler | None = None
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if resampler is None or resampler.src_rate != frame.sample_rate:
            resampler = StreamingResampler(frame.sample_rate, rate)
        samples = resampler(frame_to_mono(frame))
        if len(samples):
            deliver(samples)


class OutboundAudioTrack(MediaStreamTrack):
    """The answer's audio: queued 48 kHz samples paced out in 20 ms frames, silence when idle.

    ``on_started`` / ``on_stopped`` are called (in the loop) when queued audio starts to play
    and when the queue has played out; :meth:`clear` drops what is queued at once.
    """

    kind = "audio"

    def __init__(self, on_started: Callable[[], None], on_stopped: Callable[[], None]) -> None:
        super().__init__()
        self._on_started, self._on_stopped = on_started, on_stopped
        self._queue: collections.deque[npt.NDArray[np.int16]] = collections.deque()
        self._queued = 0  #: samples waiting in the queue
        self._playing = False
        self._pts = 0
        self._start: float | None = None

    @property
    def queued_samples(self) -> int:
        return self._queued

    def play(self, samples: Float32) -> None:
        """Queue float32 mono samples at 48 kHz behind what is already queued."""
        if len(samples) == 0:
            return
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
        self._queue.append(pcm)
        self._queued += len(pcm)

    def clear(self) -> int:
        """Drop everything queued; returns the samples dropped."""
        dropped = self._queued
        self._queue.clear()
        self._queued = 0
        if self._playing:
            self._playing = False
            self._on_stopped()
        return dropped

    def _take(self) -> npt.NDArray[np.int16]:
        out = np.zeros(FRAME_SAMPLES, np.int16)
        filled = 0
        while filled < FRAME_SAMPLES and self._queue:
            head = self._queue[0]
            n = min(FRAME_SAMPLES - filled, len(head))
            out[filled : filled + n] = head[:n]
            filled += n
            if n == len(head):
                self._queue.popleft()
            else:
                self._queue[0] = head[n:]
        self._queued -= filled
        if filled and not self._playing:
            self._playing = True
            self._on_started()
        elif not filled and self._playing:
            self._playing = False
            self._on_stopped()
        return out

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += FRAME_SAMPLES
            # pace by the schedule, not by the last wake-up, so late frames catch up
            delay = self._start + self._pts / OPUS_RATE - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        frame = av.AudioFrame.from_ndarray(self._take()[None, :], format="s16", layout="mono")
        frame.sample_rate = OPUS_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, OPUS_RATE)
        return frame
