"""The Trio I/O shell: serves the protocol machine and the engines over WebSocket."""

from .app import create_app
from .endpoint import AppSettings
from .metrics import Metrics
from .pool import Pipeline, PipelinePool
from .server import serve
from .session import SessionOptions, SessionRunner

__all__ = [
    "AppSettings",
    "Metrics",
    "Pipeline",
    "PipelinePool",
    "SessionOptions",
    "SessionRunner",
    "create_app",
    "serve",
]
