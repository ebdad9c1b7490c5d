"""One engine in a worker process of its own, started, watched and restarted by the server.

:class:`EngineWorker` is the server's side of a worker. :meth:`EngineWorker.call` runs one
call on it (from a thread: ``realtime.threads`` drives engines that way) and yields its
results; a cancel of the call's token is sent to the worker at once, which stops at its next
token or chunk. When the worker dies, whatever the cause (a signal, an exit, an OOM kill), the
call under way raises :class:`~engines.base.EngineFailed` naming the engine and the cause, and
the worker's monitor thread restarts it after a back-off. A worker with a call under way that
has sent nothing for ``call_timeout_s`` is hung in native code: it is killed and restarted
like a dead one.

The monitor is a thread, not a Trio task, because a worker outlives any one Trio run (tests
and benchmarks serve one pool from several) and waiting for a child process blocks.
"""

from __future__ import annotations

import enum
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from engines.base import CancelToken, EngineError, EngineFailed

from . import wire
from .wire import Frame, Kind, WorkerError

log = logging.getLogger("engines.workers")

#: the folder that holds the ``engines`` package: workers import engines (and the builders'
#: modules) from it whatever the server's working directory
_ROOT = str(Path(__file__).resolve().parents[2])


class WorkerState(enum.Enum):
    STARTING = "starting"  #: spawned, loading its model
    READY = "ready"  #: serving calls
    RESTARTING = "restarting"  #: died; waiting out the back-off before the next start
    FAILED = "failed"  #: gave up: it kept dying before it was ready
    STOPPED = "stopped"  #: closed by the server


def describe_exit(returncode: int) -> str:
    """``SIGSEGV``, ``SIGKILL (OOM killer or kill -9)``, ``exit status 3``, ..."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"{name} (OOM killer or kill -9)" if -returncode == signal.SIGKILL else name
    return f"exit status {returncode}"


class MissingDependencyReported(EngineError):
    """A worker's engine could not start: its optional dependency or model is not installed
    (:class:`~engines.base.MissingDependency` in the worker; the message says what to do)."""


def rebuild(error: WorkerError) -> EngineError:
    """The server's exception for an exception raised in a worker."""
    if error.missing_dependency:
        return MissingDependencyReported(error.message)
    if error.engine_error:
        rebuilt = EngineError(error.message)
        rebuilt.code = error.code
        return rebuilt
    return EngineError(f"{error.type_name}: {error.message}")


class _Link:
    """One incarnation of a worker: its process and its socket."""

    def __init__(self, process: subprocess.Popen[bytes], connection: Connection) -> None:
        self.process = process
        self.connection = connection
        self.send_lock = threading.Lock()
        self.info: dict[str, Any] = {}
        self.call_id = 0
        #: since when a caller has been waiting for the worker's next frame (None: no one is)
        self.waiting_since: float | None = None
        self.hung = False  #: killed by the watchdog
        self.spawned = time.monotonic()

    def send(self, frame: Frame) -> None:
        with self.send_lock:
            wire.send(self.connection, frame)

    def cancel(self, call_id: int) -> None:
        try:
            self.send(Frame(Kind.CANCEL, call_id))
        except OSError:
            pass  # the worker is gone: its call fails on its own

    def receive(self) -> Frame:
        self.waiting_since = time.monotonic()
        try:
            return wire.receive(self.connection)
        finally:
            self.waiting_since = None


class EngineWorker:
    """A supervised worker process for one engine.

    ``build`` is a picklable callable (a module-level function or class, or a
    ``functools.partial`` of one) that the worker calls to build the engine. ``name`` says
    which engine in logs and errors ("pipeline 0 llm"). A worker whose start fails (its
    engine raises while loading) is restarted too, up to ``max_failed_starts`` times in a row.
    """

    def __init__(
        self,
        name: str,
        build: Callable[[], Any],
        *,
        call_timeout_s: float = 30.0,
        start_timeout_s: float = 900.0,
        max_failed_starts: int = 5,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        unhealthy_crashes: tuple[int, float] = (3, 60.0),
    ) -> None:
        self.name = name
        self._build = build
        self.call_timeout_s = call_timeout_s
        self.start_timeout_s = start_timeout_s
        self.max_failed_starts = max_failed_starts
        self.backoff_s = backoff_s
        self.unhealthy_crashes = unhealthy_crashes
        self.state = WorkerState.STOPPED
        self.restarts = 0  #: starts after the first
        self.crashes = 0  #: deaths the server did not ask for
        self.last_exit: str | None = None  #: how the last incarnation ended
        self.load_seconds = 0.0  #: from the last start of the process to its READY
        self._crash_times: deque[float] = deque(maxlen=64)
        self._link: _Link | None = None
        self._changed = threading.Condition()
        self._call_lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def spawn(self) -> None:
        """Start the process; :meth:`wait_ready` waits for its engine to load."""
        if self._monitor is not None:
            raise RuntimeError(f"{self.name} worker was started already")
        self._link = self._spawn()
        self._set_state(WorkerState.STARTING)

    def wait_ready(self) -> None:
        """Wait for the first start to finish; then watch the worker. An engine that cannot
        start raises :class:`EngineError` (its own message) and the worker is not restarted."""
        link = self._link
        assert link is not None, "spawn() first"
        try:
            self._handshake(link)
        except EngineError:
            self._reap(link)
            self._set_state(WorkerState.FAILED)
            raise
        self._set_state(WorkerState.READY)
        self._monitor = threading.Thread(target=self._watch, name=f"watch {self.name}", daemon=True)
        self._monitor.start()

    def start(self) -> EngineWorker:
        self.spawn()
        self.wait_ready()
        return self

    def close(self) -> None:
        """Stop the worker: it exits when its socket closes; one that does not is killed."""
        self._stop.set()
        with self._changed:
            link, self._link = self._link, None
            self.state = WorkerState.STOPPED
            self._changed.notify_all()
        if link is not None:
            link.connection.close()
            self._reap(link, grace_s=2.0)
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(5)

    @property
    def pid(self) -> int | None:
        link = self._link
        return None if link is None else link.process.pid

    @property
    def info(self) -> dict[str, Any]:
        """The engine's attributes (``sample_rate``, ``voices``, ``type``) as it reported them."""
        link = self._link
        return {} if link is None else link.info

    @property
    def healthy(self) -> bool:
        """Ready, and not dying again and again (``unhealthy_crashes``: so many crashes within
        so many seconds)."""
        return self.state is WorkerState.READY and self._recent() < self.unhealthy_crashes[0]

    # --- calls -----------------------------------------------------------------------------

    def call(
        self,
        method: str,
        options: dict[str, Any],
        token: CancelToken,
        audio: bytes = b"",
        window: int | None = None,
    ) -> Iterator[Frame]:
        """Run ``method`` on the engine; yield its ITEM and AUDIO frames. Blocking: call it from
        a worker thread. ``window``: how many results the worker may produce ahead of this
        iterator's consumer (None: all). Cancelling ``token`` stops the call at the worker's
        next token or chunk; closing the iterator early cancels the call and waits for its end,
        so the next call starts on a quiet worker."""
        while not self._call_lock.acquire(timeout=0.05):
            if token.cancelled:
                return
        try:
            link = None if token.cancelled else self._ready_link(token)
            if link is None:
                return
            link.call_id += 1
            call_id = link.call_id
            link.hung = False
            ended = False
            try:
                link.send(Frame(Kind.CALL, call_id, (method, options, window), audio))
            except OSError:
                raise self._died(link) from None
            forget = token.on_cancel(lambda: link.cancel(call_id))
            try:
                while True:
                    frame = self._receive(link)
                    if frame.kind is Kind.END:
                        ended = True
                        return
                    if frame.kind is Kind.ERROR:
                        ended = True
                        raise rebuild(frame.meta)
                    yield frame
                    if window is not None:
                        try:
                            link.send(Frame(Kind.MORE, call_id))
                        except OSError:
                            pass  # the worker died: the next receive says how
            finally:
                forget()
                if not ended:
                    link.cancel(call_id)
                    self._drain(link)
        finally:
            self._call_lock.release()

    def _ready_link(self, token: CancelToken) -> _Link | None:
        """The running worker. One that is loading or restarting is waited for, up to
        ``call_timeout_s`` (None if ``token`` is cancelled meanwhile); one that failed or was
        stopped fails the call at once."""
        deadline = time.monotonic() + self.call_timeout_s
        with self._changed:
            while self.state in (WorkerState.STARTING, WorkerState.RESTARTING):
                if token.cancelled:
                    return None
                if time.monotonic() > deadline:
                    break
                self._changed.wait(0.05)
            if self.state is not WorkerState.READY or self._link is None:
                raise EngineFailed(self._down_message())
            return self._link

    def _down_message(self) -> str:
        if self.state is WorkerState.STOPPED:
            return f"the {self.name} worker is stopped"
        cause = f" ({self.last_exit})" if self.last_exit else ""
        if self.state is WorkerState.FAILED:
            return f"the {self.name} worker failed and was not restarted{cause}"
        return f"the {self.name} worker is restarting after it died{cause}"

    def _receive(self, link: _Link) -> Frame:
        try:
            return link.receive()
        except (EOFError, OSError):
            raise self._died(link) from None

    def _drain(self, link: _Link) -> None:
        """Read the cancelled call's last frames (a hung worker is killed by the watchdog)."""
        try:
            while link.receive().kind not in (Kind.END, Kind.ERROR):
                pass
        except (EOFError, OSError):
            pass

    def _died(self, link: _Link) -> EngineFailed:
        """The failure of a call whose worker went away, naming the engine and the cause.
        Calls after it wait for the restart, even before the monitor has seen the exit."""
        with self._changed:
            if self._link is link and self.state is WorkerState.READY:
                self.state = WorkerState.RESTARTING
                self._changed.notify_all()
        try:
            returncode = link.process.wait(timeout=5)
            cause = describe_exit(returncode)
        except subprocess.TimeoutExpired:
            cause = "its connection broke"
        if link.hung:
            cause = f"it answered nothing for {self.call_timeout_s:g} s and was killed"
        link.connection.close()
        return EngineFailed(f"the {self.name} worker died: {cause}")

    # --- the process -----------------------------------------------------------------------

    def _spawn(self) -> _Link:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "engines.workers.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        connection = Connection(ours.detach())
        link = _Link(process, connection)
        link.send(Frame(Kind.SPEC, meta=self._build))
        return link

    def _handshake(self, link: _Link) -> None:
        """Wait for READY (within ``start_timeout_s``); the engine's start-up error, if any."""
        if not link.connection.poll(self.start_timeout_s):
            link.process.kill()
            raise EngineError(
                f"the {self.name} worker did not load its engine in {self.start_timeout_s:g} s"
            )
        try:
            frame = link.receive()
        except (EOFError, OSError):
            cause = describe_exit(link.process.wait())
            raise EngineFailed(f"the {self.name} worker died while loading: {cause}") from None
        if frame.kind is Kind.ERROR:
            raise rebuild(frame.meta)
        link.info = dict(frame.meta)
        self.load_seconds = time.monotonic() - link.spawned

    def _reap(self, link: _Link, grace_s: float = 5.0) -> None:
        try:
            link.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            link.process.kill()
            link.process.wait()

    def _set_state(self, state: WorkerState) -> None:
        with self._changed:
            self.state = state
            self._changed.notify_all()

    def _watch(self) -> None:
        """The monitor thread: wait for the worker to end, kill it when hung, restart it."""
        failed_starts = 0
        while not self._stop.is_set():
            link = self._link
            if link is None:
                return
            returncode = self._wait_for_exit(link)
            if self._stop.is_set():
                return
            self.crashes += 1
            self._crash_times.append(time.monotonic())
            self.last_exit = describe_exit(returncode)
            if link.hung:
                self.last_exit = f"killed: it answered nothing for {self.call_timeout_s:g} s"
            log.error("%s worker (pid %d) died: %s", self.name, link.process.pid, self.last_exit)
            self._close_if_unused(link)
            while not self._stop.is_set():
                if failed_starts >= self.max_failed_starts:
                    log.error(
                        "%s worker failed to start %d times in a row; not restarting it",
                        self.name,
                        failed_starts,
                    )
                    self._set_state(WorkerState.FAILED)
                    return
                self._set_state(WorkerState.RESTARTING)
                delay = min(self.backoff_s[1], self.backoff_s[0] * 2 ** max(0, self._recent() - 1))
                if self._stop.wait(delay):
                    return
                try:
                    started = self._restart()
                except EngineError as exc:
                    failed_starts += 1
                    self.last_exit = str(exc)
                    log.error("%s worker could not restart: %s", self.name, exc)
                    continue
                if started:
                    failed_starts = 0
                break

    def _close_if_unused(self, link: _Link) -> None:
        """Close a dead worker's socket unless a call is reading it: the frames the worker
        sent before it died are still in the socket, and that call reads them up to the end
        of the stream before it fails (:meth:`_died` closes it then; a restart closes it at
        the latest)."""
        if self._call_lock.acquire(blocking=False):
            try:
                link.connection.close()
            finally:
                self._call_lock.release()

    def _recent(self) -> int:
        """Crashes within the last ``unhealthy_crashes[1]`` seconds."""
        window_s = self.unhealthy_crashes[1]
        return sum(1 for t in self._crash_times if time.monotonic() - t < window_s)

    def _restart(self) -> bool:
        link = self._spawn()
        with self._changed:
            if self._stop.is_set():
                link.process.kill()
                return False
            if self._link is not None:
                self._link.connection.close()
            self._link = link
            self.state = WorkerState.STARTING
            self._changed.notify_all()
        try:
            self._handshake(link)
        except EngineError:
            self._reap(link)
            raise
        self.restarts += 1
        self._set_state(WorkerState.READY)
        log.warning("%s worker restarted (pid %d)", self.name, link.process.pid)
        return True

    def _wait_for_exit(self, link: _Link) -> int:
        """Wait for the process to end (seen at once through a pidfd where Linux has one),
        checking every 0.25 s that a call it owes an answer is not hung."""
        try:
            exited: select.poll | None = select.poll()
            pidfd = os.pidfd_open(link.process.pid)
        except (AttributeError, OSError):  # not Linux 5.3+: poll the process instead
            exited, pidfd = None, -1
        try:
            if exited is not None:
                exited.register(pidfd, select.POLLIN)
            while True:
                if exited is not None and exited.poll(250):
                    return link.process.wait()
                try:
                    return link.process.wait(timeout=0 if exited is not None else 0.25)
                except subprocess.TimeoutExpired:
                    pass
                self._check_hung(link)
        finally:
            if pidfd >= 0:
                os.close(pidfd)

    def _check_hung(self, link: _Link) -> None:
        """Kill the worker if a call has waited ``call_timeout_s`` for its next frame."""
        waiting_since = link.waiting_since
        if waiting_since is None or time.monotonic() - waiting_since <= self.call_timeout_s:
            return
        log.error(
            "%s worker (pid %d) answered nothing for %.0f s; killing it",
            self.name,
            link.process.pid,
            self.call_timeout_s,
        )
        link.hung = True
        link.process.kill()


def start_all(workers: list[EngineWorker]) -> None:
    """Start ``workers`` side by side (each loads its model in its own process); if one
    cannot start, all are closed and its error raised."""
    try:
        for worker in workers:
            worker.spawn()
        for worker in workers:
            worker.wait_ready()
    except BaseException:
        for worker in workers:
            worker.close()
        raise
