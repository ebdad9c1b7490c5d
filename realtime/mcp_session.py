"""A session's connections to its remote MCP servers, as the machine's effects ask for them.

``ListMcpTools`` opens a connection (one per ``McpServerConfig.key``: the same URL,
credentials and filter share it) in a task of the session's nursery that holds it open, and
lists the tools; ``CallMcpTool`` is carried out by the response that made the call (see
``responses.py``), on the open connection, or on a new one when the old one broke;
``CloseMcpServer`` and the session's end close them. Every failure comes back to the machine as
a result (``McpToolsListFailed``, an ``McpCallDone`` with an error): none ends the session.
"""

from __future__ import annotations

import logging
import math

import trio

from protocol import inputs as ins
from protocol.effects import CallMcpTool, ListMcpTools
from protocol.mcp_config import McpServerConfig

from .mcp_client import (
    McpFailure,
    McpServer,
    first_failure,
    open_mcp_server,
    reraisable,
    url_allowed,
)
from .ports import Feed

log = logging.getLogger("realtime.session")


class _Connection:
    """One open server, held by its task until closed."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.server: McpServer | None = None
        self.ready = trio.Event()
        self.failure: McpFailure | None = None


class McpConnections:
    """The MCP servers one session uses."""

    def __init__(
        self,
        session_id: str,
        feed: Feed,
        *,
        connect_timeout_s: float,
        call_timeout_s: float,
        allowed_urls: tuple[str, ...] | None = None,
    ) -> None:
        self.session_id = session_id
        self.feed = feed
        self.connect_timeout_s = connect_timeout_s
        self.call_timeout_s = call_timeout_s
        #: the MCP server URLs the operator lets sessions reach (None: any)
        self.allowed_urls = allowed_urls
        self._nursery: trio.Nursery | None = None
        self._open: dict[str, _Connection] = {}

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the connections until cancelled (the session's end closes them all)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def list_tools(self, effect: ListMcpTools) -> None:
        """Connect (anew: the configuration may have changed) and list the server's tools."""
        assert self._nursery is not None
        self.close(effect.server.key)
        self._nursery.start_soon(self._list, effect)

    def close(self, key: str) -> None:
        connection = self._open.pop(key, None)
        if connection is not None:
            connection.scope.cancel()

    async def call(self, effect: CallMcpTool) -> ins.McpCallDone:
        """Make the call (on the caller's task: cancelling it abandons the call)."""
        try:
            server = await self._server(effect.server)
            output = await server.call(effect.name, effect.arguments, self.call_timeout_s)
        except BaseException as exc:
            if (cancel := reraisable(exc)) is not None:
                raise cancel from None
            failure = first_failure(exc)
            if failure is None:  # the SDK's streams broke under the call
                log.warning(
                    "session %s: MCP call %s on %s broke: %s",
                    self.session_id,
                    effect.name,
                    effect.server.label,
                    type(exc).__name__,
                )
                self.close(effect.server.key)
                failure = McpFailure(
                    "protocol_error", "the connection to the MCP server broke", -32000
                )
            else:
                log.info(
                    "session %s: MCP call %s on %s failed: %s",
                    self.session_id,
                    effect.name,
                    effect.server.label,
                    failure.message,
                )
            return ins.McpCallDone(effect.response_id, effect.item_id, error=failure.error_json())
        return ins.McpCallDone(effect.response_id, effect.item_id, output=output)

    async def _list(self, effect: ListMcpTools) -> None:
        try:
            server = await self._server(effect.server)
            tools = await server.list_tools()
        except BaseException as exc:
            if (cancel := reraisable(exc)) is not None:
                raise cancel from None
            # an McpFailure says why; anything else is a server whose answer the SDK could
            # not read (a tool list that fails the protocol's schema, ...)
            failure = first_failure(exc)
            message = (
                failure.message
                if failure is not None
                else f"the MCP server's tool list could not be read ({type(exc).__name__})"
            )
            log.info(
                "session %s: listing MCP server %s failed: %s",
                self.session_id,
                effect.server.label,
                message,
            )
            await self.feed(ins.McpToolsListFailed(effect.item_id, message))
            return
        listed = tuple(tool.item_json() for tool in tools)
        await self.feed(ins.McpToolsListed(effect.item_id, listed))

    async def _server(self, config: McpServerConfig) -> McpServer:
        """The open connection to ``config``'s server, opened now if there is none (or the
        last one broke)."""
        if not url_allowed(config.url, self.allowed_urls):
            raise McpFailure(
                "protocol_error",
                "this server's operator does not allow MCP servers at that URL "
                "(--mcp_allowed_urls)",
                -32600,
            )
        connection = self._open.get(config.key)
        if connection is None or (connection.ready.is_set() and connection.server is None):
            connection = _Connection()
            self._open[config.key] = connection
            assert self._nursery is not None
            self._nursery.start_soon(self._hold, config, connection)
        await connection.ready.wait()
        if connection.server is None:
            assert connection.failure is not None
            raise connection.failure
        return connection.server

    async def _hold(self, config: McpServerConfig, connection: _Connection) -> None:
        """Open the connection and keep it open until closed; a connection that fails or
        breaks is forgotten (the next call opens a new one)."""
        # closed while it connects, the SDK raises a group of the scope's Cancelled and the
        # transport's errors: the scope takes its Cancelled out, the rest is a failure here
        try:
            with connection.scope:
                async with open_mcp_server(config, self.connect_timeout_s) as server:
                    connection.server = server
                    connection.ready.set()
                    await trio.sleep(math.inf)
        except BaseException as exc:
            if (cancel := reraisable(exc)) is not None:
                raise cancel from None  # the session ends: so does the connection
            connection.failure = first_failure(exc)
            if connection.failure is None:  # the SDK's transport broke under the connection
                log.warning(
                    "session %s: the connection to MCP server %s broke: %s",
                    self.session_id,
                    config.label,
                    type(exc).__name__,
                )
                connection.failure = McpFailure(
                    "protocol_error", "the connection to the MCP server broke", -32000
                )
        connection.server = None
        if connection.failure is None:
            connection.failure = McpFailure(
                "protocol_error", "the connection to the MCP server was closed", -32000
            )
        connection.ready.set()
        if self._open.get(config.key) is connection:
            del self._open[config.key]
