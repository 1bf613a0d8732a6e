"""What a schedule's tick costs: tasks created per second by due ticks, beside the same
number of plain submits, on SQLite and PostgreSQL.

    .venv/bin/python bench/schedules.py                     # both databases, 3 rounds
    .venv/bin/python bench/schedules.py --database sqlite --schedules 1000 --repeats 5

Every round, on a fresh database (a new SQLite file, ``synchronous=FULL``; a new
PostgreSQL database on ``--pg-url``), in this process:

1. **ticks/s**: ``--schedules`` (1,000) user schedules ``every=1 s`` (one per owner of
   ten, as users would have them), all made due at once; one worker's ``Ticker.fire``
   (what a worker runs) creates their tasks: (schedules ÷ seconds). Twice per round
   (the second fire after moving every schedule due again), the better one kept.
2. **submits/s**: as many ``app.sync.submit`` calls, one task each (each its own
   transaction, as a tick's task is in a batch of 100 per transaction: see below);
3. **submit_many/s**: as many tasks in ``submit_many`` calls of 100 (the fire's batch).

Then **with workers** (``--workers``, 2 processes of ``errands worker``), the same
schedules ticking for ``--seconds`` (10): tasks created per second and the lag of each
tick's task (its ``created_at`` − its tick), p50 / p99.

The table gives medians over ``--repeats`` rounds and the ratios ticks ÷ submits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench import _pg  # noqa: E402

APP = "bench.schedules:app"


def make_app(url: str) -> Any:
    from errands import Errands, TaskContext

    app = Errands(url, min_schedule_interval=0, max_schedules_per_owner=None)

    @app.task
    async def tick(ctx: TaskContext, payload: dict[str, Any]) -> None:
        return None

    return app


# The app ``errands worker bench.schedules:app`` runs (URL from $ERRANDS_DATABASE_URL).
app = make_app(os.environ.get("ERRANDS_DATABASE_URL", "sqlite:///bench-schedules.db"))


def make_due(a: Any, now: float) -> None:
    from sqlalchemy import update

    from errands.store.schema import schedule_table

    with a.db.engine.begin() as conn:
        conn.execute(update(schedule_table).values(next_run_at=now))


def in_process(url: str, count: int) -> dict[str, float]:
    from errands.schedules.ticker import Ticker

    a = make_app(url)
    a.db.ensure_schema()
    for i in range(count):
        a.sync.schedules.create("tick", {"n": i}, owner=f"user{i % 10}", every=1)
    ticker = Ticker(a.runtime, "bench", ["tick"])
    fire = []
    for _ in range(2):
        now = time.time()
        make_due(a, now)
        t0 = time.perf_counter()
        ticker.fire(now)
        fire.append(count / (time.perf_counter() - t0))
    t0 = time.perf_counter()
    for i in range(count):
        a.sync.submit("tick", {"n": i}, owner=f"user{i % 10}")
    single = count / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for start in range(0, count, 100):
        a.sync.submit_many("tick", [{"n": i} for i in range(start, start + 100)], owner="user0")
    many = count / (time.perf_counter() - t0)
    a.close()
    return {"ticks/s": max(fire), "submits/s": single, "submit_many/s": many}


def with_workers(url: str, count: int, workers: int, seconds: float) -> dict[str, float]:
    from sqlalchemy import select

    from errands.store.schema import task_table

    a = make_app(url)
    a.db.ensure_schema()
    for i in range(count):
        a.sync.schedules.create("tick", {"n": i}, owner=f"user{i % 10}", every=1)
    env = os.environ | {"ERRANDS_DATABASE_URL": url, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "errands", "worker", APP, "--poll", "0.2"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    time.sleep(2)  # start-up, and the first ticks
    begin = time.time()
    time.sleep(seconds)
    end = time.time()
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(60)
    T = task_table.c
    with a.db.engine.connect() as conn:
        rows = conn.execute(
            select(T.created_at, T.scheduled_for).where(T.schedule_id.is_not(None))
        ).all()
    a.close()
    window = [r for r in rows if begin <= r.scheduled_for.timestamp() < end]
    lags = sorted((r.created_at - r.scheduled_for).total_seconds() * 1000 for r in window)
    return {
        "tick tasks/s (workers)": len(window) / (end - begin),
        "lag p50 ms": lags[len(lags) // 2] if lags else float("nan"),
        "lag p99 ms": lags[int(len(lags) * 0.99)] if lags else float("nan"),
    }


def sqlite_url(tmp: str, name: str) -> str:
    return f"sqlite:///{Path(tmp) / name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pg-url", default=_pg.DEFAULT_ADMIN_URL)
    args = parser.parse_args()
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    results: dict[str, list[dict[str, float]]] = {d: [] for d in databases}
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    for rnd in range(args.repeats):
        for db in databases:
            with tempfile.TemporaryDirectory() as tmp:
                for phase in ("in-process", "workers"):
                    name = f"errands_bench_sched_{rnd}_{phase[0]}"
                    if db == "sqlite":
                        url = sqlite_url(tmp, f"{name}.db")
                        ctx: Any = contextlib.nullcontext(url)
                    else:
                        log = Path(tmp) / "migrate.log"
                        ctx = _pg.fresh_database(args.pg_url, name, env, log)
                    with ctx as u:
                        if phase == "in-process":
                            row = in_process(u, args.schedules)
                        else:
                            row = with_workers(u, args.schedules, args.workers, args.seconds)
                    if phase == "in-process":
                        results[db].append(row)
                    else:
                        results[db][-1].update(row)
            print(db, rnd + 1, json.dumps({k: round(v, 1) for k, v in results[db][-1].items()}))
    print()
    print(f"{args.schedules} schedules every 1 s; medians of {args.repeats} (min–max)\n")
    for db in databases:
        rows = results[db]
        print(f"### {db}\n\n| | value |\n|---|---:|")
        for key in rows[0]:
            values = [r[key] for r in rows]
            mid, low, high = statistics.median(values), min(values), max(values)
            print(f"| {key} | {mid:,.1f} ({low:,.1f}–{high:,.1f}) |")
        ticks = statistics.median(r["ticks/s"] for r in rows)
        for other in ("submits/s", "submit_many/s"):
            ratio = ticks / statistics.median(r[other] for r in rows)
            print(f"| ticks ÷ {other[:-2]} | {ratio:.2f}× |")
        print()


if __name__ == "__main__":
    main()
