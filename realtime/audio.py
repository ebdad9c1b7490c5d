"""Audio on the wire <-> audio for the engines: PCM16 and G.711 codecs, streaming resampling.

Wire formats: ``audio/pcm`` is 16-bit little-endian mono at 24 kHz; ``audio/pcmu`` (mu-law) and
``audio/pcma`` (A-law) are 8-bit G.711 at 8 kHz. Engines take float32 mono in [-1, 1].
"""

from __future__ import annotations

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


def _lowpass(cutoff: float, taps: int = 31) -> Float32:
    """Windowed-sinc low-pass; ``cutoff`` is a fraction of the sample rate (0 < cutoff < 0.5)."""
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(taps)
    return (h / h.sum()).astype(np.float32)


class StreamingResampler:
    """Resamples a stream chunk by chunk with no clicks at chunk edges.

    Linear interpolation between samples, after a windowed-sinc anti-aliasing filter when the
    rate goes down. Output length tracks ``input * dst / src`` to within one sample.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate, self.dst_rate = src_rate, dst_rate
        self._step = src_rate / dst_rate
        self._filter = _lowpass(0.45 * dst_rate / src_rate) if dst_rate < src_rate else None
        self._tail = np.zeros(0 if self._filter is None else len(self._filter) - 1, np.float32)
        self._prev = np.float32(0.0)
        self._pos = 1.0  # position of the next output sample; index 0 is the previous sample

    def __call__(self, chunk: Float32) -> Float32:
        if self.src_rate == self.dst_rate or chunk.size == 0:
            return chunk.astype(np.float32, copy=False)
        if self._filter is not None:
            padded = np.concatenate([self._tail, chunk])
            self._tail = padded[len(padded) - len(self._tail) :]
            chunk = np.convolve(padded, self._filter, mode="valid").astype(np.float32)
        buffer = np.concatenate([[self._prev], chunk]).astype(np.float32)
        last = len(buffer) - 1
        count = int(np.floor((last - self._pos) / self._step)) + 1 if self._pos <= last else 0
        positions = self._pos + self._step * np.arange(count)
        out = np.interp(positions, np.arange(len(buffer)), buffer).astype(np.float32)
        self._pos = self._pos + self._step * count - last
        self._prev = buffer[-1]
        return out


def to_wire_chunks(samples: Float32, fmt: str, chunk_ms: int) -> list[bytes]:
    """Encode wire-rate samples into pieces of at most ``chunk_ms`` of audio."""
    per_chunk = WIRE_RATE[fmt] * chunk_ms // 1000
    return [encode(samples[i : i + per_chunk], fmt) for i in range(0, len(samples), per_chunk)]
