"""Conversation items: messages, function calls and their outputs (and the items of remote
MCP servers, from ``mcp_items.py``), as frozen values.

Wire names are the GA ones: user content is ``input_text`` / ``input_audio``, assistant content
is ``output_text`` / ``output_audio`` (content *parts* of a response use ``text`` / ``audio``,
see ``responses.py``).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from . import ids
from .errors import ProtocolError
from .mcp_items import McpItem, mcp_item_from_wire, mcp_item_specs
from .schema import (
    Enum,
    Nullable,
    Obj,
    Str,
    Tagged,
    fields,
    join,
    required,
)
from .schema import (
    ListOf as _ListOf,
)

ItemStatus = Literal["completed", "incomplete", "in_progress"]
Role = Literal["system", "user", "assistant"]

#: content types a client may put in a message, by role
CONTENT_TYPES_BY_ROLE: dict[str, tuple[str, ...]] = {
    "system": ("input_text",),
    "user": ("input_text", "input_audio", "input_image"),
    "assistant": ("output_text", "output_audio"),
}


@attrs.frozen
class Content:
    """One content entry of a message item.

    ``audio`` (base64, session input format) is kept only for ``input_audio`` created by the
    client; it is never echoed in ``conversation.item.added`` / ``done``. ``input_image``
    holds its ``image_url`` (an https URL or a ``data:`` URL) and ``detail``.
    """

    type: Literal["input_text", "input_audio", "input_image", "output_text", "output_audio"]
    text: str | None = None
    transcript: str | None = None
    audio: str | None = attrs.field(default=None, repr=False)
    image_url: str | None = attrs.field(default=None, repr=False)
    detail: str = "auto"

    def to_wire(self) -> dict[str, Any]:
        if self.type in ("input_text", "output_text"):
            return {"type": self.type, "text": self.text or ""}
        if self.type == "input_image":
            return {"type": self.type, "image_url": self.image_url, "detail": self.detail}
        return {"type": self.type, "transcript": self.transcript}

    @property
    def model_text(self) -> str:
        """What the language model reads for this entry."""
        return (self.text if self.type.endswith("_text") else self.transcript) or ""


@attrs.frozen
class MessageItem:
    id: str
    role: Role
    content: tuple[Content, ...]
    status: ItemStatus = "completed"
    type: Literal["message"] = "message"

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "status": self.status,
            "role": self.role,
            "content": [c.to_wire() for c in self.content],
        }

    @property
    def text(self) -> str:
        return "".join(c.model_text for c in self.content)


@attrs.frozen
class FunctionCallItem:
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus = "completed"
    type: Literal["function_call"] = "function_call"

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function_call",
            "status": self.status,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": self.arguments,
        }


@attrs.frozen
class FunctionCallOutputItem:
    id: str
    call_id: str
    output: str
    status: ItemStatus = "completed"
    type: Literal["function_call_output"] = "function_call_output"

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function_call_output",
            "status": self.status,
            "call_id": self.call_id,
            "output": self.output,
        }


Item = MessageItem | FunctionCallItem | FunctionCallOutputItem | McpItem

_STATUS = Enum(("completed", "incomplete", "in_progress"))
_ITEM_ID = Str(max_length=64)
_COMMON = fields(id=_ITEM_ID, object=Enum(("realtime.item",)), status=_STATUS)

_CONTENT = Obj(
    fields(
        type=required(
            Enum(("input_text", "input_audio", "input_image", "output_text", "output_audio"))
        ),
        text=Str(),
        audio=Str(),
        transcript=Nullable(Str()),
        image_url=Str(),
        detail=Enum(("auto", "low", "high")),
    )
)

ITEM_SPEC = Tagged(
    {
        "message": Obj(
            {
                **_COMMON,
                **fields(
                    type=required(Enum(("message",))),
                    role=required(Enum(("system", "user", "assistant"))),
                    content=required(_ListOf(_CONTENT)),
                ),
            }
        ),
        "function_call": Obj(
            {
                **_COMMON,
                **fields(
                    type=required(Enum(("function_call",))),
                    call_id=Str(max_length=64),
                    name=required(Str()),
                    arguments=required(Str()),
                ),
            }
        ),
        "function_call_output": Obj(
            {
                **_COMMON,
                **fields(
                    type=required(Enum(("function_call_output",))),
                    call_id=required(Str(max_length=64)),
                    output=required(Str()),
                ),
            }
        ),
        **mcp_item_specs(_COMMON, _ITEM_ID),
    }
)

#: ``response.create``'s ``input`` also takes references to items already in the conversation
ITEM_OR_REFERENCE_SPEC = Tagged(
    {
        **ITEM_SPEC.variants,
        "item_reference": Obj(
            fields(type=required(Enum(("item_reference",))), id=required(_ITEM_ID))
        ),
    }
)


def item_from_wire(data: dict[str, Any], path: str) -> Item:
    """Build an item from a schema-checked client object; ``path`` names it in errors."""
    item_id = data.get("id") or ids.item_id()
    status = data.get("status", "completed")
    kind = data["type"]
    if kind == "function_call":
        return FunctionCallItem(
            id=item_id,
            call_id=data.get("call_id") or ids.call_id(),
            name=data["name"],
            arguments=data["arguments"],
            status=status,
        )
    if kind == "function_call_output":
        return FunctionCallOutputItem(
            id=item_id, call_id=data["call_id"], output=data["output"], status=status
        )
    if kind.startswith("mcp_"):
        return mcp_item_from_wire(data, item_id)
    role = data["role"]
    allowed = CONTENT_TYPES_BY_ROLE[role]
    content = []
    for index, part in enumerate(data["content"]):
        where = join(path, f"content[{index}]")
        ctype = part["type"]
        if ctype not in allowed:
            raise ProtocolError(
                "invalid_value",
                f"Invalid value: '{ctype}'. Content of a {role} message must be one of: "
                + ", ".join(f"'{t}'" for t in allowed)
                + ".",
                join(where, "type"),
            )
        if ctype.endswith("_text"):
            if "text" not in part:
                raise ProtocolError(
                    "missing_required_parameter",
                    f"Missing required parameter: '{where}.text'.",
                    f"{where}.text",
                )
            content.append(Content(ctype, text=part["text"]))
        elif ctype == "input_image":
            if not part.get("image_url"):
                raise ProtocolError(
                    "missing_required_parameter",
                    f"Missing required parameter: '{where}.image_url'.",
                    f"{where}.image_url",
                )
            content.append(
                Content(ctype, image_url=part["image_url"], detail=part.get("detail", "auto"))
            )
        else:
            content.append(
                Content(ctype, transcript=part.get("transcript"), audio=part.get("audio"))
            )
    return MessageItem(id=item_id, role=role, content=tuple(content), status=status)
