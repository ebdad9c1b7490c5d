"""The output audio buffer of a WebRTC call, where the server owns playback.

Over WebRTC the answer's audio goes to the call's media track instead of into events, and the
server reports the buffer's life, each event naming the response whose audio it holds:

- ``output_audio_buffer.started``: the response's first audio begins to play out (after its
  ``response.content_part.added``);
- ``output_audio_buffer.stopped``: the response is done (``response.done`` sent) and all of its
  audio has played out; a buffer that runs dry while the response is still speaking has not
  stopped;
- ``output_audio_buffer.cleared``: a response's audio was flushed (barge-in or
  ``output_audio_buffer.clear``), queued audio dropped and no more of it to come.

The states and their transitions are ``states.PLAYOUT_TRANSITIONS``; the shell reports the
track's side (``PlayoutStarted``, ``PlayoutStopped``, ``PlayoutCleared``) and this machine
decides what the client is told.
"""

from __future__ import annotations

from . import events as ev
from .states import PlayoutState, advance


class Playout:
    """The buffer's state, the response and item whose audio it holds, and how much of the
    item's audio was queued (ms), so that a flush tells how much of it was heard."""

    def __init__(self) -> None:
        self.state = PlayoutState.IDLE
        self.response_id: str | None = None
        self.item_id: str | None = None
        self.item_queued_ms = 0.0
        self.response_done = False
        self.started_sent = False
        #: the item a flush in progress cuts, and the ms of it that had been queued
        self._flushing: tuple[str | None, float] = (None, 0.0)

    def _go(self, trigger: str) -> None:
        self.state = advance(self.state, trigger, "playout")

    @property
    def active(self) -> bool:
        """Audio is queued or playing: a flush would drop something."""
        return self.state is not PlayoutState.IDLE

    def queue(self, response_id: str, item_id: str, ms: float) -> list[ev.ServerEvent]:
        """Audio of ``item_id`` was queued on the track."""
        out: list[ev.ServerEvent] = []
        if response_id != self.response_id:
            # a new response's audio behind the last one's: that one's buffer life ends here
            if self.started_sent and self.response_id is not None:
                out.append(ev.OutputAudioBufferStopped(response_id=self.response_id))
            playing = self.state is PlayoutState.PLAYING
            self.response_id, self.response_done = response_id, False
            self.started_sent = False
            if playing:  # no new "started" will come from the track: it never stopped
                out.append(ev.OutputAudioBufferStarted(response_id=response_id))
                self.started_sent = True
        if item_id != self.item_id:
            self.item_id, self.item_queued_ms = item_id, 0.0
        self.item_queued_ms += ms
        self._go("queue")
        return out

    def started(self) -> list[ev.ServerEvent]:
        """The track began playing queued audio."""
        if self.state is not PlayoutState.QUEUED:
            return []  # a report about audio already flushed
        self._go("start")
        if self.started_sent or self.response_id is None:
            return []
        self.started_sent = True
        return [ev.OutputAudioBufferStarted(response_id=self.response_id)]

    def drained(self) -> list[ev.ServerEvent]:
        """The track played out everything queued."""
        if self.state is not PlayoutState.PLAYING:
            return []
        if not self.response_done:
            self._go("dry")
            return []
        return self._stop()

    def response_finished(self, response_id: str) -> list[ev.ServerEvent]:
        """``response.done`` was sent for ``response_id``."""
        if response_id != self.response_id:
            return []
        self.response_done = True
        if self.state is PlayoutState.DRY:
            return self._stop()
        return []

    def _stop(self) -> list[ev.ServerEvent]:
        self._go("drain")
        assert self.response_id is not None
        out: list[ev.ServerEvent] = [ev.OutputAudioBufferStopped(response_id=self.response_id)]
        self._reset()
        return out

    def clear(self) -> list[ev.ServerEvent]:
        """Flush what is queued (barge-in, ``output_audio_buffer.clear``): the ``cleared``
        event now; :meth:`flushed` tells, once the track has dropped it, what was heard."""
        if not self.active or self.response_id is None:
            return []
        out: list[ev.ServerEvent] = [ev.OutputAudioBufferCleared(response_id=self.response_id)]
        self._flushing = (self.item_id, self.item_queued_ms)
        self._go("clear")
        self._reset()
        return out

    def flushed(self, dropped_ms: float) -> tuple[str | None, float]:
        """The track dropped ``dropped_ms`` of queued audio: the item cut short and the ms of
        it that was heard (None when nothing of it was dropped)."""
        item_id, queued_ms = self._flushing
        self._flushing = (None, 0.0)
        if item_id is None or dropped_ms <= 0:
            return None, 0.0
        return item_id, max(0.0, queued_ms - dropped_ms)

    def _reset(self) -> None:
        self.response_id = self.item_id = None
        self.item_queued_ms = 0.0
        self.response_done = self.started_sent = False
