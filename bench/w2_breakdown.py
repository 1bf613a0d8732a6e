"""Where W2's latency goes: the submit→start→done-visible path of one task, in segments.

    .venv/bin/python bench/w2_breakdown.py                 # synchronous=FULL, 200 tasks
    .venv/bin/python bench/w2_breakdown.py --sync normal
    .venv/bin/python bench/w2_breakdown.py --database pg   # a fresh PostgreSQL database

Same set-up as W2 (2 idle workers, 5 warm-up tasks, 1 s idle, tasks one at a time, each
waited for with ``app.sync.wait``). Besides the client's own clock readings it uses the
record's ``started_at`` (the worker's clock when it began the claim transaction) and
``finished_at`` (inside the outcome transaction, once the write lock is held) and the
task's start probe. All clocks are ``time.time()`` on the same host.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SEGMENTS = (
    ("submit() call: insert + COMMIT + notify", "t0", "t_submitted"),
    ("worker wakes, begins the claim", "t_submitted", "claim"),
    ("claim txn (lock, UPDATEs, COMMIT) → task entry", "claim", "start"),
    ("task entry → outcome txn holds the lock", "start", "finish"),
    ("outcome txn COMMIT → notify → client reads it", "finish", "visible"),
    ("total: submit → start", "t0", "start"),
    ("total: submit → done visible", "t0", "visible"),
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--database", choices=("sqlite", "pg"), default="sqlite")
    ap.add_argument("--sync", choices=("full", "normal"), default="full", help="SQLite's")
    ap.add_argument("--pg-url", default=None, help="PostgreSQL server (bench/_pg.py's default)")
    ap.add_argument(
        "--pg-set",
        action="append",
        metavar="NAME=VALUE",
        help="diagnostics: a setting for the fresh PostgreSQL database (ALTER DATABASE … SET),\n"
        "e.g. synchronous_commit=off (repeatable)",
    )
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--ref", default="HEAD", help="git commit of the library (as run.py)")
    args = ap.parse_args()
    from bench import _pg
    from bench._peers import RESULTS
    from bench._source import snapshot

    db = RESULTS / "state" / f"w2-breakdown-{int(time.time())}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    query = "" if args.sync == "full" else f"?synchronous={args.sync}"
    variant = "pg" if args.database == "pg" else args.sync
    os.environ["BENCH_ERRANDS_VARIANT"] = f"w2-breakdown-{variant}"
    if args.database == "pg" and args.pg_set:
        variant += " (" + ", ".join(args.pg_set) + ")"
    src, sha = snapshot(args.ref)
    sys.path.insert(0, str(src))  # before anything imports errands
    os.environ["PYTHONPATH"] = os.pathsep.join([str(src), str(REPO)])
    os.environ["BENCH_ERRANDS_REF"] = sha
    with contextlib.ExitStack() as stack:
        if args.database == "pg":
            url = stack.enter_context(
                _pg.fresh_database(
                    args.pg_url or _pg.DEFAULT_ADMIN_URL,
                    f"errands_w2_{os.getpid()}",
                    dict(os.environ),
                    RESULTS / "state" / "w2-breakdown-migrate.log",
                    settings=_pg.parse_settings(args.pg_set),
                )
            )
        else:
            url = f"sqlite:///{db}{query}"
        os.environ["BENCH_ERRANDS_URL"] = url
        return breakdown(args, db, sha, variant)


def breakdown(args: argparse.Namespace, db: Path, sha: str, variant: str) -> int:
    from bench.errands_adapter import OWNER, Adapter, app, common

    adapter = Adapter()
    adapter.reset()
    common._probe_client().delete(common.PROBE_KEY)  # as the driver does before a run
    procs = common.start_workers(adapter, "w2breakdown")
    rows: list[dict[str, float]] = []
    try:
        for k in range(5):
            adapter.w2_one(f"warm-{k}")
        time.sleep(1.0)
        before = _transactions(adapter)
        for k in range(args.n):
            key = f"bd-{k}"
            t0 = time.time()
            record = app.sync.submit("w2task", {"key": key}, owner=OWNER)
            t_submitted = time.time()
            final = app.sync.wait(record.id, owner=OWNER, timeout=60)
            visible = time.time()
            assert final.started_at is not None and final.finished_at is not None
            rows.append(
                {
                    "key": float(k),
                    "t0": t0,
                    "t_submitted": t_submitted,
                    "claim": final.started_at.timestamp(),
                    "finish": final.finished_at.timestamp(),
                    "visible": visible,
                }
            )
        after = _transactions(adapter)
        starts = common.probe_all()
        for row in rows:
            row["start"] = starts[f"bd-{int(row['key'])}"]
    finally:
        common.stop_workers(procs)
        adapter.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)

    print(
        f"W2 breakdown, errands {sha[:12]}, {variant}, {args.n} tasks, "
        f"load average {os.getloadavg()}"
    )
    print(f"{'segment':<50} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for label, a, b in SEGMENTS:
        values = [(r[b] - r[a]) for r in rows]
        s = common.summarize_ms(values)
        print(f"{label:<50} {s['p50']:8.2f} {s['p90']:8.2f} {s['p99']:8.2f}")
    if before is not None and after is not None:
        # Every statement in autocommit is a transaction: submits, claims (empty ones
        # too), outcomes, the client's reads, heartbeats.
        print(f"server transactions a task: {(after - before) / args.n:.2f}")
    return 0


def _transactions(adapter: Any) -> int | None:
    """PostgreSQL: the transactions committed in the bench's database so far (the
    server publishes its counters within a second: read after a pause)."""
    from bench.errands_adapter import app

    if app.db.dialect != "postgresql":
        return None
    time.sleep(1.5)
    with app.db.engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        value = conn.exec_driver_sql(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).scalar()
    return int(value or 0)


if __name__ == "__main__":
    sys.exit(main())
