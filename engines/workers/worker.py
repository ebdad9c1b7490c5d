"""The engine worker process: ``python -m engines.workers.worker FD``.

It receives a pickled engine builder on the socket ``FD``, builds the engine (loading its
model), says READY with the engine's attributes, then serves calls one at a time until the
server closes the socket. A reader thread takes frames off the socket so that a cancel
reaches the running call at once; the main thread runs the engine and sends its results.

Nothing here knows the protocol or Trio. A crash in the engine's native code ends only this
process; faulthandler writes the Python stack of the crash to stderr, which is the server's.
"""

from __future__ import annotations

import faulthandler
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Generator
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from engines.base import CancelToken, EngineError, MissingDependency

from . import wire
from .wire import Frame, Kind, WorkerError

#: exit status of a worker whose engine could not be built
START_FAILED = 3


def error_of(exc: BaseException) -> WorkerError:
    return WorkerError(
        type_name=type(exc).__name__,
        message=str(exc) or type(exc).__name__,
        # SystemExit: a builder's refusal of its flags, worded for the user
        engine_error=isinstance(exc, EngineError | SystemExit),
        missing_dependency=isinstance(exc, MissingDependency),
        code=exc.code if isinstance(exc, EngineError) else EngineError.code,
    )


def engine_info(engine: Any) -> dict[str, Any]:
    """What the server's side of the engine needs to know without calling it."""
    info: dict[str, Any] = {"type": type(engine).__name__}
    for name in ("sample_rate", "frame_samples"):
        if hasattr(engine, name):
            info[name] = getattr(engine, name)
    if callable(getattr(engine, "voices", None)):
        info["voices"] = tuple(engine.voices())
    return info


class Calls:
    """The reader thread's side: calls waiting to run, and the running call's cancel token
    and credit (how many more results it may produce before the server takes one)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.waiting: queue.SimpleQueue[Frame | None] = queue.SimpleQueue()
        self._changed = threading.Condition()
        self._running: tuple[int, CancelToken] | None = None
        self._credit: int | None = None  # None: unlimited

    def read(self) -> None:
        """Read frames until the server goes away, then cancel the running call and stop."""
        try:
            while True:
                frame = wire.receive(self.connection)
                if frame.kind is Kind.CALL:
                    self.waiting.put(frame)
                elif frame.kind is Kind.CANCEL:
                    self._cancel(frame.call_id)
                elif frame.kind is Kind.MORE:
                    self._more(frame.call_id)
        except (EOFError, OSError):
            self._cancel(None)
            self.waiting.put(None)

    def start(self, call_id: int, window: int | None) -> CancelToken:
        token = CancelToken()
        with self._changed:
            self._running, self._credit = (call_id, token), window
        return token

    def finish(self) -> None:
        with self._changed:
            self._running = None

    def take_credit(self, token: CancelToken) -> bool:
        """Wait until the call may produce one more result; False once it is cancelled."""
        with self._changed:
            while self._credit is not None and self._credit <= 0 and not token.cancelled:
                self._changed.wait()
            if token.cancelled:
                return False
            if self._credit is not None:
                self._credit -= 1
            return True

    def _more(self, call_id: int) -> None:
        with self._changed:
            if self._running is not None and self._running[0] == call_id:
                assert self._credit is not None
                self._credit += 1
                self._changed.notify_all()

    def _cancel(self, call_id: int | None) -> None:
        with self._changed:
            running = self._running
            if running is not None and call_id in (None, running[0]):
                running[1].cancel()
            self._changed.notify_all()


def results(engine: Any, frame: Frame, token: CancelToken) -> Generator[Frame, None, None]:
    """Run one call on ``engine``; its results as frames (without the closing END)."""
    method, options, _ = frame.meta
    call_id = frame.call_id
    if method == "transcribe":
        audio = np.frombuffer(frame.raw, np.float32)
        yield Frame(Kind.ITEM, call_id, engine.transcribe(audio, cancel=token, **options))
    elif method == "probability":
        audio = np.frombuffer(frame.raw, np.float32)
        yield Frame(Kind.ITEM, call_id, float(engine.probability(audio)))
    elif method == "stream":
        for event in engine.stream(options["request"], token):
            yield Frame(Kind.ITEM, call_id, event)
    elif method == "synthesize":
        for chunk in engine.synthesize(cancel=token, **options):
            yield Frame(Kind.AUDIO, call_id, raw=np.ascontiguousarray(chunk, np.float32).tobytes())
    else:
        raise EngineError(f"the worker's engine has no method {method!r}")


def serve(connection: Connection) -> None:
    spec = wire.receive(connection)
    if spec.kind is not Kind.SPEC:
        raise SystemExit(f"expected the engine spec, got {spec.kind}")
    build: Callable[[], Any] = spec.meta
    try:
        engine = build()
        if engine is None:
            raise MissingDependency("engine", "embedded", "its model (the builder found none)")
    except BaseException as exc:  # the server reports why the engine did not start
        wire.send(connection, Frame(Kind.ERROR, meta=error_of(exc)))
        raise SystemExit(START_FAILED) from None
    wire.send(connection, Frame(Kind.READY, meta=engine_info(engine)))
    calls = Calls(connection)
    threading.Thread(target=calls.read, name="worker-reader", daemon=True).start()
    while (frame := calls.waiting.get()) is not None:
        token = calls.start(frame.call_id, window=frame.meta[2])
        try:
            produced = results(engine, frame, token)
            while calls.take_credit(token):
                result = next(produced, None)
                if result is None or token.cancelled:
                    break
                wire.send(connection, result)
            produced.close()
            closing = Frame(Kind.END, frame.call_id)
        except Exception as exc:  # reported to the server, which fails the call with it
            closing = Frame(Kind.ERROR, frame.call_id, error_of(exc))
        finally:
            calls.finish()
        try:
            wire.send(connection, closing)
        except (BrokenPipeError, ConnectionResetError):
            return  # the server is gone


def main(argv: list[str]) -> None:
    # Ctrl-C reaches the whole process group; the server decides when its workers stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()
    connection = Connection(int(argv[1]))
    try:
        serve(connection)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the server went away: nothing left to serve
    sys.stdout.flush()
    sys.stderr.flush()
    # skip the interpreter's final collection: native thread pools can abort in it
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
