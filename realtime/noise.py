"""``audio.input.noise_reduction``: input audio denoised before the STT hears it.

Spectral gating (``noisereduce``): a per-frequency noise threshold is estimated from the audio
itself and what falls under it is attenuated by ``strength``. ``near_field`` (a headset or
close microphone: steady noise, a fan, a hum) estimates one threshold over the whole segment;
``far_field`` (a laptop or a room microphone: noise that changes) tracks it over time.

It runs on the segments the STT transcribes (committed turns, speculative and early
transcripts), in the engine's worker thread; the VAD hears the audio as sent, and live
partials (drafts) are not denoised. ``scripts/bench_noise.py`` measures what it does to the
word error rate.
"""

from __future__ import annotations

import numpy as np

from engines.base import MissingDependency

from .input_audio import ENGINE_RATE

#: how far below the noise threshold a full ``strength`` of 1 takes what it gates (0.8: the
#: rest keeps some of the room; a gate that removes everything costs Whisper words)
MAX_DECREASE = 0.8


def denoise(samples: np.ndarray, kind: str, strength: float) -> np.ndarray:
    """``samples`` (float32 at ``ENGINE_RATE``) with the noise attenuated."""
    if len(samples) < ENGINE_RATE // 10 or strength <= 0:
        return samples  # too short to estimate the noise from, or nothing asked
    try:
        import noisereduce
    except ImportError as error:
        raise MissingDependency(
            "noise_reduction needs the noisereduce package (in the [embedded] extra)"
        ) from error
    cleaned = noisereduce.reduce_noise(
        y=samples,
        sr=ENGINE_RATE,
        stationary=kind == "near_field",
        prop_decrease=MAX_DECREASE * strength,
    )
    return np.asarray(cleaned, dtype=np.float32)
