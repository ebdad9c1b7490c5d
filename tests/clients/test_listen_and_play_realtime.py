"""scripts/listen_and_play_realtime.py: its wav mode against the live server, and its player."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path
from types import ModuleType

import numpy as np

from tests.clients.conftest import OUTPUT, SCRIPTS, SHORT_ANSWERS, normalise
from tests.realtime.harness import LiveServer

SCRIPT = SCRIPTS / "listen_and_play_realtime.py"
FAKES = Path(__file__).resolve().parent / "fakes"  #: a fake ``sounddevice``


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("listen_and_play_realtime", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wav_question_gets_a_spoken_answer_and_transcripts(
    server: LiveServer, question_wav: Path
) -> None:
    answer = OUTPUT / "answer.wav"
    command = [sys.executable, str(SCRIPT), "--url", server.url, "--instructions", SHORT_ANSWERS]
    wav_mode = ["--input-wav", str(question_wav), "--output-wav", str(answer)]
    result = subprocess.run(
        [*command, *wav_mode, "--realtime-factor", "2", "--timeout", "45"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    kinds = [line.split(":", 1)[0] for line in lines]
    assert "you (live)" in kinds, result.stdout
    assert kinds.index("you (live)") < kinds.index("you")  # live transcript, then the final
    heard = lines[kinds.index("you")].split(":", 1)[1]
    assert normalise(heard) == "what is the capital of france"
    assert lines[kinds.index("assistant")].split(":", 1)[1].strip()
    assert "end of speech -> first audio" in result.stderr
    seconds, loudness = duration_and_loudness(answer, 16_000)  # --recv-rate's default
    assert seconds > 0.5 and loudness > 0.05


def duration_and_loudness(path: Path, rate: int) -> tuple[float, float]:
    """Seconds of a 16-bit wav at ``rate``, and the RMS level of its loudest 100 ms."""
    with wave.open(str(path), "rb") as wav:
        assert wav.getframerate() == rate
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2") / 32768
    window = rate // 10
    windows = pcm[: len(pcm) // window * window].reshape(-1, window)
    loudest = float(np.sqrt((windows**2).mean(axis=1)).max()) if len(windows) else 0.0
    return len(pcm) / rate, loudest


def test_microphone_and_speaker_mode_talks_and_exits_on_ctrl_c(
    server: LiveServer, question_wav: Path
) -> None:
    speaker = OUTPUT / "speaker.wav"
    speaker.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(FAKES), os.environ.get("PYTHONPATH", "")]),
        "FAKE_MIC_WAV": str(question_wav),
        "FAKE_SPEAKER_WAV": str(speaker),
    }
    command = [sys.executable, str(SCRIPT), "--url", server.url, "--instructions", SHORT_ANSWERS]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(60, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        lines = []
        while not any(line.startswith("assistant: ") for line in lines):
            line = process.stdout.readline()
            assert line, "the client ended before the assistant's transcript"
            lines.append(line)
        time.sleep(3)  # let the reply play
        process.send_signal(signal.SIGINT)
        out, err = process.communicate()
    finally:
        watchdog.cancel()
    assert process.returncode == 0, "".join(lines) + out + err
    assert "[bye]" in err
    assert any(line.startswith("you: ") for line in lines)
    seconds, loudness = duration_and_loudness(speaker, 16_000)
    assert seconds > 3 and loudness > 0.05  # the speaker played the reply


def test_player_reports_the_ms_of_the_item_played_when_cleared() -> None:
    player = load_script().Player(rate=16_000)
    player.feed("item_a", np.ones(16_000, np.float32))
    assert player.clear() == ("item_a", 0)
    player.feed("item_a", np.ones(8_000, np.float32))
    player.feed("item_b", np.ones(16_000, np.float32))
    assert len(player.read(12_000)) == 12_000  # all of item_a, 250 ms of item_b
    assert player.busy
    assert player.clear() == ("item_b", 250)
    assert not player.busy
    assert player.clear() is None  # nothing playing: nothing to truncate
