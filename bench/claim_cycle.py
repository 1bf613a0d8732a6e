"""Claim + finish cycles in one process: the store's hot path without workers or HTTP.

Queues ``--jobs`` jobs of one owner (``submit_many``), then repeats "claim up to 16,
record them succeeded" until the queue is empty, and prints jobs/s and the time of one
claim and one finish of 16. To compare two commits, put a commit's ``src`` first on
``PYTHONPATH`` (``bench/run.py`` unpacks them under ``bench/results/snapshots/``):

    .venv/bin/python bench/claim_cycle.py --database sqlite
    PYTHONPATH=bench/results/snapshots/<sha>/src .venv/bin/python bench/claim_cycle.py

``--database pg`` creates a database ``errands_cycle_<pid>`` on ``--pg-url``'s server,
and drops it afterwards.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "pg"], default="sqlite")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()

    from errands import Errands, Status
    from errands.store.values import Outcome

    admin: Any = None
    name = f"errands_cycle_{os.getpid()}"
    if args.database == "pg":
        import psycopg

        admin = psycopg.connect(f"{args.pg_url}/postgres", autocommit=True)
        admin.execute(f'CREATE DATABASE "{name}"')
        url = f"{args.pg_url}/{name}"
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'cycle.db'}"
    app = Errands(url)
    try:

        @app.task
        async def noop(ctx: Any, payload: dict[str, Any]) -> None:
            return None

        app.migrate()
        app.sync.submit_many("noop", [{"i": i} for i in range(args.jobs)], owner="bench")
        if args.database == "pg":
            with app.db.engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
        claiming = finishing = 0.0
        done = 0
        started = time.perf_counter()
        while True:
            a = time.perf_counter()
            with app.db.transaction(durable=False, autocommit=True) as conn:
                got, _ = app.db.driver.job_claim(
                    conn, "w", names=["noop"], limit=16, now=time.time(), lease_seconds=30
                )
            b = time.perf_counter()
            if not got:
                break
            outcomes = [Outcome(c.task_id, Status.SUCCEEDED) for c in got]
            with app.db.transaction() as conn:
                app.db.driver.attempt_finish(conn, "w", outcomes, now=time.time())
            claiming += b - a
            finishing += time.perf_counter() - b
            done += len(got)
        total = time.perf_counter() - started
        per16 = 16_000 / done
        print(
            f"{args.database}: {done} jobs, {done / total:,.0f} jobs/s; "
            f"claim {claiming * per16:.2f} ms, finish {finishing * per16:.2f} ms per 16"
        )
    finally:
        app.close()
        if admin is not None:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
