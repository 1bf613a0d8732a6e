"""A bounded chaos run (``bench/chaos.py``) on each database: real worker processes
SIGKILLed about every second, restarted by SIGTERM, one paused past its lease, and on
PostgreSQL the server restarted (a private one, ``tests.pgserver``); then every record
is checked. About 25 s a database.

The tool runs as a subprocess, its output captured and shown when the test fails
(``bench/README.md``, "Chaos", tells how to read it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SMALL = [
    "--tasks",
    "180",
    "--workers",
    "3",
    "--concurrency",
    "3",
    "--chaos-seconds",
    "15",
    "--lease",
    "2",
    "--kill-every",
    "1",
    "--term-every",
    "4",
    "--shutdown-timeout",
    "0.3",
    "--pause",
    "--drain-timeout",
    "40",
    "--seed",
    "7",
    "--quiet",
]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_bounded_chaos_run_finds_no_violation(database: str, tmp_path: Path) -> None:
    if database == "postgresql":
        from tests.pgserver import PostgresUnavailable, find_bindir

        try:
            find_bindir()
        except PostgresUnavailable as exc:
            pytest.skip(f"no PostgreSQL server binaries: {exc}")
    summary_file = tmp_path / "summary.json"
    argv = [
        sys.executable,
        str(ROOT / "bench" / "chaos.py"),
        "--database",
        database,
        *SMALL,
        *(["--pg-restart"] if database == "postgresql" else []),
        "--workdir",
        str(tmp_path / "chaos"),
        "--json",
        str(summary_file),
    ]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False)
    print(done.stdout)  # shown when the test fails
    print(done.stderr, file=sys.stderr)
    assert summary_file.exists(), f"the chaos tool did not finish (exit {done.returncode})"
    summary = json.loads(summary_file.read_text())

    # The chaos happened.
    assert summary["sigkill"] >= 4, summary
    assert summary["runs_cut_by_sigkill"] >= 1, summary
    assert summary["sigterm"] >= 1, summary
    assert summary["sigstop"] == 1, summary
    if database == "postgresql":
        assert summary["pg_restarts"] == 1 and not summary["pg_restart_errors"], summary

    # And nothing went wrong.
    assert summary["drained"], "not every task finished after the chaos"
    failed = {k: n for k, n in summary["violations"].items() if n}
    assert not failed, f"violations (see the output above): {summary['violation_kinds']}"
    assert done.returncode == 0
