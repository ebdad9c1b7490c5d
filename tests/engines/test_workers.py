"""Engines in worker processes (engines/workers): results cross the process boundary as they
would in-process, cancels stop the worker's call, and every way a worker can die or hang ends
the call with EngineFailed and a restart, never anything worse."""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.base import (
    CancelToken,
    ChatMessage,
    EngineError,
    EngineFailed,
    LLMRequest,
    TextDelta,
)
from engines.workers import (
    EngineWorker,
    WorkerLLM,
    WorkerState,
    WorkerSTT,
    WorkerTTS,
    start_all,
)
from engines.workers.supervisor import MissingDependencyReported, describe_exit
from tests.engines import worker_fakes
from tests.realtime.fakes import FakeLLM, FakeSTT, FakeTTS

REQUEST = LLMRequest(instructions="", messages=(ChatMessage("user", "hello"),))
#: quick restarts, so the tests wait for a restart in well under a second
FAST = {"backoff_s": (0.05, 0.2)}


@pytest.fixture
def workers() -> Iterator[Callable[..., EngineWorker]]:
    """Starts workers for a test and closes every one of them after it."""
    started: list[EngineWorker] = []

    def start(name: str, build: Callable[[], Any], **options: Any) -> EngineWorker:
        worker = EngineWorker(name, build, **{**FAST, **options})
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.close()


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def test_llm_events_cross_as_the_engine_yields_them(workers) -> None:
    llm = WorkerLLM(workers("llm", FakeLLM))
    assert list(llm.stream(REQUEST, CancelToken())) == list(
        FakeLLM().stream(REQUEST, CancelToken())
    )


def test_tts_chunks_and_voices_cross_unchanged(workers) -> None:
    tts = WorkerTTS(workers("tts", FakeTTS))
    local = FakeTTS()
    assert tts.sample_rate == local.sample_rate
    assert tuple(tts.voices()) == tuple(local.voices())
    remote = list(tts.synthesize("one two three", voice=None, speed=1.0, cancel=CancelToken()))
    expected = list(local.synthesize("one two three", voice=None, speed=1.0, cancel=CancelToken()))
    assert len(remote) == len(expected) == 3
    for got, want in zip(remote, expected, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_stt_transcribes_the_audio_it_is_sent(workers) -> None:
    stt = WorkerSTT(workers("stt", FakeSTT))
    tone = (0.3 * np.sin(np.arange(16_000) / 5)).astype(np.float32)
    result = stt.transcribe(tone, partial=True, logprobs=True)
    assert result == FakeSTT().transcribe(tone, partial=True, logprobs=True)
    assert stt.transcribe(np.zeros(8000, np.float32)).text == ""


def test_cancel_stops_the_workers_call_at_its_next_token(workers) -> None:
    worker = workers("llm", functools.partial(worker_fakes.FakeEndlessLLM, delay_s=0.01))
    llm = WorkerLLM(worker)
    token = CancelToken()
    events = []
    for event in llm.stream(REQUEST, token):
        events.append(event)
        if len(events) == 5:
            token.cancel()
    # the endless stream ended: nothing after the cancel but what the window held
    assert 5 <= len(events) <= 5 + 2
    assert all(isinstance(event, TextDelta) for event in events)
    # and the worker is free for the next call at once, which starts afresh
    assert next(iter(llm.stream(REQUEST, CancelToken()))) == TextDelta(" 1")


def test_a_stream_closed_early_leaves_the_worker_ready(workers) -> None:
    llm = WorkerLLM(workers("llm", worker_fakes.FakeEndlessLLM))
    stream = llm.stream(REQUEST, CancelToken())
    assert next(stream) == TextDelta(" 1")
    stream.close()  # as a consumer that stops iterating
    # no frame of the closed call is left over for the next one
    assert next(iter(llm.stream(REQUEST, CancelToken()))) == TextDelta(" 1")


def test_a_cancelled_call_never_reaches_the_worker(workers) -> None:
    worker = workers("llm", FakeLLM)
    token = CancelToken()
    token.cancel()
    assert list(WorkerLLM(worker).stream(REQUEST, token)) == []


def test_the_worker_produces_only_a_window_ahead_of_its_consumer(workers) -> None:
    """An LLM whose tokens wait for the TTS waits too, as a generator pulled in-process
    does, instead of taking the CPU from the TTS."""
    llm = WorkerLLM(workers("llm", worker_fakes.FakeClockLLM))
    stream = llm.stream(REQUEST, CancelToken())
    next(stream)
    time.sleep(0.3)
    resumed = time.monotonic()
    produced = [float(event.text) for event in stream if isinstance(event, TextDelta)]
    # the second token was made ahead; the third only once the consumer asked again
    assert produced[0] < resumed
    assert all(at >= resumed for at in produced[1:])


@pytest.mark.parametrize(
    ("signum", "cause"),
    [(signal.SIGSEGV, "SIGSEGV"), (signal.SIGABRT, "SIGABRT"), (signal.SIGKILL, "SIGKILL")],
)
def test_a_worker_that_dies_in_a_call_fails_it_and_is_restarted(workers, signum, cause) -> None:
    build = functools.partial(worker_fakes.FakeCrashingLLM, crash_after=2, signum=signum)
    worker = workers("pipeline 0 llm", build)
    llm = WorkerLLM(worker)
    first_pid = worker.pid
    received = []
    with pytest.raises(EngineFailed, match=f"the pipeline 0 llm worker died: {cause}"):
        for event in llm.stream(REQUEST, CancelToken()):
            received.append(event)
    assert received == [TextDelta(" word0"), TextDelta(" word1")]
    assert EngineFailed.code == "engine_failed"
    # the next call waits for the restart, then runs on the new process (and dies likewise)
    with pytest.raises(EngineFailed):
        list(llm.stream(REQUEST, CancelToken()))
    assert worker.pid != first_pid
    assert worker.crashes >= 1 and worker.restarts >= 1
    assert worker.last_exit is not None and worker.last_exit.startswith(cause)


def test_a_worker_killed_from_outside_is_restarted_and_serves_again(workers) -> None:
    worker = workers("tts", FakeTTS)
    tts = WorkerTTS(worker)
    os.kill(worker.pid, signal.SIGKILL)
    wait_for(lambda: worker.restarts == 1 and worker.state is WorkerState.READY)
    chunks = list(tts.synthesize("still here", voice=None, speed=1.0, cancel=CancelToken()))
    assert len(chunks) == 2
    assert worker.crashes == 1
    assert worker.last_exit == "SIGKILL (OOM killer or kill -9)"


def test_a_hung_worker_is_killed_after_its_call_timeout(workers) -> None:
    worker = workers("llm", worker_fakes.FakeHangingLLM, call_timeout_s=1.0)
    llm = WorkerLLM(worker)
    stream = llm.stream(REQUEST, CancelToken())
    assert next(stream) == TextDelta("stuck")
    began = time.monotonic()
    with pytest.raises(EngineFailed, match="answered nothing for 1 s and was killed"):
        next(stream)
    assert time.monotonic() - began >= 1.0
    wait_for(lambda: worker.restarts == 1)
    assert worker.last_exit == "killed: it answered nothing for 1 s"


def test_an_engine_that_cannot_load_is_reported_and_not_retried() -> None:
    worker = EngineWorker("llm", worker_fakes.fail_to_load)
    with pytest.raises(MissingDependencyReported, match=r"/nowhere/model\.bin"):
        worker.start()
    assert worker.state is WorkerState.FAILED
    assert worker.restarts == 0
    with pytest.raises(EngineFailed, match="failed and was not restarted"):
        list(WorkerLLM(worker).stream(REQUEST, CancelToken()))


def test_start_all_closes_every_worker_when_one_cannot_start() -> None:
    good = EngineWorker("tts", FakeTTS)
    bad = EngineWorker("llm", worker_fakes.fail_to_load)
    with pytest.raises(EngineError):
        start_all([good, bad])
    assert good.state is WorkerState.STOPPED and good.pid is None


def test_a_worker_that_cannot_restart_gives_up(workers, tmp_path: Path) -> None:
    build = functools.partial(worker_fakes.FakeLoadsOnce, str(tmp_path / "loaded"))
    worker = workers("llm", build, max_failed_starts=3)
    os.kill(worker.pid, signal.SIGKILL)
    wait_for(lambda: worker.state is WorkerState.FAILED)
    assert worker.restarts == 0 and not worker.healthy
    assert worker.last_exit is not None and "loaded" in worker.last_exit
    with pytest.raises(EngineFailed, match="failed and was not restarted"):
        list(WorkerLLM(worker).stream(REQUEST, CancelToken()))


def test_a_worker_that_keeps_dying_is_unhealthy(workers) -> None:
    worker = workers("tts", FakeTTS, unhealthy_crashes=(2, 60.0))
    assert worker.healthy
    os.kill(worker.pid, signal.SIGKILL)
    wait_for(lambda: worker.restarts == 1 and worker.state is WorkerState.READY)
    assert worker.healthy  # one crash: back in service
    os.kill(worker.pid, signal.SIGKILL)
    wait_for(lambda: worker.restarts == 2 and worker.state is WorkerState.READY)
    assert not worker.healthy  # two within the window


def test_close_ends_the_process(workers) -> None:
    worker = workers("tts", FakeTTS)
    pid = worker.pid
    assert pid is not None
    worker.close()
    assert worker.state is WorkerState.STOPPED
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_exit_descriptions_name_the_signal() -> None:
    assert describe_exit(-signal.SIGSEGV) == "SIGSEGV"
    assert describe_exit(-signal.SIGKILL) == "SIGKILL (OOM killer or kill -9)"
    assert describe_exit(3) == "exit status 3"


def test_an_engine_errors_code_crosses_the_process_boundary() -> None:
    from engines.workers.supervisor import rebuild
    from engines.workers.wire import WorkerError

    error = WorkerError("UnsupportedInput", "no images", True, code="unsupported_input")
    assert (str(rebuild(error)), rebuild(error).code) == ("no images", "unsupported_input")
    assert rebuild(WorkerError("EngineError", "bad", True)).code == "engine_error"
