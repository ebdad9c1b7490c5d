"""How well the server's LLM uses remote MCP tools: questions that need a tool, asked through
the live server, with the example MCP server (``mcp_clock_server.py``) as a session tool.

    python scripts/bench_tool_use.py [--tool-choice auto,required] [--server-arg=--llm ...]

Starts the clock MCP server and ``python -m realtime`` (by default on the embedded engines;
``--server-arg`` passes flags on, e.g. ``--server-arg=--llm --server-arg=openai``) as
subprocesses on free loopback ports. For each ``tool_choice`` and each question, a fresh
session configures the MCP tool, asks in text (``output_modalities: ["text"]``) and reads to
``response.done``; when the model called tools, a second ``response.create`` (``tool_choice:
"auto"``) asks for the answer, as OpenAI's clients do. Printed per question and in total:
whether the model called the right tool, whether the call succeeded (valid arguments), and
whether the answer repeats what the tool returned (the time, or the number of days). Figures
are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.bench_transcription import HOST, free_port, wait_for_server

ROOT = Path(__file__).resolve().parents[1]

_NEW_YEAR = f"{datetime.date.today().year + 1}-01-01"
#: (question, the tool it needs)
QUESTIONS = [
    ("What time is it in Tokyo right now?", "current_time"),
    ("What is the time in Paris?", "current_time"),
    ("Tell me the current time in New York.", "current_time"),
    ("What time is it in London?", "current_time"),
    ("Is it night in Sydney right now?", "current_time"),
    ("What is the local time in Berlin?", "current_time"),
    ("What time is it in Los Angeles?", "current_time"),
    (f"How many days are left until {_NEW_YEAR}?", "days_until"),
    ("How many days from today until 2027-07-04?", "days_until"),
    ("Count the days from today to 2027-03-01.", "days_until"),
]


@attrs.define
class Outcome:
    question: str
    tool: str
    calls: list[dict[str, Any]]
    answer: str
    seconds: float

    @property
    def right_tool(self) -> bool:
        return any(c["name"] == self.tool for c in self.calls)

    @property
    def succeeded(self) -> bool:
        return any(c["name"] == self.tool and c.get("output") for c in self.calls)

    @property
    def used(self) -> bool:
        """The answer repeats the key figure of a successful call's output."""
        for call in self.calls:
            output = call.get("output") or ""
            figure = re.search(r"\d{2}:\d{2}|-?\d+ days", output)
            if figure and figure.group(0).split(" ")[0] in self.answer:
                return True
        return False


async def ask(url: str, mcp_url: str, tool_choice: str, question: str, tool: str) -> Outcome:
    async with trio_websocket.open_websocket_url(url) as ws:

        async def send(event: dict[str, Any]) -> None:
            await ws.send_message(json.dumps(event))

        async def until(*kinds: str) -> dict[str, Any]:
            while True:
                event = json.loads(await ws.get_message())
                if event["type"] in kinds:
                    return dict(event)

        mcp = {
            "type": "mcp",
            "server_label": "clock",
            "server_url": mcp_url,
            "require_approval": "never",
        }
        session = {
            "type": "realtime",
            "output_modalities": ["text"],
            "tools": [mcp],
            "tool_choice": tool_choice,
        }
        await send({"type": "session.update", "session": session})
        listed = await until("mcp_list_tools.completed", "mcp_list_tools.failed")
        if listed["type"] == "mcp_list_tools.failed":
            raise SystemExit(f"the server could not list the MCP server at {mcp_url}")
        started = time.monotonic()
        content = [{"type": "input_text", "text": question}]
        item = {"type": "message", "role": "user", "content": content}
        await send({"type": "conversation.item.create", "item": item})
        await send({"type": "response.create"})
        output = (await until("response.done"))["response"]["output"]
        if any(o["type"] == "mcp_call" for o in output):
            # the calls answered: ask for the answer, as OpenAI's clients do
            await send({"type": "response.create", "response": {"tool_choice": "auto"}})
            output += (await until("response.done"))["response"]["output"]
        seconds = time.monotonic() - started
    calls = [o for o in output if o["type"] == "mcp_call"]
    answer = " ".join(
        c.get("text") or c.get("transcript") or ""
        for o in output
        if o["type"] == "message"
        for c in o["content"]
    )
    return Outcome(question, tool, calls, answer.strip(), seconds)


def report(tool_choice: str, outcomes: list[Outcome]) -> None:
    print(f"\ntool_choice={tool_choice!r}")
    for o in outcomes:
        calls = ", ".join(f"{c['name']}({c['arguments']})" for c in o.calls) or "no call"
        marks = "".join(
            mark if ok else "-"
            for mark, ok in (("T", o.right_tool), ("S", o.succeeded), ("U", o.used))
        )
        print(f"  {marks} {o.seconds:5.1f} s  {o.question!r}: {calls}")
        print(f"         answer: {o.answer[:140]!r}")
    n = len(outcomes)
    print(
        f"  right tool {sum(o.right_tool for o in outcomes)}/{n}, call succeeded "
        f"{sum(o.succeeded for o in outcomes)}/{n}, answer used the result "
        f"{sum(o.used for o in outcomes)}/{n}; median "
        f"{sorted(o.seconds for o in outcomes)[n // 2]:.1f} s per question"
    )


async def bench(args: argparse.Namespace, server: subprocess.Popen[bytes], port: int) -> None:
    mcp_port = free_port()
    clock = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "mcp_clock_server.py"), "--port", str(mcp_port)]
    )
    try:
        await wait_for_server(clock, mcp_port, 30)
        await wait_for_server(server, port, 300)
        url = f"ws://{HOST}:{port}/v1/realtime?model=gpt-realtime"
        for tool_choice in args.tool_choice.split(","):
            outcomes = [
                await ask(url, f"http://{HOST}:{mcp_port}/mcp", tool_choice, question, tool)
                for question, tool in QUESTIONS
            ]
            report(tool_choice, outcomes)
    finally:
        clock.terminate()
        clock.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool-choice", default="auto,required")
    parser.add_argument("--server-arg", action="append", default=[])
    args = parser.parse_args()
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "realtime",
        "--ws_port",
        str(port),
        "--log_level",
        "warning",
        *args.server_arg,
    ]
    print(
        f"bench_tool_use: {os.cpu_count()} CPUs, {platform.machine()}, Python "
        f"{platform.python_version()}; server: {' '.join(command[1:])}"
    )
    server = subprocess.Popen(command, cwd=ROOT)
    try:
        trio.run(bench, args, server, port)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
