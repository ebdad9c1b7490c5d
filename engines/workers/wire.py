"""The frames between the server and an engine worker process, over one socket pair.

A frame is a ``multiprocessing.connection`` message (4-byte length, then the bytes): a header
(kind, call id, length of the metadata), pickled metadata, then raw bytes. Audio always
travels as the raw bytes of float32 samples, never as a pickled array: a TTS chunk costs one
copy on each side. The metadata is small (a call's options, an LLM delta, a transcript).

One call runs at a time on a worker. The server sends ``CALL``; the worker answers with any
number of ``ITEM`` / ``AUDIO`` frames and then exactly one ``END`` or ``ERROR``. ``CANCEL``
may follow a ``CALL`` at any moment; the worker stops the call at its next token or chunk and
still ends it with ``END``. Call ids let the worker ignore a cancel that arrives after its
call ended.

A streaming call is pulled, as an in-process generator is: the worker produces results only
``window`` ahead of what the server's consumer has taken, and each ``MORE`` frame lets it
produce one more. So an LLM whose text waits for the TTS waits too, instead of taking the
CPU from it.
"""

from __future__ import annotations

import enum
import pickle
import struct
from multiprocessing.connection import Connection
from typing import Any

import attrs

_HEADER = struct.Struct("<cII")  # kind, call id, metadata length


class Kind(enum.Enum):
    SPEC = b"S"  #: server -> worker, once: the pickled engine builder
    READY = b"R"  #: worker -> server, once: the engine's attributes (sample rate, voices)
    CALL = b"C"  #: server -> worker: method and options; the input audio as raw bytes
    CANCEL = b"X"  #: server -> worker: stop the call with this id
    MORE = b"M"  #: server -> worker: the call's consumer took a result; produce one more
    ITEM = b"I"  #: worker -> server: one pickled result (a transcript, an LLM event, a score)
    AUDIO = b"A"  #: worker -> server: one TTS chunk, raw float32 samples
    END = b"E"  #: worker -> server: the call is over
    ERROR = b"F"  #: worker -> server: the call (or the start-up) failed; a WorkerError


@attrs.frozen
class Frame:
    kind: Kind
    call_id: int = 0
    meta: Any = None
    raw: bytes = b""


@attrs.frozen
class WorkerError:
    """An exception raised in a worker, as the server rebuilds it."""

    type_name: str  #: the exception's class name
    message: str
    engine_error: bool  #: an ``EngineError`` (a failure the engine reports) or a bug
    missing_dependency: bool = False
    code: str = "engine_error"  #: an ``EngineError``'s ``code``, told to the client


def send(connection: Connection, frame: Frame) -> None:
    meta = b"" if frame.meta is None else pickle.dumps(frame.meta, pickle.HIGHEST_PROTOCOL)
    header = _HEADER.pack(frame.kind.value, frame.call_id, len(meta))
    connection.send_bytes(b"".join((header, meta, frame.raw)))


def receive(connection: Connection) -> Frame:
    """The next frame; ``EOFError`` when the other side closed or died."""
    data = connection.recv_bytes()
    kind, call_id, meta_length = _HEADER.unpack_from(data)
    start = _HEADER.size
    meta = pickle.loads(data[start : start + meta_length]) if meta_length else None
    return Frame(Kind(kind), call_id, meta, data[start + meta_length :])
