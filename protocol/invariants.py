"""The ordering rules of a server event stream, checked one wire event at a time.

:class:`SequenceChecker` holds just enough state to say whether the next server event is allowed
after the ones before it (PROTOCOL.md section 4: C1, R1-R4, F1, B1-B3). It takes wire dicts, so
it checks this machine, a live server and recorded OpenAI traces alike.
"""

from __future__ import annotations

from typing import Any

import attrs


class InvariantViolation(AssertionError):
    """A server event broke an ordering rule of the protocol."""


@attrs.define
class _Part:
    kind: str  # "audio" | "text"
    deltas: str = ""
    transcript_done: bool = False
    audio_done: bool = False
    text_done: bool = False


@attrs.define
class _Response:
    in_conversation: bool
    items: set[str] = attrs.Factory(set)
    open_items: set[str] = attrs.Factory(set)
    parts: dict[tuple[str, int], _Part] = attrs.Factory(dict)
    arguments: dict[str, str] = attrs.Factory(dict)


class SequenceChecker:
    """Feed it server events in the order they were sent; it raises on the first violation.

    ``strict_start=False`` checks a stream that does not begin at ``session.created``.
    """

    def __init__(self, *, strict_start: bool = True) -> None:
        self.started = not strict_start
        self.event_ids: set[str] = set()
        self.active: dict[str, _Response] = {}
        self.done: set[str] = set()
        self.created = 0
        self.finished = 0
        self.transcribed: set[str] = set()
        #: assistant items truncated: nothing more of their audio or transcript may follow
        self.truncated: set[str] = set()

    def _fail(self, event: dict[str, Any], why: str) -> InvariantViolation:
        return InvariantViolation(f"{event.get('type')}: {why}")

    def check(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        event_id = event.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            raise self._fail(event, "every server event needs an event_id")
        if event_id in self.event_ids:
            raise self._fail(event, f"event_id {event_id} was used before")
        self.event_ids.add(event_id)
        if kind == "session.created":
            if self.started:
                raise self._fail(event, "session.created must be sent once, first")
            self.started = True
            return
        if not self.started:
            raise self._fail(event, "the first server event must be session.created")
        handler = getattr(self, "_" + str(kind).replace(".", "_"), None)
        response_id = event.get("response_id")
        if response_id is not None and kind not in (
            "output_audio_buffer.started",
            "output_audio_buffer.stopped",
            "output_audio_buffer.cleared",
        ):
            if response_id in self.done:
                raise self._fail(event, f"event for {response_id} after its response.done")
            if response_id not in self.active:
                raise self._fail(event, f"event for {response_id} before its response.created")
        if handler is not None:
            handler(event)

    # --- responses ---------------------------------------------------------------------------

    def _response_created(self, event: dict[str, Any]) -> None:
        response = event["response"]
        rid = response["id"]
        if rid in self.active or rid in self.done:
            raise self._fail(event, f"{rid} created twice")
        if response.get("status") != "in_progress":
            raise self._fail(event, "a new response must be in_progress")
        in_conversation = response.get("conversation_id") is not None
        if in_conversation and any(r.in_conversation for r in self.active.values()):
            raise self._fail(event, "a second active response in the default conversation")
        self.active[rid] = _Response(in_conversation)
        self.created += 1

    def _response_done(self, event: dict[str, Any]) -> None:
        response = event["response"]
        rid = response["id"]
        run = self.active.pop(rid, None)
        if run is None:
            raise self._fail(event, f"response.done for {rid}, which is not active")
        if run.open_items:
            raise self._fail(event, f"items {sorted(run.open_items)} still open at response.done")
        status = response.get("status")
        if status not in ("completed", "cancelled", "failed", "incomplete"):
            raise self._fail(event, f"final status {status!r}")
        details = response.get("status_details")
        if status != "completed" and (details or {}).get("type") != status:
            raise self._fail(event, "status_details.type must equal status")
        output_ids = {item.get("id") for item in response.get("output", [])}
        if output_ids != run.items:
            raise self._fail(event, "response.done output must list exactly the streamed items")
        self.done.add(rid)
        self.finished += 1

    def _run(self, event: dict[str, Any]) -> _Response:
        return self.active[event["response_id"]]

    def _response_output_item_added(self, event: dict[str, Any]) -> None:
        run = self._run(event)
        item_id = event["item"]["id"]
        if event["output_index"] != len(run.items):
            raise self._fail(event, "output_index must count the response's items from 0")
        run.items.add(item_id)
        run.open_items.add(item_id)

    def _response_output_item_done(self, event: dict[str, Any]) -> None:
        run = self._run(event)
        item = event["item"]
        if item["id"] not in run.open_items:
            raise self._fail(event, "output_item.done for an item that is not open")
        if any(key[0] == item["id"] for key in run.parts):
            raise self._fail(event, "output_item.done before its content_part.done")
        if item.get("type") == "function_call":
            if item["call_id"] in run.arguments:
                raise self._fail(event, "function_call_arguments.done missing")
        run.open_items.discard(item["id"])

    def _response_content_part_added(self, event: dict[str, Any]) -> None:
        run = self._run(event)
        key = (event["item_id"], event["content_index"])
        if event["item_id"] not in run.open_items or key in run.parts:
            raise self._fail(event, "content part added to a closed item, or twice")
        run.parts[key] = _Part(event["part"].get("type", "text"))

    def _part(self, event: dict[str, Any], kind: str) -> _Part:
        run = self._run(event)
        part = run.parts.get((event["item_id"], event["content_index"]))
        if part is None or part.kind != kind:
            raise self._fail(event, f"{kind} event outside an open {kind} content part")
        return part

    def _response_output_audio_delta(self, event: dict[str, Any]) -> None:
        part = self._part(event, "audio")
        if part.audio_done:
            raise self._fail(event, "audio delta after output_audio.done")
        self._not_truncated(event)

    def _not_truncated(self, event: dict[str, Any]) -> None:
        if event["item_id"] in self.truncated:
            raise self._fail(event, "more of an item after conversation.item.truncated")

    def _conversation_item_truncated(self, event: dict[str, Any]) -> None:
        self.truncated.add(event["item_id"])

    def _response_output_audio_done(self, event: dict[str, Any]) -> None:
        self._part(event, "audio").audio_done = True

    def _response_output_audio_transcript_delta(self, event: dict[str, Any]) -> None:
        part = self._part(event, "audio")
        if part.transcript_done:
            raise self._fail(event, "transcript delta after its done")
        self._not_truncated(event)
        part.deltas += event["delta"]

    def _response_output_audio_transcript_done(self, event: dict[str, Any]) -> None:
        part = self._part(event, "audio")
        if event["transcript"] != part.deltas:
            raise self._fail(event, "transcript must equal the concatenated deltas")
        part.transcript_done = True

    def _response_output_text_delta(self, event: dict[str, Any]) -> None:
        part = self._part(event, "text")
        if part.text_done:
            raise self._fail(event, "text delta after output_text.done")
        part.deltas += event["delta"]

    def _response_output_text_done(self, event: dict[str, Any]) -> None:
        part = self._part(event, "text")
        if event["text"] != part.deltas:
            raise self._fail(event, "text must equal the concatenated deltas")
        part.text_done = True

    def _response_content_part_done(self, event: dict[str, Any]) -> None:
        run = self._run(event)
        key = (event["item_id"], event["content_index"])
        part = run.parts.pop(key, None)
        if part is None:
            raise self._fail(event, "content_part.done for a part that is not open")
        if part.kind == "audio":
            if not (part.audio_done and part.transcript_done):
                raise self._fail(event, "audio part closed before its audio/transcript done")
            if event["part"].get("transcript") != part.deltas:
                raise self._fail(event, "part.transcript must equal the transcript")
        else:
            if not part.text_done or event["part"].get("text") != part.deltas:
                raise self._fail(event, "text part closed before output_text.done, or differs")

    def _response_function_call_arguments_delta(self, event: dict[str, Any]) -> None:
        run = self._run(event)
        if event["item_id"] not in run.open_items:
            raise self._fail(event, "arguments delta for an item that is not open")
        run.arguments[event["call_id"]] = run.arguments.get(event["call_id"], "") + event["delta"]

    def _response_function_call_arguments_done(self, event: dict[str, Any]) -> None:
        run = self._run(event)
        sent = run.arguments.pop(event["call_id"], "")
        if event["arguments"] != sent:
            raise self._fail(event, "arguments must equal the concatenated deltas")

    # --- input transcription -----------------------------------------------------------------

    def _conversation_item_input_audio_transcription_delta(self, event: dict[str, Any]) -> None:
        if event["item_id"] in self.transcribed:
            raise self._fail(event, "transcription delta after the item's completed/failed")

    def _conversation_item_input_audio_transcription_completed(self, event: dict[str, Any]) -> None:
        if event["item_id"] in self.transcribed:
            raise self._fail(event, "a second transcription result for the item")
        self.transcribed.add(event["item_id"])

    _conversation_item_input_audio_transcription_failed = (
        _conversation_item_input_audio_transcription_completed
    )
