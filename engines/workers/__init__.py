"""Engines in supervised worker processes: a crash in an engine's native code ends its worker,
which is restarted, never the server."""

from engines.workers.proxies import WorkerLLM, WorkerSTT, WorkerTTS, WorkerTurnModel
from engines.workers.supervisor import EngineWorker, WorkerState, start_all

__all__ = [
    "EngineWorker",
    "WorkerLLM",
    "WorkerSTT",
    "WorkerState",
    "WorkerTTS",
    "WorkerTurnModel",
    "start_all",
]
