"""scripts/synthetic_conversation.py: two spoken turns against the live server."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.clients.conftest import QUESTION, SCRIPTS, SHORT_ANSWERS, normalise
from tests.realtime.harness import LiveServer

SCRIPT = SCRIPTS / "synthetic_conversation.py"
TURN_LINE = re.compile(r"^turn (\d+): (\w+): +(.*)$", re.MULTILINE)
LATENCY = re.compile(
    r"end of audio -> first audio (\d+) ms, speech_stopped -> first audio (\d+) ms, "
    r"response completed"
)


def test_two_turns_are_answered_and_timed(server: LiveServer) -> None:
    command = [sys.executable, str(SCRIPT), "--url", server.url, "--instructions", SHORT_ANSWERS]
    result = subprocess.run(
        [*command, "--timeout", "45", QUESTION, "Say hello to my friend."],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    fields = {
        f"turn {turn}: {name}": value for turn, name, value in TURN_LINE.findall(result.stdout)
    }
    assert normalise(fields["turn 1: heard"]) == "what is the capital of france"
    assert "hello" in normalise(fields["turn 2: heard"])
    for turn in (1, 2):
        assert fields[f"turn {turn}: assistant"] not in ("", "-")
        latency = LATENCY.fullmatch(fields[f"turn {turn}: latency"])
        assert latency, fields[f"turn {turn}: latency"]
        end_of_audio, speech_stopped = map(int, latency.groups())
        assert 0 < speech_stopped <= end_of_audio < 30_000
    assert result.stdout.splitlines()[-1].startswith("2 turns, median latency")
