"""Fixtures shared by the engine and server tests."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator

import pytest

from engines import embedded as embedded_engines
from engines.base import MissingDependency
from engines.embedded import EmbeddedEngines, load_embedded
from engines.workers import EngineWorker, start_all
from realtime.pool import Pipeline

#: the embedded engines' options in the tests: Piper's noise off, a small LLM context
EMBEDDED_OPTIONS = {
    "llm": {"n_ctx": 1024},
    "tts": {"noise_scale": 0.0, "noise_w_scale": 0.0},
}


@pytest.fixture(scope="session")
def embedded() -> EmbeddedEngines:
    """The real embedded engines, loaded once (their weights ship in the ``embedded`` extra).

    Piper's noise is off, so the speech the tests synthesize and transcribe is the same on
    every run (with it on, an occasional take of a word is heard as another word)."""
    try:
        return load_embedded(threads=2, **EMBEDDED_OPTIONS)
    except MissingDependency as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def embedded_pipeline(embedded: EmbeddedEngines) -> Iterator[Callable[[], Pipeline]]:
    """Makes a pipeline of the embedded engines as the server runs them: STT, LLM and TTS
    each in a worker process (started once for the whole run), the VAD in this one."""
    load = embedded_engines
    workers = (
        EngineWorker("stt", functools.partial(load.load_stt, threads=2)),
        EngineWorker("llm", functools.partial(load.load_llm, threads=2, **EMBEDDED_OPTIONS["llm"])),
        EngineWorker("tts", functools.partial(load.load_tts, threads=2, **EMBEDDED_OPTIONS["tts"])),
    )
    start_all(list(workers))
    stt, llm, tts = workers

    def pipeline() -> Pipeline:
        return Pipeline.of_workers(0, embedded.vad, stt, llm, tts)

    yield pipeline
    for worker in workers:
        worker.close()


_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without the interpreter's final garbage collection.

    The native engine libraries loaded by the suite (C++ thread pools in several of them) can
    abort the process in that last collection ("terminate called without an active
    exception"), after every result is reported; the results stand, so the exit status is
    the suite's own."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
