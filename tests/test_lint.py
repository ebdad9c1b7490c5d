"""The tree is ruff-clean and protocol/ stays sans-IO."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_PROTOCOL = {
    "trio",
    "socket",
    "asyncio",
    "numpy",
    "quart",
    "hypercorn",
    "engines",
    "realtime",
    "threading",
}


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed; it is part of the [test] extra")
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_protocol_is_mypy_strict_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(ROOT / "protocol")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_protocol_imports_only_stdlib_and_attrs() -> None:
    stdlib = set(sys.stdlib_module_names)
    for path in (ROOT / "protocol").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top not in FORBIDDEN_IN_PROTOCOL, f"{path.name} imports {name}"
                assert top in stdlib or top == "attrs", f"{path.name} imports {name}"


#: what the I/O shell may use of a protocol machine: construction, its inputs, and the session
#: configuration it echoes; everything else is the machine's own state
MACHINE_API = {"start", "receive_frame", "handle", "feed", "session"}
#: the machine's states are its own: the shell learns what it must do from effects
STATE_NAMES = {"InputState", "VoiceState", "Phase", "PlayoutState", "advance"}


def test_the_shell_imports_no_protocol_state_and_no_private_name() -> None:
    for path in (ROOT / "realtime").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(
                "protocol"
            ):
                continue
            assert node.module != "protocol.states", f"{path.name} imports protocol.states"
            for alias in node.names:
                assert alias.name not in STATE_NAMES, f"{path.name} imports {alias.name}"
                assert not alias.name.startswith("_"), f"{path.name} imports {alias.name}"


def test_the_shell_uses_only_the_machines_public_api() -> None:
    for path in (ROOT / "realtime").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            is_machine = (isinstance(owner, ast.Name) and owner.id == "conn") or (
                isinstance(owner, ast.Attribute) and owner.attr == "conn"
            )
            if is_machine:
                assert node.attr in MACHINE_API, f"{path.name}:{node.lineno} reads conn.{node.attr}"


#: what the shell may import of protocol/: the package's API, the machine's vocabulary (events,
#: inputs, effects, items), the wire's frame limit, the session merge the call setup uses and
#: the MCP servers' configuration values; never a room of the machine (its rules) or its state
SHELL_MAY_IMPORT = {
    "protocol",
    "protocol.effects",
    "protocol.events",
    "protocol.inputs",
    "protocol.items",
    "protocol.mcp_items",
    "protocol.codec",
    "protocol.session",
    "protocol.mcp_config",
}


def test_the_shell_imports_no_room_of_the_machine() -> None:
    for path in (ROOT / "realtime").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("protocol"):
                assert node.module in SHELL_MAY_IMPORT, f"{path.name} imports {node.module}"


#: a module longer than this says why in its docstring (a sentence with "Longer than")
MAX_MODULE_LINES = 400


@pytest.mark.parametrize("package", ["protocol", "realtime"])
def test_a_long_module_says_why(package: str) -> None:
    for path in (ROOT / package).glob("*.py"):
        text = path.read_text()
        if text.count("\n") <= MAX_MODULE_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        assert "Longer than" in docstring, f"{path.name}: {text.count(chr(10))} lines, no reason"
