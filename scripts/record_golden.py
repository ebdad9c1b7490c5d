"""Re-record the golden traces of tests/data/golden from the live server with the fake engines.

Each scenario of ``tests/conformance/scenarios.py`` runs against a fresh server; its frames,
client and server both, are normalised (ids, timings and audio replaced by placeholders) and
written to ``tests/data/golden/<name>.jsonl``. Run it after a deliberate change to what the
server sends, then review the diff of those files.

Usage: ``python scripts/record_golden.py [NAME ...]`` (all scenarios when none is named),
``python scripts/record_golden.py --list``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conformance.golden import GOLDEN, write
from tests.conformance.scenarios import SCENARIOS, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="scenarios to record")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args()
    if args.list:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:14} {scenario.description}")
        return
    unknown = [name for name in args.names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}; see --list")
    for name in args.names or list(SCENARIOS):
        lines = record(SCENARIOS[name])
        path = GOLDEN / f"{name}.jsonl"
        write(path, lines)
        print(
            f"{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}: "
            f"{len(lines)} lines"
        )


if __name__ == "__main__":
    main()
