"""A response's remote MCP output: ``mcp_call`` items and their event ladder, and approval
requests.

An MCP call is an output item of the response that made it::

    response.output_item.added        (mcp_call, arguments "")
    conversation.item.added
    response.mcp_call_arguments.delta (the whole arguments at once)
    response.mcp_call_arguments.done
    response.mcp_call.in_progress
    ...                               (the shell calls the tool)
    response.mcp_call.completed | response.mcp_call.failed
    conversation.item.done            (with output or error)
    response.output_item.done

and a call that needs the client's approval is an ``mcp_approval_request`` item instead (added
and done at once); the response then waits for the client's answer, and makes the call once it
is approved. ``response.done`` comes when the model has finished and every call of the response
has answered, as OpenAI's server does: the model does not go on with the results in the same
response, the client asks for that (``response.create``).

The mix-in of :class:`~protocol.responses.ResponseRun`.
"""

from __future__ import annotations

import abc
from typing import Any

import attrs

from . import events as ev
from . import ids
from .conversation import Conversation
from .items import Item
from .mcp_items import McpApprovalRequestItem, McpCallItem


class McpOutput(abc.ABC):
    """The MCP part of one response."""

    id: str
    output: list[Item]
    conversation: Conversation | None
    #: mcp_call items waiting for their tool: item id -> output index
    mcp_in_flight: dict[str, int]
    #: approval requests of this response that the client has not answered yet
    approvals_pending: set[str]
    #: the servers (connection keys) of the approved calls this response made
    call_servers: set[str]
    #: whether the model is generating (a round started and has not completed)
    model_running: bool
    #: model rounds started so far (one, or none yet while approved calls come first)
    rounds: int
    #: tokens of the rounds that ended: (input, output)
    tokens: tuple[int, int]
    #: a response the server made to carry out calls the client approved: no model round
    calls_only: bool
    #: a model round stopped at ``max_output_tokens``
    truncated: bool

    @abc.abstractmethod
    def _go(self, trigger: str) -> None: ...

    @abc.abstractmethod
    def _add_item(self, item: Item) -> list[ev.ServerEvent]: ...

    @abc.abstractmethod
    def _finish_item(
        self, item: Item, output_index: int, kept: Item | None = None
    ) -> list[ev.ServerEvent]: ...

    @abc.abstractmethod
    def _close_message(self, status: str) -> list[ev.ServerEvent]: ...

    def mcp_call(
        self,
        server_label: str,
        name: str,
        arguments: str,
        approval_request_id: str | None = None,
    ) -> tuple[str, list[ev.ServerEvent]]:
        """A call of tool ``name`` starts: its item id and events up to ``in_progress``."""
        self._go("output")
        out = self._close_message("completed")
        item = McpCallItem(
            id=ids.item_id(),
            server_label=server_label,
            name=name,
            arguments="",
            approval_request_id=approval_request_id,
        )
        out += self._add_item(item)
        index = len(self.output) - 1
        where: dict[str, Any] = {"response_id": self.id, "item_id": item.id, "output_index": index}
        if arguments:
            out.append(ev.ResponseMcpCallArgumentsDelta(**where, delta=arguments))
        out.append(ev.ResponseMcpCallArgumentsDone(**where, arguments=arguments))
        item = attrs.evolve(item, arguments=arguments)
        self.output[index] = item
        if self.conversation is not None:
            self.conversation.replace(item)  # a retrieve while it runs shows the arguments
        out.append(ev.ResponseMcpCallInProgress(item_id=item.id, output_index=index))
        self.mcp_in_flight[item.id] = index
        return item.id, out

    def mcp_call_done(
        self, item_id: str, output: str | None, error: dict[str, Any] | None
    ) -> list[ev.ServerEvent]:
        """The tool answered (``output``) or the call failed (``error``)."""
        index = self.mcp_in_flight.pop(item_id)
        item = self.output[index]
        assert isinstance(item, McpCallItem)
        item = attrs.evolve(item, output=output, error=error)
        ended: ev.ServerEvent = (
            ev.ResponseMcpCallCompleted(item_id=item_id, output_index=index)
            if error is None
            else ev.ResponseMcpCallFailed(item_id=item_id, output_index=index)
        )
        return [ended, *self._finish_item(item, index)]

    def abandon_mcp_calls(self, message: str) -> list[ev.ServerEvent]:
        """The response ends while calls run: each fails with ``message`` (the tool may still
        have acted; only its answer is lost)."""
        out: list[ev.ServerEvent] = []
        for item_id in list(self.mcp_in_flight):
            error = {"type": "protocol_error", "code": -32800, "message": message}
            out += self.mcp_call_done(item_id, None, error)
        return out

    def approval_request(
        self, server_label: str, name: str, arguments: str
    ) -> list[ev.ServerEvent]:
        """The model called a tool that needs the client's approval: ask for it, and wait for
        the answer."""
        self._go("output")
        out = self._close_message("completed")
        item = McpApprovalRequestItem(
            id=ids.item_id(), server_label=server_label, name=name, arguments=arguments
        )
        out += self._add_item(item)
        self.approvals_pending.add(item.id)
        return out + self._finish_item(item, len(self.output) - 1)

    def approval_requested(self, request_id: str) -> McpApprovalRequestItem | None:
        """This response's request ``request_id``, if it still waits for its answer."""
        if request_id not in self.approvals_pending:
            return None
        request = next(i for i in self.output if i.id == request_id)
        assert isinstance(request, McpApprovalRequestItem)
        return request

    def model_started(self) -> None:
        self.model_running = True
        self.rounds += 1

    def model_ended(self, input_tokens: int, output_tokens: int) -> None:
        self.model_running = False
        self.tokens = (self.tokens[0] + input_tokens, self.tokens[1] + output_tokens)
