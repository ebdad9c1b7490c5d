"""``python -m realtime`` flags: presets, engine selection and the options each engine gets."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import engines.llama_cpp_llm
import engines.mlx_llm
import engines.parakeet_stt
import engines.piper_tts
import engines.qwen_tts
import engines.remote_audio
import engines.transformers_llm
import engines.whisper_stt
from realtime.cli import build_llm, build_stt, build_tts, engine_threads, parse_args, parser
from realtime.flags import mcp_allowed_urls, phone_settings


class Recorded:
    """Stands in for an engine class: keeps the options it was built with."""

    def __init__(self, **options: Any) -> None:
        self.options = options


ROOT = Path(__file__).resolve().parents[2]


def engines_of(argv: list[str]) -> tuple[str, str, str, str]:
    args = parse_args(argv)
    return args.vad, args.stt, args.llm, args.tts


def test_no_flags_select_the_embedded_engines() -> None:
    assert engines_of([]) == ("silero", "whisper", "llama_cpp", "piper")


def test_production_preset_selects_parakeet_openai_and_qwen() -> None:
    assert engines_of(["--preset", "production"]) == ("silero", "parakeet", "openai", "qwen")


def test_an_engine_flag_overrides_the_preset() -> None:
    argv = ["--preset", "production", "--tts", "piper", "--llm", "chat_completions"]
    assert engines_of(argv) == ("silero", "parakeet", "chat_completions", "piper")


def test_every_flag_is_documented() -> None:
    undocumented = [
        action.option_strings[0]
        for action in parser()._actions
        if action.option_strings and action.option_strings[0] != "-h" and not action.help
    ]
    assert undocumented == []


def test_mcp_allowed_urls_any_none_or_a_list() -> None:
    assert mcp_allowed_urls(parse_args([])) is None
    assert mcp_allowed_urls(parse_args(["--mcp_allowed_urls", ""])) == ()
    urls = "https://tools.example/mcp, http://10.0.0.5:8000"
    assert mcp_allowed_urls(parse_args(["--mcp_allowed_urls", urls])) == (
        "https://tools.example/mcp",
        "http://10.0.0.5:8000",
    )
    with pytest.raises(SystemExit, match="not an http"):
        mcp_allowed_urls(parse_args(["--mcp_allowed_urls", "tools.example"]))


def test_phone_flags_are_checked_before_any_call_arrives(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "REALTIME_PUBLIC_URL",
        "TWILIO_AUTH_TOKEN",
        "TELNYX_PUBLIC_KEY",
        "REALTIME_CALL_WEBHOOK_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("REALTIME_WEBHOOK_SECRET", raising=False)
    settings = phone_settings(
        parse_args(
            [
                *("--phone_public_url", "https://voice.example.com/"),
                *("--call_webhook_url", "https://app.example.com/hook"),
                *("--call_webhook_secret", "whsec_c2VjcmV0"),
                *("--phone_accept_timeout_s", "4"),
            ]
        )
    )
    assert settings.public_url == "https://voice.example.com"
    assert (settings.webhook_url, settings.accept_timeout_s) == ("https://app.example.com/hook", 4)
    with pytest.raises(SystemExit, match="--phone_public_url"):
        phone_settings(parse_args(["--phone_public_url", "voice.example.com"]))
    with pytest.raises(SystemExit, match="--call_webhook_url"):
        phone_settings(parse_args(["--call_webhook_url", "app.example.com/hook"]))
    with pytest.raises(SystemExit, match="base64"):
        phone_settings(parse_args(["--call_webhook_secret", "whsec_not base64!"]))
    with pytest.raises(SystemExit, match="--telnyx_public_key"):
        phone_settings(parse_args(["--telnyx_public_key", "c2hvcnQ="]))
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "from-the-environment")
    assert phone_settings(parse_args([])).twilio_auth_token == "from-the-environment"


def test_production_preset_without_an_openai_key_stops_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(SystemExit, match="OPENAI_API_KEY"):
        build_llm(parse_args(["--preset", "production"]), threads=1)


def test_parakeet_and_qwen_get_the_device_model_and_language(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engines.parakeet_stt, "ParakeetSTT", Recorded)
    monkeypatch.setattr(engines.qwen_tts, "QwenTTS", Recorded)
    args = parse_args(
        [
            "--preset=production",
            "--device=cpu",
            "--stt_model=/models/parakeet.nemo",
            "--stt_language=auto",
            "--tts_model=/models/qwen",
            "--tts_language=German",
        ]
    )
    stt = build_stt(args, threads=3)
    tts = build_tts(args, threads=3)
    assert isinstance(stt, Recorded) and isinstance(tts, Recorded)
    assert stt.options == {
        "model": "/models/parakeet.nemo",
        "device": "cpu",
        "threads": 3,
        "language": None,
    }
    assert tts.options == {
        "model": "/models/qwen",
        "device": "cpu",
        "threads": 3,
        "language": "German",
    }


def test_remote_speech_engines_need_a_base_url() -> None:
    with pytest.raises(SystemExit, match="--stt_base_url"):
        build_stt(parse_args(["--stt=remote"]), threads=1)
    with pytest.raises(SystemExit, match="--tts_base_url"):
        build_tts(parse_args(["--tts=remote"]), threads=1)


def test_whisper_gets_its_decoding_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines.whisper_stt, "WhisperSTT", Recorded)
    stt = build_stt(parse_args(["--stt_min_window_s=30", "--stt_beam_size=2"]), threads=2)
    assert isinstance(stt, Recorded)
    assert stt.options == {
        "compute_type": "int8",
        "beam_size": 2,
        "min_window_s": 30.0,
        "language": "en",
        "threads": 2,
    }


def test_piper_gets_its_voice_and_noise_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines.piper_tts, "PiperTTS", Recorded)
    args = parse_args(
        ["--tts_voice=/voices/amy.onnx", "--tts_noise_scale=0", "--tts_noise_w_scale=0.2"]
    )
    tts = build_tts(args, threads=2)
    assert isinstance(tts, Recorded)
    assert tts.options == {
        "voice": "/voices/amy.onnx",
        "threads": 2,
        "noise_scale": 0.0,
        "noise_w_scale": 0.2,
    }


def test_remote_speech_engines_get_their_server_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines.remote_audio, "RemoteSTT", Recorded)
    monkeypatch.setattr(engines.remote_audio, "RemoteTTS", Recorded)
    args = parse_args(
        [
            "--stt=remote",
            "--stt_base_url=http://stt:8000/v1",
            "--stt_model=parakeet",
            "--tts=remote",
            "--tts_base_url=http://tts:8880/v1",
            "--tts_api_key=k",
            "--tts_sample_rate=22050",
            "--tts_voice=af_heart",
            "--tts_voices=af_heart, am_adam",
        ]
    )
    stt, tts = build_stt(args, threads=1), build_tts(args, threads=1)
    assert isinstance(stt, Recorded) and isinstance(tts, Recorded)
    assert stt.options == {
        "base_url": "http://stt:8000/v1",
        "language": "en",
        "model": "parakeet",
        "timeout_s": 30.0,
    }
    assert tts.options == {
        "base_url": "http://tts:8880/v1",
        "sample_rate": 22050,
        "api_key": "k",
        "voice": "af_heart",
        "voices": ["af_heart", "am_adam"],
        "timeout_s": 30.0,
    }


def test_local_llms_need_a_model_and_get_the_sampling_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(SystemExit, match="--llm_model"):
        build_llm(parse_args(["--llm=transformers"]), threads=1)
    monkeypatch.setattr(engines.transformers_llm, "TransformersLLM", Recorded)
    monkeypatch.setattr(engines.mlx_llm, "MlxLLM", Recorded)
    llm = build_llm(
        parse_args(
            [
                "--llm=transformers",
                "--llm_model=Qwen/Qwen2.5-0.5B-Instruct",
                "--device=cuda",
                "--llm_dtype=bfloat16",
                "--llm_temperature=0",
            ]
        ),
        threads=2,
    )
    assert isinstance(llm, Recorded)
    assert llm.options == {
        "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "max_output_tokens": 256,
        "device": "cuda",
        "dtype": "bfloat16",
        "threads": 2,
        "n_ctx": 2048,
        "temperature": 0.0,
    }
    llm = build_llm(parse_args(["--llm=mlx_lm", "--llm_model=/m", "--llm_max_tokens=64"]), 1)
    assert isinstance(llm, Recorded)
    assert llm.options == {"model": "/m", "max_output_tokens": 64, "n_ctx": 2048}


def test_engines_run_in_worker_processes_by_default() -> None:
    assert parse_args([]).engine_workers is True
    assert parse_args(["--engine_workers", "false"]).engine_workers is False


def _server(*flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "realtime", "--ws_host", "127.0.0.1", "--ws_port", "0", *flags],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_an_engine_that_cannot_load_stops_the_server_with_its_reason() -> None:
    pytest.importorskip("llama_cpp")
    server = _server("--llm_model_path", "/nowhere/model.gguf")
    output, _ = server.communicate(timeout=180)
    assert server.returncode == 2, output
    assert "error: llama.cpp LLM needs the model file /nowhere/model.gguf" in output


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def test_the_server_starts_its_workers_and_stops_them_on_sigterm() -> None:
    pytest.importorskip("llama_cpp")
    server = _server()
    assert server.stdout is not None
    address = None
    lines = []
    for line in server.stdout:
        lines.append(line)
        if match := re.search(r"listening on (http://\S+)", line):
            address = match.group(1).rstrip(",")
            break
    assert address, "".join(lines)
    with urllib.request.urlopen(f"{address}/health", timeout=10) as reply:
        health = json.load(reply)
    workers = {w["engine"]: w for w in health["engine_workers"]}
    assert set(workers) == {"pipeline 0 stt", "pipeline 0 llm", "pipeline 0 tts", "turn model"}
    assert all(w["state"] == "ready" and w["pid"] for w in workers.values())
    assert health["status"] == "ok" and health["pipelines_healthy"] == 1
    server.send_signal(signal.SIGTERM)
    server.communicate(timeout=60)
    assert server.returncode == 0
    deadline = time.monotonic() + 10
    while any(_pid_alive(w["pid"]) for w in workers.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [name for name, w in workers.items() if _pid_alive(w["pid"])]


@pytest.mark.parametrize(
    ("cpus", "argv", "expected"),
    [
        # two cores: Whisper and llama.cpp's generation get one thread, Piper two
        (2, [], {"stt": 1, "llm": 1, "tts": 2}),
        (8, [], {"stt": 2, "llm": 2, "tts": 2}),
        (1, [], {"stt": 1, "llm": 1, "tts": 1}),
        # other engines keep up to two
        (2, ["--stt=parakeet", "--llm=transformers"], {"stt": 2, "llm": 2, "tts": 2}),
        (2, ["--threads=3"], {"stt": 3, "llm": 3, "tts": 3}),
        (2, ["--threads=3", "--stt_threads=2"], {"stt": 2, "llm": 3, "tts": 3}),
    ],
)
def test_engine_threads(
    monkeypatch: pytest.MonkeyPatch, cpus: int, argv: list[str], expected: dict[str, int]
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    args = parse_args(argv)
    assert {engine: engine_threads(args, engine) for engine in expected} == expected


@pytest.mark.parametrize(
    ("argv", "batch_threads"),
    [([], 2), (["--threads=4"], 4), (["--llm_batch_threads=3"], 3)],
)
def test_llama_cpp_reads_the_prompt_with_its_batch_threads(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], batch_threads: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(engines.llama_cpp_llm, "LlamaCppLLM", Recorded)
    args = parse_args(argv)
    llm = build_llm(args, engine_threads(args, "llm"))
    assert isinstance(llm, Recorded)
    assert llm.options["batch_threads"] == batch_threads
    assert llm.options["threads"] == (1 if not argv or "batch" in argv[0] else 4)
