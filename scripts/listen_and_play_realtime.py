"""Talk to a Realtime server: microphone in, speaker out, transcripts on the terminal.

Speaks the OpenAI Realtime protocol (GA) over WebSocket, so it works against this server and
any other. Microphone audio at ``--send-rate`` is resampled to the protocol's 24 kHz PCM16 and
streamed as ``input_audio_buffer.append``; response audio is resampled to ``--recv-rate`` and
played as it arrives. When the server hears the user start speaking
(``input_audio_buffer.speech_started``) playback stops at once and the client sends
``conversation.item.truncate`` with the milliseconds of the reply actually played, so the
conversation keeps only what the user heard.

Without a sound card, ``--input-wav`` streams a file in real time instead of the microphone
(then keeps sending silence until the reply is done) and ``--output-wav`` records what would
have been played. The sound devices need the ``clients`` extra (``sounddevice``).

Usage::

    python scripts/listen_and_play_realtime.py [--url ws://localhost:8765/v1/realtime]
    python scripts/listen_and_play_realtime.py --input-wav question.wav --output-wav answer.wav
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import signal
import sys
import threading
import wave
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import trio
import trio_websocket

# run as a script from anywhere: the repository root holds ``realtime``
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realtime.audio import Float32, StreamingResampler, decode, encode

DEFAULT_URL = "ws://localhost:8765/v1/realtime"
WIRE_RATE = 24_000  #: Hz of ``audio/pcm``, the session's default input and output format
TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"  #: OpenAI streams deltas for this one
DISCONNECT_TIMEOUT_S = 2.0  #: how long the closing handshake may take on exit
AUDIO_FIELDS = {"response.output_audio.delta": "delta", "input_audio_buffer.append": "audio"}


# --- shared with synthetic_conversation.py ---------------------------------------------------


def open_realtime(
    url: str, *, api_key: str | None = None, model: str | None = None
) -> trio_websocket.WebSocketConnection:
    """``async with open_realtime(url) as ws:`` -- a WebSocket to a Realtime server.

    ``model`` goes in the query (``?model=``) unless the URL has one; ``api_key`` is sent as
    ``Authorization: Bearer``, as the SDKs do."""
    if model and "model=" not in url:
        url += ("&" if "?" in url else "?") + f"model={model}"
    headers = [("Authorization", f"Bearer {api_key}")] if api_key else []
    return trio_websocket.open_websocket_url(
        url, extra_headers=headers, disconnect_timeout=DISCONNECT_TIMEOUT_S
    )


def session_update(
    *, instructions: str | None = None, voice: str | None = None, silence_ms: int | None = None
) -> dict[str, Any]:
    """A ``session.update`` that turns on input transcription and sets what was given."""
    audio: dict[str, Any] = {"input": {"transcription": {"model": TRANSCRIPTION_MODEL}}}
    if silence_ms is not None:
        audio["input"]["turn_detection"] = {"type": "server_vad", "silence_duration_ms": silence_ms}
    if voice:
        audio["output"] = {"voice": voice}
    session: dict[str, Any] = {"type": "realtime", "audio": audio}
    if instructions:
        session["instructions"] = instructions
    return {"type": "session.update", "session": session}


def append_event(samples: Float32) -> str:
    """``input_audio_buffer.append`` of 24 kHz float samples as PCM16."""
    audio = base64.b64encode(encode(samples, "audio/pcm")).decode()
    return json.dumps({"type": "input_audio_buffer.append", "audio": audio})


def audio_of(event: dict[str, Any]) -> Float32:
    """The 24 kHz samples of a ``response.output_audio.delta``."""
    return decode(base64.b64decode(event["delta"]), "audio/pcm")


def without_audio(event: dict[str, Any]) -> str:
    """The event as JSON, with its base64 audio replaced by its size (for ``--print-json``)."""
    field = AUDIO_FIELDS.get(event.get("type", ""))
    if field and isinstance(event.get(field), str):
        event = {**event, field: f"<{len(event[field]) * 3 // 4} bytes>"}
    return json.dumps(event)


class Pacer:
    """Sleeps so that audio goes out at ``factor`` times real time, without drift."""

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor
        self._start = trio.current_time()
        self._audio_s = 0.0

    async def advance(self, seconds: float) -> None:
        """Account for ``seconds`` of audio, then sleep until they are due."""
        self._audio_s += seconds
        await trio.sleep_until(self._start + self._audio_s / self.factor)


def read_wav(path: Path) -> tuple[Float32, int]:
    """A 16-bit PCM wav file as float32 mono samples and its sample rate."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise SystemExit(f"{path}: only 16-bit PCM wav files are supported")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        samples = pcm.reshape(-1, wav.getnchannels()).mean(axis=1) / 32768.0
        return samples.astype(np.float32), wav.getframerate()


# --- playback --------------------------------------------------------------------------------


class Player:
    """Response audio waiting to be played, at the speaker's rate, tagged with its item.

    ``feed`` and ``clear`` run on the Trio thread, ``read`` on the speaker's (PortAudio's
    callback thread with a sound card), hence the lock. Counts the samples of each item
    handed to the speaker, so an interruption knows how much of the reply was heard.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, Float32]] = deque()
        self._played: dict[str, int] = {}  #: samples played, by item id

    def feed(self, item_id: str, samples: Float32) -> None:
        with self._lock:
            self._queue.append((item_id, samples))

    def read(self, frames: int) -> Float32:
        """Up to ``frames`` samples to play now (fewer when not that many are queued)."""
        parts = []
        with self._lock:
            while frames and self._queue:
                item_id, samples = self._queue[0]
                part, rest = samples[:frames], samples[frames:]
                if rest.size:
                    self._queue[0] = (item_id, rest)
                else:
                    self._queue.popleft()
                self._played[item_id] = self._played.get(item_id, 0) + part.size
                parts.append(part)
                frames -= part.size
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    def clear(self) -> tuple[str, int] | None:
        """Stop playback: drop what is queued and return the item that was playing with the
        ms of it played, or None when nothing was playing."""
        with self._lock:
            if not self._queue:
                return None
            item_id = self._queue[0][0]
            self._queue.clear()
            return item_id, self._played.get(item_id, 0) * 1000 // self.rate


class Console:
    """Transcripts as they grow: a line per user turn and per reply; notes go to stderr.

    On a terminal a user's live transcript rewrites its line; elsewhere each growth is a line
    of its own, ``you (live): ...``, followed by the final ``you: ...``.
    """

    def __init__(self, out: TextIO = sys.stdout, notes: TextIO = sys.stderr) -> None:
        self.out, self.notes = out, notes
        self.tty = out.isatty()
        self._open: str | None = None  #: the kind of line written without its newline yet
        self._live: dict[str, str] = {}  #: live user transcript so far, by item id

    def _end_line(self) -> None:
        if self._open:
            self.out.write("\n")
            self._open = None

    def user_delta(self, item_id: str, delta: str) -> None:
        text = self._live[item_id] = self._live.get(item_id, "") + delta
        if self.tty:
            if self._open != "user":
                self._end_line()
            self.out.write(f"\r\x1b[2Kyou: {text.strip()}…")
            self._open = "user"
        else:
            self._end_line()
            self.out.write(f"you (live): {text.strip()}\n")
        self.out.flush()

    def user_final(self, item_id: str, transcript: str) -> None:
        self._live.pop(item_id, None)
        if self.tty and self._open == "user":
            self.out.write("\r\x1b[2K")
            self._open = None
        self._end_line()
        self.out.write(f"you: {transcript.strip()}\n")
        self.out.flush()

    def assistant_delta(self, delta: str) -> None:
        if self._open != "assistant":
            self._end_line()
            self.out.write("assistant: ")
            self._open = "assistant"
        self.out.write(delta)
        self.out.flush()

    def assistant_done(self) -> None:
        if self._open == "assistant":
            self._end_line()
            self.out.flush()

    def json(self, direction: str, event: dict[str, Any]) -> None:
        self._end_line()
        self.out.write(f"{direction} {without_audio(event)}\n")
        self.out.flush()

    def note(self, text: str) -> None:
        if self.tty:  # the note shares the terminal with the open line
            self._end_line()
        self.out.flush()
        print(f"[{text}]", file=self.notes, flush=True)


# --- the client ------------------------------------------------------------------------------


class VoiceClient:
    """One conversation: sends microphone audio, plays and prints what comes back."""

    def __init__(
        self, ws: trio_websocket.WebSocketConnection, player: Player, console: Console, args: Any
    ) -> None:
        self.ws, self.player, self.console = ws, player, console
        self.print_json: bool = args.print_json
        self.block_mic: bool = args.block_mic_during_playback
        self._to_wire: StreamingResampler | None = None
        self._from_wire: tuple[str, StreamingResampler] | None = None  # for one item at a time
        self._interrupted: set[str] = set()  #: responses whose remaining audio is dropped
        self._speech_stopped_at: float | None = None
        self._playing_response: str | None = None  #: the response of the audio fed last
        self.responses_active = 0
        self.responses_done = 0
        self.user_speaking = False
        self.closed_by_server = False

    async def send(self, event: dict[str, Any]) -> None:
        if self.print_json:
            self.console.json("->", event)
        await self.ws.send_message(json.dumps(event))

    async def append(self, samples: Float32, rate: int) -> None:
        """Send microphone samples taken at ``rate`` Hz (silence while blocked by playback)."""
        if self._to_wire is None or self._to_wire.src_rate != rate:
            self._to_wire = StreamingResampler(rate, WIRE_RATE)
        if self.block_mic and self.player.busy:
            samples = np.zeros_like(samples)
        wire = self._to_wire(samples)
        if wire.size:
            await self.ws.send_message(append_event(wire))

    @property
    def reply_finished(self) -> bool:
        """A reply came, is complete and fully played, and the user is not speaking."""
        return (
            self.responses_done > 0
            and not self.responses_active
            and not self.user_speaking
            and not self.player.busy
        )

    async def receive_events(self) -> None:
        """Handle server events until the server closes the connection."""
        try:
            while True:
                event = json.loads(await self.ws.get_message())
                if self.print_json:
                    self.console.json("<-", event)
                await self.handle(event)
        except trio_websocket.ConnectionClosed as closed:
            self.closed_by_server = True
            self.console.note(f"connection closed: {closed.reason}")

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "session.created":
            self.console.note(f"connected: session {event['session'].get('id')}")
        elif kind == "input_audio_buffer.speech_started":
            self.user_speaking = True
            await self.barge_in()
        elif kind == "input_audio_buffer.speech_stopped":
            self.user_speaking = False
            self._speech_stopped_at = trio.current_time()
        elif kind == "conversation.item.input_audio_transcription.delta":
            self.console.user_delta(event["item_id"], event.get("delta") or "")
        elif kind == "conversation.item.input_audio_transcription.completed":
            self.console.user_final(event["item_id"], event["transcript"])
        elif kind == "response.created":
            self.responses_active += 1
        elif kind == "response.output_audio.delta":
            self.play(event)
        elif kind in ("response.output_audio_transcript.delta", "response.output_text.delta"):
            if event["response_id"] not in self._interrupted:
                self.console.assistant_delta(event["delta"])
        elif kind in ("response.output_audio_transcript.done", "response.output_text.done"):
            self.console.assistant_done()
        elif kind == "response.done":
            self.responses_active -= 1
            self.responses_done += 1
            self.console.assistant_done()
            status = event["response"]["status"]
            if status != "completed":
                self.console.note(f"response {status}")
            elif any(item["type"] == "mcp_call" for item in event["response"]["output"]):
                # the session's MCP tools answered: ask for the answer, as OpenAI's clients do
                await self.send({"type": "response.create"})
        elif kind == "error":
            error = event["error"]
            self.console.note(f"error {error.get('code')}: {error.get('message')}")

    def play(self, event: dict[str, Any]) -> None:
        if event["response_id"] in self._interrupted:
            return
        item_id = event["item_id"]
        if self._from_wire is None or self._from_wire[0] != item_id:
            self._from_wire = (item_id, StreamingResampler(WIRE_RATE, self.player.rate))
            if self._speech_stopped_at is not None:
                latency_ms = (trio.current_time() - self._speech_stopped_at) * 1000
                self.console.note(f"end of speech -> first audio: {latency_ms:.0f} ms")
                self._speech_stopped_at = None
        self.player.feed(item_id, self._from_wire[1](audio_of(event)))
        self._playing_response = event["response_id"]

    async def barge_in(self) -> None:
        """The user speaks: stop playback now and tell the server how much was heard."""
        stopped = self.player.clear()
        if stopped is None:
            return
        item_id, played_ms = stopped
        if self._playing_response is not None:
            self._interrupted.add(self._playing_response)
        self.console.note(f"interrupted: {played_ms} ms of the reply were played")
        await self.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": played_ms,
            }
        )


# --- audio sources and sinks -----------------------------------------------------------------


async def stream_wav(client: VoiceClient, path: Path, args: Any) -> bool:
    """Send the file in real time, then silence until the reply is done, then ``--tail-ms`` of
    silence. False when no complete reply came within ``--timeout`` s of the file's end."""
    samples, rate = read_wav(path)
    pacer = Pacer(args.realtime_factor)
    for start in range(0, len(samples), args.chunk_size):
        chunk = samples[start : start + args.chunk_size]
        await client.append(chunk, rate)
        await pacer.advance(len(chunk) / rate)
    silence = np.zeros(args.chunk_size, np.float32)
    with trio.move_on_after(args.timeout) as waiting:
        while not client.reply_finished:
            await client.append(silence, rate)
            await pacer.advance(args.chunk_size / rate)
    if waiting.cancelled_caught:
        client.console.note(f"no complete reply within {args.timeout:.0f} s of the input's end")
        return False
    for _ in range(math.ceil(args.tail_ms / 1000 * rate / args.chunk_size)):
        await client.append(silence, rate)
        await pacer.advance(args.chunk_size / rate)
    return True


async def stream_microphone(client: VoiceClient, args: Any) -> None:
    async with microphone(args.send_rate, args.chunk_size) as chunks:
        async for chunk in chunks:
            await client.append(chunk, args.send_rate)


def sounddevice() -> Any:
    """The ``sounddevice`` module, imported only when a sound device is used."""
    try:
        import sounddevice
    except (ImportError, OSError) as error:  # OSError: the PortAudio library is missing
        raise SystemExit(
            f"no sound devices ({error}): pip install -e '.[clients]', "
            "or use --input-wav and --output-wav"
        ) from None
    return sounddevice


@asynccontextmanager
async def microphone(rate: int, chunk_size: int) -> AsyncIterator[trio.MemoryReceiveChannel[Any]]:
    """Chunks of ``chunk_size`` float32 samples from the default input device."""
    token = trio.lowlevel.current_trio_token()
    send, receive = trio.open_memory_channel[Float32](64)

    def offer(chunk: Float32) -> None:
        try:
            send.send_nowait(chunk)
        except trio.WouldBlock:
            pass  # the network fell behind: dropping audio beats delaying the whole stream

    def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
        try:
            token.run_sync_soon(offer, indata[:, 0].copy())
        except trio.RunFinishedError:
            pass

    with sounddevice().InputStream(
        samplerate=rate, channels=1, dtype="float32", blocksize=chunk_size, callback=callback
    ):
        yield receive


@contextmanager
def speaker(player: Player, chunk_size: int) -> Iterator[None]:
    """Play the player's audio on the default output device until the block ends."""

    def callback(outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        samples = player.read(frames)
        outdata[: samples.size, 0] = samples
        outdata[samples.size :, 0] = 0.0

    with sounddevice().OutputStream(
        samplerate=player.rate,
        channels=1,
        dtype="float32",
        blocksize=chunk_size,
        callback=callback,
    ):
        yield


async def record_wav(player: Player, path: Path, chunk_size: int, factor: float) -> None:
    """Play into a wav file: take ``chunk_size`` samples per chunk period, as a speaker would."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(player.rate)
        pacer = Pacer(factor)
        while True:
            samples = player.read(chunk_size)
            if samples.size:
                wav.writeframes(encode(samples, "audio/pcm"))
            await pacer.advance(chunk_size / player.rate)


async def exit_on_ctrl_c(scope: trio.CancelScope, console: Console) -> None:
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            console.note("bye")
            scope.cancel()
            return


async def run(args: Any) -> int:
    """The conversation, until Ctrl-C, the server's close, or the end of ``--input-wav``'s
    reply. Exit status: 0, or 1 when the server closed or no reply came."""
    if args.input_wav is None or args.output_wav is None:
        sounddevice()  # fail now, not once connected
    console = Console()
    player = Player(args.recv_rate)
    finished = True
    async with open_realtime(args.url, api_key=args.api_key) as ws:
        client = VoiceClient(ws, player, console, args)
        await client.send(session_update(instructions=args.instructions, voice=args.voice))
        with ExitStack() as devices:
            if args.output_wav is None:
                devices.enter_context(speaker(player, args.chunk_size))
            async with trio.open_nursery() as nursery:

                async def receive() -> None:
                    await client.receive_events()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(receive)
                nursery.start_soon(exit_on_ctrl_c, nursery.cancel_scope, console)
                if args.output_wav is not None:
                    nursery.start_soon(
                        record_wav, player, args.output_wav, args.chunk_size, args.realtime_factor
                    )
                if args.input_wav is not None:
                    finished = await stream_wav(client, args.input_wav, args)
                else:
                    await stream_microphone(client, args)
                nursery.cancel_scope.cancel()
    return 1 if client.closed_by_server or not finished else 0


def add_session_flags(p: argparse.ArgumentParser) -> None:
    """The flags of both clients: where to connect, and the session's settings."""
    p.add_argument("--url", default=DEFAULT_URL, help="the server's Realtime WebSocket URL")
    p.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY"),
        help="sent as Authorization: Bearer (default: $OPENAI_API_KEY)",
    )
    p.add_argument("--voice", default=None, help="the assistant's voice (default: the server's)")
    p.add_argument("--instructions", default=None, help="the session's instructions")
    p.add_argument("--print-json", action="store_true", help="print every event (audio elided)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_session_flags(p)
    p.add_argument("--send-rate", type=int, default=16000, help="microphone rate, Hz")
    p.add_argument("--recv-rate", type=int, default=16000, help="speaker (and output wav) rate, Hz")
    p.add_argument("--chunk-size", type=int, default=1024, help="samples per audio block")
    p.add_argument(
        "--block-mic-during-playback",
        action="store_true",
        help="send silence while a reply plays (no barge-in; for speakers without echo cancelling)",
    )
    p.add_argument("--input-wav", type=Path, help="a 16-bit wav to send instead of the microphone")
    p.add_argument("--output-wav", type=Path, help="record the reply here instead of playing it")
    p.add_argument(
        "--realtime-factor",
        type=float,
        default=1.0,
        help="with wav files: how many times faster than real time audio moves",
    )
    p.add_argument(
        "--tail-ms", type=int, default=500, help="silence sent after the reply (--input-wav)"
    )
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the reply (--input-wav)"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        return trio.run(run, parse_args(argv))
    except KeyboardInterrupt:  # Ctrl-C before the session was up
        return 130


if __name__ == "__main__":
    sys.exit(main())
