"""Golden traces: our own server's event sequences for flows no recording covers.

A golden file (``tests/data/golden/<name>.jsonl``) holds one frame a line, client and server
frames both, in the order the client sent and read them::

    {"connection": 1, "from": "client", "event": {...}}
    {"connection": 1, "from": "server", "event": {...}, "repeat": 12}
    {"connection": 2, "from": "server", "close": {"code": 1013, "reason": "..."}}

Volatile values are normalised so that a file stays the same from one recording to the next
and linkage survives: ids become placeholders numbered by first appearance (``<item 2>``, the
same placeholder wherever the id appears, in client and server frames), server event ids
``<event_id>``, timings ``<ms>`` or ``<unix time>``, base64 audio ``<audio: N bytes>``.
Consecutive identical lines are written once with a ``repeat`` count.

:func:`compare_with_golden` replays nothing itself: it takes a fresh recording of the same
scenario and compares it with the file, step by step (a step is a run of client frames and the
server frames read after them), using :mod:`tests.conformance.compare`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio_websocket

from protocol.invariants import SequenceChecker
from tests.conformance.compare import ID_KEYS, Comparison
from tests.realtime.harness import Client, LiveServer, connect

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"

#: timing fields and what they are replaced by
_TIMINGS = {"audio_start_ms": "<ms>", "audio_end_ms": "<ms>", "expires_at": "<unix time>"}


@attrs.frozen
class Frame:
    """One frame of a recording, as sent or received (not yet normalised)."""

    connection: int
    sender: str  #: "client" or "server"
    event: dict[str, Any] | None = None
    text: str | None = None  #: a text frame that is not a JSON object
    binary: int | None = None  #: a binary frame, by its length in bytes
    close: dict[str, Any] | None = None  #: the close frame that ended the connection


class TraceClient(Client):
    """A checked client (:class:`~tests.realtime.harness.Client`) that logs every frame."""

    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        frames: list[Frame],
        connection: int,
        checker: SequenceChecker,
    ) -> None:
        super().__init__(ws)
        self.checker = checker
        self._frames = frames
        self._connection = connection

    async def send(self, event: dict[str, Any] | str | bytes) -> None:
        if isinstance(event, bytes):
            frame = Frame(self._connection, "client", binary=len(event))
        elif isinstance(event, str):
            frame = Frame(self._connection, "client", text=event)
        else:
            frame = Frame(self._connection, "client", event=event)
        self._frames.append(frame)
        await super().send(event)

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        try:
            event = await super().next(timeout)
        except trio_websocket.ConnectionClosed as closed:
            reason = closed.reason
            close = {"code": reason.code, "reason": reason.reason} if reason else {"code": None}
            self._frames.append(Frame(self._connection, "server", close=close))
            raise
        self._frames.append(Frame(self._connection, "server", event=event))
        return event


class Recorder:
    """Opens logged connections to a live server; :attr:`frames` is the recording."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.frames: list[Frame] = []
        self._connections = 0

    @asynccontextmanager
    async def connect(
        self, query: str = "?model=gpt-realtime", *, refused: bool = False
    ) -> AsyncIterator[TraceClient]:
        """A logged client whose first event has been read (``client.created`` unless the
        connection is expected to be ``refused``: then nothing is read yet)."""
        self._connections += 1
        async with connect(self.server, query=query) as ws:
            # a refusal is an error before any session.created: no session to check
            checker = SequenceChecker(strict_start=not refused)
            client = TraceClient(ws, self.frames, self._connections, checker)
            if not refused:
                client.created = await client.next()
                assert client.created["type"] == "session.created", client.created
            yield client


def normalise(frames: Iterable[Frame]) -> list[dict[str, Any]]:
    """Golden lines for a recording: volatile values replaced, runs of equal lines merged."""
    placeholders: dict[str, str] = {}
    counts: dict[str, int] = {}

    def placeholder(value: str) -> str:
        if value not in placeholders:
            prefix = value.split("_", 1)[0] if "_" in value else "id"
            counts[prefix] = counts.get(prefix, 0) + 1
            placeholders[value] = f"<{prefix} {counts[prefix]}>"
        return placeholders[value]

    def walk(value: Any, key: str, depth: int, server: bool, audio_delta: bool) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k, depth + 1, server, audio_delta) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key, depth, server, audio_delta) for v in value]
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            return value
        if key == "event_id" and depth == 1 and server:
            return "<event_id>"
        if key in ID_KEYS and isinstance(value, str):
            return placeholder(value)
        if key in _TIMINGS:
            return _TIMINGS[key]
        if isinstance(value, str) and (key == "audio" or (key == "delta" and audio_delta)):
            return f"<audio: {len(base64.b64decode(value))} bytes>"
        return value

    lines: list[dict[str, Any]] = []
    for frame in frames:
        line: dict[str, Any] = {"connection": frame.connection, "from": frame.sender}
        if frame.event is not None:
            audio_delta = frame.event.get("type") == "response.output_audio.delta"
            line["event"] = walk(frame.event, "", 0, frame.sender == "server", audio_delta)
        elif frame.text is not None:
            line["text"] = frame.text
        elif frame.binary is not None:
            line["binary"] = frame.binary
        else:
            line["close"] = frame.close
        if lines and {k: v for k, v in lines[-1].items() if k != "repeat"} == line:
            lines[-1]["repeat"] = lines[-1].get("repeat", 1) + 1
        else:
            lines.append(line)
    return lines


def write(path: Path, lines: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@attrs.frozen
class _Step:
    client: tuple[dict[str, Any], ...]
    server: dict[int, list[dict[str, Any]]]  #: events by connection
    closes: tuple[dict[str, Any], ...]


def _expand(lines: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for line in lines:
        single = {k: v for k, v in line.items() if k != "repeat"}
        for _ in range(line.get("repeat", 1)):
            yield single


def _steps(lines: list[dict[str, Any]]) -> list[_Step]:
    steps: list[_Step] = []
    client: list[dict[str, Any]] = []
    server: dict[int, list[dict[str, Any]]] = {}
    closes: list[dict[str, Any]] = []
    for line in _expand(lines):
        if line["from"] == "client":
            if server or closes:
                steps.append(_Step(tuple(client), server, tuple(closes)))
                client, server, closes = [], {}, []
            client.append(line)
        elif "close" in line:
            closes.append(line)
        else:
            server.setdefault(line["connection"], []).append(line["event"])
    steps.append(_Step(tuple(client), server, tuple(closes)))
    return steps


def _describe(client: tuple[dict[str, Any], ...]) -> str:
    if not client:
        return "on connecting"
    kinds = [line.get("event", {}).get("type", "a raw frame") for line in client]
    runs: list[tuple[str, int]] = []
    for kind in kinds:
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1] + 1)
        else:
            runs.append((kind, 1))
    return "after " + ", ".join(kind if n == 1 else f"{kind} x{n}" for kind, n in runs)


def compare_with_golden(golden: list[dict[str, Any]], fresh: list[dict[str, Any]]) -> list[str]:
    """What differs between a golden file's lines and a fresh recording's, explained."""
    problems: list[str] = []
    old_steps, new_steps = _steps(golden), _steps(fresh)
    if len(old_steps) != len(new_steps):
        problems.append(
            f"the flow has {len(new_steps)} steps where the golden file has {len(old_steps)}"
        )
    comparison = Comparison()
    for number, (old, new) in enumerate(zip(old_steps, new_steps, strict=False), 1):
        label = f"step {number} ({_describe(old.client)})"
        if old.client != new.client:
            problems.append(f"{label}: the client sent other frames: {_first_change(old, new)}")
            continue
        if old.closes != new.closes:
            problems.append(f"{label}: closes {list(new.closes)}, golden {list(old.closes)}")
        before = len(comparison.differences)
        for connection in sorted(old.server.keys() | new.server.keys()):
            comparison.streams(
                old.server.get(connection, []),
                new.server.get(connection, []),
                source=f"connection {connection}",
            )
        problems += [f"{label}: {d.explain()}" for d in comparison.differences[before:]]
    return problems


def _first_change(old: _Step, new: _Step) -> str:
    for before, now in zip(old.client, new.client, strict=False):
        if before != now:
            return f"{_short(now)} where the golden file has {_short(before)}"
    return f"{len(new.client)} frames where the golden file has {len(old.client)}"


def _short(line: dict[str, Any]) -> str:
    text = json.dumps({k: v for k, v in line.items() if k not in ("connection", "from")})
    return text if len(text) <= 160 else text[:157] + "..."
