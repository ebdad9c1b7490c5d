"""Hold a spoken multi-turn conversation with a Realtime server and report per-turn latency.

Each text is spoken by the embedded Piper TTS (the ``embedded`` extra), resampled to 24 kHz
PCM16 and streamed in real time as ``input_audio_buffer.append``, followed by silence until
the reply's ``response.done``; the server's own VAD decides when the turn ends. Per turn it
prints what the server heard, what it answered, and two latencies measured on this client's
clock: from the end of the user's audio (the last speech chunk sent) to the first
``response.output_audio.delta``, and from ``input_audio_buffer.speech_stopped`` to it.

Usage::

    python scripts/synthetic_conversation.py [--url ws://localhost:8765/v1/realtime] \\
        "What is the capital of France?" "And of Italy?"
    OPENAI_API_KEY=sk-... python scripts/synthetic_conversation.py \\
        --url wss://api.openai.com/v1/realtime --model gpt-realtime
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from listen_and_play_realtime import (
    WIRE_RATE,
    Pacer,
    add_session_flags,
    append_event,
    open_realtime,
    session_update,
    without_audio,
)

from realtime.audio import Float32, StreamingResampler

DEFAULT_TEXTS = ["What is the capital of France?", "Tell me a short joke."]
CHUNK_MS = 40  #: audio per input_audio_buffer.append
TRANSCRIPT_GRACE_S = 3.0  #: how long to wait after response.done for the user's transcript


@attrs.define
class Turn:
    """One question and its reply; times are on this client's clock (trio.current_time, s)."""

    text: str
    audio_end: float | None = None  #: the last chunk of the question was sent
    speech_stopped: float | None = None
    first_audio: float | None = None
    heard: str | None = None  #: the server's transcript of the question
    answer: str = ""
    status: str | None = None
    response_id: str | None = None
    item_ids: set[str] = attrs.Factory(set)  #: user items committed during this turn
    done: trio.Event = attrs.Factory(trio.Event)
    transcribed: trio.Event = attrs.Factory(trio.Event)

    def ms(self, since: float | None) -> float | None:
        if since is None or self.first_audio is None:
            return None
        return (self.first_audio - since) * 1000


def synthesize(texts: list[str]) -> list[Float32]:
    """Each text spoken by the embedded Piper voice, as 24 kHz float32 samples."""
    from engines.base import CancelToken
    from engines.embedded import load_tts

    tts = load_tts()
    spoken = []
    for text in texts:
        chunks = list(tts.synthesize(text, voice=None, speed=1.0, cancel=CancelToken()))
        spoken.append(StreamingResampler(tts.sample_rate, WIRE_RATE)(np.concatenate(chunks)))
    return spoken


class Conversation:
    """Plays the user's side of the conversation and times the server's replies."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, print_json: bool) -> None:
        self.ws = ws
        self.print_json = print_json
        self.turns: list[Turn] = []

    @property
    def turn(self) -> Turn | None:
        return self.turns[-1] if self.turns else None

    async def receive_events(self) -> None:
        while True:
            event = json.loads(await self.ws.get_message())
            if self.print_json:
                print(f"<- {without_audio(event)}", flush=True)
            self.handle(event, trio.current_time())

    def handle(self, event: dict[str, Any], now: float) -> None:
        kind, turn = event["type"], self.turn
        if kind == "error":
            print(f"error: {event['error']}", file=sys.stderr, flush=True)
        if turn is None:
            return
        if kind == "input_audio_buffer.speech_stopped" and turn.speech_stopped is None:
            turn.speech_stopped = now
        elif kind == "input_audio_buffer.committed":
            turn.item_ids.add(event["item_id"])
        elif kind == "conversation.item.input_audio_transcription.completed":
            if event["item_id"] in turn.item_ids:
                turn.heard = " ".join(filter(None, [turn.heard, event["transcript"].strip()]))
                turn.transcribed.set()
        elif kind == "response.created" and turn.response_id is None:
            turn.response_id = event["response"]["id"]
        elif event.get("response_id") != turn.response_id:
            pass  # a second response in one turn (the VAD split the question) is not timed
        elif kind == "response.output_audio.delta" and turn.first_audio is None:
            turn.first_audio = now
        elif kind in ("response.output_audio_transcript.delta", "response.output_text.delta"):
            turn.answer += event["delta"]
        if kind == "response.done" and event["response"]["id"] == turn.response_id:
            turn.status = event["response"]["status"]
            turn.done.set()

    async def say(self, text: str, speech: Float32, args: Any) -> Turn:
        """Speak one question in real time, then send silence until the reply is done."""
        turn = Turn(text)
        self.turns.append(turn)
        pacer = Pacer(args.realtime_factor)
        step = WIRE_RATE * CHUNK_MS // 1000
        for start in range(0, len(speech), step):
            await self.ws.send_message(append_event(speech[start : start + step]))
            await pacer.advance(len(speech[start : start + step]) / WIRE_RATE)
        turn.audio_end = trio.current_time()
        silence = np.zeros(step, np.float32)
        with trio.move_on_after(args.timeout):
            while not turn.done.is_set():
                await self.ws.send_message(append_event(silence))
                await pacer.advance(CHUNK_MS / 1000)
        if turn.done.is_set() and turn.item_ids:
            with trio.move_on_after(TRANSCRIPT_GRACE_S):
                await turn.transcribed.wait()
        return turn


def report(index: int, turn: Turn) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} ms"

    print(f"turn {index}: said:      {turn.text}")
    print(f"turn {index}: heard:     {turn.heard or '-'}")
    print(f"turn {index}: assistant: {turn.answer.strip() or '-'}")
    print(
        f"turn {index}: latency:   end of audio -> first audio {ms(turn.ms(turn.audio_end))}, "
        f"speech_stopped -> first audio {ms(turn.ms(turn.speech_stopped))}, "
        f"response {turn.status or 'not done'}",
        flush=True,
    )


def summary(turns: list[Turn]) -> str:
    def median(values: list[float | None]) -> str:
        known = [v for v in values if v is not None]
        return f"{statistics.median(known):.0f} ms" if known else "-"

    return (
        f"{len(turns)} turns, median latency: end of audio -> first audio "
        f"{median([t.ms(t.audio_end) for t in turns])}, speech_stopped -> first audio "
        f"{median([t.ms(t.speech_stopped) for t in turns])}"
    )


async def run(args: Any) -> int:
    speeches = synthesize(args.texts)
    async with open_realtime(args.url, api_key=args.api_key, model=args.model) as ws:
        conversation = Conversation(ws, args.print_json)
        update = session_update(instructions=args.instructions, voice=args.voice)
        await ws.send_message(json.dumps(update))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conversation.receive_events)
            lead = np.zeros(WIRE_RATE * args.lead_ms // 1000, np.float32)
            await ws.send_message(append_event(lead))
            for index, (text, speech) in enumerate(zip(args.texts, speeches, strict=True), 1):
                report(index, await conversation.say(text, speech, args))
            nursery.cancel_scope.cancel()
    print(summary(conversation.turns), flush=True)
    return 0 if all(turn.status == "completed" for turn in conversation.turns) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("texts", nargs="*", default=DEFAULT_TEXTS, help="the user's turns")
    add_session_flags(p)
    p.add_argument("--model", default="gpt-realtime", help="sent as ?model= unless in --url")
    p.add_argument("--lead-ms", type=int, default=500, help="silence before the first turn")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each reply")
    p.add_argument("--realtime-factor", type=float, default=1.0, help="send audio this much faster")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return trio.run(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
