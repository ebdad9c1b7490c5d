"""The response plan: what a response runs with, from the session's settings and the
``response.create`` parameters that override them for one response."""

from __future__ import annotations

from . import events as ev
from .effects import ResponsePlan
from .mcp_config import function_tools, mcp_servers
from .session import SessionConfig


def plan_response(session: SessionConfig, params: ev.ResponseParams) -> ResponsePlan:
    """What a response with ``params`` will run with (its context and the tools of its MCP
    servers are set when it starts)."""
    mot = params.max_output_tokens
    tools = session.tools if params.tools is None else params.tools
    return ResponsePlan(
        instructions=session.instructions if params.instructions is None else params.instructions,
        context=(),
        tools=function_tools(tools),
        mcp_servers=mcp_servers(tools),
        tool_choice=session.tool_choice if params.tool_choice is None else params.tool_choice,
        output_modalities=params.output_modalities or session.output_modalities,
        max_output_tokens=session.max_output_tokens
        if mot is None
        else (None if mot == "inf" else int(mot)),
        voice=params.voice or session.voice,
        speed=session.speed,
        output_format=params.output_format or session.output_format,
        reasoning_effort=params.reasoning_effort or session.reasoning_effort,
        language=(session.transcription or {}).get("language") or "en",
        parallel_tool_calls=session.parallel_tool_calls
        if params.parallel_tool_calls is None
        else params.parallel_tool_calls,
        truncation=session.truncation,
    )
