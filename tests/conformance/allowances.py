"""Where a recorded trace legitimately differs from our server: one entry per field.

Every entry names the difference (kind, event type, field path), the traces it applies to and
why it is not a conformance problem. ``test_recorded.py`` fails on an entry no flow needs.
"""

from __future__ import annotations

from tests.conformance.compare import Allowance, Kind

_OBFUSCATION = (
    "OpenAI pads each text delta with a random 'obfuscation' string so that encrypted frame "
    "sizes do not reveal the text; the SDK types do not declare it and no client reads it"
)
_QUOTED_WITHOUT_ENVELOPE = (
    "the source quotes the error body without the envelope's event_id (a log line, an issue, "
    "the capture's elided ids); every server event has one, as T4 and T3's other frames show"
)

ALLOWANCES: tuple[Allowance, ...] = (
    # the recorder's first turn skips the assistant's conversation.item.added, which its own
    # in-order block (the second turn, seq 8) has right after response.output_item.added
    Allowance(
        Kind.EXTRA_EVENT,
        "conversation.item.added",
        "",
        "the recorder left it out of its first turn; its second turn has it in this place",
        frozenset({"T2 first turn"}),
    ),
    Allowance(
        Kind.MISSING_KEY,
        "response.output_audio_transcript.delta",
        "obfuscation",
        _OBFUSCATION,
        frozenset({"T2", "T2 first turn"}),
    ),
    Allowance(
        Kind.MISSING_KEY,
        "response.output_text.delta",
        "obfuscation",
        _OBFUSCATION,
        frozenset({"T3"}),
    ),
    Allowance(
        Kind.MISSING_KEY,
        "conversation.item.input_audio_transcription.delta",
        "obfuscation",
        _OBFUSCATION,
        frozenset({"T1", "T3"}),
    ),
    Allowance(
        Kind.ORDER,
        "conversation.item.input_audio_transcription.delta",
        "",
        "live transcription (--enable_live_transcription, on by default) streams partial "
        "transcripts while the user speaks, so they come before the item is committed; "
        "OpenAI's transcription models start after the commit",
        frozenset({"T3"}),
        in_some_runs=True,  # a partial may also come out after the commit
    ),
    Allowance(
        Kind.VALUE,
        "conversation.item.input_audio_transcription.completed",
        "usage.type",
        "a local STT counts no tokens: ours reports the duration form of usage, which OpenAI "
        "uses for whisper-1 and the SDK types accept, instead of the token form",
        frozenset({"T1", "T3"}),
    ),
    Allowance(
        Kind.MISSING_EVENT,
        "rate_limits.updated",
        "",
        "a local server has no account rate limits; PROTOCOL R4 does not require the event",
        frozenset({"T2 first turn", "T3"}),
    ),
    Allowance(
        Kind.EXTRA_KEY,
        "error",
        "event_id",
        _QUOTED_WITHOUT_ENVELOPE,
        frozenset({"T3", "T5", "T6"}),
    ),
    Allowance(
        Kind.EXTRA_KEY,
        "error",
        "error.event_id",
        "the issue quotes the error without error.event_id; OpenAI sends it, null when the "
        "client event had no event_id (T3, T4)",
        frozenset({"T6"}),
    ),
    Allowance(
        Kind.MISSING_KEY,
        "response.output_item.added",
        "item.object",
        "only the API reference example has item.object here; OpenAI's GA traffic does not "
        "(T2, seq 7), nor does ours",
        frozenset({"T1"}),
    ),
)
