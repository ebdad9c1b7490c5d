"""Serving the app with hypercorn's trio worker, with a graceful shutdown."""

from __future__ import annotations

import functools
import logging
import signal
import threading

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.trio.tcp_server import TCPServer

from protocol.codec import MAX_FRAME_CHARS

from .app import create_app
from .calls import Calls
from .endpoint import AppSettings
from .metrics import Metrics
from .pool import PipelinePool

log = logging.getLogger("realtime.server")

_hypercorn_protocol_send = TCPServer.protocol_send


async def _protocol_send(self: TCPServer, event: Event) -> None:
    """hypercorn's send, with the close race of its trio worker treated as the close it is.

    hypercorn sends the TCP EOF outside the lock that orders its sends, so when the app closes a
    WebSocket while the read side answers the client's close frame (or a ping), ``send_all``
    meets the EOF in progress and raises ``BusyResourceError`` -- which, uncaught, ends the
    whole server. The connection is closing at that moment; the frame is dropped and the
    connection closed, as for a peer that went away.
    """
    try:
        await _hypercorn_protocol_send(self, event)
    except trio.BusyResourceError:
        await self.protocol.handle(Closed())


TCPServer.protocol_send = _protocol_send  # type: ignore[method-assign]


def hypercorn_config(host: str, port: int, graceful_timeout_s: float) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = graceful_timeout_s
    # hypercorn's own WebSocket pings race its connection close (a BusyResourceError that ends
    # the whole server), so none are sent; the SDK clients ping the server themselves.
    config.websocket_ping_interval = None
    config.websocket_max_message_size = MAX_FRAME_CHARS * 4  # UTF-8 bytes of the largest frame
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


async def serve(
    pool: PipelinePool,
    settings: AppSettings,
    *,
    host: str,
    port: int,
    shutdown: trio.Event,
    graceful_timeout_s: float = 10.0,
    metrics: Metrics | None = None,
    draining: trio.Event | None = None,
    unready: trio.Event | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set, then let sessions finish for ``graceful_timeout_s``.
    While ``draining`` is set (before the shutdown), no new session or call is taken; while
    ``unready`` is, ``/ready`` answers 503."""
    metrics = metrics or Metrics()
    calls = Calls(pool, metrics, settings.session, settings.calls, shutdown, draining, unready)
    async with trio.open_nursery() as nursery:
        await nursery.start(calls.run)
        app = create_app(pool, metrics, settings, shutdown, calls)
        config = hypercorn_config(host, port, graceful_timeout_s)
        await hypercorn_serve(app, config, shutdown_trigger=shutdown.wait, task_status=task_status)
        # WebRTC calls are not hypercorn's connections: give them the same grace period
        with trio.move_on_after(graceful_timeout_s):
            await calls.all_ended()
        nursery.cancel_scope.cancel()


#: seconds between readiness turning 503 and the first refusal of a drain: the time a load
#: balancer's health check (HAProxy's: every second) takes to stop sending sessions
DRAIN_NOTICE_S = 2.0


async def drain(
    unready: trio.Event,
    draining: trio.Event,
    shutdown: trio.Event,
    metrics: Metrics,
    timeout_s: float,
    notice_s: float = DRAIN_NOTICE_S,
) -> None:
    """Drain, then shut down: readiness answers 503 at once and, ``notice_s`` later, new
    sessions and calls are refused, while the live ones (connecting calls included) go on
    until they end or ``timeout_s`` has passed; then ``shutdown``, which lets each session's
    active response finish (the graceful period) and closes the rest with 1001."""
    unready.set()
    with trio.move_on_after(timeout_s):
        await trio.sleep(min(notice_s, timeout_s))
        draining.set()
        while metrics.active_sessions > 0 or metrics.calls_live > 0:
            await trio.sleep(0.1)
    draining.set()
    shutdown.set()


async def serve_on_free_port(
    nursery: trio.Nursery,
    pool: PipelinePool,
    settings: AppSettings,
    *,
    shutdown: trio.Event,
    host: str = "127.0.0.1",
    graceful_timeout_s: float = 2.0,
    metrics: Metrics | None = None,
    draining: trio.Event | None = None,
    unready: trio.Event | None = None,
) -> int:
    """Start :func:`serve` in ``nursery`` on a port the system picks; returns that port."""
    addresses = await nursery.start(
        functools.partial(
            serve,
            pool,
            settings,
            host=host,
            port=0,
            shutdown=shutdown,
            graceful_timeout_s=graceful_timeout_s,
            metrics=metrics,
            draining=draining,
            unready=unready,
        )
    )
    return int(addresses[0].rsplit(":", 1)[1])


class ServerThread:
    """The server on a free loopback port, in a thread of its own (for programs that drive it
    from outside Trio: tests, benchmarks). ``start()`` returns once it listens."""

    def __init__(self, pool: PipelinePool, settings: AppSettings) -> None:
        self.pool, self.settings, self.metrics = pool, settings, Metrics()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self.shutdown, self.draining, self.unready = trio.Event(), trio.Event(), trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.port = await serve_on_free_port(
                nursery,
                self.pool,
                self.settings,
                shutdown=self.shutdown,
                metrics=self.metrics,
                draining=self.draining,
                unready=self.unready,
            )
            self._ready.set()

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the server did not start")
        return self

    def begin_shutdown(self) -> None:
        """Start the graceful shutdown (callable from any thread, without blocking)."""
        self._token.run_sync_soon(self.shutdown.set)

    def begin_drain(self, timeout_s: float, notice_s: float = 0.0) -> None:
        """Start draining, as SIGTERM does (callable from any thread, without blocking)."""
        self._token.run_sync_soon(
            lambda: self._nursery.start_soon(
                drain,
                self.unready,
                self.draining,
                self.shutdown,
                self.metrics,
                timeout_s,
                notice_s,
            )
        )

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                self.begin_shutdown()
            except trio.RunFinishedError:
                pass  # it finished shutting down meanwhile
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"


async def serve_until_signal(
    pool: PipelinePool,
    settings: AppSettings,
    *,
    host: str,
    port: int,
    graceful_timeout_s: float,
    drain_timeout_s: float = 0.0,
) -> None:
    """:func:`serve` until a signal. SIGTERM (an orchestrator's stop) drains first: no new
    session, live ones go on for up to ``drain_timeout_s``; SIGINT, or a second signal, goes
    straight to the graceful shutdown (active responses finish, then sessions close)."""
    shutdown, draining, unready, metrics = trio.Event(), trio.Event(), trio.Event(), Metrics()
    watching = trio.CancelScope()
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with watching, trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum == signal.SIGTERM and drain_timeout_s > 0 and not unready.is_set():
                        log.info(
                            "%s: draining: no new sessions; live ones may go on for up to "
                            "%.0f s, then active responses finish (up to %.0f s)",
                            name,
                            drain_timeout_s,
                            graceful_timeout_s,
                        )
                        nursery.start_soon(
                            drain, unready, draining, shutdown, metrics, drain_timeout_s
                        )
                        continue
                    log.info(
                        "%s: finishing active responses (up to %.0f s), then exiting",
                        name,
                        graceful_timeout_s,
                    )
                    shutdown.set()
                    return

        async def run_server() -> None:
            addresses = await nursery.start(
                lambda task_status: serve(
                    pool,
                    settings,
                    host=host,
                    port=port,
                    shutdown=shutdown,
                    graceful_timeout_s=graceful_timeout_s,
                    metrics=metrics,
                    draining=draining,
                    unready=unready,
                    task_status=task_status,
                )
            )
            log.info("listening on %s (WebSocket path /v1/realtime)", ", ".join(addresses))

        nursery.start_soon(watch_signals)
        nursery.start_soon(run_server)
        await shutdown.wait()
        watching.cancel()  # a signal from now on stops the process at once
