"""The command line of ``python -m realtime``: every flag, the presets that fill the engine
flags, and the session and call settings the flags make.

Longer than 400 lines because it is one flat list of declarations: every flag with its help,
grouped as ``--help`` shows them, reads best in one place."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from engines.choice import EMBEDDED_LLM_MAX_TOKENS, EMBEDDED_LLM_TEMPERATURE

from . import telnyx, webhooks
from .calls import CallSettings
from .mcp_client import check_allowed_url
from .phone import PhoneSettings

REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")

ENGINE_CHOICES = {
    "vad": ("silero",),
    "stt": ("whisper", "parakeet", "remote"),
    "llm": ("llama_cpp", "openai", "chat_completions", "transformers", "mlx_lm"),
    "tts": ("piper", "qwen", "remote"),
}

#: what --preset selects for each engine flag that is not given
PRESETS = {
    "embedded": {"vad": "silero", "stt": "whisper", "llm": "llama_cpp", "tts": "piper"},
    "production": {"vad": "silero", "stt": "parakeet", "llm": "openai", "tts": "qwen"},
}


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m realtime",
        description="A realtime voice server speaking the OpenAI Realtime API (GA) over "
        "WebSocket at ws://HOST:PORT/v1/realtime, answering with a local "
        "VAD -> STT -> LLM -> TTS pipeline. With no engine flags it runs the embedded "
        "offline engines (Silero VAD, Whisper tiny.en, SmolLM2-135M, Piper).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    server = p.add_argument_group("server")
    server.add_argument("--ws_host", default="0.0.0.0", help="address to listen on")
    server.add_argument("--ws_port", type=int, default=8765, help="port to listen on")
    server.add_argument(
        "--num_pipelines",
        type=int,
        default=1,
        help="engine pipelines built at start-up = concurrent sessions served; "
        "one more connection is refused with session_limit_reached",
    )
    server.add_argument(
        "--num_transcription_sessions",
        type=int,
        default=None,
        help="concurrent transcription-only sessions (?intent=transcription), which share "
        "the pipelines' STT; default per pipeline: 1 with live transcription, 3 without",
    )
    server.add_argument(
        "--enable_live_transcription",
        type=boolean,
        default=True,
        help="send partial input transcripts while the user speaks (when the session "
        "enables input transcription); false sends only the final transcript",
    )
    server.add_argument(
        "--speculative",
        type=boolean,
        default=True,
        help="start the transcription and the answer at the first pause of a user turn (200 ms "
        "of silence) and hold them until the turn's end is confirmed; clients see the same "
        "events either way, only sooner",
    )
    server.add_argument(
        "--api_key",
        default=os.environ.get("REALTIME_API_KEY"),
        help="require this API key (Bearer header or browser subprotocol); default: "
        "$REALTIME_API_KEY, or accept any key when unset",
    )
    server.add_argument(
        "--model",
        default="gpt-realtime",
        help="model name reported in the session when the client gives no ?model=",
    )
    server.add_argument("--voice", default="alloy", help="the sessions' default voice name")
    server.add_argument("--instructions", help="the sessions' default instructions (system prompt)")
    server.add_argument(
        "--vad_threshold",
        type=float,
        default=0.5,
        help="default server_vad speech probability threshold (0-1) of new sessions",
    )
    server.add_argument(
        "--vad_silence_ms",
        type=int,
        default=500,
        help="default server_vad silence_duration_ms: silence that ends a turn. 500 (OpenAI's "
        "documented default) leaves room to speculate at the first 200 ms pause; with "
        "speculation it answered sooner than 200 did and cut off 3 of 12 mid-sentence "
        "pauses instead of 12 (scripts/bench_turns.py)",
    )
    server.add_argument(
        "--tts_speed", type=float, default=1.0, help="default speaking rate (0.25-1.5)"
    )
    server.add_argument(
        "--tracing",
        choices=["auto"],
        default=None,
        help="the sessions' default 'tracing': 'auto' traces every session (OpenTelemetry, "
        "configured by the OTEL_* environment variables; a session's tracing cannot change "
        "once set, as with OpenAI); by default only sessions whose client sets 'tracing' are "
        "traced",
    )
    server.add_argument(
        "--drain_timeout_s",
        type=float,
        default=20.0,
        help="on SIGTERM, how long live sessions may go on while the server takes no new one "
        "(/ready answers 503) before the graceful shutdown; 0: SIGTERM shuts down at once. "
        "Keep it plus --graceful_timeout_s under the orchestrator's grace period (Kubernetes: "
        "terminationGracePeriodSeconds, 30 by default)",
    )
    server.add_argument(
        "--graceful_timeout_s",
        type=float,
        default=10.0,
        help="on SIGINT (or after draining), how long active responses may run before "
        "sessions close",
    )
    server.add_argument(
        "--send_timeout_s",
        type=float,
        default=15.0,
        help="a client that accepts no frame for this long is disconnected",
    )
    server.add_argument(
        "--engine_workers",
        type=boolean,
        default=True,
        help="run the STT, LLM, TTS and turn model in supervised worker processes, so that a "
        "crash in an engine's native code fails one response and the worker is restarted; "
        "false runs them in the server's process (for debugging)",
    )
    server.add_argument(
        "--engine_timeout_s",
        type=float,
        default=30.0,
        help="an engine that produces nothing for this long fails the response",
    )
    server.add_argument(
        "--mcp_connect_timeout_s",
        type=float,
        default=10.0,
        help="a remote MCP server (a session's type 'mcp' tool) must connect and list its "
        "tools within this time, else the listing fails (mcp_list_tools.failed)",
    )
    server.add_argument(
        "--mcp_allowed_urls",
        default="*",
        help="comma-separated URLs under which a session's MCP tools may name servers (same "
        "scheme, host and port; the path and below), e.g. https://tools.example.com/mcp; '*' "
        "(the default) allows any URL the server can reach, '' allows none. Sessions can make "
        "the server send requests to the URLs allowed: restrict them on a server that "
        "untrusted clients reach",
    )
    server.add_argument(
        "--mcp_call_timeout_s",
        type=float,
        default=30.0,
        help="one MCP tool call that takes longer fails (response.mcp_call.failed) and the "
        "model is told",
    )
    server.add_argument(
        "--webrtc_host_addresses",
        help="WebRTC: comma-separated local addresses offered as ICE host candidates "
        "(default: 127.0.0.1 when --ws_host is a loopback address, else every interface)",
    )
    server.add_argument(
        "--webrtc_ice_servers",
        default="",
        help="WebRTC: comma-separated STUN/TURN URLs for the server's own candidates, e.g. "
        "stun:stun.example.org:3478 (default: none)",
    )
    server.add_argument(
        "--webrtc_connect_timeout_s",
        type=float,
        default=20.0,
        help="WebRTC: a call whose data channel has not opened after this long is ended",
    )
    phone = p.add_argument_group("phone calls (Twilio and Telnyx media streams; see the README)")
    phone.add_argument(
        "--phone_public_url",
        default=os.environ.get("REALTIME_PUBLIC_URL"),
        help="the server's public base URL as the phone provider reaches it, e.g. "
        "https://voice.example.com: media stream URLs and Twilio's signature check use it "
        "(default: $REALTIME_PUBLIC_URL, else each request's Host)",
    )
    phone.add_argument(
        "--twilio_auth_token",
        default=os.environ.get("TWILIO_AUTH_TOKEN"),
        help="check X-Twilio-Signature on Twilio's webhooks with this token "
        "(default: $TWILIO_AUTH_TOKEN; unset: unchecked)",
    )
    phone.add_argument(
        "--telnyx_public_key",
        default=os.environ.get("TELNYX_PUBLIC_KEY"),
        help="check Telnyx's Ed25519 webhook signatures with this public key (base64, from "
        "the Telnyx portal; default: $TELNYX_PUBLIC_KEY; unset: unchecked)",
    )
    phone.add_argument(
        "--call_webhook_url",
        default=os.environ.get("REALTIME_CALL_WEBHOOK_URL"),
        help="POST a realtime.call.incoming event here for each phone call; the application "
        "accepts or rejects it at /v1/realtime/calls/{call_id}/accept|reject "
        "(default: $REALTIME_CALL_WEBHOOK_URL; unset: every call is accepted with the "
        "default session)",
    )
    phone.add_argument(
        "--call_webhook_secret",
        default=os.environ.get("REALTIME_WEBHOOK_SECRET"),
        help="sign the call webhooks with this secret (whsec_..., as OpenAI's webhooks; "
        "default: $REALTIME_WEBHOOK_SECRET)",
    )
    phone.add_argument(
        "--phone_greeting",
        default=None,
        help="the assistant speaks first on each phone call: a response with these "
        "instructions as the call connects, e.g. 'Greet the caller and ask how you can "
        "help.' (default: none; an application can instead send response.create on the "
        "sideband)",
    )
    phone.add_argument(
        "--phone_max_call_s",
        type=float,
        default=3600.0,
        help="a phone call is hung up this long after it connected (default: an hour, as "
        "OpenAI's sessions last)",
    )
    phone.add_argument(
        "--phone_accept_timeout_s",
        type=float,
        default=10.0,
        help="a phone call the application neither accepts nor rejects within this long is "
        "told so in a spoken sentence and hung up",
    )
    server.add_argument(
        "--log_level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="logging verbosity",
    )
    engines = p.add_argument_group("engines")
    engines.add_argument(
        "--preset",
        default="embedded",
        choices=tuple(PRESETS),
        help="the engine set for the engine flags not given: embedded = "
        + ", ".join(f"{k} {v}" for k, v in PRESETS["embedded"].items())
        + " (offline, CPU); production = "
        + ", ".join(f"{k} {v}" for k, v in PRESETS["production"].items())
        + " (GPU when present; needs $OPENAI_API_KEY)",
    )
    engines.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda", "mps"),
        help="where the torch engines run (parakeet, qwen, transformers); auto: cuda when "
        "available, else cpu (the transformers LLM also tries mps)",
    )
    engines.add_argument("--vad", choices=ENGINE_CHOICES["vad"], help="default: from --preset")
    engines.add_argument("--vad_model_path", help="Silero VAD ONNX file (default: packaged)")
    engines.add_argument(
        "--turn_model_path",
        help="Smart Turn v3 ONNX file for semantic_vad (default: the one in the pipecat-ai wheel)",
    )
    engines.add_argument(
        "--stt",
        choices=ENGINE_CHOICES["stt"],
        help="whisper: the embedded Whisper tiny.en; parakeet: NVIDIA Parakeet TDT (NeMo); "
        "remote: an OpenAI-compatible /v1/audio/transcriptions server; default: from --preset",
    )
    engines.add_argument("--stt_model_path", help="whisper: CTranslate2 model directory")
    engines.add_argument(
        "--stt_model",
        help="parakeet: a hub id or a local .nemo file (default nvidia/parakeet-tdt-0.6b-v2); "
        "remote: the served model's name (default whisper-1)",
    )
    engines.add_argument(
        "--stt_compute_type", default="int8", help="whisper: CTranslate2 compute type"
    )
    engines.add_argument(
        "--stt_beam_size", type=int, default=5, help="whisper: beam size of finals"
    )
    engines.add_argument(
        "--stt_min_window_s",
        type=float,
        default=10.0,
        help="whisper: the shortest encoder window for a short segment, in seconds; 30 always "
        "uses Whisper's full window (slower, a little more accurate)",
    )
    engines.add_argument("--stt_language", default="en", help="language code, or 'auto'")
    engines.add_argument(
        "--stt_base_url", help="remote STT: the API's base URL, e.g. http://host:8000/v1"
    )
    engines.add_argument(
        "--stt_api_key", help="remote STT: the API key (default: $OPENAI_API_KEY, else none)"
    )
    engines.add_argument(
        "--stt_timeout_s",
        type=float,
        default=30.0,
        help="remote STT: seconds to wait for a transcription before it fails",
    )
    engines.add_argument(
        "--llm",
        choices=ENGINE_CHOICES["llm"],
        help="llama_cpp: the embedded SmolLM2; openai: the OpenAI Responses API; "
        "chat_completions: any OpenAI-compatible server (vLLM, llama.cpp, Ollama); "
        "transformers / mlx_lm: a Hugging Face model run in-process; default: from --preset",
    )
    engines.add_argument("--llm_model_path", help="llama_cpp: GGUF model file (default: packaged)")
    engines.add_argument(
        "--llm_n_ctx", type=int, default=2048, help="local LLMs: context window, tokens"
    )
    engines.add_argument(
        "--llm_temperature",
        type=float,
        help="sampling temperature (0 = greedy); default: "
        f"{EMBEDDED_LLM_TEMPERATURE} for llama_cpp, the model's own otherwise",
    )
    engines.add_argument(
        "--llm_max_tokens",
        type=int,
        help=f"tokens per response at most; default: {EMBEDDED_LLM_MAX_TOKENS} for local LLMs, "
        "only the session's max_output_tokens for remote LLMs",
    )
    engines.add_argument(
        "--llm_model",
        help="openai: the model (default gpt-4.1-mini); chat_completions: the served model's "
        "name (required); transformers / mlx_lm: a hub id or a local model directory (required)",
    )
    engines.add_argument(
        "--llm_dtype",
        default="auto",
        choices=("auto", "float32", "float16", "bfloat16"),
        help="transformers: weights' dtype; auto: float32 on cpu, bfloat16 on cuda, float16 on mps",
    )
    engines.add_argument(
        "--llm_base_url",
        help="remote LLMs: the API's base URL, e.g. http://localhost:8000/v1 "
        "(default: $OPENAI_BASE_URL or https://api.openai.com/v1)",
    )
    engines.add_argument(
        "--llm_api_key",
        help="remote LLMs: the API key (default: $OPENAI_API_KEY; chat_completions sends "
        "'none' without one)",
    )
    engines.add_argument(
        "--llm_timeout_s",
        type=float,
        default=30.0,
        help="remote LLMs: seconds to wait for the server's next bytes before the response fails",
    )
    engines.add_argument(
        "--llm_reasoning_effort",
        choices=REASONING_EFFORTS,
        help="remote LLMs: reasoning effort of reasoning models when a response sets none "
        "(default: the model's own)",
    )
    engines.add_argument(
        "--tts",
        choices=ENGINE_CHOICES["tts"],
        help="piper: the embedded Piper voice; qwen: Qwen3-TTS; remote: an OpenAI-compatible "
        "/v1/audio/speech server; default: from --preset",
    )
    engines.add_argument(
        "--tts_voice",
        help="piper: a voice name or an .onnx path; remote: the default voice (alloy)",
    )
    engines.add_argument("--tts_voices_dir", help="piper: directory of extra voices")
    engines.add_argument(
        "--tts_noise_scale",
        type=float,
        help="piper: generator noise (default: the voice's own; 0 with --tts_noise_w_scale 0 "
        "speaks a text the same way every time)",
    )
    engines.add_argument(
        "--tts_noise_w_scale",
        type=float,
        help="piper: phoneme-length noise (default: the voice's own)",
    )
    engines.add_argument(
        "--tts_model",
        help="qwen: a hub id or a local checkpoint directory (default "
        "Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice); remote: the served model (default "
        "gpt-4o-mini-tts)",
    )
    engines.add_argument("--tts_language", default="English", help="qwen: the spoken language")
    engines.add_argument(
        "--tts_speaker",
        help="qwen: the default speaker (default ryan); session voices map onto "
        "the model's speakers",
    )
    engines.add_argument("--tts_base_url", help="remote TTS: the API's base URL")
    engines.add_argument(
        "--tts_api_key", help="remote TTS: the API key (default: $OPENAI_API_KEY, else none)"
    )
    engines.add_argument(
        "--tts_sample_rate",
        type=int,
        default=24_000,
        help="remote TTS: Hz of the server's raw PCM (24000 for OpenAI's pcm format)",
    )
    engines.add_argument(
        "--tts_voices",
        help="remote TTS: comma-separated voices the server has (default: OpenAI's); a session "
        "voice not listed falls back to --tts_voice",
    )
    engines.add_argument(
        "--tts_instructions", help="remote TTS: how to speak (for models that take it)"
    )
    engines.add_argument(
        "--tts_timeout_s",
        type=float,
        default=30.0,
        help="remote TTS: seconds to wait for the server's next audio before the response fails",
    )
    threads = {
        "threads": "CPU threads per engine (default: up to 2; on two cores or fewer, 1 for "
        "Whisper and for llama.cpp's token-by-token generation)",
        "stt_threads": "CPU threads of the STT (default: --threads)",
        "llm_threads": "CPU threads of the LLM (default: --threads)",
        "tts_threads": "CPU threads of the TTS (default: --threads)",
        "llm_batch_threads": "llama.cpp: threads reading the prompt (default: --threads, up to 2)",
    }
    for name, text in threads.items():
        engines.add_argument(f"--{name}", type=int, help=text)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with the engines that ``--preset`` selects filled in."""
    return resolve_engines(parser().parse_args(argv))


def resolve_engines(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the engine flags that were not given from ``--preset``."""
    preset = PRESETS[args.preset]
    return argparse.Namespace(
        **{**vars(args), **{k: getattr(args, k) or preset[k] for k in ENGINE_CHOICES}}
    )


def transcription_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """The partial transcription session object that the VAD flags lay over the defaults."""
    vad = {"type": "server_vad", "threshold": args.vad_threshold}
    return {
        "audio": {"input": {"turn_detection": {**vad, "silence_duration_ms": args.vad_silence_ms}}}
    }


def session_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """The partial session object that the flags lay over OpenAI's defaults."""
    defaults: dict[str, Any] = {
        "audio": {
            "input": {
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": args.vad_threshold,
                    "silence_duration_ms": args.vad_silence_ms,
                }
            },
            "output": {"speed": args.tts_speed},
        }
    }
    if args.instructions:
        defaults["instructions"] = args.instructions
    if args.tracing:
        defaults["tracing"] = args.tracing
    return defaults


def mcp_allowed_urls(args: argparse.Namespace) -> tuple[str, ...] | None:
    """``--mcp_allowed_urls`` checked: None for any URL."""
    entries = [u.strip() for u in args.mcp_allowed_urls.split(",") if u.strip()]
    if "*" in entries:
        return None
    try:
        return tuple(check_allowed_url(u) for u in entries)
    except ValueError as error:
        raise SystemExit(f"--mcp_allowed_urls: {error}") from None


def phone_settings(args: argparse.Namespace) -> PhoneSettings:
    url = args.phone_public_url
    if url and not url.lower().startswith(("https://", "http://")):
        raise SystemExit(f"--phone_public_url: expected an http(s) URL, got {url!r}")
    hook = args.call_webhook_url
    if hook and not hook.lower().startswith(("https://", "http://")):
        raise SystemExit("--call_webhook_url: expected an http(s) URL")
    if args.call_webhook_secret:
        try:
            webhooks.secret_key(args.call_webhook_secret)
        except ValueError:
            raise SystemExit(
                "--call_webhook_secret: a whsec_ secret is base64 after its prefix"
            ) from None
    if args.telnyx_public_key:
        try:
            telnyx.public_key(args.telnyx_public_key)
        except ValueError as error:
            raise SystemExit(f"--telnyx_public_key: not an Ed25519 public key ({error})") from None
    return PhoneSettings(
        public_url=url.rstrip("/") if url else None,
        twilio_auth_token=args.twilio_auth_token or None,
        telnyx_public_key=args.telnyx_public_key or None,
        webhook_url=args.call_webhook_url or None,
        webhook_secret=args.call_webhook_secret or None,
        accept_timeout_s=args.phone_accept_timeout_s,
        greeting=args.phone_greeting or None,
        max_call_s=args.phone_max_call_s,
    )


def call_settings(args: argparse.Namespace) -> CallSettings:
    """The WebRTC options; a server bound to loopback offers loopback ICE candidates."""
    addresses = [a.strip() for a in (args.webrtc_host_addresses or "").split(",") if a.strip()]
    if not addresses and args.ws_host in ("127.0.0.1", "localhost", "::1"):
        addresses = ["::1" if args.ws_host == "::1" else "127.0.0.1"]
    servers = [u.strip() for u in args.webrtc_ice_servers.split(",") if u.strip()]
    return CallSettings(
        host_addresses=tuple(addresses) or None,
        ice_servers=tuple(servers),
        connect_timeout_s=args.webrtc_connect_timeout_s,
    )
