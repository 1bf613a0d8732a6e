"""One W1 run of the peers' driver with ``common.WORKERS`` worker processes.

    python bench/_w1_runner.py --system errands --workers 4 --out X.json
    /path/to/peers/.venv/bin/python bench/_w1_runner.py --system pgqueuer --workers 4 --out X.json

``bench/pg_workers.py`` starts this once per run, with the project's interpreter for
errands and the peers' own for PgQueuer. It loads the peers' ``common.py`` (through
``_peers.load_common``: never copied, its scratch directory redirected into
``bench/results/``), sets the module constant ``common.WORKERS`` (2 in the harness) to
``--workers``, and hands over to the system's adapter exactly as the harness would run
it, W1 only (``--workloads w1``): errands through ``errands_adapter.main()``, PgQueuer
through ``common.main(pgqueuer_bench.Adapter())``. Only the standard library is imported
here before the adapter, so the peers' interpreter can run it.

``--pidfile``: the pid of every worker process started is appended to it, so the caller
can count them and kill any that outlive an interrupted run (each leads its own
session). ``--logs``: where the driver writes the workers' logs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._peers import load_common  # noqa: E402

SYSTEMS = ("errands", "pgqueuer")


def _record_pids(common: Any, pidfile: str) -> None:
    original = common.start_workers

    def start_workers(adapter: Any, phase: str) -> Any:
        procs = original(adapter, phase)
        with open(pidfile, "a") as fh:
            fh.writelines(f"{p.pid}\n" for p in procs)
        return procs

    setattr(common, "start_workers", start_workers)  # noqa: B010 (a module we do not type)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--system", choices=SYSTEMS, required=True)
    ap.add_argument("--workers", type=int, required=True, help="worker processes")
    ap.add_argument("--out", required=True, help="the driver's JSON result")
    ap.add_argument("--pidfile", default=None)
    ap.add_argument("--logs", default=None, help="the workers' logs (default: the harness's)")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be at least 1")

    common = load_common()
    setattr(common, "WORKERS", args.workers)  # noqa: B010 (read by worker_cmds() at call time)
    if args.logs:
        setattr(common, "LOGS", args.logs)  # noqa: B010
    if args.pidfile:
        _record_pids(common, args.pidfile)
    sys.argv = [sys.argv[0], "--out", args.out, "--workloads", "w1"]  # common.main's CLI
    if args.system == "errands":
        adapter_module = importlib.import_module("bench.errands_adapter")
        return int(adapter_module.main())
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # the peers' directory stays untouched
    try:
        pgqueuer_bench = importlib.import_module("pgqueuer_bench")
    finally:
        sys.dont_write_bytecode = before
    return int(common.main(pgqueuer_bench.Adapter()))


if __name__ == "__main__":
    sys.exit(main())
