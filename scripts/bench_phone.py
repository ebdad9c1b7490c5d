"""Phone calls over Twilio Media Streams: first answer audio and barge-in, as the caller's line
sees them.

The server runs in this process (a thread of its own) on the embedded engines, as
``python -m realtime --preset embedded`` builds them (engine worker processes), or on the
zero-cost engines of ``bench_server.py`` (``--engines zero-cost``: a tone is speech, the reply
is ~1 s of tone), which leaves the transport and turn-taking alone. Twilio's side is the
stand-in of ``tests/phone_standin.py``: it rings the voice webhook, opens the media stream,
keeps the caller's line open (20 ms μ-law frames in real time, silence between questions),
plays the answer in real time and echoes marks as Twilio does.

Each turn asks a question, listens to ``--listen_s`` of the answer, then asks the next
question over it (barge-in). Printed, p50 and p90 over ``--turns`` turns:

- end of the caller's speech (its last frame sent) -> the first μ-law media frame of the
  answer arriving (loopback: as it leaves the server);
- start of the caller's speech over an answer -> the ``clear`` arriving, and how much of the
  answer the caller heard after they began to speak.

Usage: ``python scripts/bench_phone.py [--engines embedded|zero-cost] [--turns 20]
[--provider twilio|telnyx]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_transcription import percentile

from realtime import AppSettings, PipelinePool, SessionOptions
from realtime.audio import StreamingResampler, decode
from realtime.server import ServerThread
from tests.phone_standin import (
    TelnyxStandIn,
    TwilioStandIn,
    TwiML,
    silence,
    tone,
    ulaw,
    ulaw_energy,
)

LOUD = 0.02  #: RMS above which a media frame carries the answer


def figures(values: list[float]) -> str:
    if not values:
        return "-"
    ms = [v * 1000 for v in values]
    return f"p50 {statistics.median(ms):5.0f} ms  p90 {percentile(ms, 0.9):5.0f} ms  (n={len(ms)})"


def embedded_pool() -> tuple[PipelinePool, dict[str, object], list[bytes]]:
    from bench_pipeline import QUESTIONS
    from bench_turns import spoken

    from realtime.cli import build_worker_pool, parse_args, session_defaults

    flags = parse_args(["--preset", "embedded"])
    pool = build_worker_pool(flags, 1)
    to_line = StreamingResampler(24_000, 8_000)
    questions = [
        ulaw(to_line(decode(spoken(pool.pipelines[0], q), "audio/pcm"))) for q in QUESTIONS
    ]
    return pool, session_defaults(flags), questions


def zero_cost_pool() -> tuple[PipelinePool, dict[str, object], list[bytes]]:
    """A tone is speech; the ~1 s answer is ready at once (the line's pacing plays it)."""
    from bench_server import LONG_REPLY, EnergyVAD, FixedSTT, ToneTTS, WordsLLM

    from realtime import Pipeline

    pipeline = Pipeline(0, EnergyVAD(), FixedSTT(), WordsLLM(LONG_REPLY), ToneTTS())
    return PipelinePool([pipeline]), {}, [tone(500)]


async def run(
    port: int, questions: list[bytes], turns: int, listen_s: float, provider: str
) -> None:
    standin = TelnyxStandIn if provider == "telnyx" else TwilioStandIn
    twilio = standin(f"http://127.0.0.1:{port}")
    twiml = TwiML((await twilio.ring()).text)
    assert twiml.verbs[0] == "Connect", twiml.text
    await twilio.open_stream(twiml)
    twilio.microphone()
    await twilio.say(silence(500))
    first_audio: list[float] = []
    to_clear: list[float] = []
    talked_over: list[float] = []
    barge_ins = missed = 0
    for turn in range(turns):
        messages_before, media_before = len(twilio.messages), len(twilio.media_times)
        playing = bool(twilio.media_times) and time.monotonic() - twilio.media_times[-1] < 0.1
        began, ended, heard_then = await twilio.say(questions[turn % len(questions)])
        if playing:  # the question cut into the last answer: the clear, and what was heard
            clears = [i for i, t in enumerate(twilio.clears) if t > began]
            if clears:
                barge_ins += 1
                to_clear.append(twilio.clears[clears[0]] - began)
                talked_over.append((twilio.heard_at_clear[clears[0]] - heard_then) / 8000)
            elif any(t > began + 0.3 for t in twilio.media_times[media_before:]):
                missed += 1  # the answer went on over the caller and was never cleared
        # the first frame of the answer (a frame with sound, sent after the speech ended)
        deadline = time.monotonic() + 30
        found = None
        while found is None and time.monotonic() < deadline:
            for index, message in enumerate(twilio.messages[messages_before:]):
                if message["event"] != "media":
                    continue
                arrived = twilio.arrivals[messages_before + index]
                payload = message["media"]["payload"]
                if arrived > ended and ulaw_energy(base64.b64decode(payload)) > LOUD:
                    found = arrived
                    break
            await asyncio.sleep(0.005)
        if found is None:
            print(f"turn {turn + 1}: no answer within 30 s")
            continue
        first_audio.append(found - ended)
        await asyncio.sleep(listen_s)
        # cut in while the answer's audio is flowing (not in a pause between its phrases)
        deadline = time.monotonic() + 3
        while time.monotonic() - twilio.media_times[-1] > 0.05 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
    await twilio.hang_up()
    print(f"end of speech -> first answer frame:  {figures(first_audio)}")
    print(f"speech over an answer -> clear:       {figures(to_clear)}")
    print(
        f"  {barge_ins} barge-ins cleared, {missed} answers that went on over the caller uncleared"
    )
    print(f"answer heard after the caller spoke:  {figures(talked_over)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", choices=("embedded", "zero-cost"), default="embedded")
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument(
        "--provider", choices=("twilio", "telnyx"), default="twilio", help="whose stand-in calls"
    )
    parser.add_argument(
        "--listen_s",
        type=float,
        default=None,
        help="answer heard before the next question cuts in (default: 0.5 embedded, 0.4 zero-cost)",
    )
    args = parser.parse_args()
    pool, defaults, questions = embedded_pool() if args.engines == "embedded" else zero_cost_pool()
    listen_s = (
        args.listen_s if args.listen_s is not None else (0.5 if args.engines == "embedded" else 0.4)
    )
    settings = AppSettings(session=SessionOptions(session_defaults=dict(defaults)))
    server = ServerThread(pool, settings).start()
    print(
        f"bench_phone: {args.provider}, {args.engines} engines, {args.turns} turns, "
        f"{listen_s:.1f} s heard before each barge-in; {platform.machine()}, "
        f"{os.cpu_count()} cores"
    )
    try:
        asyncio.run(run(server.port, questions, args.turns, listen_s, args.provider))
    finally:
        server.stop()
        pool.close()


if __name__ == "__main__":
    main()
