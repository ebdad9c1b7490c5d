"""A real HTTP server on 127.0.0.1 that streams scripted answers of the Responses API
(``POST /v1/responses``) and Chat Completions (``POST /v1/chat/completions``) as server-sent
events, answers ``POST /v1/audio/transcriptions`` with a JSON transcription and streams raw PCM
from ``POST /v1/audio/speech``, so the remote engines are tested through the real ``openai``
client and sockets.

A script is a list of :class:`Reply`, one per request, taken in order. A reply's steps are
events (dicts, sent as they are; a transcription's one dict is its JSON body), audio (bytes,
each one chunk of a speech body), pauses (seconds, as floats), gates (a ``threading.Event``
the reply waits for, set by the test), :data:`STALL` and :data:`DROP`.
The builders :class:`ResponsesScript` and :class:`ChatScript` write the events of each API in
the same terms, so one test can script either; :class:`AudioScript` writes the audio answers."""

from __future__ import annotations

import io
import itertools
import json
import select
import socket
import threading
import time
import wave
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import attrs

#: A step that sends nothing more and holds the connection until the client closes it.
STALL = "stall"
#: A step that closes the connection at once, in the middle of the reply's body.
DROP = "drop"

Step = dict[str, Any] | bytes | float | str | threading.Event
Call = tuple[str, str, list[str]]  #: (call_id, name, the arguments' streamed pieces)


@attrs.frozen
class Reply:
    steps: tuple[Step, ...] = ()
    status: int = 200
    error: str = ""  #: the message of a non-200 reply's OpenAI-shaped error body
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class WavFile:
    """The audio file of a transcription request, as the server read it."""

    filename: str
    content_type: str
    sample_rate: int  #: Hz
    channels: int
    sample_width: int  #: bytes per sample
    frames: bytes  #: the PCM data

    @property
    def samples(self) -> int:
        """Samples per channel."""
        return len(self.frames) // (self.sample_width * self.channels)


@attrs.frozen
class Received:
    path: str
    headers: dict[str, str]  #: names in lower case
    #: the JSON body, or a form's text fields (a repeated field as a list of its values)
    body: dict[str, Any]
    audio: WavFile | None = None  #: a form's ``file``


class FakeOpenAIServer:
    """``with FakeOpenAIServer() as server:`` -- serves at :attr:`base_url` until the block ends."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.received: list[Received] = []
        self.connections = 0  #: TCP connections accepted
        self.finished = threading.Event()  #: a reply's scripted steps were all sent
        self.disconnected = threading.Event()  #: the client left before a reply's end
        self.stopping = threading.Event()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._http.daemon_threads = True
        self._http.fake = self  # type: ignore[attr-defined]
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def script(self, *replies: Reply | list[Step]) -> None:
        """Queue the replies to the next requests (a list of steps is a 200 reply)."""
        self.replies += [r if isinstance(r, Reply) else Reply(tuple(r)) for r in replies]

    def connected(self) -> None:
        """Count a new connection (called from the connection's thread)."""
        with self._lock:
            self.connections += 1

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked streaming, and keep-alive as real servers do
    disable_nagle_algorithm = True  # TCP_NODELAY, as real servers set: no write waits for an ACK

    def setup(self) -> None:
        super().setup()
        self.fake.connected()

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError:
            pass  # the client reset a kept-alive connection between requests

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests assert on what the server received instead

    @property
    def fake(self) -> FakeOpenAIServer:
        return self.server.fake  # type: ignore[attr-defined, no-any-return]

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {name.lower(): value for name, value in self.headers.items()}
        if headers.get("content-type", "").startswith("multipart/form-data"):
            body, audio = _form(data, headers["content-type"])
            self.fake.received.append(Received(self.path, headers, body, audio))
        else:
            self.fake.received.append(Received(self.path, headers, json.loads(data)))
        reply = self.fake.replies.pop(0)
        if reply.status != 200:
            self._send_error(reply)
            return
        if self.path.endswith("/audio/transcriptions"):
            self._send_transcription(reply)
            return
        speech = self.path.endswith("/audio/speech")
        chat = self.path.endswith("/chat/completions")
        self.send_response(200)
        self.send_header("Content-Type", "audio/pcm" if speech else "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            outcome = self._stream(reply, chat=chat)
        except OSError:  # broken pipe or reset: the client went away mid-write
            outcome = "left"
        if outcome == "sent":
            self.fake.finished.set()
            if chat:
                self._chunk("data: [DONE]\n\n")
            self._chunk("")  # the last chunk of the body
        elif outcome == "left":
            self.close_connection = True
            self.fake.disconnected.set()

    def _stream(self, reply: Reply, *, chat: bool) -> Literal["sent", "left", "dropped"]:
        """Send the reply's scripted steps, unless the client leaves first or a step drops
        the connection."""
        for number, step in enumerate(reply.steps):
            if step == DROP:
                self._drop()
                return "dropped"
            if step == STALL:
                self._client_left(60.0)
                return "left"
            if isinstance(step, float | int):
                if self._client_left(step):
                    return "left"
                continue
            if isinstance(step, threading.Event):
                while not step.is_set():
                    if self._client_left(0.02):
                        return "left"
                continue
            if isinstance(step, bytes):
                self._chunk(step)
            elif chat:
                self._chunk(f"data: {json.dumps(step)}\n\n")
            else:
                assert isinstance(step, dict)
                event = {**step, "sequence_number": number}
                self._chunk(f"event: {step['type']}\ndata: {json.dumps(event)}\n\n")
        return "sent"

    def _send_transcription(self, reply: Reply) -> None:
        """The reply's pauses, then its one dict as the JSON body."""
        for step in reply.steps:
            if step == DROP:
                self._drop()
                return
            if isinstance(step, dict):
                self.fake.finished.set()  # before the client can have the answer
                self._send_json(200, step)
                return
            wait_s = 60.0 if step == STALL else step
            assert isinstance(wait_s, float | int)
            if self._client_left(wait_s):
                self.close_connection = True
                self.fake.disconnected.set()
                return

    def _drop(self) -> None:
        """Close the connection in the middle of the reply (a crashed server)."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _chunk(self, text: str | bytes) -> None:
        data = text if isinstance(text, bytes) else text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _client_left(self, wait_s: float) -> bool:
        """Wait ``wait_s`` seconds; True as soon as the client has closed the connection."""
        deadline = time.monotonic() + wait_s
        while (remaining := deadline - time.monotonic()) > 0 and not self.fake.stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], min(remaining, 0.02))
            if readable:
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return True
                except OSError:
                    return True
                time.sleep(min(remaining, 0.02))
        return self.fake.stopping.is_set()

    def _send_error(self, reply: Reply) -> None:
        error = {"message": reply.error, "type": "server_error", "code": None}
        self._send_json(reply.status, {"error": error}, reply.headers)

    def _send_json(
        self, status: int, body: dict[str, Any], headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _form(data: bytes, content_type: str) -> tuple[dict[str, Any], WavFile | None]:
    """The text fields and the WAV ``file`` of a ``multipart/form-data`` body. An array
    field (``include[]``) is a list of its values."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    fields: dict[str, Any] = {}
    audio = None
    for part in data.split(b"--" + boundary)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        part_headers = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in head.decode().split("\r\n"))
        )
        params = {
            key.strip(): value.strip('"')
            for key, _, value in (
                item.partition("=") for item in part_headers["content-disposition"].split(";")[1:]
            )
        }
        name = params["name"]
        if "filename" in params:
            with wave.open(io.BytesIO(content), "rb") as wav:
                audio = WavFile(
                    filename=params["filename"],
                    content_type=part_headers.get("content-type", ""),
                    sample_rate=wav.getframerate(),
                    channels=wav.getnchannels(),
                    sample_width=wav.getsampwidth(),
                    frames=wav.readframes(wav.getnframes()),
                )
        elif name.endswith("[]"):
            fields.setdefault(name, []).append(content.decode())
        else:
            fields[name] = content.decode()
    return fields, audio


# --- scripts ---------------------------------------------------------------------------------


class ResponsesScript:
    """Events of a streamed Responses API answer."""

    def start(self) -> list[Step]:
        return [{"type": "response.created", "response": self.response("in_progress")}]

    def text(self, *pieces: str) -> list[Step]:
        return [
            {
                "type": "response.output_text.delta",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
            }
            for piece in pieces
        ]

    def tool_calls(self, *calls: Call) -> list[Step]:
        """Each call in turn: item added, argument pieces, arguments done, item done."""
        steps: list[Step] = []
        for index, (call_id, name, pieces) in enumerate(calls, start=1):
            item = {"type": "function_call", "id": f"fc_{index}", "call_id": call_id, "name": name}
            where = {"item_id": f"fc_{index}", "output_index": index}
            arguments = "".join(pieces)
            steps.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "arguments": "", "status": "in_progress"},
                }
            )
            steps += [
                {"type": "response.function_call_arguments.delta", "delta": piece, **where}
                for piece in pieces
            ]
            steps.append(
                {"type": "response.function_call_arguments.done", "arguments": arguments, **where}
            )
            steps.append(
                {
                    "type": "response.output_item.done",
                    "output_index": index,
                    "item": {**item, "arguments": arguments, "status": "completed"},
                }
            )
        return steps

    def end(self, input_tokens: int, output_tokens: int, *, truncated: bool = False) -> list[Step]:
        usage = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }
        if truncated:
            response = self.response("incomplete", usage, {"reason": "max_output_tokens"})
            return [{"type": "response.incomplete", "response": response}]
        return [{"type": "response.completed", "response": self.response("completed", usage)}]

    def error(self, message: str) -> list[Step]:
        return [{"type": "error", "code": "server_error", "message": message, "param": None}]

    def failed(self, message: str) -> list[Step]:
        response = self.response("failed") | {"error": {"code": "server_error", "message": message}}
        return [{"type": "response.failed", "response": response}]

    @staticmethod
    def response(
        status: str, usage: dict[str, Any] | None = None, incomplete: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "id": "resp_1",
            "object": "response",
            "created_at": 1_700_000_000,
            "model": "gpt-test",
            "status": status,
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage,
            "incomplete_details": incomplete,
            "error": None,
            "instructions": None,
            "metadata": {},
            "temperature": 1.0,
            "top_p": 1.0,
        }


class ChatScript:
    """Chunks of a streamed Chat Completions answer."""

    def start(self) -> list[Step]:
        return [self.chunk({"role": "assistant", "content": ""})]

    def text(self, *pieces: str) -> list[Step]:
        return [self.chunk({"content": piece}) for piece in pieces]

    def tool_calls(self, *calls: Call) -> list[Step]:
        """Each call in turn: its id and name with no arguments, then the argument pieces."""
        steps: list[Step] = []
        for index, (call_id, name, pieces) in enumerate(calls):
            function = {"name": name, "arguments": ""}
            steps.append(self.tool_piece(index, id=call_id, type="function", function=function))
            steps += [self.tool_piece(index, function={"arguments": p}) for p in pieces]
        return steps

    def end(
        self, input_tokens: int, output_tokens: int, *, truncated: bool = False, usage: bool = True
    ) -> list[Step]:
        steps: list[Step] = [self.chunk({}, finish_reason="length" if truncated else "stop")]
        if usage:
            counts = {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            }
            steps.append({**self.chunk({}), "choices": [], "usage": counts})
        return steps

    def error(self, message: str) -> list[Step]:
        """What vLLM sends when generation fails mid-stream."""
        return [{"error": {"message": message, "type": "InternalServerError", "code": 500}}]

    def tool_piece(self, index: int | None, **piece: Any) -> dict[str, Any]:
        """A chunk with one tool-call piece (``index=None`` leaves the index out)."""
        return self.chunk({"tool_calls": [piece if index is None else {"index": index, **piece}]})

    @staticmethod
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "test-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }


class AudioScript:
    """Answers of the audio endpoints."""

    @staticmethod
    def transcript(text: str, logprobs: Sequence[tuple[str, float]] = ()) -> dict[str, Any]:
        """A ``json`` transcription; with ``logprobs``, as ``include=["logprobs"]`` gives."""
        body: dict[str, Any] = {"text": text}
        if logprobs:
            body["logprobs"] = [
                {"token": token, "logprob": logprob, "bytes": list(token.encode())}
                for token, logprob in logprobs
            ]
        return body

    @staticmethod
    def speech(pcm: bytes, *cuts: int, pause_s: float = 0.05) -> list[Step]:
        """``pcm`` as body chunks that end at the byte offsets ``cuts``, a pause between
        each two (so the client reads them apart)."""
        bounds = [0, *cuts, len(pcm)]
        steps: list[Step] = []
        for start, end in itertools.pairwise(bounds):
            if steps:
                steps.append(pause_s)
            steps.append(pcm[start:end])
        return steps
