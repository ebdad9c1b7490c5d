"""What the PyTorch engines share: importing their libraries (with the torchaudio shim that
NeMo and qwen-tts need), picking a device, and each call's CPU thread budget.

Nothing here imports torch at module import time."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from engines.base import MissingDependency

DEVICES = ("auto", "cpu", "cuda", "mps")

_shim_lock = threading.Lock()


def import_library(engine: str, extra: str, module: str, distribution: str) -> ModuleType:
    """Import ``module`` (after torch and, where needed, the torchaudio shim) or raise
    :class:`MissingDependency` naming the ``extra`` that installs ``distribution``."""
    try:
        importlib.import_module("torch")
        install_torchaudio_shim()
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependency(
            engine, extra=extra, detail=f"the {distribution} package ({error})"
        ) from error


def install_torchaudio_shim() -> bool:
    """Make ``import torchaudio`` work when its native library cannot load; True if it did.

    The newest torchaudio on PyPI is built against a CUDA torch of another version: with a
    CPU torch its ``import`` raises OSError, and NeMo and qwen-tts, which only guard their
    torchaudio imports against ImportError, then fail to import. What they use on our paths
    is the pure-PyTorch ``torchaudio.compliance.kaldi``, so on that OSError a package holding
    only that module takes torchaudio's place; any other torchaudio submodule is then an
    ImportError, which both libraries handle. A torchaudio that imports is left alone."""
    with _shim_lock:
        if "torchaudio" in sys.modules:
            return getattr(sys.modules["torchaudio"], "_realtime_shim", False) is True
        try:
            importlib.import_module("torchaudio")
            return False
        except ImportError:
            return False  # not installed: the libraries' own ImportError guards apply
        except OSError:
            for name in [n for n in sys.modules if n.split(".")[0] == "torchaudio"]:
                del sys.modules[name]
        spec = importlib.util.find_spec("torchaudio")
        assert spec is not None and spec.submodule_search_locations  # it raised OSError
        kaldi_path = Path(next(iter(spec.submodule_search_locations)), "compliance", "kaldi.py")
        package = _empty_package("torchaudio")
        package.__version__ = "0.0.0+shim"  # type: ignore[attr-defined]
        package._realtime_shim = True  # type: ignore[attr-defined]
        compliance = _empty_package("torchaudio.compliance")
        package.compliance = compliance  # type: ignore[attr-defined]
        kaldi_spec = importlib.util.spec_from_file_location(
            "torchaudio.compliance.kaldi", kaldi_path
        )
        assert kaldi_spec is not None and kaldi_spec.loader is not None
        kaldi = importlib.util.module_from_spec(kaldi_spec)
        sys.modules["torchaudio.compliance.kaldi"] = kaldi
        try:
            kaldi_spec.loader.exec_module(kaldi)
        except BaseException:
            for name in ("torchaudio", "torchaudio.compliance", "torchaudio.compliance.kaldi"):
                sys.modules.pop(name, None)
            raise
        compliance.kaldi = kaldi  # type: ignore[attr-defined]
        return True


def _empty_package(name: str) -> ModuleType:
    package = ModuleType(name)
    package.__path__ = []
    package.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    sys.modules[name] = package
    return package


def resolve_device(torch: Any, device: str) -> str:
    """``auto`` is ``cuda`` when torch sees a CUDA GPU, else ``cpu``; ``mps`` (Apple GPUs) is
    used only when asked for. A device torch cannot see is an error at load time rather than
    at the first call."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but torch sees no Apple GPU")
    return device


@contextmanager
def torch_threads(torch: Any, threads: int) -> Iterator[None]:
    """Run the body with at most ``threads`` intra-op CPU threads in the calling thread.

    ``torch.set_num_threads`` looks process-wide, but with torch's OpenMP backend (see
    ``torch.__config__.parallel_info()``) it sets the calling thread's own team size, plus the
    default of threads that have not run an op yet. Each engine call sets its budget in the
    worker thread that runs it and puts the previous value back, so engines with different
    budgets in one process do not overwrite each other."""
    previous = torch.get_num_threads()
    if previous == threads:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
