"""A session's remote MCP servers as plain values: the ``type: "mcp"`` tools of the session
(or of one ``response.create``) read into :class:`McpServerConfig`, their approval rules, the
names their tools get in front of the language model, and the session object as clients see
it, without the secrets.

``headers`` and ``authorization`` are secrets: they are kept for the shell's HTTP client and
never shown (``session.updated`` leaves them out, their ``repr`` hides them, and no error names
their values).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .errors import ProtocolError

#: seconds a tool call may take unless the server is started with another limit
DEFAULT_CALL_TIMEOUT_S = 30.0

_FUNCTION_NAME = re.compile(r"[^A-Za-z0-9_-]")


@attrs.frozen
class ToolFilter:
    """OpenAI's ``MCPToolFilter``: tools named in ``tool_names`` and/or, with ``read_only``,
    those the server marks read-only (``readOnlyHint``). An empty filter matches every tool."""

    tool_names: tuple[str, ...] | None = None
    read_only: bool | None = None

    def matches(self, name: str, read_only: bool) -> bool:
        if self.tool_names is not None and name not in self.tool_names:
            return False
        return self.read_only is None or read_only == self.read_only

    @classmethod
    def from_wire(cls, value: Any) -> ToolFilter:
        """``allowed_tools`` (a list of names or a filter object)."""
        if isinstance(value, list):
            return cls(tool_names=tuple(value))
        names = value.get("tool_names")
        return cls(None if names is None else tuple(names), value.get("read_only"))


@attrs.frozen
class ApprovalRule:
    """``require_approval``: ``"always"`` (OpenAI's default), ``"never"``, or filters of the
    tools that always / never need it (a tool neither filter names needs it)."""

    mode: str = "always"  #: "always" | "never" | "filter"
    always: ToolFilter | None = None
    never: ToolFilter | None = None

    def required(self, name: str, read_only: bool) -> bool:
        if self.mode != "filter":
            return self.mode == "always"
        if self.always is not None and self.always.matches(name, read_only):
            return True
        return not (self.never is not None and self.never.matches(name, read_only))

    @classmethod
    def from_wire(cls, value: Any) -> ApprovalRule:
        if value is None or isinstance(value, str):
            return cls(value or "always")
        always, never = value.get("always"), value.get("never")
        return cls(
            "filter",
            None if always is None else ToolFilter.from_wire(always),
            None if never is None else ToolFilter.from_wire(never),
        )


@attrs.frozen
class McpServerConfig:
    """One ``type: "mcp"`` tool: how to reach its server and what of it to offer."""

    label: str
    url: str
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)
    authorization: str | None = attrs.field(default=None, repr=False)
    allowed_tools: ToolFilter | None = None
    require_approval: ApprovalRule = ApprovalRule()
    description: str | None = None

    def request_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.authorization:
            headers["Authorization"] = f"Bearer {self.authorization}"
        return headers

    @property
    def key(self) -> str:
        """Names one connection: the same label, URL, credentials and filter share it.
        A digest, so that the secrets it covers appear nowhere in it."""
        identity = json.dumps(
            [
                self.label,
                self.url,
                sorted(self.headers),
                self.authorization,
                repr(self.allowed_tools),
            ]
        )
        return "mcp_" + hashlib.sha256(identity.encode()).hexdigest()[:16]

    @classmethod
    def from_tool(cls, tool: Mapping[str, Any]) -> McpServerConfig:
        allowed = tool.get("allowed_tools")
        return cls(
            label=tool["server_label"],
            url=tool["server_url"],
            headers=tuple(sorted((tool.get("headers") or {}).items())),
            authorization=tool.get("authorization"),
            allowed_tools=None if allowed is None else ToolFilter.from_wire(allowed),
            require_approval=ApprovalRule.from_wire(tool.get("require_approval")),
            description=tool.get("server_description"),
        )


@attrs.frozen
class McpFunction:
    """An MCP tool as the language model sees it: a function named ``function_name``."""

    function_name: str
    server: McpServerConfig
    name: str  #: the tool's own name on its server
    description: str
    input_schema: dict[str, Any]
    read_only: bool = False

    @property
    def needs_approval(self) -> bool:
        return self.server.require_approval.required(self.name, self.read_only)


def check_mcp_tools(tools: Iterable[Mapping[str, Any]], param: str) -> None:
    """What the schema cannot say of a list of tools: each MCP tool has a ``server_url`` this
    server can reach (OpenAI's connectors and tunnels are OpenAI's own services), and no two
    share a ``server_label``."""
    labels: set[str] = set()
    for index, tool in enumerate(tools):
        if tool.get("type") != "mcp":
            continue
        where = f"{param}[{index}]"
        for hosted in ("connector_id", "tunnel_id"):
            if hosted in tool:
                raise ProtocolError(
                    "invalid_value",
                    f"'{hosted}' names a service hosted by OpenAI, which this server cannot "
                    "reach; give the MCP server's 'server_url' instead.",
                    f"{where}.{hosted}",
                )
        url = tool.get("server_url")
        if url is None:
            raise ProtocolError(
                "missing_required_parameter",
                f"Missing required parameter: '{where}.server_url'.",
                f"{where}.server_url",
            )
        if not re.match(r"https?://[^/\s]+", url):
            raise ProtocolError(
                "invalid_value",
                "Invalid 'server_url': expected an http:// or https:// URL.",
                f"{where}.server_url",
            )
        label = tool["server_label"]
        if label in labels:
            raise ProtocolError(
                "invalid_value",
                f"Duplicate server_label '{label}': each MCP tool needs its own label.",
                f"{where}.server_label",
            )
        labels.add(label)


def mcp_servers(tools: Iterable[Mapping[str, Any]]) -> tuple[McpServerConfig, ...]:
    return tuple(McpServerConfig.from_tool(t) for t in tools if t.get("type") == "mcp")


def function_tools(tools: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Any], ...]:
    return tuple(dict(t) for t in tools if t.get("type", "function") == "function")


def tools_repr(tools: Iterable[Mapping[str, Any]] | None) -> str:
    """A ``repr`` of a list of tools without the MCP tools' credentials (for attrs fields that
    hold tools: a failed assertion or a log line shows no secret)."""
    if tools is None:
        return "None"
    return repr(tuple(without_secrets({"tools": list(tools)})["tools"]))


def without_secrets(session: dict[str, Any]) -> dict[str, Any]:
    """The session object as clients are shown it: MCP tools without their credentials."""
    tools = session.get("tools")
    if not tools or not any(t.get("type") == "mcp" for t in tools):
        return session
    shown = dict(session)
    shown["tools"] = [
        {k: v for k, v in t.items() if k not in ("headers", "authorization")}
        if t.get("type") == "mcp"
        else t
        for t in tools
    ]
    return shown


def _function_name(name: str) -> str:
    return _FUNCTION_NAME.sub("_", name)[:64]


def name_functions(
    listed: Iterable[tuple[McpServerConfig, tuple[dict[str, Any], ...]]],
    taken: Iterable[str],
) -> tuple[McpFunction, ...]:
    """The MCP tools of ``listed`` servers as functions. A tool keeps its own name unless a
    function tool or another server's tool has it; then it is ``<label>__<name>``. Names keep
    to the characters function names allow, and a name that is still taken after that gets a
    number (``_2``, ...)."""
    entries = [(server, tool) for server, tools in listed for tool in tools]
    used = {_function_name(name) for name in taken}
    counts: dict[str, int] = {}
    for name in [*used, *(_function_name(tool["name"]) for _, tool in entries)]:
        counts[name] = counts.get(name, 0) + 1
    functions = []
    for server, tool in entries:
        name = tool["name"]
        function_name = _function_name(name)
        if counts[function_name] > 1:
            function_name = _function_name(f"{server.label}__{name}")
        unique, suffix = function_name, 2
        while unique in used:  # still taken (names that differ only in what was replaced)
            unique = f"{function_name[: 60 - len(str(suffix))]}_{suffix}"
            suffix += 1
        used.add(unique)
        functions.append(
            McpFunction(
                function_name=unique,
                server=server,
                name=name,
                description=tool.get("description") or "",
                input_schema=copy.deepcopy(tool.get("input_schema") or {}),
                read_only=bool((tool.get("annotations") or {}).get("readOnlyHint", False)),
            )
        )
    return tuple(functions)
