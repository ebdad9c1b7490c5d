"""The live fuzzer (``fuzz/fuzz_live.py``) for a long while, counting instead of stopping.

Hypothesis generates cases for ``--minutes``; each runs against one live server (fake engines,
two pipelines) with every check of the bounded CI run. A failing case is counted and printed
once per distinct failure (its last traceback line) with the case that found it, and the run
goes on; a server that no longer passes the checks after a failure is replaced by a fresh one.
Prints progress every ``--report-s`` seconds and a summary at the end: cases run, frames sent,
events checked, responses by status, disconnects, failures found. Exits 1 if any were found.

Usage: ``python scripts/fuzz_live_long.py [--minutes 10] [--report-s 30]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "fuzz")]

from fuzz_live import Case, ErrorLog, LiveFuzzer, cases  # noqa: E402
from hypothesis import HealthCheck, Phase, Verbosity, given, settings  # noqa: E402

from realtime import AppSettings  # noqa: E402
from tests.realtime.harness import LiveServer, fake_pool  # noqa: E402


class TimeUp(BaseException):
    """Ends the exploration (a BaseException: hypothesis lets it through untouched)."""


def start_server() -> LiveServer:
    """The server of the CI run: fake engines, two pipelines."""
    return LiveServer(fake_pool(size=2, token_delay_s=0.003), AppSettings()).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--report-s", type=float, default=30.0)
    args = parser.parse_args()

    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    fuzzer = LiveFuzzer(start_server(), errors)
    failures: dict[str, int] = {}
    restarts = 0
    began = time.monotonic()
    deadline = began + args.minutes * 60
    next_report = began + args.report_s

    @settings(
        max_examples=10**9,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        verbosity=Verbosity.quiet,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def explore(case: Case) -> None:
        nonlocal fuzzer, restarts, next_report
        now = time.monotonic()
        if now > deadline:
            raise TimeUp
        if now > next_report:
            next_report = now + args.report_s
            print(f"[{now - began:6.0f} s] {fuzzer.tally}; {len(failures)} failures", flush=True)
        try:
            fuzzer.run(case)
        except Exception as exc:
            lines = traceback.format_exception(exc)
            key = next((line for line in reversed(lines) if line.strip()), repr(exc)).strip()
            failures[key] = failures.get(key, 0) + 1
            if failures[key] == 1:
                print(f"FAILURE {len(failures)}: {key}\n  case: {case}", flush=True)
                print("".join(lines[-12:]), flush=True)
            try:
                fuzzer.check_server()
            except Exception:
                restarts += 1
                print("the server no longer passes the checks: starting a fresh one")
                fuzzer.server.stop()
                fuzzer = LiveFuzzer(start_server(), errors, fuzzer.tally)

    try:
        explore()
    except TimeUp:
        pass
    finally:
        fuzzer.server.stop()
    minutes = (time.monotonic() - began) / 60
    print(f"\n{minutes:.1f} min: {fuzzer.tally}")
    print(f"failures found: {sum(failures.values())} ({len(failures)} distinct)")
    for key, count in failures.items():
        print(f"  {count} x {key}")
    if restarts:
        print(f"server restarts: {restarts}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
