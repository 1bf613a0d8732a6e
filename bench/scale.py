"""Scale benchmark: does a large history of finished records slow errands down?

    .venv/bin/python bench/scale.py                       # PostgreSQL and SQLite, 1M rows, 3 rounds
    .venv/bin/python bench/scale.py --backends pg --quick # smoke test (50,000 rows, ~3 min)

For each backend two fresh databases are created and migrated with ``errands migrate``
(the measured commit's migrations): *empty*, and *big*, into which ``--rows``
(1,000,000) finished task records are bulk-loaded with one SQL statement per 200,000
rows (PostgreSQL: ``INSERT … SELECT … FROM generate_series``; SQLite: the same from a
recursive CTE). The records look like a real history: 1,000 owners, five task names,
93% ``succeeded`` (with a ~200-byte result), 5% ``failed`` (error type, message and a
traceback), 2% ``cancelled``; ``created_at`` spread over the last 6.4 days with
time-ordered (UUIDv7) ids made from it; ``expires_at`` = finished + 7 days (none has
expired, so no worker purges during the run) or NULL for 10%. As the schema requires,
finished tasks have no ``errands_job`` row. After the load both databases get the same
maintenance: ``VACUUM (ANALYZE)`` and ``CHECKPOINT`` on PostgreSQL (this server runs
with ``autovacuum = off``), ``ANALYZE`` and ``PRAGMA wal_checkpoint(TRUNCATE)`` on SQLite.

Then ``--repeats`` rounds, alternating which database goes first, each on both:

1. claim throughput (W1-style): ``--tasks`` (10,000) no-op tasks are queued with
   ``app.sync.submit_many`` (untimed, 1,000 per owner), ``ANALYZE`` runs (as the peer
   harness does after an enqueue), then 2 ``errands worker bench.web_tasks:app
   --concurrency 16`` processes are launched; tasks/s = tasks / (last ``finished_at``
   − first ``started_at`` of those records), and the same from the worker launch to
   the moment the client sees the job table empty;
2. ``GET /api/tasks/{id}`` through the HTTP API: one uvicorn process
   (``bench/web_server.py``), the load client of ``bench/web.py`` in its own process,
   ``--reads`` (300) fixed task ids (the first records of this round's claim phase,
   identical work in both databases), at 1 connection (latency) and at 50 (throughput),
   ``--warmup`` + ``--duration`` s each; on *big* also 300 random records of the bulk
   load (old rows, spread over the whole table);
3. the round's records are deleted again (and the tables vacuumed on PostgreSQL), so
   *empty* stays empty.

Output: the tables on stdout and in ``bench/results/scale.md``, everything in
``bench/results/scale.json``, process logs in ``bench/results/scale-logs/`` (``NAME``
instead of ``scale`` with ``--name``). Every database created is dropped (``WITH
(FORCE)``) and every process started is stopped, however the run ends. Like
``bench/run.py``, the library measured is a git commit (``--ref``) unpacked under
``bench/results/snapshots/``, put first on the path of this process, the workers and
the server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import _pg as pg  # noqa: E402
from bench import web as webbench  # noqa: E402
from bench._source import fingerprint, snapshot  # noqa: E402

DEFAULT_PG_URL = pg.DEFAULT_ADMIN_URL
TARGET = 1.3  # the 1M table may be at most this many times slower
CHUNK = 200_000  # rows per INSERT of the bulk load
WINDOW_DAYS = 6.4  # created_at spread (7-day retention: nothing expires during the run)
OWNERS = 1000


def log(msg: str) -> None:
    print(msg, flush=True)


def fmt(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


# ======================================================================================
# bulk load SQL
# ======================================================================================
_COLUMNS = (
    "id, owner, name, payload, status, progress_current, progress_total, progress_message, "
    "result, error_type, error_message, error_detail, attempts, max_attempts, priority, "
    "run_at, cancel_requested, version, created_at, updated_at, started_at, finished_at, "
    "expires_at"
)
# 93% succeeded, 5% failed, 2% cancelled
_STATUS = (
    "CASE WHEN i % 20 = 7 THEN 'failed' WHEN i % 50 = 11 THEN 'cancelled' ELSE 'succeeded' END"
)
_NAMES = ("report", "export", "import", "thumbnail", "email")

PG_LOAD = f"""
INSERT INTO errands_task ({_COLUMNS})
SELECT
    substr(t.ms, 1, 8) || '-' || substr(t.ms, 9, 4) || '-7' || substr(t.h, 1, 3) || '-'
        || substr('89ab', (1 + i % 4)::int, 1) || substr(t.h, 4, 3) || '-' || substr(t.h, 7, 12),
    'user-' || (i * 7919) % {OWNERS},
    (ARRAY{list(_NAMES)!r})[(1 + i % {len(_NAMES)})::int],
    json_build_object('i', i, 'source', 'bulk', 'ref', substr(t.h, 13, 16)),
    t.status,
    CASE WHEN t.status = 'succeeded' THEN 100 ELSE i % 100 END,
    100,
    CASE WHEN t.status = 'succeeded' THEN 'done' ELSE 'step ' || (i % 100) END,
    CASE WHEN t.status = 'succeeded' THEN json_build_object(
        'rows', i % 5000, 'bytes', (i * 37) % 1000000,
        'url', 'https://files.example.com/exports/' || t.h || '.csv', 'checksum', md5(t.h))
    END,
    CASE t.status WHEN 'failed' THEN 'ValueError' WHEN 'cancelled' THEN 'TaskCancelled' END,
    CASE t.status WHEN 'failed' THEN 'the task failed unexpectedly'
        WHEN 'cancelled' THEN 'The task was cancelled.' END,
    CASE WHEN t.status = 'failed' THEN
        'Traceback (most recent call last):' || chr(10) || '  File "app/tasks.py", line '
        || (i % 400) || ', in run' || chr(10) || '    raise ValueError(row)' || chr(10)
        || 'ValueError: bad input ' || t.h
    END,
    CASE WHEN t.status = 'failed' THEN 3 WHEN i % 7 = 0 THEN 2 ELSE 1 END,
    3,
    0,
    t.created,
    t.status = 'cancelled',
    4 + i % 6,
    t.created,
    t.finished,
    t.created + interval '15 milliseconds',
    t.finished,
    CASE WHEN i % 10 = 0 THEN NULL ELSE t.finished + interval '7 days' END
FROM (
    SELECT i, h, c AS created, {_STATUS} AS status,
           lpad(to_hex(floor(extract(epoch FROM c) * 1000)::bigint), 12, '0') AS ms,
           c + (50 + (i % 97) * 100) * interval '1 millisecond' AS finished
    FROM (
        SELECT i, md5(i::text) AS h,
               :start::timestamptz + (i * :step_us) * interval '1 microsecond' AS c
        FROM generate_series(:lo::bigint, :hi::bigint - 1) AS i
    ) s
) t
"""


def _pyformat(sql: str) -> str:
    """``:name`` placeholders as psycopg's ``%(name)s`` (and every other ``%`` escaped)."""
    sql = sql.replace("%", "%%")
    for name in ("start", "step_us", "lo", "hi"):
        sql = sql.replace(f":{name}", f"%({name})s")
    return sql


PG_LOAD = _pyformat(PG_LOAD)


def _sqlite_stamp(us: str) -> str:
    """SQL for ``UTCDateTime``'s SQLite text of a Unix time in microseconds."""
    return (
        f"(strftime('%Y-%m-%d %H:%M:%S', ({us}) / 1000000, 'unixepoch') "
        f"|| printf('.%06d', ({us}) % 1000000))"
    )


SQLITE_LOAD = f"""
WITH RECURSIVE g(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM g WHERE i + 1 < :hi),
s AS (
    SELECT i, lower(hex(randomblob(10))) AS h, :start_us + i * :step_us AS c,
           printf('%012x', (:start_us + i * :step_us) / 1000) AS ms, {_STATUS} AS status
    FROM g
),
t AS (SELECT s.*, c + (50 + (i % 97) * 100) * 1000 AS f FROM s)
INSERT INTO errands_task ({_COLUMNS})
SELECT
    substr(ms, 1, 8) || '-' || substr(ms, 9, 4) || '-7' || substr(h, 1, 3) || '-'
        || substr('89ab', 1 + i % 4, 1) || substr(h, 4, 3) || '-' || substr(h, 7, 12),
    'user-' || (i * 7919) % {OWNERS},
    CASE i % {len(_NAMES)} {" ".join(f"WHEN {k} THEN '{n}'" for k, n in enumerate(_NAMES))} END,
    json_object('i', i, 'source', 'bulk', 'ref', substr(h, 13, 8)),
    status,
    CASE WHEN status = 'succeeded' THEN 100.0 ELSE i % 100 END,
    100.0,
    CASE WHEN status = 'succeeded' THEN 'done' ELSE 'step ' || (i % 100) END,
    CASE WHEN status = 'succeeded' THEN json_object(
        'rows', i % 5000, 'bytes', (i * 37) % 1000000,
        'url', 'https://files.example.com/exports/' || h || '.csv',
        'checksum', lower(hex(randomblob(16))))
    END,
    CASE status WHEN 'failed' THEN 'ValueError' WHEN 'cancelled' THEN 'TaskCancelled' END,
    CASE status WHEN 'failed' THEN 'the task failed unexpectedly'
        WHEN 'cancelled' THEN 'The task was cancelled.' END,
    CASE WHEN status = 'failed' THEN
        'Traceback (most recent call last):' || char(10) || '  File "app/tasks.py", line '
        || (i % 400) || ', in run' || char(10) || '    raise ValueError(row)' || char(10)
        || 'ValueError: bad input ' || h
    END,
    CASE WHEN status = 'failed' THEN 3 WHEN i % 7 = 0 THEN 2 ELSE 1 END,
    3,
    0,
    {_sqlite_stamp("c")},
    status = 'cancelled',
    4 + i % 6,
    {_sqlite_stamp("c")},
    {_sqlite_stamp("f")},
    {_sqlite_stamp("c + 15000")},
    {_sqlite_stamp("f")},
    CASE WHEN i % 10 = 0 THEN NULL ELSE {_sqlite_stamp("f + 7 * 86400 * 1000000")} END
FROM t
"""


# ======================================================================================
# backends: create / load / maintain / drop databases
# ======================================================================================
class Backend:
    name = "?"
    label = "?"

    def create(self, label: str) -> str:
        """A new empty database (not yet migrated); its URL."""
        raise NotImplementedError

    def drop_all(self) -> None:
        raise NotImplementedError

    def execute(self, url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def bulk_load(self, url: str, rows: int, progress: Callable[[int], None]) -> None:
        raise NotImplementedError

    def maintain(self, url: str) -> str:
        """Statistics and a checkpoint; what was run."""
        raise NotImplementedError

    def after_enqueue(self, url: str) -> None:
        """Planner statistics after queueing (as the peer harness does on PostgreSQL)."""

    def after_delete(self, url: str) -> None:
        """Housekeeping after a round's records are deleted."""

    def size_mib(self, url: str) -> float:
        raise NotImplementedError

    def timestamp(self, value: Any) -> float:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {}


class Postgres(Backend):
    name = "pg"
    label = "PostgreSQL"

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy.engine import make_url

        self.admin = make_url(admin_url).set(drivername="postgresql")
        self.created: list[str] = []
        self.conns: dict[str, Any] = {}  # url -> an autocommit connection of this process

    def _conninfo(self, database: str) -> str:
        return self.admin.set(database=database).render_as_string(hide_password=False)

    def _admin(self, sql: str) -> None:
        pg.admin(self.admin.render_as_string(hide_password=False), sql)

    def create(self, label: str) -> str:
        database = f"errands_scale_{os.getpid()}_{label}"
        self._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{database}"')
        self.created.append(database)
        return self._conninfo(database)

    def drop_all(self) -> None:
        for conn in self.conns.values():
            with contextlib.suppress(Exception):
                conn.close()
        self.conns.clear()
        for database in self.created:
            try:
                self._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            except Exception as exc:
                log(f"  could not drop {database}: {exc}")
        self.created.clear()

    def execute(self, url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        import psycopg

        conn = self.conns.get(url)
        if conn is None:
            conn = self.conns[url] = psycopg.connect(url, autocommit=True)
        cur = conn.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []

    def bulk_load(self, url: str, rows: int, progress: Callable[[int], None]) -> None:
        import psycopg

        now = datetime.now(UTC)
        start = now.timestamp() - 6.5 * 86400
        step_us = int(WINDOW_DAYS * 86400 * 1e6 / rows)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET synchronous_commit = off")  # the load only, not the benchmark
            for lo in range(0, rows, CHUNK):
                hi = min(rows, lo + CHUNK)
                conn.execute(
                    PG_LOAD,  # type: ignore[arg-type]
                    {
                        "start": datetime.fromtimestamp(start, UTC),
                        "step_us": step_us,
                        "lo": lo,
                        "hi": hi,
                    },
                )
                progress(hi)

    def maintain(self, url: str) -> str:
        self.execute(url, "VACUUM (ANALYZE)")
        self.execute(url, "CHECKPOINT")
        return "VACUUM (ANALYZE); CHECKPOINT"

    def after_enqueue(self, url: str) -> None:
        self.execute(url, "ANALYZE errands_job")
        self.execute(url, "ANALYZE errands_task")

    def after_delete(self, url: str) -> None:
        self.execute(url, "VACUUM (ANALYZE) errands_task, errands_job")

    def size_mib(self, url: str) -> float:
        rows = self.execute(url, "SELECT pg_total_relation_size('errands_task')")
        return float(rows[0][0]) / 2**20

    def timestamp(self, value: Any) -> float:
        return float(value.timestamp())

    def info(self) -> dict[str, Any]:
        import psycopg

        out: dict[str, Any] = {}
        with psycopg.connect(
            self._conninfo(str(self.admin.database)), autocommit=True, connect_timeout=10
        ) as conn:
            for name in (
                "server_version",
                "shared_buffers",
                "synchronous_commit",
                "fsync",
                "autovacuum",
            ):
                out[name] = conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
        return out


class Sqlite(Backend):
    name = "sqlite"
    label = "SQLite"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.files: list[Path] = []
        self.conns: dict[str, sqlite3.Connection] = {}

    @staticmethod
    def _path(url: str) -> str:
        return url.removeprefix("sqlite:///")

    def create(self, label: str) -> str:
        path = self.tmp / f"scale-{label}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        self.files.append(path)
        return f"sqlite:///{path}"

    def drop_all(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()
        for path in self.files:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        self.files.clear()

    def _connect(self, url: str) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path(url), isolation_level=None, timeout=60)
        conn.execute("PRAGMA busy_timeout=60000")
        return conn

    def execute(self, url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        conn = self.conns.get(url)
        if conn is None:
            conn = self.conns[url] = self._connect(url)
        return conn.execute(sql, params or ()).fetchall()

    def bulk_load(self, url: str, rows: int, progress: Callable[[int], None]) -> None:
        start_us = int((time.time() - 6.5 * 86400) * 1e6)
        step_us = int(WINDOW_DAYS * 86400 * 1e6 / rows)
        conn = self._connect(url)
        try:
            for lo in range(0, rows, CHUNK):
                hi = min(rows, lo + CHUNK)
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    SQLITE_LOAD, {"lo": lo, "hi": hi, "start_us": start_us, "step_us": step_us}
                )
                conn.execute("COMMIT")
                progress(hi)
        finally:
            conn.close()

    def maintain(self, url: str) -> str:
        self.execute(url, "ANALYZE")
        self.execute(url, "PRAGMA wal_checkpoint(TRUNCATE)")
        return "ANALYZE; PRAGMA wal_checkpoint(TRUNCATE)"

    def size_mib(self, url: str) -> float:
        return (
            sum(
                Path(f"{self._path(url)}{s}").stat().st_size
                for s in ("", "-wal")
                if Path(f"{self._path(url)}{s}").exists()
            )
            / 2**20
        )

    def timestamp(self, value: Any) -> float:
        return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()

    def info(self) -> dict[str, Any]:
        return {"sqlite": sqlite3.sqlite_version, "synchronous": "FULL (errands' default)"}


# ======================================================================================
# one database under test
# ======================================================================================
class Target:
    def __init__(self, bench: Scale, backend: Backend, label: str, url: str) -> None:
        self.bench, self.backend, self.label, self.url = bench, backend, label, url
        self.old_targets: list[tuple[str, str, str]] = []
        from errands import Errands

        self.app = Errands(url)

        @self.app.task(name="noop", max_attempts=1)
        async def noop(ctx: Any, payload: dict[str, Any]) -> None:  # the workers' is real
            return None

    def env(self) -> dict[str, str]:
        return {**self.bench.env, "ERRANDS_DATABASE_URL": self.url}

    def close(self) -> None:
        self.app.close()
        root = getattr(self.app.notifier, "root", None)
        if root:
            shutil.rmtree(root, ignore_errors=True)

    # -- claim throughput ------------------------------------------------------------
    def claim(self, rnd: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        a = self.bench.args
        n = a.tasks
        ids: list[tuple[str, str]] = []
        t0 = time.perf_counter()
        for k, lo in enumerate(range(0, n, 1000)):
            owner = f"scale-{rnd}-{k}"
            records = self.app.sync.submit_many(
                "noop", [{"i": i} for i in range(lo, min(n, lo + 1000))], owner=owner
            )
            ids += [(r.id, owner) for r in records]
        enqueue_s = time.perf_counter() - t0
        self.backend.after_enqueue(self.url)
        quiet = self.bench.quiet()
        procs = self.bench.procs
        t_launch = time.time()
        workers = [
            procs.start(
                f"{self.backend.name}-{self.label}-r{rnd}-worker{w}",
                [
                    sys.executable, "-m", "errands", "worker", "bench.web_tasks:app",
                    "--concurrency", str(a.concurrency), "--shutdown-timeout", "5",
                ],
                self.env(),
            )
            for w in range(2)
        ]  # fmt: skip
        deadline = time.monotonic() + a.timeout
        try:
            while True:
                left = self.backend.execute(self.url, "SELECT count(*) FROM errands_job")[0][0]
                if left == 0:
                    break
                for w in workers:
                    if w.poll() is not None:
                        raise RuntimeError(f"a worker exited with code {w.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{left} jobs left after {a.timeout:.0f} s")
                time.sleep(0.01)
            t_seen = time.time()
        finally:
            for w in workers:
                procs.stop(w)
        stats = self._finished([i for i, _ in ids])
        first, last = stats["first_start"], stats["last_finish"]
        result = {
            "tasks": n,
            "enqueue_s": enqueue_s,
            "per_s": n / (last - first) if last > first else None,
            "per_s_from_launch": n / (t_seen - t_launch),
            "worker_boot_s": first - t_launch,
            "succeeded": stats["succeeded"],
            "before": quiet,
        }
        if stats["succeeded"] != n:
            raise RuntimeError(f"only {stats['succeeded']} of {n} tasks succeeded")
        return result, ids

    def _finished(self, ids: list[str]) -> dict[str, Any]:
        first, last, ok = None, None, 0
        mark = "%s" if self.backend.name == "pg" else "?"
        for lo in range(0, len(ids), 1000):
            part = ids[lo : lo + 1000]
            row = self.backend.execute(
                self.url,
                "SELECT min(started_at), max(finished_at), "
                "sum(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) FROM errands_task "
                f"WHERE id IN ({', '.join([mark] * len(part))})",
                part,
            )[0]
            s, f = self.backend.timestamp(row[0]), self.backend.timestamp(row[1])
            first = s if first is None else min(first, s)
            last = f if last is None else max(last, f)
            ok += int(row[2] or 0)
        return {"first_start": first, "last_finish": last, "succeeded": ok}

    def delete(self, ids: list[tuple[str, str]]) -> None:
        mark = "%s" if self.backend.name == "pg" else "?"
        for lo in range(0, len(ids), 1000):
            part = [i for i, _ in ids[lo : lo + 1000]]
            self.backend.execute(
                self.url,
                f"DELETE FROM errands_task WHERE id IN ({', '.join([mark] * len(part))})",
                part,
            )
        self.backend.after_delete(self.url)

    # -- HTTP reads --------------------------------------------------------------------
    def reads(self, rnd: int, recent: list[tuple[str, str]]) -> dict[str, Any]:
        a = self.bench.args
        procs = self.bench.procs
        port = webbench.free_port()
        server = procs.start(
            f"{self.backend.name}-{self.label}-r{rnd}-server",
            [
                sys.executable, str(HERE / "web_server.py"), "--port", str(port),
                "--http", "httptools", "--loop", "uvloop",
            ],
            self.env(),
        )  # fmt: skip
        out: dict[str, Any] = {}
        try:
            webbench.wait_for_server(port, server)
            sets = {"recent": [(f"/api/tasks/{i}", o, "") for i, o in recent[: a.reads]]}
            if self.old_targets:
                sets["old"] = self.old_targets
            for which, targets in sets.items():
                for conc in a.read_concurrency:
                    key = f"{which}-c{conc}"
                    out[key] = self.bench.client(
                        f"{self.backend.name}-{self.label}-r{rnd}-{key}",
                        port,
                        server.pid,
                        targets,
                        conc,
                    )
                    log(f"    GET {which} c={conc}: {webbench.describe_load(out[key])}")
        finally:
            procs.stop(server)
        return out


# ======================================================================================
# the run
# ======================================================================================
class Scale:
    def __init__(self, args: argparse.Namespace, procs: webbench.Processes, tmp: Path) -> None:
        self.args = args
        self.procs = procs
        self.tmp = tmp
        self.env: dict[str, str] = {}

    def quiet(self) -> dict[str, float]:
        return webbench.wait_for_quiet(self.args.max_load, self.args.max_wait)

    def client(
        self, name: str, port: int, server_pid: int, targets: list[Any], concurrency: int
    ) -> dict[str, Any]:
        a = self.args
        spec = {
            "host": webbench.HOST,
            "port": port,
            "loop": "uvloop" if webbench.module_available("uvloop") else "asyncio",
            "mode": "load",
            "kind": "get",
            "expect": 200,
            "targets": targets,
            "concurrency": concurrency,
            "warmup": a.warmup,
            "duration": a.duration,
            "pids": {"server": server_pid},
        }
        spec_path = self.tmp / f"{name}.spec.json"
        out_path = self.tmp / f"{name}.out.json"
        spec_path.write_text(json.dumps(spec))
        quiet = self.quiet()
        proc = self.procs.start(
            name,
            [sys.executable, str(HERE / "web.py"), "_client", str(spec_path), str(out_path)],
            self.env,
        )
        try:
            rc = proc.wait(a.warmup + a.duration + 60)
        except subprocess.TimeoutExpired:
            self.procs.stop(proc)
            raise RuntimeError(f"client {name} did not finish") from None
        if rc != 0 or not out_path.exists():
            raise RuntimeError(f"client {name} failed (exit {rc})")
        result: dict[str, Any] = json.loads(out_path.read_text())
        result["before"] = quiet
        if result["unexpected"] or result["errors"]:
            raise RuntimeError(
                f"client {name}: statuses {result['statuses']}, errors {result['errors']}"
            )
        return result

    def migrate(self, url: str, name: str) -> None:
        proc = self.procs.start(
            name, [sys.executable, "-m", "errands", "--database-url", url, "migrate"], self.env
        )
        if proc.wait(120) != 0:
            raise RuntimeError(f"errands migrate failed; see the log {name}.log")

    def run_backend(self, backend: Backend) -> dict[str, Any]:
        a = self.args
        out: dict[str, Any] = {"backend": backend.name, "info": backend.info(), "rounds": []}
        log(f"== {backend.label}: {out['info']}")
        targets: dict[str, Target] = {}
        try:
            for label in ("empty", "big"):
                url = backend.create(label)
                self.migrate(url, f"{backend.name}-{label}-migrate")
                targets[label] = Target(self, backend, label, url)
            big = targets["big"]
            log(f"  bulk-loading {a.rows:,} finished records into the big database")
            t0 = time.perf_counter()
            backend.bulk_load(
                big.url,
                a.rows,
                lambda done: log(f"    {done:,} rows, {time.perf_counter() - t0:.1f} s"),
            )
            out["load_s"] = time.perf_counter() - t0
            out["load_rows_per_s"] = a.rows / out["load_s"]
            t1 = time.perf_counter()
            for t in targets.values():
                out["maintenance"] = backend.maintain(t.url)
            out["maintenance_s"] = time.perf_counter() - t1
            log(
                f"  loaded in {out['load_s']:.1f} s ({out['load_rows_per_s']:,.0f} rows/s); "
                f"then on both databases: {out['maintenance']} ({out['maintenance_s']:.1f} s) "
                "- ANALYZE ran after the bulk load"
            )
            count = backend.execute(big.url, "SELECT count(*) FROM errands_task")[0][0]
            jobs = backend.execute(big.url, "SELECT count(*) FROM errands_job")[0][0]
            by_status = backend.execute(
                big.url, "SELECT status, count(*) FROM errands_task GROUP BY status ORDER BY 1"
            )
            out["big_rows"] = count
            out["big_jobs"] = jobs
            out["big_by_status"] = {s: c for s, c in by_status}
            out["size_mib"] = {k: backend.size_mib(t.url) for k, t in targets.items()}
            log(
                f"  big: {count:,} records ({out['big_by_status']}), {jobs} job rows; "
                f"errands_task {out['size_mib']['big']:,.0f} MiB"
            )
            if count != a.rows or jobs != 0:
                raise RuntimeError(f"bulk load: {count} records, {jobs} jobs")
            # a check that the records read back through the library
            sample = backend.execute(
                big.url,
                f"SELECT id, owner FROM errands_task ORDER BY random() LIMIT {int(a.reads)}",
            )
            big.old_targets = [(f"/api/tasks/{i}", o, "") for i, o in sample]
            from errands import ANY_OWNER

            rec = big.app.sync.get(sample[0][0], owner=sample[0][1])
            assert rec.done and rec.owner == sample[0][1], rec
            page = big.app.sync.list(owner=ANY_OWNER, limit=3)
            log(f"  sample record {rec.id}: {rec.status.value}, created {rec.created_at}; "
                f"newest {[p.id for p in page.items]}")  # fmt: skip

            for rnd in range(1, a.repeats + 1):
                order = ["empty", "big"] if rnd % 2 else ["big", "empty"]
                for label in order:
                    t = targets[label]
                    log(f"  [round {rnd}] {backend.label} {label}: claim {a.tasks:,} tasks")
                    claim, ids = t.claim(rnd)
                    log(
                        f"    {fmt(claim['per_s'])} tasks/s (first start → last finish), "
                        f"{fmt(claim['per_s_from_launch'])} incl. worker boot "
                        f"({claim['worker_boot_s']:.2f} s); enqueue {claim['enqueue_s']:.1f} s"
                    )
                    reads = t.reads(rnd, ids)
                    t.delete(ids)
                    out["rounds"].append(
                        {"round": rnd, "db": label, "claim": claim, "reads": reads}
                    )
        finally:
            for t in targets.values():
                with contextlib.suppress(Exception):
                    t.close()
            backend.drop_all()
        return out


# ======================================================================================
# reporting
# ======================================================================================
def summarise(backend: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Median over rounds of each metric, per database."""
    out: dict[str, dict[str, float | None]] = {}
    for db in ("empty", "big"):
        rs = [r for r in backend["rounds"] if r["db"] == db]
        m: dict[str, float | None] = {
            "claim_per_s": median([r["claim"]["per_s"] for r in rs]),
            "claim_from_launch": median([r["claim"]["per_s_from_launch"] for r in rs]),
        }
        keys = sorted({k for r in rs for k in r["reads"]})
        for k in keys:
            runs = [r["reads"][k] for r in rs if k in r["reads"]]
            m[f"{k}_per_s"] = median([x["per_s"] for x in runs])
            m[f"{k}_p50"] = median([x["latency_ms"].get("p50") for x in runs])
            m[f"{k}_p99"] = median([x["latency_ms"].get("p99") for x in runs])
            m[f"{k}_cpu_us"] = median([x.get("server_cpu_us_per_request") for x in runs])
        out[db] = m
    return out


def slowdown(empty: float | None, big: float | None, higher_is_better: bool) -> float | None:
    """How many times worse the big table is (1.0 = the same; < 1: better)."""
    if not empty or not big:
        return None
    return empty / big if higher_is_better else big / empty


def _row(
    label: str, empty: float | None, big: float | None, digits: int, higher: bool, check: bool
) -> str:
    sd = slowdown(empty, big, higher)
    verdict = "–" if sd is None or not check else ("**yes**" if sd <= TARGET else "**no**")
    return (
        f"| {label} | {fmt(empty, digits)} | {fmt(big, digits)} | "
        f"{'–' if sd is None else f'{sd:.2f}×'} | {verdict} |"
    )


def backend_section(b: dict[str, Any], a: dict[str, Any]) -> list[str]:
    """The tables of one backend."""
    s = summarise(b)
    e, g = s["empty"], s["big"]
    info = ", ".join(f"{k} {v}" for k, v in b["info"].items())
    lines = [
        f"## {b['label']} ({info})",
        "",
        f"Bulk load: {a['rows']:,} records in {fmt(b.get('load_s'), 1)} s "
        f"({fmt(b.get('load_rows_per_s'))} rows/s), by status {b.get('big_by_status')}; "
        f"{'errands_task with its indexes' if b['backend'] == 'pg' else 'database file'} "
        f"{fmt(b.get('size_mib', {}).get('big'))} MiB. **After the load, on "
        f"both databases: {b.get('maintenance')}** (ANALYZE included).",
        "",
        f"| measurement | empty table | {a['rows']:,} finished records | slowdown (big vs "
        f"empty) | within {TARGET}× |",
        "|---|---:|---:|---:|---|",
    ]

    def row(label: str, key: str, digits: int, higher: bool, check: bool = True) -> None:
        lines.append(_row(label, e.get(key), g.get(key), digits, higher, check))

    row("claim: tasks/s (first start → last finish)", "claim_per_s", 0, True)
    row("claim: tasks/s incl. worker boot", "claim_from_launch", 0, True, check=False)
    for conc in a["read_concurrency"]:
        k = f"recent-c{conc}"
        row(f"`GET /api/tasks/{{id}}`, {conc} conn.: p50 ms", f"{k}_p50", 2, False)
        row(f"`GET /api/tasks/{{id}}`, {conc} conn.: p99 ms", f"{k}_p99", 2, False)
        row(f"`GET /api/tasks/{{id}}`, {conc} conn.: requests/s", f"{k}_per_s", 0, True)
        row(
            f"`GET /api/tasks/{{id}}`, {conc} conn.: server CPU µs/request",
            f"{k}_cpu_us",
            0,
            False,
            check=False,
        )
    old = [c for c in a["read_concurrency"] if g.get(f"old-c{c}_p50") is not None]
    if old:
        lines += [
            "",
            f"Old records ({a['reads']} random ids of the bulk load, spread over the whole "
            "table) on the big database, against the recent ids of the empty one:",
            "",
            "| measurement | empty table (recent ids) | big table, old ids | slowdown | "
            f"within {TARGET}× |",
            "|---|---:|---:|---:|---|",
        ]
        for conc in old:
            for what, suffix, digits, higher in (
                ("p50 ms", "p50", 2, False),
                ("p99 ms", "p99", 2, False),
                ("requests/s", "per_s", 0, True),
            ):
                ek, gk = f"recent-c{conc}_{suffix}", f"old-c{conc}_{suffix}"
                sd = slowdown(e.get(ek), g.get(gk), higher)
                lines.append(
                    f"| `GET /api/tasks/{{id}}`, {conc} conn.: {what} | "
                    f"{fmt(e.get(ek), digits)} | {fmt(g.get(gk), digits)} | "
                    f"{'–' if sd is None else f'{sd:.2f}×'} | "
                    f"{'–' if sd is None else ('**yes**' if sd <= TARGET else '**no**')} |"
                )
    lines += ["", "Each round (tasks/s of the claim; GET p50 ms at 1 connection):", ""]
    for r in b["rounds"]:
        c1 = r["reads"].get(f"recent-c{a['read_concurrency'][0]}", {})
        lines.append(
            f"- round {r['round']} {r['db']}: claim {fmt(r['claim']['per_s'])}/s "
            f"(load {fmt(r['claim']['before'].get('loadavg'), 2)}), GET p50 "
            f"{fmt(c1.get('latency_ms', {}).get('p50'), 2)} ms, "
            f"{fmt(c1.get('per_s'))} req/s"
        )
    lines.append("")
    return lines


def report(results: dict[str, Any]) -> list[str]:
    a = results["config"]
    m = results["machine"]
    lines = [
        f"# errands scale benchmark ({results['started']})",
        "",
        f"- commit `{results['commit'][:12]}` ({results['commit_subject']}); source "
        f"fingerprint `{results['fingerprint']}`",
        f"- machine: {m['nproc']} cores, {m['mem_gib']} GiB, Python {m['python']}, SQLite "
        f"{m['sqlite']}; load average before {' / '.join(f'{x:.2f}' for x in m['loadavg_before'])}"
        f", after {' / '.join(f'{x:.2f}' for x in m.get('loadavg_after', []))}",
        f"- {a['rows']:,} finished records in the big database; claim phase {a['tasks']:,} "
        f"no-op tasks, 2 workers × concurrency {a['concurrency']}; reads: {a['reads']} task "
        f"ids, {a['warmup']:g} + {a['duration']:g} s per load; median of {a['repeats']} "
        "round(s), the two databases alternating",
        "",
    ]
    for b in results["backends"]:
        lines += backend_section(b, a)
    if results["errors"]:
        lines += ["**Errors:**", "", *(f"- {x}" for x in results["errors"]), ""]
    return lines


# ======================================================================================
def measured_errands(ref: str) -> tuple[Path, str, Path]:
    """Import the library of commit ``ref`` into this process (its snapshot's ``src``
    first on ``sys.path``): the snapshot's ``src``, the full sha, and where ``errands``
    was imported from (checked to be the snapshot)."""
    src, sha = snapshot(ref)
    sys.path.insert(0, str(src))  # this process's errands: the measured commit too
    import errands

    where = Path(errands.__file__).resolve().parent
    if not where.is_relative_to(src):
        raise SystemExit(f"errands was imported from {where}, not from the snapshot {src}")
    return src, sha, where


def child_env(src: Path) -> dict[str, str]:
    """The environment of the processes a run starts: the measured ``src`` first on
    their path, and none of the settings another benchmark may have left."""
    env = dict(os.environ)
    for name in ("ERRANDS_DATABASE_URL", "BENCH_WEB_PROGRESS_INTERVAL", "BENCH_WEB_POOL_SIZE"):
        env.pop(name, None)
    env.update(
        PYTHONPATH=os.pathsep.join(
            [str(src), str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        ),
        PYTHONUNBUFFERED="1",
    )
    return env


def results_head(sha: str, where: Path) -> dict[str, Any]:
    """What every result file starts with: when, which commit and files, which machine."""
    return {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": sha,
        "commit_subject": webbench.git("log", "-1", "--format=%s", sha)[:80],
        "fingerprint": fingerprint(where),
        "machine": webbench.machine(),
    }


def interrupt_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt (so the clean-up runs)."""

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backends", default="pg,sqlite", help="pg, sqlite or both (pg,sqlite)")
    ap.add_argument("--rows", type=int, default=None, help="finished records (1,000,000)")
    ap.add_argument("--tasks", type=int, default=None, help="tasks of the claim phase (10,000)")
    ap.add_argument("--reads", type=int, default=300, help="task ids the reads cycle through")
    ap.add_argument(
        "--read-concurrency", default="1,50", help="client connections of the read loads"
    )
    ap.add_argument("--duration", type=float, default=None, help="measured s per read load (8)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up s per read load (2)")
    ap.add_argument("--repeats", type=int, default=None, help="rounds (3)")
    ap.add_argument("--concurrency", type=int, default=16, help="per worker process (16)")
    ap.add_argument("--timeout", type=float, default=300.0, help="s per claim phase")
    ap.add_argument("--quick", action="store_true", help="50,000 rows, short loads, 1 round")
    ap.add_argument("--pg-url", default=DEFAULT_PG_URL, help="the server's maintenance database")
    ap.add_argument(
        "--max-load",
        type=float,
        default=None,
        help="before each measurement wait (≤ --max-wait s) for the 1-min load average to "
        "drop below this",
    )
    ap.add_argument("--max-wait", type=float, default=120.0)
    ap.add_argument("--ref", default="HEAD", help="git commit of the library to measure")
    ap.add_argument("--name", default="scale", help="bench/results/NAME.json and NAME.md")
    args = ap.parse_args(argv)
    for key, full, short in (
        ("rows", 1_000_000, 50_000),
        ("tasks", 10_000, 2_000),
        ("duration", 8.0, 2.0),
        ("warmup", 2.0, 1.0),
        ("repeats", 3, 1),
    ):
        if getattr(args, key) is None:
            setattr(args, key, short if args.quick else full)
    args.read_concurrency = [int(x) for x in args.read_concurrency.split(",") if x.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not set(backends) <= {"pg", "sqlite"} or not backends:
        ap.error("--backends: pg, sqlite or pg,sqlite")

    src, sha, where = measured_errands(args.ref)
    webbench.raise_nofile()
    logs = RESULTS / f"{args.name}-logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    tmp = Path(tempfile.mkdtemp(prefix="errands-scale-"))
    procs = webbench.Processes(logs)
    bench = Scale(args, procs, tmp)
    bench.env = child_env(src)
    results: dict[str, Any] = {
        **results_head(sha, where),
        "argv": sys.argv,
        "config": {
            k: getattr(args, k)
            for k in (
                "rows",
                "tasks",
                "reads",
                "read_concurrency",
                "duration",
                "warmup",
                "repeats",
                "concurrency",
                "max_load",
                "quick",
            )
        },
        "backends": [],
        "errors": [],
    }
    m = results["machine"]
    log(
        f"errands scale benchmark: commit {sha[:12]}, {m['nproc']} cores, load average "
        f"{' / '.join(f'{x:.2f}' for x in m['loadavg_before'])}; backends {backends}"
    )

    interrupt_on_signals()
    rc = 0
    made: list[Backend] = []
    try:
        for name in backends:
            backend: Backend = Postgres(args.pg_url) if name == "pg" else Sqlite(tmp)
            made.append(backend)
            r = bench.run_backend(backend)
            r["label"] = backend.label
            results["backends"].append(r)
    except KeyboardInterrupt as exc:
        results["errors"].append(f"interrupted ({exc or 'Ctrl-C'})")
        rc = 130
    except Exception as exc:
        import traceback

        traceback.print_exc()
        results["errors"].append(f"{type(exc).__name__}: {exc}")
        rc = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # let the cleanup finish
        procs.stop_all()
        for backend in made:
            backend.drop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    results["errors"] += webbench.check_logs(logs)
    results["machine"]["loadavg_after"] = os.getloadavg()
    for b in results["backends"]:
        b["summary"] = summarise(b)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=1, default=str))
    lines = report(results)
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    log("")
    log("\n".join(lines))
    log(f"written: {RESULTS / args.name}.json and .md; logs in {logs}")
    return rc or (1 if results["errors"] else 0)


if __name__ == "__main__":
    sys.exit(main())
