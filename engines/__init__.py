"""Engine interfaces and the embedded offline engines; engine modules load their heavy
dependencies only when an engine is built."""

from engines.base import (
    LLM,
    STT,
    TTS,
    VAD,
    CancelToken,
    ChatMessage,
    EngineError,
    FunctionTool,
    LLMEvent,
    LLMRequest,
    MissingDependency,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    Transcript,
    TurnModel,
    Usage,
)
from engines.embedded import EmbeddedEngines, load_embedded, load_llm, load_stt, load_tts, load_vad

__all__ = [
    "LLM",
    "STT",
    "TTS",
    "VAD",
    "CancelToken",
    "ChatMessage",
    "EmbeddedEngines",
    "EngineError",
    "FunctionTool",
    "LLMEvent",
    "LLMRequest",
    "MissingDependency",
    "TextDelta",
    "ToolCall",
    "ToolCallRequest",
    "Transcript",
    "TurnModel",
    "Usage",
    "load_embedded",
    "load_llm",
    "load_stt",
    "load_tts",
    "load_vad",
]
