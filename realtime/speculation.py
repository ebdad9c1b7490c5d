"""A speculation as the I/O shell runs it: the work started at a pause and what it holds.

When speculation starts and when what it produced stands are the protocol machine's rules
(``protocol/speculation.py``). Here is the shell's side: the session's speculation task
transcribes the span and, when a response would follow, runs the response pipeline with its
results going to :attr:`SpeculativeWork.results` instead of the machine. Nothing held
reaches the client: a cancelled speculation is dropped whole. When the machine starts the
turn's response from it, the response's task replays the held results under the response's
id and follows the rest as the still-running work produces them.
"""

from __future__ import annotations

from typing import Any

import trio

from engines.base import CancelToken, Transcript
from protocol import inputs as ins
from protocol.effects import StartSpeculation, TranscribeEarly

from .pool import EngineLimiter


class EarlyTranscript:
    """The task of one :class:`~protocol.effects.TranscribeEarly`: the turn so far, being
    transcribed before its pause. The machine decides when one starts, when it is dropped,
    and which speculation takes it (``StartSpeculation.early_id``)."""

    def __init__(self, request: TranscribeEarly) -> None:
        self.request = request
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.result: tuple[Transcript, float] | None = None  #: the transcript, engine seconds

    @property
    def id(self) -> str:
        return self.request.early_id

    def cancel(self) -> None:
        self.scope.cancel()


class SpeculativeWork:
    """The work and the held results of one ``StartSpeculation``.

    ``samples``: the span's 16 kHz audio, cut when the speculation was asked for.
    """

    def __init__(self, request: StartSpeculation, samples: object) -> None:
        self.request = request
        self.samples = samples
        self.scope = trio.CancelScope()
        self.token = CancelToken()
        self.transcript: Transcript | None = None
        self.stt_seconds = 0.0  #: what the engine took for the transcript
        #: set once the transcription is over, with a transcript or without one
        self.transcribed = trio.Event()
        #: a commit takes the transcript: its transcription goes on even if the rest is dropped
        self.transcript_claimed = False
        self.response_wanted = request.plan is not None
        #: the response's results in order, with the speculation's id in place of a response id
        self.results: list[ins.EngineResult] = []
        self.finished = False
        self.failure: BaseException | None = None
        self.released = trio.Event()
        self._changed = trio.Event()
        #: the transcript started before the pause that this speculation takes, if any
        self.early: EarlyTranscript | None = None

    @property
    def id(self) -> str:
        return self.request.speculation_id

    @property
    def held(self) -> bool:
        """Not released to a response yet: its engine calls yield to live ones."""
        return not self.released.is_set()

    @property
    def usable(self) -> bool:
        """Whether a response can be built from it."""
        return self.response_wanted and self.failure is None

    def limiter(self, engine: EngineLimiter) -> object:
        """The ``to_thread`` limiter of ``engine`` for this speculation's next call."""
        return engine.speculative if self.held else engine

    async def hold(self, result: ins.EngineResult) -> None:
        """The response pipeline's ``emit`` while speculating (and after release: the
        response's task follows the list)."""
        self.results.append(result)
        self._notify()

    def finish(self, failure: BaseException | None) -> None:
        """The work is over (``failure``: why the response could not be completed)."""
        self.finished, self.failure = True, failure
        self._notify()

    async def changed(self) -> None:
        """Wait for the next result or for the end of the work."""
        await self._changed.wait()

    def release(self) -> None:
        """A response takes over: the work goes on as live work."""
        self.released.set()

    def cancel(self) -> None:
        """Stop the work; nothing it made or makes will be used."""
        self.response_wanted = False
        self.token.cancel()
        self.scope.cancel()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


def engine_limiter(engine: EngineLimiter, held: SpeculativeWork | None) -> Any:
    """The ``to_thread`` limiter for a call of ``engine`` made for ``held`` (None: live)."""
    return engine if held is None else held.limiter(engine)
