"""Fixtures shared by the engine and server tests."""

from __future__ import annotations

import os
import sys

import pytest

from engines.base import MissingDependency
from engines.embedded import EmbeddedEngines, load_embedded


@pytest.fixture(scope="session")
def embedded() -> EmbeddedEngines:
    """The real embedded engines, loaded once (their weights ship in the ``embedded`` extra).

    Piper's noise is off, so the speech the tests synthesize and transcribe is the same on
    every run (with it on, an occasional take of a word is heard as another word)."""
    try:
        return load_embedded(
            threads=2, llm={"n_ctx": 1024}, tts={"noise_scale": 0.0, "noise_w_scale": 0.0}
        )
    except MissingDependency as error:
        pytest.skip(str(error))


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
