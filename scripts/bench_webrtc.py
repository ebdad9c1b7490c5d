"""The same spoken turns over WebRTC and over WebSocket: latency and the server's CPU per call.

The server runs in this process on the zero-cost engines of ``bench_server.py`` (a tone is
speech, the reply is a short tone), so what is measured is the transport: Opus decoding,
resampling and pacing for WebRTC; base64 JSON events for WebSocket. The client runs in a
subprocess (aiortc for WebRTC, a plain WebSocket client otherwise) and speaks in real time:
``--turns`` times 0.5 s of tone, then silence until the answer has played, then 1 s more.

Printed, per transport: end of speech (the last speech frame the client sent) -> first audio
(the first answer frame with sound on the track, or the first ``response.output_audio.delta``)
as the client sees it, p50 and p90; and the server process's CPU (all its threads) per second
of call, while talking and while the call is idle (WebRTC sends 50 Opus frames a second each
way even in silence).

Usage: ``python scripts/bench_webrtc.py [--turns 10] [--idle_s 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import fractions
import json
import os
import platform
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realtime import AppSettings
from realtime.calls import CallSettings
from realtime.server import ServerThread
from scripts.bench_server import zero_cost_pool

SPEECH_S = 0.5
AFTER_S = 1.0  #: silence after each answer before the next turn
FRAME_S = 0.02
TONE_HZ = 300
LOUD = 0.05  #: RMS above which a received frame carries the answer


def tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


# --- the server (this process) ---------------------------------------------------------------


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_client(transport: str, port: int, turns: int, idle_s: float) -> dict[str, Any]:
    """Run the client subprocess; returns its report with the server's CPU per phase added."""
    process = subprocess.Popen(
        [
            *(sys.executable, __file__, "--client", transport, "--port", str(port)),
            *("--turns", str(turns), "--idle_s", str(idle_s)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    marks: dict[str, float] = {}
    report: dict[str, Any] = {}
    for line in process.stdout:  # the client marks its phases as they begin and end
        message = json.loads(line)
        if "mark" in message:
            marks[message["mark"]] = cpu_s()
        else:
            report = message
    process.wait()
    report["talk_cpu_s"] = marks["talk_end"] - marks["talk_start"]
    report["idle_cpu_s"] = marks["idle_end"] - marks["idle_start"]
    return report


def summary(transport: str, report: dict[str, Any]) -> str:
    latencies = np.array(report["latencies_s"]) * 1000
    talk = report["talk_cpu_s"] / report["talk_s"] * 100
    idle = report["idle_cpu_s"] / report["idle_s"] * 100
    return (
        f"{transport:<10} {len(latencies):>5} {np.percentile(latencies, 50):>8.1f} "
        f"{np.percentile(latencies, 90):>8.1f} {talk:>12.2f} % {idle:>12.2f} %"
    )


def bench(args: argparse.Namespace) -> None:
    print(
        f"bench_webrtc: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{args.turns} turns per transport, zero-cost engines, client in a subprocess"
    )
    print(
        "transport  turns  p50 ms   p90 ms   server CPU talking   server CPU idle"
        "   (end of speech -> first audio, client side; CPU: % of one core per call)"
    )
    settings = AppSettings(calls=CallSettings(host_addresses=("127.0.0.1",)))
    server = ServerThread(zero_cost_pool(1), settings).start()
    try:
        for transport in ("websocket", "webrtc"):
            report = run_client(transport, server.port, args.turns, args.idle_s)
            print(summary(transport, report), flush=True)
    finally:
        server.stop()


# --- the client (subprocess) -----------------------------------------------------------------


def mark(name: str) -> None:
    print(json.dumps({"mark": name}), flush=True)


async def websocket_client(port: int, turns: int, idle_s: float) -> dict[str, Any]:
    import websockets

    url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
    speech = (tone(SPEECH_S, 24_000) * 32767).astype("<i2").tobytes()
    silence = bytes(len(speech))
    step = int(24_000 * FRAME_S) * 2
    latencies: list[float] = []
    async with websockets.connect(url, max_size=None) as ws:
        first_audio: asyncio.Future[float] | None = None
        done = asyncio.Event()

        async def read() -> None:
            async for frame in ws:
                kind = json.loads(frame)["type"]
                if kind == "response.output_audio.delta" and first_audio and not first_audio.done():
                    first_audio.set_result(time.monotonic())
                elif kind == "response.done":
                    done.set()

        reader = asyncio.ensure_future(read())
        start = time.monotonic()
        sent = 0

        async def send(pcm: bytes) -> float:
            nonlocal sent
            last = 0.0
            for i in range(0, len(pcm), step):
                sent += 1
                await asyncio.sleep(max(0.0, start + sent * FRAME_S - time.monotonic()))
                audio = base64.b64encode(pcm[i : i + step]).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
                last = time.monotonic()
            return last

        mark("talk_start")
        talk_started = time.monotonic()
        for _ in range(turns):
            first_audio = asyncio.get_running_loop().create_future()
            done.clear()
            spoken = await send(speech)
            while not done.is_set():
                await send(silence[: step * 5])
            latencies.append(await first_audio - spoken)
            await send(silence[: int(step * AFTER_S / FRAME_S)])
        talk_s = time.monotonic() - talk_started
        mark("talk_end")
        mark("idle_start")
        await send(silence[:step] * int(idle_s / FRAME_S))
        mark("idle_end")
        reader.cancel()
    return {"latencies_s": latencies, "talk_s": talk_s, "idle_s": idle_s}


async def webrtc_client(port: int, turns: int, idle_s: float) -> dict[str, Any]:
    import av
    from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

    rate, frame_samples = 48_000, 960

    class Microphone(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.pts, self.speech_left, self.start = 0, 0, 0.0
            self.last_speech = 0.0

        async def recv(self) -> av.AudioFrame:
            loop = asyncio.get_running_loop()
            if not self.start:
                self.start = loop.time()
            else:
                self.pts += frame_samples
                await asyncio.sleep(max(0.0, self.start + self.pts / rate - loop.time()))
            if self.speech_left > 0:
                self.speech_left -= 1
                t = (self.pts + np.arange(frame_samples)) / rate
                samples = 0.3 * np.sin(2 * np.pi * TONE_HZ * t)
                self.last_speech = time.monotonic()
            else:
                samples = np.zeros(frame_samples)
            pcm = (samples * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, self.pts
            frame.time_base = fractions.Fraction(1, rate)
            return frame

    pc = RTCPeerConnection()
    mic = Microphone()
    pc.addTrack(mic)
    channel = pc.createDataChannel("oai-events")
    opened, done = asyncio.Event(), asyncio.Event()
    heard_at: list[float] = []
    channel.on("open", opened.set)
    channel.on(
        "message",
        lambda text: (
            done.set() if json.loads(text)["type"] == "output_audio_buffer.stopped" else None
        ),
    )
    pulls: set[asyncio.Task[None]] = set()

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        async def pull() -> None:
            while True:
                frame = await track.recv()
                samples = frame.to_ndarray().astype(np.float32) / 32768
                if float(np.sqrt(np.mean(samples**2))) > LOUD:
                    heard_at.append(time.monotonic())

        pulls.add(asyncio.ensure_future(pull()))

    await pc.setLocalDescription(await pc.createOffer())
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/realtime/calls",
        data=pc.localDescription.sdp.encode(),
        headers={"Content-Type": "application/sdp"},
    )
    answer = await asyncio.to_thread(lambda: urllib.request.urlopen(request).read().decode())
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(opened.wait(), 10)
    latencies: list[float] = []
    mark("talk_start")
    talk_started = time.monotonic()
    for _ in range(turns):
        done.clear()
        heard_at.clear()
        mic.speech_left = int(SPEECH_S / FRAME_S)
        while mic.speech_left > 0:
            await asyncio.sleep(FRAME_S)
        spoken = mic.last_speech
        await asyncio.wait_for(done.wait(), 15)
        latencies.append(min(t for t in heard_at if t > spoken) - spoken)
        await asyncio.sleep(AFTER_S)
    talk_s = time.monotonic() - talk_started
    mark("talk_end")
    mark("idle_start")
    await asyncio.sleep(idle_s)
    mark("idle_end")
    for task in pulls:
        task.cancel()
    await pc.close()
    return {"latencies_s": latencies, "talk_s": talk_s, "idle_s": idle_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10, help="spoken turns per transport")
    parser.add_argument("--idle_s", type=float, default=10.0, help="idle call time measured")
    parser.add_argument("--client", choices=("websocket", "webrtc"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client is None:
        bench(args)
        return
    client = websocket_client if args.client == "websocket" else webrtc_client
    report = asyncio.run(client(args.port, args.turns, args.idle_s))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
