"""realtime/page.py and realtime/static/: the voice page, served and used in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.clients.conftest import OUTPUT, normalise
from tests.realtime.harness import LiveServer

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


def http_get(server: LiveServer, path: str) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10) as reply:
        return reply.headers["Content-Type"], reply.read().decode()


def chromium() -> str:
    """The system Chromium, installed with apt when missing (CI runs as root)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed (needs root and apt-get)")
    install = subprocess.run(
        "apt-get update && apt-get install -y chromium",
        shell=True,
        capture_output=True,
        text=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    found = shutil.which("chromium")
    if install.returncode != 0 or not found:
        pytest.skip(f"chromium could not be installed with apt-get: {install.stderr[-500:]}")
    return found


def test_page_and_its_modules_are_served(server: LiveServer) -> None:
    kind, html = http_get(server, "/")
    assert kind.startswith("text/html")
    assert '<script type="module" src="/static/voice.js">' in html
    for module in ("voice.js", "capture-worklet.js"):
        kind, source = http_get(server, f"/static/{module}")
        assert "javascript" in kind
        assert source.strip()


def talk_in_chromium(
    server: LiveServer, question_wav: Path, path: str, done: str, name: str
) -> tuple[dict[str, Any], list[str], str, str]:
    """Open the page at ``path``, press Talk with the question as the fake microphone, and
    wait until the page's stats meet ``done``; returns the stats, page errors, and the first
    user and assistant bubbles' text. Screenshot and stats are kept under ``OUTPUT/name``."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in [test]")
    executable = chromium()
    # %noloop: the fake microphone says the question once, then stays silent
    capture = f"--use-file-for-fake-audio-capture={question_wav}%noloop"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=[*CHROMIUM_ARGS, capture]
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"http://127.0.0.1:{server.port}{path}")
            page.click("#talk")
            try:
                page.wait_for_function(
                    done, arg=page.evaluate_handle("window.voiceStats"), timeout=45_000
                )
            finally:
                OUTPUT.mkdir(exist_ok=True)
                page.wait_for_timeout(300)  # the last bubble's fade-in
                page.screenshot(path=OUTPUT / f"{name}.png")
                stats = page.evaluate("window.voiceStats")
                (OUTPUT / f"{name}-stats.json").write_text(json.dumps(stats, indent=2))
            user = page.locator(".bubble.user p").first.inner_text()
            assistant = page.locator(".bubble.assistant p").first.inner_text()
        finally:
            browser.close()
    return stats, errors, user, assistant


def test_spoken_question_in_chromium_gets_transcripts_and_audio(
    server: LiveServer, question_wav: Path
) -> None:
    stats, errors, user, assistant = talk_in_chromium(
        server,
        question_wav,
        "/",
        "s => s.userTranscripts >= 1 && s.assistantTranscripts >= 1 && s.audioDeltas > 0",
        "page",
    )
    assert not errors
    assert stats["connected"] and not stats["errors"]
    assert normalise(user) == "what is the capital of france"
    assert assistant.strip()
    assert stats["audioMs"] > 500
    assert len(stats["latenciesMs"]) == 1 and 0 < stats["latenciesMs"][0] < 30_000


def test_spoken_question_in_chromium_over_webrtc(
    server: LiveServer, late_question_wav: Path
) -> None:
    pytest.importorskip("aiortc", reason="the [webrtc] extra is not installed")
    stats, errors, user, assistant = talk_in_chromium(
        server,
        late_question_wav,
        "/?transport=webrtc",
        "s => s.userTranscripts >= 1 && s.assistantTranscripts >= 1"
        " && s.outputBufferStarts > 0 && s.remoteAudioPeak > 0.05",
        "page-webrtc",
    )
    assert not errors
    assert stats["transport"] == "webrtc" and stats["connected"] and not stats["errors"]
    assert stats["audioDeltas"] == 0  # the answer came on the track, not as events
    assert normalise(user) == "what is the capital of france"
    assert assistant.strip()
    assert len(stats["latenciesMs"]) == 1
