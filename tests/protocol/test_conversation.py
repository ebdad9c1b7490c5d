"""protocol/conversation.py and the conversation.item.* client events through the machine."""

from __future__ import annotations

import base64

import pytest

from protocol import ProtocolError
from protocol import inputs as ins
from protocol.conversation import Conversation
from protocol.effects import StartResponse, TranscribeItemAudio
from protocol.items import Content, MessageItem
from tests.protocol.steps import (
    create_item,
    created_id,
    message,
    response_create,
    speak_audio,
    start_of,
    text_turn,
    user_text,
    vad,
)
from tests.support import Driver, pcm_ms, types


def item(item_id: str) -> MessageItem:
    return MessageItem(id=item_id, role="user", content=(Content("input_text", text=item_id),))


def ids(conversation: Conversation) -> list[str]:
    return [i.id for i in conversation]


def conversation_ids(d: Driver) -> list[str]:
    return ids(d.conn.conversation)


# --- Conversation ----------------------------------------------------------------------------


def test_insert_appends_and_returns_the_previous_id() -> None:
    conversation = Conversation()
    assert conversation.insert(item("a")) is None
    assert conversation.insert(item("b")) == "a"
    assert ids(conversation) == ["a", "b"]
    assert conversation.last_id == "b"


def test_insert_after_root_goes_first() -> None:
    conversation = Conversation()
    conversation.insert(item("a"))
    assert conversation.insert(item("b"), "root") is None
    assert ids(conversation) == ["b", "a"]


def test_insert_after_an_item_goes_right_after_it() -> None:
    conversation = Conversation()
    for name in "abc":
        conversation.insert(item(name))
    assert conversation.insert(item("x"), "a") == "a"
    assert ids(conversation) == ["a", "x", "b", "c"]
    assert conversation.previous_id("b") == "x"


def test_insert_refuses_unknown_previous_and_duplicate_ids_changing_nothing() -> None:
    conversation = Conversation()
    conversation.insert(item("a"))
    with pytest.raises(ProtocolError) as info:
        conversation.insert(item("b"), "nope")
    assert (info.value.code, info.value.param) == ("invalid_value", "previous_item_id")
    with pytest.raises(ProtocolError) as info:
        conversation.insert(item("a"))
    assert (info.value.code, info.value.param) == ("item_already_exists", "item.id")
    assert ids(conversation) == ["a"]


def test_get_unknown_item_is_item_not_found_with_the_given_param() -> None:
    with pytest.raises(ProtocolError) as info:
        Conversation().get("item_x", "response.input[2].id")
    assert (info.value.code, info.value.param) == ("item_not_found", "response.input[2].id")


def test_replace_keeps_the_position_and_ignores_deleted_items() -> None:
    conversation = Conversation()
    conversation.insert(item("a"))
    conversation.insert(item("b"))
    new_a = MessageItem(id="a", role="user", content=(Content("input_text", text="A"),))
    conversation.replace(new_a)
    assert next(iter(conversation)) is new_a
    conversation.delete("b")
    conversation.replace(item("b"))
    assert ids(conversation) == ["a"]


# --- conversation.item.create ----------------------------------------------------------------


def test_item_create_echoes_added_then_done() -> None:
    d = Driver()
    events = create_item(d, message("user", "Hi", id="item_a"))
    assert types(events) == ["conversation.item.added", "conversation.item.done"]
    for event in events:
        assert event["previous_item_id"] is None
        assert event["item"] == {
            "id": "item_a",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_text", "text": "Hi"}],
        }
    assert conversation_ids(d) == ["item_a"]


def test_item_create_with_previous_root_and_previous_id() -> None:
    d = Driver()
    create_item(d, message("user", "a", id="item_a"))
    create_item(d, message("user", "b", id="item_b"))
    events = create_item(d, message("system", "s", id="item_s"), previous_item_id="root")
    assert events[0]["previous_item_id"] is None
    events = create_item(d, message("user", "x", id="item_x"), previous_item_id="item_a")
    assert events[0]["previous_item_id"] == "item_a"
    assert conversation_ids(d) == ["item_s", "item_a", "item_x", "item_b"]


def test_item_create_with_unknown_previous_id_is_an_error() -> None:
    d = Driver()
    (error,) = d.send(
        {
            "type": "conversation.item.create",
            "event_id": "c1",
            "previous_item_id": "item_nope",
            "item": message("user", "x"),
        }
    )
    assert (error["error"]["code"], error["error"]["param"], error["error"]["event_id"]) == (
        "invalid_value",
        "previous_item_id",
        "c1",
    )
    assert conversation_ids(d) == []


def test_item_create_with_duplicate_id_is_item_already_exists() -> None:
    d = Driver()
    create_item(d, message("user", "x", id="item_a"))
    (error,) = d.send(
        {
            "type": "conversation.item.create",
            "event_id": "c2",
            "item": message("user", "y", id="item_a"),
        }
    )
    assert (error["error"]["code"], error["error"]["event_id"]) == ("item_already_exists", "c2")
    assert [i.text for i in d.conn.conversation] == ["x"]


def test_item_create_cannot_take_the_id_of_the_speech_in_progress() -> None:
    d = Driver()
    (started,) = vad(d, 320, 0.9)
    (error,) = create_item(d, message("user", "x", id=started["item_id"]))
    assert error["error"]["code"] == "item_already_exists"
    committed = vad(d, 320, 0.0)
    assert committed[1]["type"] == "input_audio_buffer.committed"
    assert conversation_ids(d) == [started["item_id"]]


def test_function_call_output_item_is_echoed() -> None:
    d = Driver()
    events = create_item(
        d, {"type": "function_call_output", "call_id": "call_1", "output": '{"ok":true}'}
    )
    assert events[0]["item"]["type"] == "function_call_output"
    assert (events[0]["item"]["call_id"], events[0]["item"]["output"]) == ("call_1", '{"ok":true}')


def test_input_audio_item_is_transcribed_and_responses_wait_for_it() -> None:
    d = Driver()
    audio = pcm_ms(500)
    events = create_item(
        d,
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "audio": base64.b64encode(audio).decode()}],
        },
    )
    item_id = events[0]["item"]["id"]
    assert events[0]["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    effect = d.effect(TranscribeItemAudio)
    assert (effect.item_id, effect.audio, effect.format) == (item_id, audio, "audio/pcm")
    rid = created_id(response_create(d))
    assert not [e for e in d.effects if isinstance(e, StartResponse)]
    assert d.feed(ins.TranscriptDone(item_id, "What time is it?", 0.5)) == []
    plan = start_of(d, rid).plan
    assert [i.text for i in plan.context] == ["What time is it?"]
    (retrieved,) = d.send({"type": "conversation.item.retrieve", "item_id": item_id})
    assert retrieved["item"]["content"] == [
        {"type": "input_audio", "transcript": "What time is it?"}
    ]


def test_input_audio_item_errors_name_the_content_index() -> None:
    d = Driver()
    content = [
        {"type": "input_text", "text": "x"},
        {"type": "input_audio", "audio": base64.b64encode(b"\0" * 3).decode()},
    ]
    (error,) = create_item(d, {"type": "message", "role": "user", "content": content})
    assert (error["error"]["code"], error["error"]["param"]) == (
        "invalid_value",
        "item.content[1].audio",
    )
    content[1]["audio"] = "@@@@"
    (error,) = create_item(d, {"type": "message", "role": "user", "content": content})
    assert error["error"]["param"] == "item.content[1].audio"
    assert conversation_ids(d) == []


# --- retrieve / delete -----------------------------------------------------------------------


def test_retrieve_returns_the_item() -> None:
    d = Driver()
    create_item(d, message("user", "x", id="item_a"))
    (retrieved,) = d.send({"type": "conversation.item.retrieve", "item_id": "item_a"})
    assert retrieved["type"] == "conversation.item.retrieved"
    assert retrieved["item"]["content"] == [{"type": "input_text", "text": "x"}]


@pytest.mark.parametrize("kind", ["retrieve", "delete", "truncate"])
def test_unknown_item_id_is_item_not_found(kind: str) -> None:
    d = Driver()
    event = {"type": f"conversation.item.{kind}", "event_id": "e9", "item_id": "item_nope"}
    if kind == "truncate":
        event |= {"content_index": 0, "audio_end_ms": 0}
    (error,) = d.send(event)
    assert (error["error"]["code"], error["error"]["param"], error["error"]["event_id"]) == (
        "item_not_found",
        "item_id",
        "e9",
    )


def test_delete_removes_the_item() -> None:
    d = Driver()
    create_item(d, message("user", "a", id="item_a"))
    create_item(d, message("user", "b", id="item_b"))
    (deleted,) = d.send({"type": "conversation.item.delete", "item_id": "item_a"})
    assert (deleted["type"], deleted["item_id"]) == ("conversation.item.deleted", "item_a")
    assert conversation_ids(d) == ["item_b"]
    # the id is free again
    assert types(create_item(d, message("user", "a2", id="item_a")))[0] == (
        "conversation.item.added"
    )


def test_delete_of_an_item_still_streaming_is_refused() -> None:
    d = Driver()
    rid = text_turn(d)
    events = speak_audio(d, rid)
    (error,) = d.send({"type": "conversation.item.delete", "item_id": events[0]["item"]["id"]})
    assert error["error"]["code"] == "invalid_value"
    assert rid in error["error"]["message"]


def test_deleting_an_item_awaiting_its_transcript_releases_the_response() -> None:
    d = Driver()
    events = create_item(
        d,
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "audio": base64.b64encode(pcm_ms(200)).decode()}],
        },
    )
    rid = created_id(response_create(d))
    d.send({"type": "conversation.item.delete", "item_id": events[0]["item"]["id"]})
    assert start_of(d, rid).plan.context == ()
    # its late transcript belongs to nothing now
    assert d.feed(ins.TranscriptDone(events[0]["item"]["id"], "late", 0.2)) == []


# --- truncate --------------------------------------------------------------------------------


def spoken_item(d: Driver, pieces: tuple[str, ...] = ("One ", "two ", "three.")) -> str:
    """A finished assistant audio item of 100 ms per transcript piece; returns its id."""
    rid = text_turn(d)
    events = speak_audio(d, rid, pieces, chunk_ms=100)
    d.feed(ins.ResponseComplete(rid))
    return events[0]["item"]["id"]


def truncate(d: Driver, item_id: str, audio_end_ms: int, content_index: int = 0) -> list[dict]:
    return d.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": content_index,
            "audio_end_ms": audio_end_ms,
        }
    )


def test_truncate_keeps_only_the_transcript_before_audio_end() -> None:
    d = Driver()
    item_id = spoken_item(d)
    (truncated,) = truncate(d, item_id, 150)
    assert truncated == {
        "type": "conversation.item.truncated",
        "event_id": truncated["event_id"],
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": 150,
    }
    (retrieved,) = d.send({"type": "conversation.item.retrieve", "item_id": item_id})
    assert retrieved["item"]["content"] == [{"type": "output_audio", "transcript": "One two "}]


def test_truncate_past_the_audio_is_clamped_to_its_length() -> None:
    d = Driver()
    item_id = spoken_item(d)
    (truncated,) = truncate(d, item_id, 10_000)
    assert truncated["audio_end_ms"] == 300
    assert d.conn.conversation.get(item_id).text == "One two three."


def test_truncate_twice_never_grows_the_audio_back() -> None:
    d = Driver()
    item_id = spoken_item(d)
    truncate(d, item_id, 50)
    (truncated,) = truncate(d, item_id, 250)
    assert truncated["audio_end_ms"] == 50
    assert d.conn.conversation.get(item_id).text == "One "


def test_truncate_at_zero_empties_the_transcript() -> None:
    d = Driver()
    item_id = spoken_item(d)
    truncate(d, item_id, 0)
    assert d.conn.conversation.get(item_id).text == ""


def test_truncate_of_a_user_item_is_refused() -> None:
    d = Driver()
    create_item(d, message("user", "x", id="item_u"))
    (error,) = truncate(d, "item_u", 10)
    assert (error["error"]["code"], error["error"]["param"]) == ("invalid_value", "item_id")


def test_truncate_of_text_content_is_refused() -> None:
    d = Driver()
    create_item(d, message("assistant", "hello", id="item_t"))
    (error,) = truncate(d, "item_t", 10)
    assert (error["error"]["code"], error["error"]["param"]) == ("invalid_value", "content_index")
    item_id = spoken_item(d)
    (error,) = truncate(d, item_id, 10, content_index=1)
    assert error["error"]["param"] == "content_index"


def test_truncate_after_client_cancel_then_retrieve() -> None:
    """The Agents SDK's interruption: response.cancel, truncate at its playback time, retrieve."""
    d = Driver()
    rid = text_turn(d)
    item_id = speak_audio(d, rid, ("Once ", "upon ", "a ", "time"), chunk_ms=200)[0]["item"]["id"]
    cancel = d.send({"type": "response.cancel"})
    assert cancel[-1]["response"]["status"] == "cancelled"
    (truncated,) = truncate(d, item_id, 450)
    assert truncated["audio_end_ms"] == 450
    (retrieved,) = d.send({"type": "conversation.item.retrieve", "item_id": item_id})
    assert retrieved["item"]["status"] == "incomplete"
    assert retrieved["item"]["content"] == [{"type": "output_audio", "transcript": "Once upon a "}]


def test_truncate_of_an_item_closed_before_its_response_ended() -> None:
    d = Driver()
    rid = text_turn(d)
    item_id = speak_audio(d, rid, ("Let me ", "check."), chunk_ms=100)[0]["item"]["id"]
    d.feed(ins.ToolCallOut(rid, "call_1", "lookup", "{}"))  # closes the audio item
    (truncated,) = truncate(d, item_id, 50)
    assert truncated["audio_end_ms"] == 50
    assert d.conn.conversation.get(item_id).text == "Let me "
    d.feed(ins.ResponseComplete(rid))
    assert d.conn.conversation.get(item_id).text == "Let me "
    # the response's end does not undo the truncation
    assert truncate(d, item_id, 10_000)[0]["audio_end_ms"] == 50


def test_user_text_after_truncate_follows_the_assistant_item() -> None:
    d = Driver()
    item_id = spoken_item(d)
    truncate(d, item_id, 100)
    events = user_text(d, "Stop.")
    assert events[0]["previous_item_id"] == item_id


# --- truncate while the answer streams (pipecat and the openai SDK truncate on barge-in) -----


def test_truncate_while_streaming_stops_the_item_and_keeps_what_was_heard() -> None:
    d = Driver()
    rid = text_turn(d)
    item_id = speak_audio(d, rid, ("One ", "two ", "three "), chunk_ms=100)[0]["item"]["id"]
    (truncated,) = truncate(d, item_id, 150)
    assert (truncated["type"], truncated["audio_end_ms"]) == ("conversation.item.truncated", 150)
    # the rest of this item's audio and transcript is never sent
    assert speak_audio(d, rid, ("four ", "five."), chunk_ms=100) == []
    done = d.feed(ins.ResponseComplete(rid))
    assert [e["type"] for e in done][-1] == "response.done"
    assert not [e for e in done if e["type"].endswith(".delta")]
    (transcript_done,) = [e for e in done if e["type"] == "response.output_audio_transcript.done"]
    assert transcript_done["transcript"] == "One two three "  # the deltas that were sent
    (retrieved,) = d.send({"type": "conversation.item.retrieve", "item_id": item_id})
    assert retrieved["item"]["content"] == [{"type": "output_audio", "transcript": "One two "}]
    # the same as a truncate after the response ended: never grows back
    assert truncate(d, item_id, 10_000)[0]["audio_end_ms"] == 150


def test_truncate_while_streaming_past_the_audio_sent_is_clamped() -> None:
    d = Driver()
    rid = text_turn(d)
    item_id = speak_audio(d, rid, ("One ", "two "), chunk_ms=100)[0]["item"]["id"]
    (truncated,) = truncate(d, item_id, 5_000)
    assert truncated["audio_end_ms"] == 200
    cancelled = d.send({"type": "response.cancel"})
    assert cancelled[-1]["response"]["status"] == "cancelled"
    assert d.conn.conversation.get(item_id).text == "One two "


def test_truncate_while_streaming_of_content_one_is_refused() -> None:
    d = Driver()
    rid = text_turn(d)
    item_id = speak_audio(d, rid, ("One ",), chunk_ms=100)[0]["item"]["id"]
    (error,) = truncate(d, item_id, 50, content_index=1)
    assert (error["error"]["code"], error["error"]["param"]) == ("invalid_value", "content_index")
    assert speak_audio(d, rid, ("two ",), chunk_ms=100) != []  # the item still streams


def test_a_user_message_with_an_image_is_kept_and_reaches_the_response() -> None:
    d = Driver()
    image = {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}
    item = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "What is this?"}, image],
    }
    added, _ = create_item(d, item)
    assert added["item"]["content"][1] == image
    rid = created_id(response_create(d))
    (context,) = start_of(d, rid).plan.context
    assert context.content[1].image_url == image["image_url"]


def test_an_image_without_its_url_is_refused() -> None:
    d = Driver()
    item = {"type": "message", "role": "user", "content": [{"type": "input_image"}]}
    (error,) = create_item(d, item)
    assert (error["error"]["code"], error["error"]["param"]) == (
        "missing_required_parameter",
        "item.content[0].image_url",
    )
