"""Test doubles that misbehave inside an engine worker process (tests only): they crash the
process the way native code does, hang in a call, or refuse to start. Each is built in the
worker from its module path, so they live in a module of their own."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from engines.base import CancelToken, LLMEvent, LLMRequest, MissingDependency, TextDelta, Usage


class FakeCrashingLLM:
    """Streams ``tokens`` words, but after ``crash_after`` of them kills its own process with
    ``signum`` (SIGSEGV: as a segfault in native code would)."""

    def __init__(self, crash_after: int = 2, signum: int = signal.SIGSEGV, tokens: int = 20):
        self.crash_after, self.signum, self.tokens = crash_after, signum, tokens

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        for index in range(self.tokens):
            if index == self.crash_after:
                os.kill(os.getpid(), self.signum)
                time.sleep(10)  # a signal is delivered at once; never reached
            yield TextDelta(f" word{index}")
        yield Usage(input_tokens=1, output_tokens=self.tokens)


class FakeHangingLLM:
    """Sends one token, then blocks ignoring its cancel token, as a stuck native call does."""

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        yield TextDelta("stuck")
        time.sleep(3600)
        yield Usage(input_tokens=1, output_tokens=1)


class FakeClockLLM:
    """Each token's text is the monotonic time at which the worker produced it (the clock is
    the machine's, the same in every process)."""

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        for _ in range(6):
            if cancel.cancelled:
                return
            yield TextDelta(repr(time.monotonic()))
        yield Usage(input_tokens=1, output_tokens=6)


class FakeEndlessLLM:
    """Streams a token every ``delay_s`` until it is cancelled; the last token says how many
    it made."""

    def __init__(self, delay_s: float = 0.01) -> None:
        self.delay_s = delay_s

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        count = 0
        while not cancel.cancelled:
            time.sleep(self.delay_s)
            count += 1
            yield TextDelta(f" {count}")
        yield Usage(input_tokens=1, output_tokens=count)


def fail_to_load() -> None:
    """A builder whose model file is missing."""
    raise MissingDependency("fake engine", "embedded", "the model file /nowhere/model.bin")


class FakeLoadsOnce:
    """Loads while ``marker`` does not exist, then creates it: every later start (a restart)
    fails, as when a model file is deleted while the server runs."""

    def __init__(self, marker: str) -> None:
        path = Path(marker)
        if path.exists():
            raise MissingDependency("fake engine", "embedded", f"the model file {marker}")
        path.touch()

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        yield Usage(input_tokens=0, output_tokens=0)


class FakeHangsOnce:
    """Hangs in its first call ever, as a stuck native call would (ignoring its cancel token),
    then answers like :class:`tests.realtime.fakes.FakeLLM`: ``marker`` records that the hang
    happened, so the worker that replaces the hung one answers."""

    def __init__(self, marker: str) -> None:
        self.marker = Path(marker)

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        if not self.marker.exists():
            self.marker.touch()
            time.sleep(3600)
        yield TextDelta("Fine again.")
        yield Usage(input_tokens=1, output_tokens=2)
