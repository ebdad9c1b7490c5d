"""Silero VAD (ONNX) on onnxruntime, without torch."""

from __future__ import annotations

import copy
import enum
from pathlib import Path

import numpy as np

from engines.base import EngineError, FloatAudio
from engines.loading import existing_path, import_runtime, onnx_session, packaged_file

ENGINE = "Silero VAD"


class _Layout(enum.Enum):
    """The two published ONNX signatures of Silero VAD."""

    HIDDEN_CELL = frozenset({"input", "h", "c"})  #: faster-whisper's silero_vad_v6.onnx
    STATE = frozenset({"input", "state", "sr"})  #: snakers4/silero-vad's silero_vad.onnx


class SileroVAD:
    """Speech probability of each 32 ms frame (512 samples at 16 kHz).

    The model is recurrent: frames must be fed in order, and :meth:`reset` starts over.
    By default it runs the ``silero_vad_v6.onnx`` that ships inside faster-whisper (already
    installed for the STT); ``model_path`` may name that file or snakers4's ``silero_vad.onnx``.
    """

    sample_rate = 16_000
    frame_samples = 512
    context_samples = 64  #: tail of the previous frame the model sees in front of each frame

    def __init__(self, *, model_path: str | Path | None = None, threads: int = 1) -> None:
        ort = import_runtime(ENGINE, "onnxruntime", "onnxruntime")
        path = (
            existing_path(ENGINE, model_path)
            if model_path is not None
            else packaged_file(ENGINE, "faster_whisper", "assets", "silero_vad_v6.onnx")
        )
        self.model_path = path
        self._session = onnx_session(ort, path, threads)
        inputs = frozenset(i.name for i in self._session.get_inputs())
        try:
            self._layout = _Layout(inputs)
        except ValueError:
            raise EngineError(
                f"{path} is not a Silero VAD model (inputs {sorted(inputs)})"
            ) from None
        self._sr = np.array(self.sample_rate, dtype=np.int64)
        self.reset()

    def stream(self) -> SileroVAD:
        """A VAD for another audio stream: the same ONNX session, its own recurrent state."""
        other = copy.copy(self)
        other.reset()
        return other

    def reset(self) -> None:
        self._context = np.zeros((1, self.context_samples), dtype=np.float32)
        if self._layout is _Layout.HIDDEN_CELL:
            self._hidden = np.zeros((1, 1, 128), dtype=np.float32)
            self._cell = np.zeros((1, 1, 128), dtype=np.float32)
        else:
            self._state = np.zeros((2, 1, 128), dtype=np.float32)

    def probability(self, frame: FloatAudio) -> float:
        if frame.shape != (self.frame_samples,):
            raise ValueError(
                f"a VAD frame is {self.frame_samples} samples at {self.sample_rate} Hz, "
                f"got shape {frame.shape}"
            )
        x = np.concatenate([self._context, frame.astype(np.float32, copy=False)[None, :]], axis=1)
        if self._layout is _Layout.HIDDEN_CELL:
            out, self._hidden, self._cell = self._session.run(
                None, {"input": x, "h": self._hidden, "c": self._cell}
            )
        else:
            out, self._state = self._session.run(
                None, {"input": x, "state": self._state, "sr": self._sr}
            )
        self._context = x[:, -self.context_samples :]
        return float(np.asarray(out).reshape(-1)[0])
