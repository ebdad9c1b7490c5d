"""A one-file MCP server with two tools, for a voice session's ``type: "mcp"`` tool.

    python scripts/mcp_clock_server.py [--port 8000]

serves Streamable HTTP at ``http://127.0.0.1:8000/mcp``: ``current_time`` (the time in an
IANA time zone) and ``days_until`` (days from today to a date). Both are read-only, so a
session's ``require_approval: {"never": {"read_only": true}}`` lets them run unasked.
"""

from __future__ import annotations

import argparse
import datetime
import zoneinfo

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

server = MCPServer("clock", log_level="WARNING")
READ_ONLY = ToolAnnotations(readOnlyHint=True)


@server.tool(
    description="The current local time in an IANA time zone, e.g. Europe/Paris",
    annotations=READ_ONLY,
)
def current_time(timezone: str) -> str:
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {timezone!r}; use a name like Europe/Paris") from None
    now = datetime.datetime.now(zone)
    return f"It is {now:%H:%M} on {now:%A %d %B %Y} in {timezone}."


@server.tool(
    description="How many days from today until a date (YYYY-MM-DD)", annotations=READ_ONLY
)
def days_until(date: str) -> str:
    try:
        day = datetime.date.fromisoformat(date)
    except ValueError:
        raise ToolError(f"{date!r} is not a YYYY-MM-DD date") from None
    return f"{(day - datetime.date.today()).days} days until {day:%d %B %Y}."


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server.run("streamable-http", host=args.host, port=args.port)
