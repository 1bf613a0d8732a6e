"""psycopg 3 or asyncpg? The round trips errands makes, timed with each driver.

    .venv/bin/python bench/pg_drivers.py [--n 3000] [--repeats 3]

Creates a scratch database on the local server ($ERRANDS_TEST_PG, default
postgresql://postgres@127.0.0.1:5432), and times, one after another on one connection:
a point SELECT of a task-like row by primary key (autocommit), and a write transaction
of two INSERTs (a record and its job) with COMMIT. psycopg runs the way errands uses it
(synchronous, from the calling thread) and as its async twin; asyncpg with its prepared
statement cache. Prints microseconds per operation (median of the repeats) and the
ratios to psycopg.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import psycopg

SERVER = os.environ.get("ERRANDS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
DDL = [
    "CREATE TABLE t (id text PRIMARY KEY, owner text, payload jsonb, status text, version int)",
    "CREATE TABLE j (task_id text PRIMARY KEY, name text, run_at double precision)",
]
SELECT = "SELECT id, owner, payload, status, version FROM t WHERE id = $1"
INSERT_T = "INSERT INTO t VALUES ($1, 'alice', '{\"q\": 1}', 'queued', 1)"
INSERT_J = "INSERT INTO j VALUES ($1, 'noop', 0)"


def _psycopg_sql(sql: str) -> str:
    return sql.replace("$1", "%s")


def sync_psycopg(url: str, n: int, key: str) -> tuple[float, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        for _ in range(n):
            conn.execute(_psycopg_sql(SELECT), (key,)).fetchone()
        read = time.perf_counter() - start
    with psycopg.connect(url) as conn:
        start = time.perf_counter()
        for _ in range(n):
            k = uuid.uuid4().hex
            conn.execute(_psycopg_sql(INSERT_T), (k,))
            conn.execute(_psycopg_sql(INSERT_J), (k,))
            conn.commit()
        write = time.perf_counter() - start
    return read / n * 1e6, write / n * 1e6


async def async_psycopg(url: str, n: int, key: str) -> tuple[float, float]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        for _ in range(n):
            await (await conn.execute(_psycopg_sql(SELECT), (key,))).fetchone()
        read = time.perf_counter() - start
    async with await psycopg.AsyncConnection.connect(url) as conn:
        start = time.perf_counter()
        for _ in range(n):
            k = uuid.uuid4().hex
            await conn.execute(_psycopg_sql(INSERT_T), (k,))
            await conn.execute(_psycopg_sql(INSERT_J), (k,))
            await conn.commit()
        write = time.perf_counter() - start
    return read / n * 1e6, write / n * 1e6


async def async_asyncpg(url: str, n: int, key: str) -> tuple[float, float]:
    conn = await asyncpg.connect(url)
    try:
        start = time.perf_counter()
        for _ in range(n):
            await conn.fetchrow(SELECT, key)
        read = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(n):
            k = uuid.uuid4().hex
            async with conn.transaction():
                await conn.execute(INSERT_T, k)
                await conn.execute(INSERT_J, k)
        write = time.perf_counter() - start
    finally:
        await conn.close()
    return read / n * 1e6, write / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    name = f"errands_drivers_{os.getpid()}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = f"{SERVER}/{name}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for ddl in DDL:
                conn.execute(ddl)
            conn.execute(_psycopg_sql(INSERT_T), ("key",))
        runs: dict[str, list[tuple[float, float]]] = {}
        drivers: dict[str, Callable[[], tuple[float, float] | Awaitable[tuple[float, float]]]] = {
            "psycopg 3 (sync, as errands uses it)": lambda: sync_psycopg(url, args.n, "key"),
            "psycopg 3 (async)": lambda: async_psycopg(url, args.n, "key"),
            "asyncpg": lambda: async_asyncpg(url, args.n, "key"),
        }
        for _ in range(args.repeats):  # interleaved, so drift hits every driver alike
            for label, run in drivers.items():
                result = run()
                if not isinstance(result, tuple):
                    result = asyncio.run(result)  # type: ignore[arg-type]
                runs.setdefault(label, []).append(result)
        base_read = statistics.median(r for r, _ in next(iter(runs.values())))
        base_write = statistics.median(w for _, w in next(iter(runs.values())))
        print(f"n={args.n} per measurement, median of {args.repeats}; µs per operation")
        print(f"{'driver':40} {'point SELECT':>14} {'2 INSERT + COMMIT':>19}")
        for label, values in runs.items():
            read = statistics.median(r for r, _ in values)
            write = statistics.median(w for _, w in values)
            print(
                f"{label:40} {read:8.0f} ({read / base_read:4.2f}x)"
                f" {write:11.0f} ({write / base_write:4.2f}x)"
            )
        print(f"load average: {os.getloadavg()[0]:.2f}")
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
