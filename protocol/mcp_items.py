"""The conversation items of remote MCP servers: a server's tool list, a call of one of its
tools, an approval request and the client's answer, as frozen values, with their wire specs
(for ``items.ITEM_SPEC``)."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from .schema import AnyJSON, Bool, Enum, Int, Obj, Spec, Str, Tagged, fields, required
from .schema import ListOf as _ListOf


@attrs.frozen
class McpListToolsItem:
    """The tools an MCP server listed (``tools`` is empty while the listing runs)."""

    id: str
    server_label: str
    tools: tuple[dict[str, Any], ...] = ()
    type: Literal["mcp_list_tools"] = "mcp_list_tools"

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "mcp_list_tools",
            "server_label": self.server_label,
            "tools": [dict(t) for t in self.tools],
        }


@attrs.frozen
class McpCallItem:
    """A call of an MCP server's tool: ``output`` once it answered, ``error`` if it failed."""

    id: str
    server_label: str
    name: str
    arguments: str
    output: str | None = None
    error: dict[str, Any] | None = None
    approval_request_id: str | None = None
    type: Literal["mcp_call"] = "mcp_call"

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "mcp_call",
            "server_label": self.server_label,
            "name": self.name,
            "arguments": self.arguments,
            "approval_request_id": self.approval_request_id,
            "output": self.output,
            "error": self.error,
        }


@attrs.frozen
class McpApprovalRequestItem:
    """The model asked to call a tool that needs the client's approval first."""

    id: str
    server_label: str
    name: str
    arguments: str
    type: Literal["mcp_approval_request"] = "mcp_approval_request"

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "mcp_approval_request",
            "server_label": self.server_label,
            "name": self.name,
            "arguments": self.arguments,
        }


@attrs.frozen
class McpApprovalResponseItem:
    """The client's answer to an approval request."""

    id: str
    approval_request_id: str
    approve: bool
    reason: str | None = None
    type: Literal["mcp_approval_response"] = "mcp_approval_response"

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "mcp_approval_response",
            "approval_request_id": self.approval_request_id,
            "approve": self.approve,
            "reason": self.reason,
        }


McpItem = McpListToolsItem | McpCallItem | McpApprovalRequestItem | McpApprovalResponseItem

_MCP_TOOL = Obj(
    fields(
        name=required(Str()),
        input_schema=required(AnyJSON()),
        description=Str(),
        annotations=AnyJSON(),
    )
)
_MCP_ERROR = Tagged(
    {
        "protocol_error": Obj(
            fields(
                type=required(Enum(("protocol_error",))),
                code=required(Int()),
                message=required(Str()),
            )
        ),
        "tool_execution_error": Obj(
            fields(type=required(Enum(("tool_execution_error",))), message=required(Str()))
        ),
        "http_error": Obj(
            fields(
                type=required(Enum(("http_error",))), code=required(Int()), message=required(Str())
            )
        ),
    }
)


def mcp_item_specs(common: dict[str, Any], item_id: Spec) -> dict[str, Obj]:
    """The MCP items' wire specs, each with the fields every item has (``common``)."""
    return {
        "mcp_approval_response": Obj(
            {
                **common,
                **fields(
                    type=required(Enum(("mcp_approval_response",))),
                    approval_request_id=required(item_id),
                    approve=required(Bool()),
                    reason=Str(max_length=4096),
                ),
            }
        ),
        "mcp_approval_request": Obj(
            {
                **common,
                **fields(
                    type=required(Enum(("mcp_approval_request",))),
                    server_label=required(Str()),
                    name=required(Str()),
                    arguments=required(Str()),
                ),
            }
        ),
        "mcp_call": Obj(
            {
                **common,
                **fields(
                    type=required(Enum(("mcp_call",))),
                    server_label=required(Str()),
                    name=required(Str()),
                    arguments=required(Str()),
                    approval_request_id=Str(max_length=64),
                    output=Str(),
                    error=_MCP_ERROR,
                ),
            }
        ),
        "mcp_list_tools": Obj(
            {
                **common,
                **fields(
                    type=required(Enum(("mcp_list_tools",))),
                    server_label=required(Str()),
                    tools=required(_ListOf(_MCP_TOOL)),
                ),
            }
        ),
    }


def mcp_item_from_wire(data: dict[str, Any], item_id: str) -> McpItem:
    """Build an MCP item from a schema-checked client object."""
    kind = data["type"]
    if kind == "mcp_approval_response":
        return McpApprovalResponseItem(
            id=item_id,
            approval_request_id=data["approval_request_id"],
            approve=data["approve"],
            reason=data.get("reason"),
        )
    if kind == "mcp_approval_request":
        return McpApprovalRequestItem(
            id=item_id,
            server_label=data["server_label"],
            name=data["name"],
            arguments=data["arguments"],
        )
    if kind == "mcp_call":
        return McpCallItem(
            id=item_id,
            server_label=data["server_label"],
            name=data["name"],
            arguments=data["arguments"],
            output=data.get("output"),
            error=data.get("error"),
            approval_request_id=data.get("approval_request_id"),
        )
    return McpListToolsItem(
        id=item_id, server_label=data["server_label"], tools=tuple(data["tools"])
    )
