"""A fake ``sounddevice`` for the client's device mode: no sound card needed.

The microphone plays ``$FAKE_MIC_WAV`` (then silence) and the speaker records into
``$FAKE_SPEAKER_WAV``, each from a thread of its own calling the stream's callback once per
block at real-time pace, as PortAudio's callback thread does. Put this folder first on
``PYTHONPATH`` to use it.
"""

from __future__ import annotations

import abc
import os
import threading
import wave
from typing import Any

import numpy as np


class _FakeStream(abc.ABC):
    def __init__(
        self, *, samplerate: int, channels: int, dtype: str, blocksize: int, callback: Any
    ) -> None:
        assert channels == 1 and dtype == "float32"
        self.rate, self.blocksize, self.callback = samplerate, blocksize, callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _FakeStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.blocksize / self.rate):
            self.block()

    @abc.abstractmethod
    def block(self) -> None:
        """One block of the stream: the callback called as PortAudio would call it."""


class InputStream(_FakeStream):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with wave.open(os.environ["FAKE_MIC_WAV"], "rb") as wav:
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2") / 32768
            rate = wav.getframerate()
        times = np.arange(int(len(pcm) * self.rate / rate)) / self.rate
        self._samples = np.interp(times, np.arange(len(pcm)) / rate, pcm).astype(np.float32)
        self._position = 0

    def block(self) -> None:
        chunk = np.zeros((self.blocksize, 1), np.float32)
        part = self._samples[self._position : self._position + self.blocksize]
        chunk[: len(part), 0] = part
        self._position += self.blocksize
        self.callback(chunk, self.blocksize, None, None)


class OutputStream(_FakeStream):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._played: list[np.ndarray] = []

    def block(self) -> None:
        outdata = np.full((self.blocksize, 1), np.nan, np.float32)
        self.callback(outdata, self.blocksize, None, None)
        assert not np.isnan(outdata).any(), "the callback must fill every sample"
        self._played.append(outdata[:, 0].copy())

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        with wave.open(os.environ["FAKE_SPEAKER_WAV"], "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(self.rate)
            pcm = np.clip(np.concatenate(self._played or [np.zeros(0)]), -1, 1) * 32767
            wav.writeframes(pcm.astype("<i2").tobytes())
