"""realtime/audio.py: G.711 codecs and the streaming resampler."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.audio import StreamingResampler, decode, encode, to_wire_chunks


def tone(rate: int, hz: float, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_g711_decode_matches_the_standard_tables() -> None:
    ulaw = decode(bytes([0xFF, 0x7F, 0x00, 0x80]), "audio/pcmu") * 32768
    assert ulaw.tolist() == [0, 0, -32124, 32124]
    alaw = decode(bytes([0xD5, 0x55, 0x2A, 0xAA]), "audio/pcma") * 32768
    assert alaw.tolist() == [8, -8, -32256, 32256]


@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma"])
def test_g711_round_trip_stays_within_its_quantisation(fmt: str) -> None:
    signal = tone(8000, 440)
    restored = decode(encode(signal, fmt), fmt)
    assert np.max(np.abs(restored - signal)) < 0.02  # 8-bit log quantisation near full scale


def test_pcm16_round_trip_is_exact_to_one_step() -> None:
    signal = tone(24000, 300)
    assert np.max(np.abs(decode(encode(signal, "audio/pcm"), "audio/pcm") - signal)) < 1 / 32767


@pytest.mark.parametrize(
    ("src", "dst"), [(24000, 16000), (8000, 16000), (22050, 24000), (16000, 24000), (24000, 8000)]
)
def test_resampling_does_not_depend_on_how_the_stream_is_cut(src: int, dst: int) -> None:
    signal = tone(src, 300)
    a, b = StreamingResampler(src, dst), StreamingResampler(src, dst)
    out_a = np.concatenate([a(signal[i : i + 480]) for i in range(0, len(signal), 480)])
    out_b = np.concatenate([b(signal[i : i + 777]) for i in range(0, len(signal), 777)])
    assert abs(len(out_a) - dst) <= 1 and abs(len(out_b) - dst) <= 1
    n = min(len(out_a), len(out_b))
    np.testing.assert_allclose(out_a[:n], out_b[:n], atol=1e-5)


def test_resampling_keeps_a_tone_and_its_level() -> None:
    out = StreamingResampler(24000, 16000)(tone(24000, 300))
    spectrum = np.abs(np.fft.rfft(out[800:-800]))
    peak_hz = np.argmax(spectrum) * 16000 / len(out[800:-800])
    assert abs(peak_hz - 300) < 2
    assert abs(np.sqrt(np.mean(out[800:-800] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_downsampling_suppresses_what_would_alias() -> None:
    out = StreamingResampler(24000, 16000)(tone(24000, 10_000))
    assert np.sqrt(np.mean(out[100:] ** 2)) < 0.01  # a 10 kHz tone cannot exist at 16 kHz


def test_wire_chunks_are_at_most_the_asked_duration() -> None:
    chunks = to_wire_chunks(tone(24000, 300, seconds=0.25), "audio/pcm", 40)
    assert [len(c) for c in chunks] == [1920] * 6 + [480]
