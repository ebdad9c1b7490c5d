"""Cost of the protocol machine on its two hot paths, in microseconds per operation.

- ``append``: one ``input_audio_buffer.append`` frame of 20 ms of 24 kHz PCM16 (960 bytes,
  1280 base64 characters) through ``RealtimeConnection.receive_frame``: JSON parse, schema check,
  base64 decode and the machine. Target: under 50 µs.
- ``text turn``: ``conversation.item.create`` + ``response.create`` + 20 ``AudioOut`` chunks of
  20 ms + ``ResponseComplete``, every emitted event encoded with ``encode_server_event``. The
  turns run on one connection, so the conversation grows by two items a turn as in a real session.

Each figure is the median over several runs of the mean over many iterations
(``time.perf_counter``). Usage: ``python scripts/bench_protocol.py [--runs 7] [--appends 20000]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
from collections.abc import Callable

from protocol import RealtimeConnection, encode_server_event
from protocol import inputs as ins
from protocol.effects import StartResponse

APPEND_MS = 20
AUDIO_CHUNKS = 20
#: 20 ms of 24 kHz mono PCM16: 480 samples, 960 bytes
PCM_20MS = bytes(range(256)) * 3 + bytes(192)


def quiet_connection() -> RealtimeConnection:
    """A started connection; turn detection stays on, as in a real session (VAD frames are the
    shell's business and cost nothing here)."""
    conn = RealtimeConnection(session_id="sess_bench")
    conn.start()
    return conn


def bench_append(iterations: int) -> float:
    """Mean µs per ``input_audio_buffer.append`` of 20 ms through ``receive_frame``."""
    frame = json.dumps(
        {
            "type": "input_audio_buffer.append",
            "event_id": "event_bench_append",
            "audio": base64.b64encode(PCM_20MS).decode("ascii"),
        }
    )
    conn = quiet_connection()
    receive = conn.receive_frame
    started = time.perf_counter()
    for _ in range(iterations):
        receive(frame)
    elapsed = time.perf_counter() - started
    assert conn.timeline_ms == iterations * APPEND_MS
    return elapsed / iterations * 1e6


def bench_text_turn(turns: int) -> float:
    """Mean µs per complete text turn, encoding every emitted event to JSON text."""
    item_frames = [
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": f"Question number {n}?"}],
                },
            }
        )
        for n in range(turns)
    ]
    create_frame = json.dumps({"type": "response.create"})
    conn = quiet_connection()
    sent = 0

    def encode(events: list) -> None:
        nonlocal sent
        for event in events:
            sent += len(encode_server_event(event))

    started = time.perf_counter()
    for frame in item_frames:
        encode(conn.receive_frame(frame).events)
        out = conn.receive_frame(create_frame)
        encode(out.events)
        (start,) = (e for e in out.effects if isinstance(e, StartResponse))
        for chunk in range(AUDIO_CHUNKS):
            result = ins.AudioOut(start.response_id, PCM_20MS, f"word{chunk} ")
            encode(conn.feed(result).events)
        encode(conn.feed(ins.ResponseComplete(start.response_id, 12, 20)).events)
    elapsed = time.perf_counter() - started
    assert sent > 0 and conn.default_response_id is None
    return elapsed / turns * 1e6


def median_of_runs(runs: int, bench: Callable[[], float]) -> tuple[float, float, float]:
    bench()  # warm-up
    figures = [bench() for _ in range(runs)]
    return statistics.median(figures), min(figures), max(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()

    median, low, high = median_of_runs(args.runs, lambda: bench_append(args.appends))
    print(
        f"input_audio_buffer.append (20 ms, 24 kHz PCM16) via receive_frame: "
        f"{median:.2f} µs median of {args.runs} runs x {args.appends} "
        f"(min {low:.2f}, max {high:.2f}; target < 50 µs)"
    )
    median, low, high = median_of_runs(args.runs, lambda: bench_text_turn(args.turns))
    print(
        f"text turn (item.create + response.create + {AUDIO_CHUNKS} AudioOut + complete, "
        f"encoded): {median:.1f} µs median of {args.runs} runs x {args.turns} "
        f"(min {low:.1f}, max {high:.1f})"
    )


if __name__ == "__main__":
    main()
