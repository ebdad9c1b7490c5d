"""Building the STT, LLM and TTS that the command line names (``--stt``, ``--llm``, ``--tts``
and their options), in the server's process or in an engine worker's: the functions take the
parsed flags, which pickle, so a worker builds its engine from the same flags."""

from __future__ import annotations

import argparse
from typing import Any

from engines.base import LLM, STT, TTS, EngineError, TurnModel

#: the embedded llama.cpp LLM's sampling defaults; remote LLMs keep their server's own. At 0.5
#: the small model slid into the language of the country asked about in up to 4 answers of 40
#: (scripts/bench_quality.py, three seeds); at 0.2, with the prompt's language line, in at most 1
EMBEDDED_LLM_TEMPERATURE = 0.2
EMBEDDED_LLM_MAX_TOKENS = 256


def drop_none(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def _remote_setting(value: str | None, flag: str) -> str:
    if not value:
        raise SystemExit(f"error: {flag} is required by the remote engine")
    return value


def build_stt(args: argparse.Namespace, threads: int) -> STT:
    """The STT that ``--stt`` names."""
    language = None if args.stt_language == "auto" else args.stt_language
    if args.stt == "whisper":
        from engines import embedded

        options = {
            "model_path": args.stt_model_path,
            "compute_type": args.stt_compute_type,
            "beam_size": args.stt_beam_size,
            "min_window_s": args.stt_min_window_s,
            "language": language,
            "threads": threads,
        }
        return embedded.load_stt(**drop_none(options))
    if args.stt == "parakeet":
        from engines.parakeet_stt import ParakeetSTT

        options = {"model": args.stt_model, "device": args.device, "threads": threads}
        return ParakeetSTT(language=language, **drop_none(options))
    from engines.remote_audio import RemoteSTT

    options = {
        "model": args.stt_model,
        "api_key": args.stt_api_key,
        "timeout_s": args.stt_timeout_s,
    }
    return RemoteSTT(
        base_url=_remote_setting(args.stt_base_url, "--stt_base_url"),
        language=language,
        **drop_none(options),
    )


def build_tts(args: argparse.Namespace, threads: int) -> TTS:
    """The TTS that ``--tts`` names."""
    if args.tts == "piper":
        from engines import embedded

        options = {
            "voice": args.tts_voice,
            "voices_dir": args.tts_voices_dir,
            "threads": threads,
            "noise_scale": args.tts_noise_scale,
            "noise_w_scale": args.tts_noise_w_scale,
        }
        return embedded.load_tts(**drop_none(options))
    if args.tts == "qwen":
        from engines.qwen_tts import QwenTTS

        options = {
            "model": args.tts_model,
            "device": args.device,
            "threads": threads,
            "speaker": args.tts_speaker,
        }
        return QwenTTS(language=args.tts_language, **drop_none(options))
    from engines.remote_audio import RemoteTTS

    voices = [v.strip() for v in (args.tts_voices or "").split(",") if v.strip()]
    options = {
        "model": args.tts_model,
        "api_key": args.tts_api_key,
        "voice": args.tts_voice,
        "voices": voices or None,
        "instructions": args.tts_instructions,
        "timeout_s": args.tts_timeout_s,
    }
    return RemoteTTS(
        base_url=_remote_setting(args.tts_base_url, "--tts_base_url"),
        sample_rate=args.tts_sample_rate,
        **drop_none(options),
    )


def build_llm(args: argparse.Namespace, threads: int) -> LLM:
    """The LLM that ``--llm`` names; a remote one that cannot be set up ends the start-up."""
    local_defaults = {"max_output_tokens": EMBEDDED_LLM_MAX_TOKENS}
    sampling = {"temperature": args.llm_temperature, "max_output_tokens": args.llm_max_tokens}
    if args.llm == "llama_cpp":
        from engines import embedded

        options = {
            "model_path": args.llm_model_path,
            "n_ctx": args.llm_n_ctx,
            "threads": threads,
            "batch_threads": args.llm_batch_threads or args.threads or embedded.default_threads(),
            **sampling,
        }
        defaults = {**local_defaults, "temperature": EMBEDDED_LLM_TEMPERATURE}
        return embedded.load_llm(**{**defaults, **drop_none(options)})
    if args.llm in ("transformers", "mlx_lm"):
        model = _remote_setting(args.llm_model, "--llm_model")
        options = {"n_ctx": args.llm_n_ctx, **sampling}
        try:
            if args.llm == "transformers":
                from engines.transformers_llm import TransformersLLM

                torch_options = {"device": args.device, "dtype": args.llm_dtype, "threads": threads}
                return TransformersLLM(
                    model=model, **{**local_defaults, **torch_options, **drop_none(options)}
                )
            from engines.mlx_llm import MlxLLM

            return MlxLLM(model=model, **{**local_defaults, **drop_none(options)})
        except (EngineError, ValueError) as exc:  # a model that cannot load, an unknown device
            raise SystemExit(f"error: {exc}") from None
    from engines.openai_llm import ChatCompletionsLLM, ResponsesLLM

    remote = ResponsesLLM if args.llm == "openai" else ChatCompletionsLLM
    try:
        return remote(
            **drop_none(
                {
                    "model": args.llm_model,
                    "base_url": args.llm_base_url,
                    "api_key": args.llm_api_key,
                    "timeout_s": args.llm_timeout_s,
                    "reasoning_effort": args.llm_reasoning_effort,
                    **sampling,
                }
            )
        )
    except EngineError as exc:
        raise SystemExit(f"error: {exc}") from None


def build_turn_model(args: argparse.Namespace) -> TurnModel:
    """Smart Turn for ``semantic_vad`` (one thread); MissingDependency when not installed."""
    from engines.smart_turn import SmartTurn

    return SmartTurn(**drop_none({"model_path": args.turn_model_path}))
