"""Fixtures shared by the engine and server tests."""

from __future__ import annotations

import pytest

from engines.base import MissingDependency
from engines.embedded import EmbeddedEngines, load_embedded


@pytest.fixture(scope="session")
def embedded() -> EmbeddedEngines:
    """The real embedded engines, loaded once (their weights ship in the ``embedded`` extra)."""
    try:
        return load_embedded(threads=2, llm={"n_ctx": 1024})
    except MissingDependency as error:
        pytest.skip(str(error))
