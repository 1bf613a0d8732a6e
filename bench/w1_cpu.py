"""Where W1's CPU goes on PostgreSQL: the workers' and the server's, per task.

    .venv/bin/python bench/w1_cpu.py                      # 20,000 tasks, 2 workers, HEAD's src
    .venv/bin/python bench/w1_cpu.py --src bench/results/snapshots/<sha>/src   # another commit

A fresh database on the local server (``--pg-url``), migrated; ``--n`` no-op tasks of
``bench.errands_tasks:app`` queued with one ``submit_many`` and ``ANALYZE`` (untimed);
then ``--workers`` processes of ``errands worker --burst`` drain them. Prints tasks/s
(first ``started_at`` → last ``finished_at``, from the records) and the CPU seconds of
the worker processes and of every PostgreSQL process over the drain (from
``/proc/<pid>/stat``, sampled every 50 ms; the workers' include their start-up), and
what both come to per task. On 2 cores, 2 s of CPU per second is the ceiling: the sum
per task bounds the throughput. ``--sql`` runs statements after the migration, to see
what a schema change would be worth (``--sql "DROP INDEX ix_errands_task_updated_at"``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent


def _cpu(pid: str) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])


def _postgres_pids() -> list[str]:
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if Path(f"/proc/{pid}/comm").read_text().startswith("postgres"):
                    pids.append(pid)
            except OSError:
                pass
    return pids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--src", default=str(REPO / "src"), help="the library's src to measure")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432")
    ap.add_argument(
        "--sql",
        action="append",
        default=[],
        help="a statement run after the migration (a diagnostic: e.g. drop an index)",
    )
    args = ap.parse_args()
    db = f"errands_w1cpu_{os.getpid()}"
    admin = f"{args.pg_url}/postgres"
    url = f"{args.pg_url}/{db}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
    try:
        env = dict(os.environ, BENCH_ERRANDS_URL=url, PYTHONPATH=f"{args.src}:{REPO}")
        run = [sys.executable, "-m", "errands"]
        subprocess.run([*run, "migrate", "--app", "bench.errands_tasks:app"], env=env, check=True)
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in args.sql:
                conn.execute(statement)
        queue = (
            "from bench import errands_tasks as t\n"
            f"t.app.sync.submit_many('noop', [{{'i': i + 1}} for i in range({args.n})], "
            "owner='bench-user')\n"
            "with t.app.db.engine.connect() as c:\n"
            "    c.execution_options(isolation_level='AUTOCOMMIT').exec_driver_sql('ANALYZE')\n"
        )
        subprocess.run([sys.executable, "-c", queue], env=env, check=True)
        before = {pid: _cpu(pid) or 0 for pid in _postgres_pids()}
        worker = [*run, "worker", "bench.errands_tasks:app", "--burst"]
        worker += ["--concurrency", str(args.concurrency)]
        procs = [
            subprocess.Popen(worker, env=env, stdout=subprocess.DEVNULL)
            for _ in range(args.workers)
        ]
        seen: dict[str, int] = {}
        while any(p.poll() is None for p in procs):
            for pid in [*_postgres_pids(), *(str(p.pid) for p in procs)]:
                value = _cpu(pid)
                if value is not None:
                    seen[pid] = value
            time.sleep(0.05)
        hz = os.sysconf("SC_CLK_TCK")
        mine = {str(p.pid) for p in procs}
        workers = sum(v for pid, v in seen.items() if pid in mine) / hz
        server = sum(v - before.get(pid, 0) for pid, v in seen.items() if pid not in mine) / hz
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)),"
                " count(*) FROM errands_task WHERE status = 'succeeded'"
            ).fetchone()
        assert row is not None and row[2] == args.n, f"not every task succeeded: {row}"
        rate = args.n / (float(row[1]) - float(row[0]))
        print(
            f"{args.n:,} tasks, {args.workers} workers: {rate:,.0f}/s; CPU workers {workers:.2f} s "
            f"({workers / args.n * 1e6:.0f} µs a task, start-up included), PostgreSQL "
            f"{server:.2f} s ({server / args.n * 1e6:.0f} µs a task)"
        )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {db} WITH (FORCE)")


if __name__ == "__main__":
    main()
