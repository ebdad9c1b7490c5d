"""A phone line's audio for its session: 8 kHz μ-law, paced in 20 ms frames, with the
caller's playout learnt from echoed marks (``phone.py`` has the call around it).

Telephony media streams (Twilio's, and Telnyx's, Plivo's and Vonage's alike) buffer what
the server sends and play it in order; a *mark* sent after some audio comes back once that
audio has played, and a *clear* drops the buffer (returning the marks still in it). So the
server sends audio a little ahead of the caller's ear (:data:`LEAD_S`), a mark every
:data:`MARK_EVERY` samples and at the end of each burst, and on barge-in clears the buffer
and counts as unheard everything after the last mark that came back: the session truncates
the answer to what the caller heard, within that precision.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

import numpy as np
import trio

from protocol import inputs as ins

from . import audio
from .calls import Call

log = logging.getLogger("realtime.phone")

LINE_RATE = 8_000  #: Hz of G.711 telephone audio
FRAME = LINE_RATE // 50  #: samples of one 20 ms frame
#: a mark follows this much audio (and the end of each burst): what the caller heard is
#: known to this precision
MARK_EVERY = LINE_RATE * 60 // 1000
#: audio sent ahead of the caller's ear, to ride out network jitter; a barge-in's ``clear``
#: drops it with the provider's buffer, so it does not delay the stop
LEAD_S = 0.06
#: a burst whose last mark has not come back this long after it should have played counts as
#: played (a provider that stopped echoing marks must not leave the playout open for ever)
MARK_GRACE_S = 2.0


class Line(Protocol):
    """A provider's media stream, outgoing side: the adapter turns these into its messages,
    in order. They never block: the adapter queues them (bounded) for the stream's sender
    task, and ends the call when the provider stops reading."""

    def send_media(self, ulaw: bytes) -> None: ...

    def send_mark(self, name: str) -> None: ...

    def send_clear(self) -> None: ...


class PhoneMedia:
    """The session's side of a phone line: 8 kHz μ-law out, paced, with playout from marks.

    :meth:`pace` runs in the stream's task while the stream lives; the session calls
    :meth:`play` and :meth:`clear`; the adapter calls :meth:`marked` for each echoed mark.
    Mark names are ``"{generation}:{samples}"``: a ``clear`` starts a new generation, so
    the marks the provider returns for cleared audio are told apart from played ones.
    """

    rate = LINE_RATE

    def __init__(self, call: Call) -> None:
        self._call = call
        self.audio_in = call.audio_receive
        self.reports = call.reports_receive
        self._pending = bytearray()  #: μ-law not yet sent
        self._more = trio.Event()
        self._generation = 0
        self._sent = 0  #: samples of this generation sent
        self._marked = 0  #: ... followed by a mark
        self._played = 0  #: ... the provider reported played
        self._playing = False
        self._dry_at = 0.0  #: when the provider's buffer runs out (trio clock)
        self.line: Line | None = None

    def play(self, samples: np.ndarray) -> None:
        """Queue float32 mono samples at 8 kHz behind what is queued."""
        if len(samples):
            self._pending += audio.encode(samples, "audio/pcmu")
            self._more.set()

    async def clear(self) -> int:
        """Drop what the caller has not heard: our queue and the provider's buffer."""
        dropped = len(self._pending) + self._sent - self._played
        self._pending.clear()
        self._generation += 1
        self._sent = self._marked = self._played = 0
        self._playing = False
        self._dry_at = 0.0  # the provider's buffer is empty: the next audio goes at once
        if self.line is not None:
            self.line.send_clear()
        await trio.lowlevel.checkpoint()
        return dropped

    def marked(self, name: str) -> None:
        """The provider played the audio up to the mark ``name`` (or flushed it)."""
        generation, _, position = name.partition(":")
        if generation != str(self._generation) or not position.isdigit():
            return  # a mark of audio that a clear dropped
        self._played = max(self._played, min(int(position), self._sent))
        if self._playing and self._played >= self._sent and not self._pending:
            self._playing = False
            self._call.report(ins.PlayoutStopped())

    def _unmarked(self) -> None:
        if self._playing and not self._pending and self._played < self._sent:
            log.warning(
                "call %s: the line echoed no mark for %.1f s of audio; counting it as played",
                self._call.call_id,
                (self._sent - self._played) / LINE_RATE,
            )
            self._played = self._sent
            self._playing = False
            self._call.report(ins.PlayoutStopped())

    async def pace(self, line: Line) -> None:
        """Send queued audio in 20 ms frames as the caller's playout needs it."""
        self.line = line
        while True:
            if not self._pending:
                self._more = trio.Event()
                with trio.move_on_at(self._dry_at + MARK_GRACE_S if self._playing else math.inf):
                    await self._more.wait()
                if not self._more.is_set():
                    self._unmarked()
                    continue
            await trio.sleep_until(self._dry_at - LEAD_S)
            if not self._pending:
                continue  # cleared while waiting
            # no checkpoint from here to the loop's end: a clear or a mark sees all or nothing
            frame = bytes(self._pending[:FRAME])
            del self._pending[:FRAME]
            now = trio.current_time()
            if not self._playing:
                self._playing = True
                self._call.report(ins.PlayoutStarted())
            line.send_media(frame)
            self._sent += len(frame)
            self._dry_at = max(self._dry_at, now) + len(frame) / LINE_RATE
            if self._sent - self._marked >= MARK_EVERY or not self._pending:
                self._marked = self._sent
                line.send_mark(f"{self._generation}:{self._sent}")
