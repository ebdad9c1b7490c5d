"""Hypothesis drives the live server -- hypercorn, the session runner, the protocol machine and
the fake engines -- over real WebSockets.

A case is a few steps on one connection: valid, mutated and malformed client events (one field
wrong, wrong types, unknown types, invalid base64, deep nesting, strings of a few MB, binary
frames), rapid bursts of ``session.update`` / ``response.create`` / ``response.cancel``, speech
and silence, and maybe a disconnect at the end (an abrupt one or a close, mid-response or not).

Every server event is validated with the openai SDK's types and ``SequenceChecker`` as it arrives.
After each step the client sends a marker (a retrieve of an unknown item, answered with exactly
one ``error``) and reads up to its answer: a frame known to be invalid got exactly one ``error``,
no other frame more than one, every error names a frame of that step (or none, for frames that
do not parse), and no response failed. After each case: the server thread is alive and logged
nothing at ERROR, ``/health`` answers with every pipeline free again, and a text turn on a fresh
connection completes.

``FUZZ_LIVE_EXAMPLES=2000 python -m pytest fuzz/fuzz_live.py`` runs longer;
``scripts/fuzz_live_long.py`` runs for a while and counts cases and failures instead of stopping
at the first.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import trio
import trio_websocket
from fuzz_protocol import SESSION_PATCHES, client_examples, mutated_events, official_client_examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.events import CLIENT_EVENT_TYPES
from tests.protocol.steps import message
from tests.realtime.harness import (
    Client,
    LiveServer,
    fake_pool,
    health,
    live_server,
    silence_pcm,
    tone_pcm,
)
from tests.support import validate_with_sdk

LIVE_SETTINGS = settings(
    max_examples=int(os.environ.get("FUZZ_LIVE_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ID = "@ID@"  #: replaced by the frame's own event_id when it is sent
MARK_ITEM = "item_fuzz_marker"  #: never created: retrieving it is always one error
MB = 1024 * 1024
CHUNK_MS = 20  #: audio per append in speech steps
STEP_TIMEOUT_S = 30.0
#: the server's own log lines at ERROR are bugs here: fake engines never fail in this fuzzer
SERVER_LOGGERS = ("realtime", "hypercorn", "quart", "trio", "protocol", "engines")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 160 else f"{text[:120]}...<{len(text)} chars>...{text[-30:]}"


@attrs.frozen
class Frame:
    """One client frame. ``@ID@`` in ``data`` becomes a fresh event_id when it is sent.

    ``bad``: known to be invalid, so exactly one ``error`` answers it. ``echo``: whether that
    error carries the frame's event_id: ``yes``, ``no`` (the frame does not parse or its
    event_id is not a string) or ``maybe`` (too deep to tell).
    """

    data: str | bytes = attrs.field(repr=_short)
    bad: bool = False
    echo: str = "yes"


@attrs.frozen
class Send:
    frames: tuple[Frame, ...]  #: sent back to back, without reading in between


@attrs.frozen
class Speak:
    """Appends of ``tone_ms`` of speech then ``silence_ms`` of silence, 20 ms each."""

    tone_ms: int
    silence_ms: int


@attrs.frozen
class Pause:
    ms: int


@attrs.frozen
class Disconnect:
    """The end of a case: ``abort`` drops the TCP connection, ``close`` sends a close frame;
    ``mid_response`` asks for a response first and leaves once its output is streaming."""

    how: str
    mid_response: bool


Step = Send | Speak | Pause


def _event(event: dict[str, Any], *, bad: bool = False) -> Frame:
    """A JSON event frame with an event_id of its own (unless it has a non-string one)."""
    event = dict(event)
    echo = "yes"
    if isinstance(event.get("event_id", ""), str):
        event["event_id"] = ID
    else:
        echo = "no"
    try:
        json.dumps(event, allow_nan=False)
    except ValueError:
        echo = "no"  # NaN or Infinity: not JSON, so the frame does not parse
    return Frame(json.dumps(event), bad=bad, echo=echo)


# --- frames ----------------------------------------------------------------------------------

valid_events = st.sampled_from(client_examples() + official_client_examples()).map(_event)
mutated = mutated_events().map(_event)

not_json = st.one_of(
    st.sampled_from(["not json", "{", "", "{'type': 'x'}", "nul\x00", '{"type": "x"']),
    st.text(max_size=30).map(lambda t: "{" + t),
).map(lambda text: Frame(text, bad=True, echo="no"))
not_an_object = st.sampled_from(["[]", "1", '"session.update"', "null", "[{}]", "true"]).map(
    lambda text: Frame(text, bad=True, echo="no")
)
binary = st.binary(max_size=64).map(lambda data: Frame(data, bad=True, echo="no"))
unknown_type = st.text(max_size=24).filter(lambda t: t not in CLIENT_EVENT_TYPES)
wrong_type = st.one_of(
    unknown_type,
    st.none(),
    st.integers(),
    st.lists(st.sampled_from(sorted(CLIENT_EVENT_TYPES)), max_size=2),
    st.just({"type": "session.update"}),
).map(lambda kind: _event({"type": kind}, bad=True))
#: base64 text with at least one character outside the alphabet
invalid_base64 = st.builds(
    lambda head, junk, tail: head + junk + tail,
    st.text("ABCDEFGHabcdefgh0123456789+/=", max_size=40),
    st.sampled_from(["!", "*", " ", "é", "-", "_", "\n", "=A=", "\x00"]),
    st.text("ABCDabcd0189+/=", max_size=40),
).map(lambda audio: _event({"type": "input_audio_buffer.append", "audio": audio}, bad=True))


def _deep_parameters(depth: int) -> Frame:
    """A session.update whose tool parameters nest ``depth`` deep (built as text: the json
    module's encoder recurses)."""
    return Frame(
        '{"type":"session.update","event_id":"' + ID + '","session":{"type":"realtime",'
        '"tools":[{"type":"function","name":"f","parameters":'
        + '{"a":' * depth
        + "1"
        + "}" * depth
        + "}]}}",
        bad=True,
        echo="maybe",
    )


deep = st.one_of(
    st.integers(65, 20_000).map(_deep_parameters),  # free-form JSON nests 64 deep at most
    st.integers(1_000, 100_000).map(lambda d: Frame("[" * d + "]" * d, bad=True, echo="no")),
)

sizes = st.integers(1 * MB, 3 * MB)
huge_bad = st.one_of(
    sizes.map(lambda n: _event({"type": "x.huge", "padding": "x" * n}, bad=True)),
    sizes.map(
        lambda n: _event({"type": "input_audio_buffer.append", "audio": "A" * n + "!"}, bad=True)
    ),
)
huge_valid = st.one_of(
    sizes.map(
        lambda n: _event(
            {"type": "conversation.item.create", "item": message("user", "é" * (n // 2))}
        )
    ),
    sizes.map(
        lambda n: _event(
            {"type": "session.update", "session": {"type": "realtime", "instructions": "x" * n}}
        )
    ),
    sizes.map(
        lambda n: _event(
            {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(random.Random(n).randbytes(n * 3 // 4)).decode(),
            }
        )
    ),
)

#: what a client does in a hurry
BURST_EVENTS: list[dict[str, Any]] = [
    {"type": "response.create"},
    {"type": "response.create", "response": {"output_modalities": ["text"]}},
    {"type": "response.create", "response": {"conversation": "none", "metadata": {"k": "v"}}},
    {"type": "response.create", "response": {"max_output_tokens": 2}},
    {"type": "response.cancel"},
    {"type": "response.cancel", "response_id": "resp_unknown"},
    {"type": "conversation.item.create", "item": message("user", "Hi there")},
    {"type": "input_audio_buffer.clear"},
    {"type": "output_audio_buffer.clear"},
]
SESSION_UPDATES = [
    {"type": "session.update", "session": {"type": "realtime", **p}} for p in SESSION_PATCHES
]
burst_frame = st.one_of(
    st.sampled_from(BURST_EVENTS), st.sampled_from(BURST_EVENTS), st.sampled_from(SESSION_UPDATES)
).map(_event)

bad_frame = st.one_of(not_json, not_an_object, binary, wrong_type, invalid_base64, deep)
any_frame = st.one_of(valid_events, mutated, mutated, bad_frame)

#: the kinds of step, by weight (drawn first: a plain one_of gave single frames ~90 % of steps)
STEP_KINDS: dict[str, tuple[int, st.SearchStrategy[Step]]] = {
    "frame": (4, any_frame.map(lambda f: Send((f,)))),
    "burst": (3, st.lists(burst_frame, min_size=2, max_size=12).map(lambda fs: Send(tuple(fs)))),
    "mixed": (
        1,
        st.lists(any_frame | burst_frame, min_size=2, max_size=6).map(lambda fs: Send(tuple(fs))),
    ),
    "speak": (
        2,
        st.builds(Speak, st.sampled_from([0, 100, 300, 800]), st.sampled_from([0, 200, 700, 700])),
    ),
    "pause": (1, st.builds(Pause, st.sampled_from([10, 100, 300]))),
    "huge": (1, st.one_of(huge_bad, huge_valid).map(lambda f: Send((f,)))),
}
steps: st.SearchStrategy[Step] = st.sampled_from(
    [kind for kind, (weight, _) in STEP_KINDS.items() for _ in range(weight)]
).flatmap(lambda kind: STEP_KINDS[kind][1])
endings = st.none() | st.builds(Disconnect, st.sampled_from(["abort", "close"]), st.booleans())


@attrs.frozen
class Case:
    steps: tuple[Step, ...]
    ending: Disconnect | None
    transcription: bool = False  #: a transcription session (``?intent=transcription``)


cases = st.builds(
    Case,
    st.lists(steps, min_size=1, max_size=8).map(tuple),
    endings,
    st.sampled_from([False, False, False, True]),
)


# --- running a case --------------------------------------------------------------------------


def open_ws(server: LiveServer, transcription: bool = False) -> Any:
    """A raw WebSocket that takes server events of any size the fuzzer provokes."""
    query = "?intent=transcription" if transcription else "?model=gpt-realtime"
    return trio_websocket.open_websocket_url(server.url + query, max_message_size=64 * MB)


def audio_frames(pcm: bytes) -> list[Frame]:
    step = 48 * CHUNK_MS  # bytes of 24 kHz PCM16
    return [
        _event(
            {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(pcm[i : i + step]).decode(),
            }
        )
        for i in range(0, len(pcm), step)
    ]


class FuzzConnection:
    """One fuzzed connection: a reader task checks every event; steps end at a marker."""

    def __init__(
        self, ws: trio_websocket.WebSocketConnection, client: Client | None = None
    ) -> None:
        self.ws = ws
        self.client = client or Client(ws)
        self.events = self.client.events
        self._next_id = 0
        self._marks: dict[str, trio.Event] = {}
        self._mark_index: dict[str, int] = {}
        self._last_mark = -1  # index in events of the previous marker's answer
        self.frames = self.marks = 0
        self.closed: trio_websocket.CloseReason | None = None

    def new_id(self, prefix: str = "fz") -> str:
        self._next_id += 1
        return f"{prefix}_{self._next_id}"

    async def read(self) -> None:
        try:
            while True:
                event = await self.client.next(timeout=3600)
                if event["type"] == "error" and str(event["error"].get("event_id")).startswith(
                    "mark_"
                ):
                    mark = event["error"]["event_id"]
                    self._mark_index[mark] = len(self.events) - 1
                    self._marks[mark].set()
        except trio_websocket.ConnectionClosed as closed:
            self.closed = closed.reason  # by the case, or else a marker finds out
            for waiting in self._marks.values():
                waiting.set()

    async def send(self, frames: list[Frame] | tuple[Frame, ...]) -> list[tuple[Frame, str]]:
        sent = []
        for frame in frames:
            event_id = self.new_id()
            data = frame.data.replace(ID, event_id) if isinstance(frame.data, str) else frame.data
            await self.ws.send_message(data)
            sent.append((frame, event_id))
            self.frames += 1
        return sent

    async def mark(self) -> list[dict[str, Any]]:
        """Send the marker and wait for its answer: the events since the previous one."""
        mark = self.new_id("mark")
        self.marks += 1
        self._marks[mark] = trio.Event()
        await self.ws.send_message(
            json.dumps(
                {"type": "conversation.item.retrieve", "item_id": MARK_ITEM, "event_id": mark}
            )
        )
        with trio.fail_after(STEP_TIMEOUT_S):
            await self._marks[mark].wait()
        assert mark in self._mark_index, f"the server closed the connection: {self.closed}"
        index = self._mark_index[mark]
        window = self.events[self._last_mark + 1 : index]
        self._last_mark = index
        return window

    async def step(self, step: Step) -> None:
        if isinstance(step, Pause):
            await trio.sleep(step.ms / 1000)
            sent: list[tuple[Frame, str]] = []
        elif isinstance(step, Speak):
            pcm = tone_pcm(step.tone_ms) + silence_pcm(step.silence_ms)
            sent = await self.send(audio_frames(pcm))
        else:
            sent = await self.send(step.frames)
        check_errors(sent, await self.mark())

    def streaming(self) -> set[str]:
        """Responses created and not done yet."""
        created = {e["response"]["id"] for e in self.events if e["type"] == "response.created"}
        return created - {e["response"]["id"] for e in self.events if e["type"] == "response.done"}

    async def settle(self) -> None:
        """Wait until every response has ended (each one must, and promptly)."""
        with trio.fail_after(STEP_TIMEOUT_S):
            while True:
                while self.streaming():
                    await trio.sleep(0.005)
                await trio.sleep(0.05)  # the end of one may start another (a queued turn)
                if not self.streaming():
                    return

    async def disconnect(self, ending: Disconnect) -> None:
        if ending.mid_response:
            await self.send([_event({"type": "response.create"})])
            seen = len(self.events)
            with trio.move_on_after(3):
                while not any(
                    e["type"].endswith(".delta") or e["type"] in ("response.done", "error")
                    for e in self.events[seen:]
                ):
                    await trio.sleep(0.002)
        if ending.how == "abort":
            await self.ws._stream.aclose()  # no close frame: the TCP connection just drops
        else:
            await self.ws.aclose()


def check_errors(sent: list[tuple[Frame, str]], window: list[dict[str, Any]]) -> None:
    """Each bad frame got exactly one error, no frame more than one, and each error names a
    frame of the step (or none, where one of them could not carry its event_id)."""
    errors = [e for e in window if e["type"] == "error"]
    # the sessions' MCP tools name a loopback port nothing listens on: their listings fail
    failed = [
        e
        for e in errors
        if e["error"]["type"] != "invalid_request_error"
        and e["error"]["code"] != "mcp_list_tools_failed"
    ]
    assert not failed, f"a server error with fake engines: {failed}"
    errors = [e for e in errors if e["error"]["code"] != "mcp_list_tools_failed"]
    by_id: dict[str, int] = {}
    anonymous = 0
    for error in errors:
        event_id = error["error"].get("event_id")
        if event_id is None:
            anonymous += 1
        else:
            by_id[event_id] = by_id.get(event_id, 0) + 1
    ids = {event_id for _, event_id in sent}
    assert set(by_id) <= ids, f"errors for frames not sent in this step: {set(by_id) - ids}"
    assert all(n == 1 for n in by_id.values()), f"more than one error for a frame: {by_id}"
    must_be_anonymous = can_be_anonymous = 0
    for frame, event_id in sent:
        named = event_id in by_id
        if frame.bad and frame.echo == "yes":
            assert named, f"no error named {event_id} for {frame}"
        if not named and frame.echo != "yes":
            can_be_anonymous += 1
            must_be_anonymous += frame.bad
        assert not (named and frame.echo == "no"), f"{frame} cannot carry its event_id"
    assert must_be_anonymous <= anonymous <= can_be_anonymous, (
        f"{anonymous} errors without an event_id for {must_be_anonymous}..{can_be_anonymous} "
        f"frames that could not name theirs: {[f for f, _ in sent]}"
    )


async def run_connection(server: LiveServer, case: Case) -> tuple[FuzzConnection, bool]:
    """Play ``case`` on one connection (then let its responses end, unless it disconnects);
    whether every step was checked up to a last marker."""
    async with open_ws(server, case.transcription) as ws:
        connection = FuzzConnection(ws)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.read)
            await connection.mark()
            for step in case.steps:
                await connection.step(step)
            if case.ending is not None:
                await connection.disconnect(case.ending)
                return connection, False
            await connection.settle()
            check_errors([], await connection.mark())
            nursery.cancel_scope.cancel()
    return connection, True


async def text_turn(server: LiveServer) -> None:
    """A fresh connection's user text and response.create end in a completed response."""
    async with open_ws(server) as ws:
        client = Client(ws)
        assert (await client.next())["type"] == "session.created"
        await client.send({"type": "conversation.item.create", "item": message("user", "Hi")})
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert events[-1]["response"]["status"] == "completed", events[-1]


BUSY = ("pipelines_in_use", "transcription_sessions_in_use", "active_sessions")


def wait_until_idle(server: LiveServer, timeout_s: float = 5.0) -> None:
    """The server answers /health and every pipeline is back in the pool."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = health(server)
        assert state["status"] == "ok", state
        if not any(state[key] for key in BUSY):
            return
        assert time.monotonic() < deadline, f"the pool was not restored: {state}"
        time.sleep(0.01)


class ErrorLog(logging.Handler):
    """The server's log records at ERROR and above, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in SERVER_LOGGERS:
            self.records.append(record)

    def take(self) -> list[str]:
        lines = [f"{r.name}: {r.getMessage()}" for r in self.records]
        self.records.clear()
        return lines


@attrs.define
class Tally:
    """What the fuzzed connections did, over all cases."""

    cases: int = 0
    frames: int = 0  #: client frames sent, markers left out
    events: int = 0  #: server events received and checked
    errors: int = 0  #: ``error`` events answering frames, markers left out
    responses: Counter[str] = attrs.Factory(Counter)  #: by final status
    disconnects: int = 0
    cut_responses: int = 0  #: responses still streaming when their client left

    def add(self, connection: FuzzConnection, case: Case) -> None:
        events = connection.events
        self.cases += 1
        self.frames += connection.frames
        self.events += len(events)
        self.errors += sum(e["type"] == "error" for e in events) - connection.marks
        self.responses.update(
            e["response"]["status"] for e in events if e["type"] == "response.done"
        )
        if case.ending is not None:
            self.disconnects += 1
            created = {e["response"]["id"] for e in events if e["type"] == "response.created"}
            done = {e["response"]["id"] for e in events if e["type"] == "response.done"}
            self.cut_responses += len(created - done)

    def __str__(self) -> str:
        statuses = ", ".join(f"{n} {status}" for status, n in sorted(self.responses.items()))
        return (
            f"{self.cases} cases, {self.frames} frames, {self.events} events checked, "
            f"{self.errors} errors answering them; responses: {statuses or 'none'}; "
            f"{self.disconnects} disconnects, {self.cut_responses} responses cut by them"
        )


@attrs.define
class LiveFuzzer:
    """A live server and the checks that follow each case."""

    server: LiveServer
    errors: ErrorLog = attrs.Factory(ErrorLog)
    tally: Tally = attrs.Factory(Tally)

    def run(self, case: Case) -> None:
        before = self.server.metrics.protocol_errors
        connection, checked = trio.run(run_connection, self.server, case)
        self.tally.add(connection, case)
        if checked:  # every error the server counted reached this client
            received = sum(
                e["type"] == "error" and e["error"]["type"] == "invalid_request_error"
                for e in connection.events
            )
            assert self.server.metrics.protocol_errors - before == received
        self.check_server()
        trio.run(text_turn, self.server)
        self.check_server()

    def check_server(self) -> None:
        assert self.server._thread.is_alive(), "the server thread died"
        wait_until_idle(self.server)
        logged = self.errors.take()
        assert not logged, f"the server logged errors: {logged}"


@pytest.fixture(scope="module")
def fuzzer() -> Iterator[LiveFuzzer]:
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    try:
        with live_server(fake_pool(size=2, token_delay_s=0.003)) as server:
            yield LiveFuzzer(server, errors)
    finally:
        logging.getLogger().removeHandler(errors)


@LIVE_SETTINGS
@given(case=cases)
def test_any_client_leaves_the_server_whole(fuzzer: LiveFuzzer, case: Case) -> None:
    fuzzer.run(case)


def test_a_frame_over_the_size_limit_is_one_error(fuzzer: LiveFuzzer) -> None:
    """Refused unread: its event_id is not looked for."""
    over = Frame(json.dumps({"type": "x", "padding": "A" * (16 * MB)}), bad=True, echo="no")
    fuzzer.run(Case((Send((over,)),), None))


async def crowd_member(server: LiveServer, how: str) -> str:
    """Connect; refused: check it was clean; accepted: leave mid-response."""
    async with open_ws(server) as ws:
        client = Client(ws)
        first = json.loads(await ws.get_message())
        validate_with_sdk(first)
        if first["type"] == "error":
            assert first["error"]["code"] == "session_limit_reached", first
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1013
            return "refused"
        client.checker.check(first)
        client.events.append(first)
        connection = FuzzConnection(ws, client)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.read)
            await connection.disconnect(Disconnect(how, mid_response=True))
    return "accepted"


@settings(max_examples=5, deadline=None)
@given(sessions=st.integers(3, 6), how=st.sampled_from(["abort", "close"]))
def test_refused_and_dropped_connections_leave_the_pool_whole(
    fuzzer: LiveFuzzer, sessions: int, how: str
) -> None:
    """More connections than pipelines at once; the accepted ones drop mid-response."""
    outcomes: list[str] = []

    async def body() -> None:
        async def member() -> None:
            outcomes.append(await crowd_member(fuzzer.server, how))

        async with trio.open_nursery() as nursery:
            for _ in range(sessions):
                nursery.start_soon(member)

    trio.run(body)
    assert outcomes.count("accepted") >= 2, outcomes  # refusals only when both are in use
    fuzzer.check_server()
    trio.run(text_turn, fuzzer.server)
    fuzzer.check_server()
