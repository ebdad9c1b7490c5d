"""Audio on the wire <-> audio for the engines: PCM16 and G.711 codecs, streaming resampling.

Wire formats: ``audio/pcm`` is 16-bit little-endian mono at 24 kHz; ``audio/pcmu`` (mu-law) and
``audio/pcma`` (A-law) are 8-bit G.711 at 8 kHz. Engines take float32 mono in [-1, 1].
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import numpy.typing as npt

Float32 = npt.NDArray[np.float32]

WIRE_RATE = {"audio/pcm": 24_000, "audio/pcmu": 8_000, "audio/pcma": 8_000}


# --- G.711 -----------------------------------------------------------------------------------


@cache
def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


@cache
def _alaw_decode_table() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


@cache
def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    """Code for every int16 value, indexed by ``value + 32768``."""
    x = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


@cache
def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    x = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit
    mask = np.where(x >= 0, 0xD5, 0x55)
    value = np.where(x >= 0, x, -x - 1)
    segment = np.searchsorted(
        np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]), value, side="left"
    )
    shift = np.where(segment < 2, 1, segment)
    code = (segment << 4) | ((value >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def decode(audio: bytes, fmt: str) -> Float32:
    """Wire bytes -> float32 samples at the format's own rate."""
    if fmt == "audio/pcm":
        pcm = np.frombuffer(audio, dtype="<i2")
    else:
        table = _ulaw_decode_table() if fmt == "audio/pcmu" else _alaw_decode_table()
        pcm = table[np.frombuffer(audio, dtype=np.uint8)]
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def encode(samples: Float32, fmt: str) -> bytes:
    """float32 samples at the format's rate -> wire bytes."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(np.int16)
    if fmt == "audio/pcm":
        return pcm.astype("<i2").tobytes()
    table = _ulaw_encode_table() if fmt == "audio/pcmu" else _alaw_encode_table()
    return table[pcm.astype(np.int32) + 32768].tobytes()


# --- resampling ------------------------------------------------------------------------------


#: taps of each polyphase branch: enough stop-band for speech at a few µs per 20 ms chunk
TAPS_PER_PHASE = 16


@cache
def _polyphase(up: int, down: int) -> Float32:
    """Filter bank of shape (up, TAPS_PER_PHASE): the windowed-sinc low-pass of an ``up``/
    ``down`` rational resampler, split by phase, each branch reversed for a dot product."""
    taps = up * TAPS_PER_PHASE
    cutoff = 0.45 / max(up, down)  # cycles per sample at the upsampled rate
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(taps, 6.0)
    h *= up / h.sum()
    return h.reshape(TAPS_PER_PHASE, up).T[:, ::-1].astype(np.float32).copy()


class StreamingResampler:
    """Rational-ratio resampling of a stream, chunk by chunk, with no clicks at chunk edges.

    A polyphase windowed-sinc filter: output sample ``n`` is input position ``n * down / up``,
    where ``up / down`` is ``dst_rate / src_rate`` in lowest terms. The filter's history is
    carried between chunks, so the output is the same however the input is cut. Output length
    tracks ``input * dst / src``; the output lags the input by about 8 input samples.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate, self.dst_rate = src_rate, dst_rate
        g = math.gcd(src_rate, dst_rate)
        self._up, self._down = dst_rate // g, src_rate // g
        self._bank = _polyphase(self._up, self._down)
        self._history = np.zeros(TAPS_PER_PHASE - 1, np.float32)
        self._consumed = 0  # input samples taken so far
        self._produced = 0  # output samples made so far

    def __call__(self, chunk: Float32) -> Float32:
        if self.src_rate == self.dst_rate or chunk.size == 0:
            return chunk.astype(np.float32, copy=False)
        buffer = np.concatenate([self._history, chunk.astype(np.float32, copy=False)])
        total = self._consumed + len(chunk)
        # output n reads input samples up to index (n * down) // up; all must have arrived
        last = (total * self._up - 1) // self._down
        n = np.arange(self._produced, last + 1)
        position = n * self._down
        newest = position // self._up - self._consumed + len(self._history)
        step = buffer.strides[0]  # every window of TAPS_PER_PHASE samples, as a view
        windows = np.lib.stride_tricks.as_strided(
            buffer,
            (len(buffer) - TAPS_PER_PHASE + 1, TAPS_PER_PHASE),
            (step, step),
            writeable=False,
        )
        starts = newest - (TAPS_PER_PHASE - 1)
        if self._up <= 8:
            # outputs k, k + up, k + 2 up, ... share one phase: one matrix-vector product each
            out = np.empty(len(n), np.float32)
            for k in range(min(self._up, len(n))):
                out[k :: self._up] = (
                    windows[starts[k :: self._up]] @ self._bank[position[k] % self._up]
                )
        else:
            out = np.einsum("ij,ij->i", windows[starts], self._bank[position % self._up]).astype(
                np.float32
            )
        self._produced = last + 1
        self._consumed = total
        self._history = buffer[-(TAPS_PER_PHASE - 1) :].copy()
        return out


def to_wire_chunks(samples: Float32, fmt: str, chunk_ms: int) -> list[bytes]:
    """Encode wire-rate samples into pieces of at most ``chunk_ms`` of audio."""
    per_chunk = WIRE_RATE[fmt] * chunk_ms // 1000
    return [encode(samples[i : i + per_chunk], fmt) for i in range(0, len(samples), per_chunk)]
