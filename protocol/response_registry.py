"""The response registry: ``response.create`` and ``response.cancel``, responses waiting for
their input's transcripts, the routing of engine output to the response it belongs to, its end
(completed, cancelled, failed), and, over WebRTC, the output audio buffer it plays into.

Rules of :class:`~protocol.connection.RealtimeConnection` (one of its rooms). A response's own
event sequence is ``responses.ResponseRun``; the playout's is ``playout.Playout``.
"""

from __future__ import annotations

import attrs

from . import events as ev
from . import ids
from . import inputs as ins
from .effects import (
    CancelResponse,
    CancelSpeculation,
    ClearPlayout,
    PlayAudio,
    StartResponse,
)
from .errors import IllegalTransition, ProtocolError
from .items import FunctionCallItem, Item
from .machine_state import MachineState
from .output import Output, stale
from .response_plan import plan_response
from .responses import ResponseRun
from .session import BYTES_PER_MS
from .speculation import Speculation
from .states import Phase


class ResponseRegistry(MachineState):
    """The responses of the session, from creation to retirement."""

    def _on_response_create(self, event: ev.ResponseCreate, out: Output) -> None:
        params = event.response
        if params.conversation == "auto" and self.default_response_id is not None:
            raise ProtocolError(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress: "
                f"{self.default_response_id}. Wait until the response is finished before "
                "creating a new one.",
            )
        self._create_response(params, out)

    def _create_response(
        self,
        params: ev.ResponseParams,
        out: Output,
        speculation: Speculation | None = None,
        *,
        calls_only: bool = False,
    ) -> None:
        """A new response; ``speculation``: the one held for the turn this response answers
        (any other held speculation is abandoned); ``calls_only``: it makes the MCP calls the
        client approved, and no model round."""
        context_ids: tuple[str, ...] | None = None
        extra_items: dict[str, Item] = {}
        if params.input is not None:
            refs = []
            for index, entry in enumerate(params.input):
                if isinstance(entry, ev.ItemReference):
                    self.conversation.get(entry.id, f"response.input[{index}].id")
                    refs.append(entry.id)
                else:
                    extra_items[entry.id] = entry
                    refs.append(entry.id)
            context_ids = tuple(refs)
        plan = plan_response(self.session, params)
        self._abandon_speculation(out)
        in_conversation = params.conversation == "auto"
        run = ResponseRun(
            ids.response_id(),
            plan,
            conversation=self.conversation if in_conversation else None,
            conversation_id=self.conversation_id if in_conversation else None,
            metadata=params.metadata,
            context_ids=context_ids,
            extra_items=extra_items,
        )
        run.calls_only = calls_only
        self.responses[run.id] = run
        self.last_response_id = run.id
        self.idle_from_ms = None
        if in_conversation:
            self.default_response_id = run.id
        if speculation is not None:
            speculation.response_id = run.id
            self.speculation = speculation
        out.events += run.created()
        self._list_mcp_servers(plan.mcp_servers, out, retry_failed=False)
        self._start_ready_responses(out)

    def _context(self, run: ResponseRun) -> tuple[Item, ...]:
        if run.context_ids is None:
            return tuple(self.conversation)
        by_id = {item.id: item for item in self.conversation}
        by_id.update(run.extra_items)
        return tuple(by_id[i] for i in run.context_ids if i in by_id)

    def _start_ready_responses(self, out: Output) -> None:
        for run in list(self.responses.values()):
            if run.phase is not Phase.WAITING_INPUT:
                continue
            context = self._context(run)
            if any(item.id in self.pending_transcripts for item in context):
                continue
            if self._mcp_listing_pending(run.plan):
                continue
            run.start()
            run.plan = attrs.evolve(
                run.plan, context=context, mcp_functions=self._mcp_functions(run.plan)
            )
            held = self._held_response(run, out)
            calls = Output()
            if self._approved_calls(run, context, calls) or run.calls_only:
                # the approved calls come first; the model (if any) runs once they answered
                if held is not None:
                    out.effects.append(CancelSpeculation(held))
                out.effects.append(StartResponse(run.id, run.plan, None, run_model=False))
                out.events += calls.events
                out.effects += calls.effects
                self._continue_or_complete(run, False, out)  # if none is left to wait for
                continue
            run.model_started()
            out.effects.append(StartResponse(run.id, run.plan, held))

    def _on_response_cancel(self, event: ev.ResponseCancel, out: Output) -> None:
        response_id = event.response_id or self.default_response_id
        run = self.responses.get(response_id) if response_id else None
        if run is None:
            raise ProtocolError(
                "response_cancel_not_active",
                "Cancellation failed: no active response found"
                + (f" with id '{event.response_id}'." if event.response_id else "."),
                "response_id" if event.response_id else None,
            )
        self._cancel(run, "client_cancelled", out)

    def _on_output_audio_clear(self, event: ev.OutputAudioBufferClear, out: Output) -> None:
        if self.playout is not None:
            # a call: flush what is queued; with nothing queued there is nothing to do (the
            # Agents SDKs' WebRTC and SIP transports send this on every interruption)
            if self.playout.active:
                self._clear_playout(out)
            return
        # Over WebSocket the client owns playback; nothing is queued here. Acknowledge it.
        if self.last_response_id is None:
            raise ProtocolError("invalid_value", "There is no response audio to clear.", None)
        out.events.append(ev.OutputAudioBufferCleared(response_id=self.last_response_id))

    def _cancel(self, run: ResponseRun, reason: str, out: Output) -> None:
        out.events += run.cancel(reason)
        self._retire(run, out)
        out.effects.append(CancelResponse(run.id, reason))

    def _retire(self, run: ResponseRun, out: Output) -> None:
        del self.responses[run.id]
        if run.plan.mcp_servers or run.call_servers:
            self._close_unused_mcp_servers(out)
        if self.playout is not None:
            out.events += self.playout.response_finished(run.id)
        if self.speculation is not None and self.speculation.response_id == run.id:
            self._abandon_speculation(out)  # the response ended before it started
        for item_id, audio in run.audio_items.items():
            self.audio_items.setdefault(item_id, audio)  # a truncate may have cut it already
        if self.default_response_id == run.id:
            self.default_response_id = None
            self._start_idle_timeout(run)
            if self.turn_awaiting_response:
                self.turn_awaiting_response = False
                self._create_response(ev.ResponseParams(), out)

    def _run_for(self, response_id: str) -> ResponseRun | None:
        run = self.responses.get(response_id)
        if run is not None and run.phase is Phase.WAITING_INPUT:
            raise IllegalTransition(f"response {response_id} produced output before it started")
        return run

    def _on_audio_out(self, result: ins.AudioOut, out: Output) -> None:
        run = self._run_for(result.response_id)
        if run is None:
            return stale(result)
        if self.playout is None:
            out.events += run.audio(result.audio, result.transcript)
            return
        out.events += run.audio(result.audio, result.transcript, audio_events=False)
        if result.audio and not run.open_audio_cut:
            item_id = run.open_item_id
            assert item_id is not None
            fmt = run.plan.output_format
            out.events += self.playout.queue(run.id, item_id, len(result.audio) / BYTES_PER_MS[fmt])
            out.effects.append(PlayAudio(run.id, result.audio, fmt))

    def _on_playout_started(self, result: ins.PlayoutStarted, out: Output) -> None:
        if self.playout is not None:
            out.events += self.playout.started()

    def _on_playout_stopped(self, result: ins.PlayoutStopped, out: Output) -> None:
        if self.playout is not None:
            out.events += self.playout.drained()

    def _clear_playout(self, out: Output) -> None:
        assert self.playout is not None
        out.events += self.playout.clear()
        out.effects.append(ClearPlayout())

    def _on_playout_cleared(self, result: ins.PlayoutCleared, out: Output) -> None:
        if self.playout is None:
            return stale(result)
        item_id, heard_ms = self.playout.flushed(result.dropped_ms)
        if item_id is not None and item_id in self.audio_items and item_id in self.conversation:
            # the assistant item keeps what was heard, as a client's truncate would make it
            out.events.append(self._truncate(item_id, 0, int(heard_ms)))

    def _on_text_out(self, result: ins.TextOut, out: Output) -> None:
        run = self._run_for(result.response_id)
        if run is None:
            return stale(result)
        out.events += run.text(result.text)

    def _on_tool_call(self, result: ins.ToolCallOut, out: Output) -> None:
        run = self._run_for(result.response_id)
        if run is None:
            return stale(result)
        if run.plan.parallel_tool_calls is False and any(
            isinstance(item, FunctionCallItem) for item in run.output
        ):
            return stale(result)  # one call per response: an engine's second call is dropped
        function = run.plan.mcp_function(result.name)
        if function is not None:
            return self._mcp_tool_call(run, function, result.arguments, out)
        out.events += run.tool_call(result.call_id, result.name, result.arguments)

    def _on_response_complete(self, result: ins.ResponseComplete, out: Output) -> None:
        run = self._run_for(result.response_id)
        if run is None:
            return stale(result)
        run.model_ended(result.input_tokens, result.output_tokens)
        self._continue_or_complete(run, result.truncated, out)

    def _on_response_failed(self, result: ins.ResponseFailed, out: Output) -> None:
        run = self.responses.get(result.response_id)
        if run is None:
            return stale(result)
        out.events += run.fail(result.code, result.message)
        self._retire(run, out)
        out.events.append(
            ev.Error(
                error_type="server_error",
                code=result.code,
                message=f"Response {run.id} failed: {result.message}",
            )
        )
