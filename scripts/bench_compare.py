"""Run one benchmark on an earlier commit and on the working tree, in one run, and print both.

The earlier commit is checked out into a temporary git worktree; the benchmark runs there and
here in turn (``--rounds`` times each, alternating, so that a change in the machine's load
lands on both sides), each with its own tree first on ``PYTHONPATH`` (worker and client
subprocesses inherit it). Usage::

    python scripts/bench_compare.py --before HEAD~3 -- scripts/bench_protocol.py --runs 5

Each side's output is printed whole, under a header naming the tree it ran on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(tree: Path, command: list[str]) -> str:
    """The benchmark's output, run from ``tree`` with ``tree`` importable first."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, *command],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"the benchmark failed in {tree}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the git revision to compare with")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side, alternating")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS...]")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the benchmark to run after --")
    revision = subprocess.run(
        ["git", "rev-parse", "--short", args.before],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-before-") as scratch:
        before = Path(scratch) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before), revision],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        try:
            for round_ in range(1, args.rounds + 1):
                for label, tree in ((f"before ({revision})", before), ("after (this tree)", ROOT)):
                    output = run_bench(tree, command)
                    print(f"===== {label}, round {round_}: {' '.join(command)}")
                    print(output.rstrip(), flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(before)],
                cwd=ROOT,
                capture_output=True,
                check=False,
            )


if __name__ == "__main__":
    main()
