"""Real MCP servers for the tests, built with the ``mcp`` SDK's own server (``MCPServer``) and
served by uvicorn on loopback ports, in threads of the test process."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

#: what the test servers' requests carried, newest last: (path, Authorization, X-Test header)
SEEN: list[tuple[str, str | None, str | None]] = []


def weather_server() -> MCPServer:
    """Tools: ``forecast`` (read-only), ``add``, ``slow`` (sleeps), ``broken`` (raises)."""
    server = MCPServer("weather", log_level="CRITICAL")

    @server.tool(
        description="The forecast for a city",
        annotations=ToolAnnotations(readOnlyHint=True),
    )
    def forecast(city: str) -> str:
        return f"Sunny in {city}, 21 degrees"

    @server.tool(description="Add two integers")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Waits, then answers")
    async def slow(seconds: float) -> str:
        await anyio.sleep(seconds)
        return "done"

    @server.tool(description="Always fails")
    def broken() -> str:
        raise ToolError("the sensor is offline")

    return server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Recorder:
    """ASGI middleware: notes each request's credentials; refuses a wrong ``Authorization``
    with 401 when ``token`` is set."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            auth = headers.get("authorization")
            SEEN.append((scope["path"], auth, headers.get("x-test")))
            if self.token is not None and auth != f"Bearer {self.token}":
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
        await self.app(scope, receive, send)


async def unreadable_server(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that answers MCP over plain JSON responses, with a tool list that breaks
    the protocol's schema (a tool named by a number)."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = json.loads(body) if scope["method"] == "POST" and body else {}
    if "id" not in request:
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if request["method"] == "initialize":
        result: dict[str, Any] = {
            "protocolVersion": request["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "unreadable", "version": "1"},
        }
    elif request["method"] == "tools/list":
        result = {"tools": [{"name": 5}]}
    else:
        result = {}
    data = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


@contextmanager
def serving(transport: str = "http", token: str | None = None, app: Any = None) -> Iterator[str]:
    """A weather server (or the ASGI ``app``) for the block; yields its URL (``.../mcp`` or
    ``.../sse``)."""
    port = free_port()
    servers: list[uvicorn.Server] = []
    given = app

    def run() -> None:
        # built in this thread: the SDK's server binds its locks to the running event loop
        mcp = weather_server()
        app = given or (mcp.streamable_http_app() if transport == "http" else mcp.sse_app())
        config = uvicorn.Config(
            _Recorder(app, token), host="127.0.0.1", port=port, log_level="error"
        )
        servers.append(uvicorn.Server(config))
        servers[0].run()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not (servers and servers[0].started):
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test MCP server did not start")
        time.sleep(0.02)
    server = servers[0]
    try:
        yield f"http://127.0.0.1:{port}/{'mcp' if transport == 'http' else 'sse'}"
    finally:
        server.should_exit = True
        thread.join(10)
