"""Remote MCP servers: their tool listings, the calls the model makes, and approvals.

Rules of :class:`~protocol.connection.RealtimeConnection` (one of its rooms).

- **Listing.** Each ``type: "mcp"`` tool of the session (after ``session.update``) or of a
  ``response.create`` that no listing covers yet gets an ``mcp_list_tools`` item::

      conversation.item.added (tools: []) -> mcp_list_tools.in_progress -> ListMcpTools
      McpToolsListed     -> conversation.item.done (tools) -> mcp_list_tools.completed
      McpToolsListFailed -> conversation.item.done (tools: []) -> mcp_list_tools.failed -> error

  A response whose servers are still being listed waits for them (as for a transcript); a
  server that failed offers no tools and the session goes on with the others. A server no
  tool names any more is closed (``CloseMcpServer``).
- **Calls.** The model sees each listed tool as a function (``mcp_config.name_functions``);
  calling one makes an ``mcp_call`` item and ``CallMcpTool`` (the shell calls at once, while
  the model may still be generating), or, when the tool needs approval, an
  ``mcp_approval_request`` item and no call.
- **The end of a response.** ``response.done`` comes once the model has finished, every call
  has answered and every approval request of the response has been answered. The model does
  not go on with the results in the same response: as with OpenAI's server, the client asks
  for that with ``response.create`` (the Agents SDK for JavaScript does it by itself when an
  ``mcp_call`` item is done).
- **Approvals.** The client answers a request with an ``mcp_approval_response`` item
  (``conversation.item.create``). The response that asked makes the approved call, or ends
  with the denial (the model reads it in the next response). An approval of a request whose
  response is gone (cancelled, or failed) is carried out by a response of its own that makes
  only the call, or, while another response runs, by the next response, before its model. The
  call goes to the server and tool the request named, whatever the session's tools became.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from . import events as ev
from . import ids
from . import inputs as ins
from .effects import CallMcpTool, CloseMcpServer, ContinueResponse, ListMcpTools, ResponsePlan
from .errors import ProtocolError
from .items import Item
from .machine_state import MachineState
from .mcp_config import McpFunction, McpServerConfig, name_functions
from .mcp_items import (
    McpApprovalRequestItem,
    McpApprovalResponseItem,
    McpCallItem,
    McpListToolsItem,
)
from .output import Output, stale
from .responses import ResponseRun


@attrs.define
class McpListing:
    """One server's ``mcp_list_tools`` item and what came of it."""

    server: McpServerConfig
    item_id: str
    status: str = "listing"  #: "listing" | "listed" | "failed"
    tools: tuple[dict[str, Any], ...] = ()


class McpRules(MachineState):
    """The session's MCP servers and the responses that use them."""

    # --- listing -----------------------------------------------------------------------------

    def _list_mcp_servers(
        self, servers: Iterable[McpServerConfig], out: Output, *, retry_failed: bool
    ) -> None:
        """Start a listing for each of ``servers`` not listed yet (or, with ``retry_failed``,
        whose listing failed)."""
        for server in servers:
            listing = self.mcp_listings.get(server.key)
            if listing is not None and not (retry_failed and listing.status == "failed"):
                continue
            item = McpListToolsItem(id=ids.item_id(), server_label=server.label)
            previous = self.conversation.insert(item)
            self.mcp_listings[server.key] = McpListing(server, item.id)
            out.events += [
                ev.ConversationItemAdded(previous_item_id=previous, item=item),
                ev.McpListToolsInProgress(item_id=item.id),
            ]
            out.effects.append(ListMcpTools(item.id, server))

    def _close_unused_mcp_servers(self, out: Output) -> None:
        """Close the servers that neither the session nor a running response names."""
        wanted = {s.key for s in self.session.mcp_servers}
        for run in self.responses.values():
            wanted |= {s.key for s in run.plan.mcp_servers} | run.call_servers
        for key in [k for k in self.mcp_unlisted if k not in wanted]:
            self.mcp_unlisted.discard(key)
            if key not in self.mcp_listings:
                out.effects.append(CloseMcpServer(key))
        for key in [k for k in self.mcp_listings if k not in wanted]:
            listing = self.mcp_listings.pop(key)
            if listing.status == "listing":  # dropped before it ended: its item ends empty
                self._listing_done(listing, out)
                out.events.append(ev.McpListToolsFailed(item_id=listing.item_id))
            out.effects.append(CloseMcpServer(key))

    def _listing_for(self, item_id: str) -> McpListing | None:
        return next((li for li in self.mcp_listings.values() if li.item_id == item_id), None)

    def _on_mcp_tools_listed(self, result: ins.McpToolsListed, out: Output) -> None:
        listing = self._listing_for(result.item_id)
        if listing is None or listing.status != "listing":
            return stale(result)
        listing.status, listing.tools = "listed", tuple(result.tools)
        self._listing_done(listing, out)
        out.events.append(ev.McpListToolsCompleted(item_id=listing.item_id))
        self._start_ready_responses(out)

    def _on_mcp_tools_list_failed(self, result: ins.McpToolsListFailed, out: Output) -> None:
        listing = self._listing_for(result.item_id)
        if listing is None or listing.status != "listing":
            return stale(result)
        listing.status = "failed"
        self._listing_done(listing, out)
        label = listing.server.label
        out.events += [
            ev.McpListToolsFailed(item_id=listing.item_id),
            ev.Error(
                error_type="server_error",
                code="mcp_list_tools_failed",
                message=f"Listing the tools of MCP server '{label}' failed: "
                f"{result.message.rstrip('.')}. The session goes on without its tools.",
                param="tools",
            ),
        ]
        self._start_ready_responses(out)

    def _listing_done(self, listing: McpListing, out: Output) -> None:
        item = McpListToolsItem(
            id=listing.item_id, server_label=listing.server.label, tools=listing.tools
        )
        previous = None
        if item.id in self.conversation:
            self.conversation.replace(item)
            previous = self.conversation.previous_id(item.id)
        out.events.append(ev.ConversationItemDone(previous_item_id=previous, item=item))

    def _mcp_listing_pending(self, plan: ResponsePlan) -> bool:
        """Whether a server of ``plan`` is still being listed (its response waits)."""
        return any(
            (li := self.mcp_listings.get(s.key)) is not None and li.status == "listing"
            for s in plan.mcp_servers
        )

    def _mcp_functions(self, plan: ResponsePlan) -> tuple[McpFunction, ...]:
        """The listed tools of ``plan``'s servers, named for the model."""
        listed = [
            (s, li.tools)  # the plan's own configuration: its approval rules may be newer
            for s in plan.mcp_servers
            if (li := self.mcp_listings.get(s.key)) is not None and li.status == "listed"
        ]
        return name_functions(listed, (t["name"] for t in plan.tools))

    # --- calls and rounds --------------------------------------------------------------------

    def _mcp_tool_call(
        self, run: ResponseRun, function: McpFunction, arguments: str, out: Output
    ) -> None:
        """The model called an MCP tool: call it, or ask the client's approval first."""
        label = function.server.label
        if function.needs_approval:
            out.events += run.approval_request(label, function.name, arguments)
            # the server and tool the approval is for, whatever the session's tools become
            self.mcp_requests[run.output[-1].id] = function
            return
        item_id, events = run.mcp_call(label, function.name, arguments)
        out.events += events
        out.effects.append(CallMcpTool(run.id, item_id, function.server, function.name, arguments))

    def _on_mcp_call_done(self, result: ins.McpCallDone, out: Output) -> None:
        run = self.responses.get(result.response_id)
        if run is None or result.item_id not in run.mcp_in_flight:
            return stale(result)
        out.events += run.mcp_call_done(result.item_id, result.output, result.error)
        self._continue_or_complete(run, False, out)

    def _continue_or_complete(self, run: ResponseRun, truncated: bool, out: Output) -> None:
        """After a model round, a call or an approval ended: wait for what is still open,
        run the model of a response whose approved calls came first, or end the response."""
        run.truncated = run.truncated or truncated
        if run.mcp_in_flight or run.model_running or run.approvals_pending:
            return
        if run.rounds == 0 and not run.calls_only:
            context = self._context(run)
            seen = {item.id for item in context}
            run.plan = attrs.evolve(
                run.plan, context=context + tuple(i for i in run.output if i.id not in seen)
            )
            run.model_started()
            out.effects.append(ContinueResponse(run.id, run.plan))
            return
        out.events += run.complete(run.truncated)
        self._retire(run, out)

    def _approved_calls(self, run: ResponseRun, context: tuple[Item, ...], out: Output) -> int:
        """Start the calls the client approved that no response has made yet (their
        ``CallMcpTool`` effects follow the response's ``StartResponse``); how many."""
        requests = {i.id: i for i in context if isinstance(i, McpApprovalRequestItem)}
        made = {i.approval_request_id for i in self.conversation if isinstance(i, McpCallItem)}
        started = 0
        for answer in context:
            if not (isinstance(answer, McpApprovalResponseItem) and answer.approve):
                continue
            request = requests.get(answer.approval_request_id)
            if request is None or request.id in made or request.id in self.mcp_approvals_used:
                continue
            self._call_approved(run, request, out)
            started += 1
        return started

    def _call_approved(
        self, run: ResponseRun, request: McpApprovalRequestItem, out: Output
    ) -> None:
        """Make the call the client approved, in ``run`` (once: the request is used up)."""
        self.mcp_approvals_used.add(request.id)
        function = self.mcp_requests.get(request.id) or next(
            (
                f
                for f in run.plan.mcp_functions
                if (f.server.label, f.name) == (request.server_label, request.name)
            ),
            None,
        )
        item_id, events = run.mcp_call(
            request.server_label, request.name, request.arguments, request.id
        )
        out.events += events
        if function is None:
            error = {
                "type": "protocol_error",
                "code": -32602,
                "message": f"No tool '{request.name}' of an MCP server labelled "
                f"'{request.server_label}' is offered any more.",
            }
            out.events += run.mcp_call_done(item_id, None, error)
        else:
            key = function.server.key
            run.call_servers.add(key)
            if key not in self.mcp_listings:  # a server no tool names any more: closed after
                self.mcp_unlisted.add(key)
            out.effects.append(
                CallMcpTool(run.id, item_id, function.server, request.name, request.arguments)
            )

    # --- approvals ---------------------------------------------------------------------------

    def _check_approval(self, item: McpApprovalResponseItem) -> None:
        """An approval answers a request of the conversation, once."""
        param = "item.approval_request_id"
        if not isinstance(
            next((i for i in self.conversation if i.id == item.approval_request_id), None),
            McpApprovalRequestItem,
        ):
            raise ProtocolError(
                "invalid_value",
                f"No MCP approval request with id '{item.approval_request_id}' in the "
                "conversation.",
                param,
            )
        if any(
            isinstance(i, McpApprovalResponseItem)
            and i.approval_request_id == item.approval_request_id
            for i in self.conversation
        ):
            raise ProtocolError(
                "invalid_value",
                f"The MCP approval request '{item.approval_request_id}' was already answered.",
                param,
            )

    def _answer_approval(self, answer: McpApprovalResponseItem, out: Output) -> None:
        """The client answered a request: the response that asked carries it out; an approval
        whose response is gone gets a response of its own (after the active one, if any)."""
        for run in self.responses.values():
            request = run.approval_requested(answer.approval_request_id)
            if request is not None:
                run.approvals_pending.discard(request.id)
                if answer.approve:
                    self._call_approved(run, request, out)
                self._continue_or_complete(run, False, out)
                return
        # while a response runs, the next one makes the call before its model
        # (``_approved_calls``): nothing starts in the middle of what the user is doing
        if answer.approve and self.session.type == "realtime" and self.default_response_id is None:
            self._create_response(ev.ResponseParams(), out, calls_only=True)
