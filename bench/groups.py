"""A group's cost: 10,000 parts as one group, end to end, beside the same 10,000 parts as
independent tasks, on SQLite and PostgreSQL; and Celery's ``chord`` on Redis for the
same parts.

    .venv/bin/python bench/groups.py                       # both databases + Celery, 3 rounds
    .venv/bin/python bench/groups.py --parts 2000 --repeats 1 --no-celery

Every case runs on a fresh database (a new SQLite file, ``synchronous=FULL``; a new
PostgreSQL database on ``--pg-url``) with ``--workers`` (2) ``errands worker`` processes
at ``--concurrency`` (16) started first and idle:

- **group**: ``app.sync.submit_group("part", parts, then="total")`` — the time from
  just before the submit until the group's record is seen succeeded (10 ms polls);
- **tasks**: ``app.sync.submit_many("part", parts)`` plus a ``total`` task submitted
  when every part has succeeded (what a user writes without groups) — the time from just
  before the submit until ``total`` is seen succeeded.

``part`` returns its number; ``total`` sums the results (the group's ``then`` gets them
as ``{"results": [...]}``; the plain run reads them back with ``get_many``, pages of
500). Rounds alternate which goes first. **Celery**: a ``chord`` of the same parts
(``part.s(n)``) with a ``total`` callback, on Redis (broker database 5, results 6),
``--workers`` prefork workers of ``--celery-concurrency`` (8) processes; the time from
just before ``apply_async`` until the callback's result arrives.

The table gives medians over ``--repeats`` and the ratios group ÷ tasks (target ≤ 1.2)
and errands' group ÷ Celery's chord.
"""

from __future__ import annotations

import argparse
import contextlib
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

REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")


def make_app(url: str) -> Any:
    from errands import Errands, TaskContext

    app = Errands(url)

    @app.task
    async def part(ctx: TaskContext, payload: dict[str, Any]) -> int:
        return int(payload["n"])

    @app.task
    async def total(ctx: TaskContext, payload: dict[str, Any]) -> int:
        return sum(payload["results"])

    return app


# ``errands worker bench.groups:app`` (URL from $ERRANDS_DATABASE_URL).
app = make_app(os.environ.get("ERRANDS_DATABASE_URL", "sqlite:///bench-groups.db"))

# Celery's side: ``celery -A bench.groups:celery_app worker``.
try:
    from celery import Celery

    celery_app = Celery("bench_groups", broker=f"{REDIS}/5", backend=f"{REDIS}/6")
    celery_app.conf.update(result_expires=600, worker_prefetch_multiplier=16)

    @celery_app.task(name="bench_groups.part")
    def celery_part(n: int) -> int:
        return n

    @celery_app.task(name="bench_groups.total")
    def celery_total(results: list[int]) -> int:
        return sum(results)
except ImportError:  # pragma: no cover - Celery is a bench extra
    celery_app = None


def wait_for(check: Any, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the run did not finish")
        time.sleep(0.01)


def workers(url: str, count: int, concurrency: int) -> list[subprocess.Popen[bytes]]:
    env = os.environ | {"ERRANDS_DATABASE_URL": url, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "errands", "worker", "bench.groups:app", "-c", str(concurrency)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def run_errands(url: str, mode: str, parts: int, count: int, concurrency: int) -> float:
    a = make_app(url)
    a.db.ensure_schema()
    procs = workers(url, count, concurrency)
    try:
        time.sleep(2.0)  # started and idle
        payloads = [{"n": n} for n in range(parts)]
        start = time.perf_counter()
        if mode == "group":
            group = a.sync.submit_group("part", payloads, owner="bench", then="total")
            wait_for(lambda: a.sync.get(group.id, owner="bench").done)
            assert a.sync.get(group.id, owner="bench").result == sum(range(parts))
        else:
            records = a.sync.submit_many("part", payloads, owner="bench")
            ids = [r.id for r in records]

            def all_done() -> bool:
                page = a.sync.list(owner="bench", status="succeeded", name="part", limit=1)
                return bool(page.items) and _succeeded(a) == parts

            wait_for(all_done)
            results: list[int] = []
            for k in range(0, parts, 500):
                got = {r.id: r.result for r in a.sync.get_many(ids[k : k + 500], owner="bench")}
                results += [got[i] for i in ids[k : k + 500]]
            last = a.sync.submit("total", {"results": results}, owner="bench")
            wait_for(lambda: a.sync.get(last.id, owner="bench").done)
        elapsed = time.perf_counter() - start
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
        a.close()
    return elapsed


def _succeeded(a: Any) -> int:
    from sqlalchemy import func, select

    from errands.store.schema import task_table

    T = task_table.c
    with a.db.engine.connect() as conn:
        query = select(func.count()).where(T.name == "part", T.status == "succeeded")
        return int(conn.execute(query).scalar_one())


def run_celery(parts: int, count: int, concurrency: int) -> float:
    import redis
    from celery import chord

    r = redis.Redis.from_url(f"{REDIS}/5")
    r.flushdb()
    redis.Redis.from_url(f"{REDIS}/6").flushdb()
    env = os.environ | {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.groups:celery_app",
                "worker",
                "-c",
                str(concurrency),
                "-n",
                f"w{i}@%h",
                "--loglevel",
                "WARNING",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(count)
    ]
    try:
        wait_for(lambda: len(celery_app.control.ping(timeout=0.5) or []) >= count, timeout=60)
        start = time.perf_counter()
        result = chord(celery_part.s(n) for n in range(parts))(celery_total.s())
        assert result.get(timeout=600) == sum(range(parts))
        elapsed = time.perf_counter() - start
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--parts", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--celery-concurrency", type=int, default=8)
    parser.add_argument("--no-celery", action="store_true")
    parser.add_argument("--pg-url", default=_pg.DEFAULT_ADMIN_URL)
    args = parser.parse_args()
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    times: dict[str, list[float]] = {}
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    for rnd in range(args.repeats):
        for db in databases:
            modes = ["group", "tasks"] if rnd % 2 == 0 else ["tasks", "group"]
            for mode in modes:
                with tempfile.TemporaryDirectory() as tmp:
                    name = f"errands_bench_groups_{rnd}_{mode}"
                    if db == "sqlite":
                        ctx: Any = contextlib.nullcontext(f"sqlite:///{Path(tmp) / name}.db")
                    else:
                        ctx = _pg.fresh_database(args.pg_url, name, env, Path(tmp) / "m.log")
                    with ctx as url:
                        t = run_errands(url, mode, args.parts, args.workers, args.concurrency)
                times.setdefault(f"{db} {mode}", []).append(t)
                print(f"round {rnd + 1}: {db} {mode}: {t:.2f} s", flush=True)
        if not args.no_celery and celery_app is not None:
            t = run_celery(args.parts, args.workers, args.celery_concurrency)
            times.setdefault("celery chord (Redis)", []).append(t)
            print(f"round {rnd + 1}: celery chord: {t:.2f} s", flush=True)
    print(f"\n{args.parts:,} parts; seconds end to end, medians of {args.repeats} (min–max)\n")
    print("| case | seconds | parts/s |\n|---|---:|---:|")
    med = {k: statistics.median(v) for k, v in times.items()}
    for key, values in times.items():
        low, high = min(values), max(values)
        print(f"| {key} | {med[key]:.2f} ({low:.2f}–{high:.2f}) | {args.parts / med[key]:,.0f} |")
    print()
    for db in databases:
        print(f"- {db}: group ÷ tasks = {med[f'{db} group'] / med[f'{db} tasks']:.2f}× the time")
        if "celery chord (Redis)" in med:
            ratio = med["celery chord (Redis)"] / med[f"{db} group"]
            print(f"- {db}: Celery's chord ÷ errands' group = {ratio:.2f}× the time")


if __name__ == "__main__":
    main()
