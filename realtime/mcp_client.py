"""Remote MCP servers for a session: connect, list the tools, call them (the ``mcp`` SDK).

A session's ``type: "mcp"`` tool names a server by URL. :func:`open_mcp_server` connects to
it over Streamable HTTP (or SSE, for a URL ending in ``/sse`` or a server that answers only
that), with the tool's ``headers`` and ``authorization`` on every request, and yields an
:class:`McpServer` that lists its tools (every page, filtered by ``allowed_tools``) and calls
them. Failures come back as OpenAI's three kinds of MCP error: ``http_error`` (the HTTP status
of the request that failed), ``protocol_error`` (a JSON-RPC error, a timeout, a connection
closed) and ``tool_execution_error`` (the tool itself reported a failure).

The secrets (``headers``, ``authorization``) stay in the HTTP client: no message this module
writes, logs or raises quotes them.

The MCP client runs on anyio, which runs on trio: a call is an ordinary awaitable of the
session's task, and cancelling that task's scope (barge-in, ``response.cancel``) abandons it.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import attrs
import httpx2
import trio
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from protocol.mcp_config import DEFAULT_CALL_TIMEOUT_S, McpServerConfig

#: seconds to connect and finish the MCP handshake before the listing fails
CONNECT_TIMEOUT_S = 10.0
#: seconds a tool call may take by default
CALL_TIMEOUT_S = DEFAULT_CALL_TIMEOUT_S
#: pages of ``tools/list`` read before a listing counts as endless
MAX_PAGES = 100

ErrorKind = Literal["http_error", "protocol_error", "tool_execution_error"]


@attrs.frozen
class McpTool:
    """One tool as the server lists it (``input_schema`` is its JSON schema)."""

    name: str
    input_schema: Mapping[str, Any]
    description: str | None = None
    annotations: Mapping[str, Any] | None = None

    @property
    def read_only(self) -> bool:
        return bool((self.annotations or {}).get("readOnlyHint", False))

    def item_json(self) -> dict[str, Any]:
        """The tool as an ``mcp_list_tools`` item lists it."""
        return {
            "name": self.name,
            "input_schema": dict(self.input_schema),
            "description": self.description,
            "annotations": dict(self.annotations) if self.annotations is not None else None,
        }


class McpFailure(Exception):
    """An MCP request that failed, as OpenAI's ``mcp_call.error`` reports it."""

    def __init__(self, kind: ErrorKind, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.code = kind, message, code

    def error_json(self) -> dict[str, Any]:
        if self.kind == "tool_execution_error":
            return {"type": self.kind, "message": self.message}
        return {"type": self.kind, "code": self.code or 0, "message": self.message}


class McpServer:
    """An open connection to one MCP server."""

    def __init__(self, config: McpServerConfig, client: Client, statuses: list[int]) -> None:
        self.config = config
        self._client = client
        self._statuses = statuses  #: HTTP statuses >= 400 of POSTs seen, newest last
        self._listed: set[str] | None = None  #: the allowed tools, once listed

    async def list_tools(self) -> list[McpTool]:
        """Every tool the server lists (every page), less those ``allowed_tools`` leaves out."""
        tools: list[McpTool] = []
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = await self._request(lambda cursor=cursor: self._client.list_tools(cursor=cursor))
            for tool in page.tools:
                annotations = (
                    None
                    if tool.annotations is None
                    else tool.annotations.model_dump(by_alias=True, exclude_none=True)
                )
                tools.append(McpTool(tool.name, tool.input_schema, tool.description, annotations))
            cursor = page.next_cursor
            if cursor is None:
                break
            if cursor in seen or len(seen) >= MAX_PAGES:
                raise McpFailure("protocol_error", "the MCP server's tool list never ends", -32603)
            seen.add(cursor)
        allowed = self.config.allowed_tools
        listed = [t for t in tools if allowed is None or allowed.matches(t.name, t.read_only)]
        self._listed = {t.name for t in listed}
        return listed

    async def call(self, name: str, arguments: str, timeout_s: float = CALL_TIMEOUT_S) -> str:
        """Call tool ``name`` with ``arguments`` (JSON object text); its output as text.

        Raises :class:`McpFailure`; arguments that are not a JSON object, and a tool that
        ``allowed_tools`` left out of the listing, are a ``protocol_error`` before anything is
        sent."""
        if self._listed is not None and name not in self._listed:
            raise McpFailure(
                "protocol_error", f"no tool {name!r} is allowed on this server", -32602
            )
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            raise McpFailure(
                "protocol_error", f"the arguments are not JSON: {exc}", -32602
            ) from None
        if not isinstance(parsed, dict):
            raise McpFailure("protocol_error", "the arguments are not a JSON object", -32602)
        result = await self._request(
            lambda: self._client.call_tool(name, parsed, read_timeout_seconds=timeout_s),
            timeout_s=timeout_s,
        )
        text = "".join(block.text for block in result.content if block.type == "text")
        if result.is_error:
            raise McpFailure("tool_execution_error", text or f"the tool {name} failed")
        if not text and result.structured_content is not None:
            return json.dumps(result.structured_content)
        return text

    async def _request(self, send: Any, timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
        seen = len(self._statuses)
        try:
            # the SDK's own read timeout answers first; this bounds what it does not cover
            with trio.fail_after(timeout_s + 5):
                return await send()
        except trio.TooSlowError:
            raise McpFailure(
                "protocol_error", f"no answer from the MCP server in {timeout_s:g} s", -32001
            ) from None
        except MCPError as exc:
            if len(self._statuses) > seen:
                status = self._statuses[-1]
                raise McpFailure(
                    "http_error", f"the MCP server answered HTTP {status}", status
                ) from None
            raise McpFailure("protocol_error", exc.error.message, exc.error.code) from None
        except httpx2.HTTPError as exc:
            raise _http_failure(exc) from None


def _http_failure(exc: BaseException) -> McpFailure:
    if isinstance(exc, httpx2.HTTPStatusError):
        return _status_failure(exc.response.status_code)
    if isinstance(exc, httpx2.TimeoutException):
        return McpFailure("protocol_error", "the MCP server did not answer in time", -32001)
    reason = type(exc).__name__
    return McpFailure("protocol_error", f"cannot reach the MCP server ({reason})", -32000)


def _status_failure(status: int) -> McpFailure:
    return McpFailure("http_error", f"the MCP server answered HTTP {status}", status)


def reraisable(exc: BaseException) -> BaseException | None:
    """What of ``exc`` must be raised again: its ``trio.Cancelled`` (and anything else that is
    not an ``Exception``); None when all of it is ordinary errors. Cancelled while it connects
    or calls, the SDK raises a group of the cancel and of its transport's errors: the cancel
    goes on to its scope, the errors end as a failure of the server, not of the session."""
    if isinstance(exc, Exception):
        return None
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(Exception)[1]
    return exc


def first_failure(exc: BaseException) -> McpFailure | None:
    """The first :class:`McpFailure` in ``exc`` (a group's leaves included)."""
    return next((leaf for leaf in _leaves(exc) if isinstance(leaf, McpFailure)), None)


def _leaves(exc: BaseException) -> Sequence[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _connect_failure(exc: BaseException, statuses: list[int]) -> McpFailure:
    """The clearest failure among what a failed connect raised (often nested groups)."""
    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, McpFailure):
            return leaf
    if statuses:
        return McpFailure(
            "http_error", f"the MCP server answered HTTP {statuses[-1]}", statuses[-1]
        )
    for leaf in leaves:
        if isinstance(leaf, httpx2.HTTPError):
            return _http_failure(leaf)
        if isinstance(leaf, MCPError):
            return McpFailure("protocol_error", leaf.error.message, leaf.error.code)
        if isinstance(leaf, trio.TooSlowError):
            return McpFailure(
                "protocol_error", f"no MCP handshake in {CONNECT_TIMEOUT_S:g} s", -32001
            )
    reason = type(leaves[0]).__name__
    return McpFailure("protocol_error", f"cannot connect to the MCP server ({reason})", -32000)


def _origin_and_path(url: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path) of an http(s) URL, or None if it is not one."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname.lower(), port or default, parts.path or "/"


def url_allowed(url: str, allowed: Sequence[str] | None) -> bool:
    """Whether ``url`` is under one of ``allowed`` (None: any URL): the same scheme, host and
    port, and a path at or below the pattern's (``https://tools.example/mcp`` allows
    ``/mcp`` and ``/mcp/x``, not ``/mcpx``). The SDK follows a redirect only within the origin."""
    if allowed is None:
        return True
    target = _origin_and_path(url)
    if target is None:
        return False
    for pattern in allowed:
        rule = _origin_and_path(pattern)
        if rule is None or rule[:3] != target[:3]:
            continue
        prefix = rule[3].rstrip("/")
        if target[3] == prefix or target[3].startswith(prefix + "/"):
            return True
    return False


def check_allowed_url(pattern: str) -> str:
    """A ``--mcp_allowed_urls`` entry, if it is an http(s) URL (else ValueError)."""
    if _origin_and_path(pattern) is None:
        raise ValueError(f"not an http:// or https:// URL: {pattern!r}")
    return pattern


def _check_headers(config: McpServerConfig) -> dict[str, str]:
    """The request headers, or a failure naming (only) the header that can't be sent."""
    headers = config.request_headers()
    for key, value in headers.items():
        if not (key + value).isascii() or any(c in key + value for c in "\r\n\0"):
            raise McpFailure("protocol_error", f"the header {key!r} is not plain ASCII", -32602)
    return headers


@asynccontextmanager
async def open_mcp_server(
    config: McpServerConfig, connect_timeout_s: float = CONNECT_TIMEOUT_S
) -> AsyncIterator[McpServer]:
    """Connect to ``config``'s server (Streamable HTTP, else SSE) for the ``async with`` block.

    Raises :class:`McpFailure` when neither transport gets through the handshake within
    ``connect_timeout_s``; what the block raises comes out as it was raised."""
    headers = _check_headers(config)
    sse_first = config.url.rstrip("/").endswith("/sse")
    transports = ("sse", "http") if sse_first else ("http", "sse")
    failure: McpFailure | None = None
    for transport in transports:
        statuses: list[int] = []

        async def note_status(response: httpx2.Response, statuses: list[int] = statuses) -> None:
            # requests are POSTs; the GET stream and the closing DELETE may fail harmlessly
            if response.status_code >= 400 and response.request.method == "POST":
                statuses.append(response.status_code)

        def client_factory(**kwargs: Any) -> httpx2.AsyncClient:
            kwargs["event_hooks"] = {"response": [note_status]}
            return httpx2.AsyncClient(**kwargs)

        http = client_factory(
            headers=headers,
            # each request's own timeout is the SDK's; reads of the event stream may idle
            timeout=httpx2.Timeout(connect_timeout_s, read=None),
            follow_redirects=True,
        )
        entered, raised = False, None
        try:
            with trio.CancelScope(deadline=trio.current_time() + connect_timeout_s) as connecting:
                async with http:
                    stream: Any = (
                        streamable_http_client(config.url, http_client=http)
                        if transport == "http"
                        else sse_client(
                            config.url,
                            headers=headers,
                            timeout=connect_timeout_s,
                            sse_read_timeout=86_400.0,  # an idle event stream is no failure
                            httpx_client_factory=client_factory,
                        )
                    )
                    async with Client(
                        stream, read_timeout_seconds=connect_timeout_s, cache=None
                    ) as client:
                        connecting.deadline, entered = math.inf, True
                        try:
                            yield McpServer(config, client, statuses)
                        except BaseException as exc:
                            raised = exc
                            raise
            if entered:
                return
            attempt = McpFailure(
                "protocol_error", f"no MCP handshake in {connect_timeout_s:g} s", -32001
            )
        except BaseException as exc:
            if raised is not None and all(leaf is raised for leaf in _leaves(exc)):
                raise raised from None  # the block's own exception, out of the SDK's groups
            if entered or any(
                isinstance(leaf, trio.Cancelled | KeyboardInterrupt | SystemExit)
                for leaf in _leaves(exc)
            ):
                raise
            attempt = _connect_failure(exc, statuses)
        if failure is None or (failure.kind == "http_error" and failure.code in _NOT_HERE):
            failure = attempt
        if failure.kind == "http_error" and failure.code in (401, 403):
            break  # the other transport would be refused the same way
    assert failure is not None
    raise failure


#: HTTP statuses that say "not this transport here": the other transport's failure says more
_NOT_HERE = (404, 405, 406, 415)
