"""Deterministic test doubles of the four engines (tests only; no models)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from engines.base import (
    CancelToken,
    FloatAudio,
    LLMEvent,
    LLMRequest,
    TextDelta,
    ToolCall,
    Transcript,
    Usage,
)


class FakeVAD:
    """Speech = frames louder than a fixed energy."""

    sample_rate = 16_000
    frame_samples = 512

    def __init__(self) -> None:
        self.resets = 0

    def probability(self, frame: FloatAudio) -> float:
        assert len(frame) == self.frame_samples
        return 0.95 if float(np.sqrt(np.mean(frame**2))) > 0.02 else 0.02

    def reset(self) -> None:
        self.resets += 1

    def stream(self) -> FakeVAD:
        return FakeVAD()


class FakeSTT:
    """Says ``text`` for any audio louder than silence; partials give its first words."""

    sample_rate = 16_000

    def __init__(self, text: str = "what is the weather in paris") -> None:
        self.text = text
        self.calls: list[tuple[int, bool]] = []
        self.fail = False

    def transcribe(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        partial: bool = False,
        logprobs: bool = False,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        self.calls.append((len(audio), partial))
        if self.fail and not partial:
            raise RuntimeError("fake transcription failure")
        seconds = len(audio) / self.sample_rate
        if not len(audio) or float(np.sqrt(np.mean(audio**2))) < 0.01:
            return Transcript("", seconds)
        words = self.text.split()
        if partial:
            words = words[: max(1, int(seconds / 0.3))]
        scores = tuple((w, -0.05) for w in words) if logprobs else None
        return Transcript(" ".join(words), seconds, logprobs=scores)


class FakeLLM:
    """Answers with ``reply`` word by word; calls ``get_weather`` when asked about weather
    and the tool is offered; answers a tool result with ``after_tool``."""

    def __init__(
        self,
        reply: str = "Hello there. I am a test double, speaking slowly.",
        after_tool: str = "It is sunny in Paris.",
        token_delay_s: float = 0.0,
    ) -> None:
        self.reply = reply
        self.after_tool = after_tool
        self.token_delay_s = token_delay_s
        self.requests: list[LLMRequest] = []
        self.fail = False

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        self.requests.append(request)
        if self.fail:
            raise RuntimeError("fake LLM failure")
        last = request.messages[-1] if request.messages else None
        if last is not None and last.role == "tool":
            text = self.after_tool
        elif (
            last is not None
            and "weather" in last.content
            and any(t.name == "get_weather" for t in request.tools)
            and request.tool_choice != "none"
        ):
            yield ToolCall("call_fake1", "get_weather", json.dumps({"city": "Paris"}))
            yield Usage(input_tokens=10, output_tokens=5)
            return
        else:
            text = self.reply
        words = text.split(" ")
        limit = request.max_output_tokens or len(words)
        produced = 0
        for index, word in enumerate(words[:limit]):
            if cancel.cancelled:
                return
            if self.token_delay_s:
                time.sleep(self.token_delay_s)
            yield TextDelta(word if index == 0 else " " + word)
            produced += 1
        yield Usage(input_tokens=20, output_tokens=produced, truncated=limit < len(words))


class ScriptedLLM:
    """Calls the tools its ``script`` names for words of the user's last message (when they
    are offered), then reads back what the tools returned.

    ``script`` maps a word to the calls to make, ``(tool name, arguments)`` each, all in one
    round. After tool results the answer is ``"The tools said: <result>; <result>."``."""

    def __init__(self, script: dict[str, list[tuple[str, dict[str, Any]]]]) -> None:
        self.script = script
        self.requests: list[LLMRequest] = []

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        self.requests.append(request)
        messages = list(request.messages)
        results = []
        while messages and messages[-1].role == "tool":
            results.insert(0, messages.pop().content)
        offered = {t.name for t in request.tools}
        if results:
            text = "The tools said: " + "; ".join(results) + "."
        else:
            said = messages[-1].content.lower() if messages else ""
            calls = [
                (name, args)
                for word, planned in self.script.items()
                if word in said
                for name, args in planned
                if name in offered
            ]
            if calls and request.tool_choice != "none":
                for index, (name, args) in enumerate(calls):
                    yield ToolCall(f"call_scripted{index}", name, json.dumps(args))
                yield Usage(input_tokens=10, output_tokens=5)
                return
            text = "No tool for that."
        for index, word in enumerate(text.split(" ")):
            if cancel.cancelled:
                return
            yield TextDelta(word if index == 0 else " " + word)
        yield Usage(input_tokens=20, output_tokens=len(text.split(" ")))


class FakeTTS:
    """A 440 Hz tone, 80 ms per word, in chunks of one word."""

    sample_rate = 22_050

    def __init__(self, chunk_delay_s: float = 0.0) -> None:
        self.chunk_delay_s = chunk_delay_s
        self.texts: list[str] = []

    def voices(self) -> Sequence[str]:
        return ("fake",)

    def synthesize(
        self, text: str, *, voice: str | None, speed: float, cancel: CancelToken
    ) -> Iterator[FloatAudio]:
        self.texts.append(text)
        n = int(self.sample_rate * 0.08 / speed)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / self.sample_rate)).astype(np.float32)
        for _ in text.split():
            if cancel.cancelled:
                return
            if self.chunk_delay_s:
                time.sleep(self.chunk_delay_s)
            yield tone


class Fault:
    """How a faulty fake engine misbehaves once ``after`` outputs went through: ``raise`` at
    once, ``hang`` until :meth:`release` (ignoring its cancel token, as a stuck native call
    would), or ``slow`` (``delay_s`` before each output). ``mode=None`` behaves normally."""

    def __init__(self, mode: str | None = None, *, after: int = 0, delay_s: float = 0.5) -> None:
        assert mode in (None, "raise", "hang", "slow")
        self.mode = mode
        self.after = after
        self.delay_s = delay_s
        self.calls = 0  #: engine calls that reached the fault
        self.entered = threading.Event()  #: set once a call reached the fault
        self.running = 0  #: engine calls under way now
        self.most_running = 0  #: the most calls that were ever under way at once
        self._released = threading.Event()
        self._lock = threading.Lock()

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around one whole engine call (for a generator: until it returns or is closed)."""
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1

    def release(self) -> None:
        """Let every hanging call go on (tests call it at the end: threads can't be killed)."""
        self._released.set()

    def hit(self, engine: str, produced: int) -> None:
        """Called before output number ``produced`` (0-based) of one engine call."""
        if self.mode is None or produced < self.after:
            return
        if self.mode == "slow":
            time.sleep(self.delay_s)
            return
        if produced == self.after:
            self.calls += 1
            self.entered.set()
        if self.mode == "raise":
            raise RuntimeError(f"fake {engine} failure")
        self._released.wait()


class FaultySTT(FakeSTT):
    """:class:`FakeSTT` whose final transcriptions meet ``fault`` (partials are spared)."""

    def __init__(self, fault: Fault, text: str = "what is the weather in paris") -> None:
        super().__init__(text)
        self.fault = fault

    def transcribe(self, audio: FloatAudio, **options: Any) -> Transcript:
        with self.fault.call():
            if not options.get("partial"):
                self.fault.hit("STT", 0)
            return super().transcribe(audio, **options)


class FaultyLLM(FakeLLM):
    """:class:`FakeLLM` that meets ``fault`` before its text delta number ``fault.after``."""

    def __init__(self, fault: Fault, **options: Any) -> None:
        super().__init__(**options)
        self.fault = fault

    def stream(self, request: LLMRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        produced = 0
        with self.fault.call():
            for event in super().stream(request, cancel):
                if isinstance(event, TextDelta):
                    self.fault.hit("LLM", produced)
                    produced += 1
                yield event


class FaultyTTS(FakeTTS):
    """:class:`FakeTTS` that meets ``fault`` before its audio chunk number ``fault.after``,
    counted over the engine's life (a response speaks each sentence in a call of its own)."""

    def __init__(self, fault: Fault, chunk_delay_s: float = 0.0) -> None:
        super().__init__(chunk_delay_s)
        self.fault = fault
        self.produced = 0

    def synthesize(
        self, text: str, *, voice: str | None, speed: float, cancel: CancelToken
    ) -> Iterator[FloatAudio]:
        with self.fault.call():
            for chunk in super().synthesize(text, voice=voice, speed=speed, cancel=cancel):
                self.fault.hit("TTS", self.produced)
                self.produced += 1
                yield chunk
