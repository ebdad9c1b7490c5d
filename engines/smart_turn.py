"""Smart Turn v3.2 (ONNX, CPU) on onnxruntime: whether an utterance sounds finished.

The model (about 8.7 MB, BSD-2-Clause, copyright Daily) ships inside the pipecat-ai wheel. It
is found through that distribution's file list, so pipecat itself is never imported and the
wheel can be installed without its dependencies (``pip install --no-deps pipecat-ai==1.14.0``).

Its input is the 80-bin Whisper log-mel spectrogram of the last 8 s of 16 kHz audio, computed
here in numpy: the audio is cut to its last 8 s or left-padded with zeros to 8 s, scaled to
zero mean and unit variance, then a centred STFT (400-sample periodic Hann window, hop 160,
reflect padding) gives a power spectrum that a Slaney-scale, Slaney-normalised mel filterbank
turns into 80 bands; ``log10`` (floored at 1e-10), floored at the maximum less 8, then
``(x + 4) / 4``: 800 frames of 10 ms. The output is P(the turn is complete).
"""

from __future__ import annotations

import importlib.metadata
import logging
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from engines.base import EngineError, FloatAudio, MissingDependency
from engines.loading import existing_path, import_runtime, onnx_session

log = logging.getLogger(__name__)

ENGINE = "Smart Turn"
DISTRIBUTION = "pipecat-ai"
MODEL_FILE = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
INSTALL = "pip install --no-deps pipecat-ai==1.14.0"

SAMPLE_RATE = 16_000
WINDOW_S = 8  #: seconds of audio the model looks at (the utterance's end)
N_FFT = 400  #: 25 ms
HOP = 160  #: 10 ms
N_MELS = 80
FRAMES = WINDOW_S * SAMPLE_RATE // HOP  #: 800
#: added to the variance when scaling the waveform (as the model's training features did)
VARIANCE_FLOOR = 1e-7


def default_model_path() -> Path:
    """The model file inside the installed pipecat-ai wheel, or :class:`MissingDependency`."""
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise MissingDependency(
            ENGINE, extra="embedded", detail="the pipecat-ai wheel (model file)", install=INSTALL
        ) from None
    path = Path(str(distribution.locate_file(MODEL_FILE)))
    if not path.exists():
        raise MissingDependency(
            ENGINE, extra="embedded", detail=f"{MODEL_FILE} in pipecat-ai", install=INSTALL
        )
    return path


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    linear = hz * 3.0 / 200.0
    log_step = np.log(6.4) / 27.0
    logarithmic = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step
    return np.where(hz >= 1000.0, logarithmic, linear)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    linear = mel * 200.0 / 3.0
    log_step = np.log(6.4) / 27.0
    logarithmic = 1000.0 * np.exp(log_step * (mel - 15.0))
    return np.where(mel >= 15.0, logarithmic, linear)


@cache
def mel_filterbank() -> npt.NDArray[np.float32]:
    """(N_MELS, N_FFT // 2 + 1) triangular filters on Slaney's mel scale from 0 Hz to the
    Nyquist frequency, each scaled to unit area (Slaney normalisation)."""
    bins = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(SAMPLE_RATE / 2)), N_MELS + 2)
    )
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= 2.0 / (upper - lower)
    return filters.astype(np.float32)


@cache
def _hann() -> npt.NDArray[np.float64]:
    """The periodic Hann window of N_FFT samples."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)


def log_mel_features(audio: FloatAudio) -> npt.NDArray[np.float32]:
    """(N_MELS, FRAMES) model input for the utterance ending at the end of ``audio`` (16 kHz)."""
    size = WINDOW_S * SAMPLE_RATE
    x = np.asarray(audio, dtype=np.float32)[-size:]
    x = np.concatenate([np.zeros(size - len(x), np.float32), x])
    x = (x - x.mean()) / np.sqrt(x.var() + VARIANCE_FLOOR)
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _hann(), axis=1)) ** 2
    mel = mel_filterbank().astype(np.float64) @ power.T
    log_spec = np.log10(np.maximum(mel, 1e-10))[:, :FRAMES]  # the last frame goes, as Whisper's
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def load_turn_model(model_path: str | Path | None = None, threads: int = 1) -> SmartTurn | None:
    """The turn model, or None after a warning saying what ``semantic_vad`` does without it
    (ends turns after fixed silences: eagerness low 1200 ms, medium and auto 600 ms, high
    300 ms) and how to install it."""
    try:
        return SmartTurn(model_path=model_path, threads=threads)
    except MissingDependency as error:
        log.warning(
            "no turn model: %s. semantic_vad ends turns after fixed silences instead "
            "(eagerness low 1200 ms, medium and auto 600 ms, high 300 ms)",
            error,
        )
        return None


class SmartTurn:
    """P(complete) of an utterance from its audio, about 70-95 ms per call on one core.

    ``model_path`` overrides the model file found in the pipecat-ai wheel.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, *, model_path: str | Path | None = None, threads: int = 1) -> None:
        ort = import_runtime(ENGINE, "onnxruntime", "onnxruntime")
        path = existing_path(ENGINE, model_path) if model_path is not None else default_model_path()
        self.model_path = path
        self._session = onnx_session(ort, path, threads)
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [N_MELS, FRAMES]:
            shapes = [(i.name, i.shape) for i in inputs]
            raise EngineError(f"{path} is not a Smart Turn v3 model (inputs {shapes})")
        self._input = inputs[0].name

    def probability(self, audio: FloatAudio) -> float:
        features = log_mel_features(audio)[None, :, :]
        (output,) = self._session.run(None, {self._input: features})
        return float(np.clip(np.asarray(output).reshape(-1)[0], 0.0, 1.0))
