"""errands measured by the peers' driver: an ``Adapter`` for ``shared/bench/peers/common.py``.

One run of W1, W2 and W3 against one fresh database (a SQLite file, or a PostgreSQL
database that ``bench/run.py`` creates, migrates and drops), exactly as the peer harness
runs each peer (same workload code, timing, worker start/stop and start-time probe):

    .venv/bin/python bench/errands_adapter.py --out bench/results/raw/x.json

``bench/run.py`` calls this once per configuration and repetition. Environment:

- ``BENCH_ERRANDS_URL``: the database URL (default: a new SQLite file under
  bench/results/state); the workers inherit it. A ``postgresql://`` URL must name a
  database that is already migrated (``errands migrate``); its errands tables are
  emptied by ``reset()``.
- ``BENCH_ERRANDS_VARIANT``: the configuration's name in the results (default: derived).
- ``BENCH_ERRANDS_CONCURRENCY``: ``--concurrency`` of each worker process (default 16,
  the library's default).
- ``BENCH_ERRANDS_EXECUTOR``: ``async`` (default) or ``thread`` (see errands_tasks.py).
- ``BENCH_ERRANDS_ENGINE``: ``sql`` (default), ``celery-redis`` or ``celery-rabbitmq``;
  ``BENCH_ERRANDS_QUEUE``: the Celery queue (default: a new name, which the workers
  inherit); ``BENCH_ERRANDS_BROKER`` / ``BENCH_RABBITMQ_URL``: see ``_celery.py``.
- ``BENCH_ERRANDS_PIDFILE``: worker pids are appended here, so that ``run.py`` can kill
  leftovers even if this process is killed.
- plus the peer harness's own ``BENCH_W1_N`` / ``BENCH_W2_N`` / ``BENCH_W3_N`` /
  ``BENCH_PHASE_TIMEOUT``.

How errands is driven (the peers' equivalents in brackets):

- enqueue: ``app.sync.submit(name, payload, owner=...)`` one call at a time, each its own
  durable transaction [``task.delay()``, ``enqueue()``, ...].
- batch: ``app.sync.submit_many(name, payloads, owner=...)``, errands' batch API: one
  call, one transaction, 5,000 records and jobs (every payload validated first)
  [``Queries.enqueue(list, ...)``, ``batch_defer_async``, ...]. On SQLite into a
  scratch file no worker reads (then deleted); on PostgreSQL into the run's own
  database under a task name no worker runs (``w1batch``), then deleted with SQL —
  as the Procrastinate and PgQueuer adapters do with their ``w1batch`` queue.
- PostgreSQL only: an untimed ``ANALYZE`` after each enqueue phase, as the peer
  harness does for Procrastinate and PgQueuer (planner statistics of a long-running
  database; this server runs with ``autovacuum = off``).
- done (W1/W3): the last-submitted record is polled through ``app.sync.get`` until it
  reads ``succeeded``, then ``count(*)`` of this phase's task name in ``succeeded``
  confirms all (failed/cancelled ones abort the phase) [Procrastinate / PgQueuer: last
  job's status, then a count per task name over their job table].
- W2: ``app.sync.submit`` then ``app.sync.wait`` (woken by errands' cross-process
  change notifications: Unix datagrams beside a SQLite file, LISTEN/NOTIFY on
  PostgreSQL; no client polling) [blocking result APIs of Celery/RQ/Dramatiq].
- Celery engine: the client's submits commit the records and jobs; a publisher thread
  then sends one message per job and marks it sent. The enqueue phases (single and
  batch) are timed until every job of the phase is marked sent (a count of unsent
  jobs, polled every 10 ms after the last call returns), so they include publication
  [``delay()`` returns once published]; the commit-only time is in ``check``. The
  run's queues are deleted at the end (``run.py`` deletes them again).
- W3: 20 × ``ctx.progress(k, 20)`` (errands' progress API: coalesced in memory and
  written at most every 0.25 s per task plus once with the outcome) and a ~1 KB result
  stored in the task record [``update_state``, ``save_meta``, ``huey.put``, UPSERTs].
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import _celery  # noqa: E402
from bench._peers import RESULTS, load_common  # noqa: E402

common = load_common()
ENGINE = _celery.check_engine(os.environ.get("BENCH_ERRANDS_ENGINE", "sql"))
if ENGINE != "sql":  # one queue of this run's own, inherited by the workers
    os.environ.setdefault("BENCH_ERRANDS_QUEUE", _celery.new_queue(ENGINE))
STATE = RESULTS / "state"
STATE.mkdir(parents=True, exist_ok=True)
os.environ.setdefault(
    "BENCH_ERRANDS_URL", f"sqlite:///{STATE}/errands-{os.getpid()}-{int(time.time())}.db"
)

from sqlalchemy import Table, delete, func, select, text  # noqa: E402

import errands  # noqa: E402
from bench import errands_tasks  # noqa: E402
from bench._source import fingerprint  # noqa: E402
from errands import Errands, Status  # noqa: E402
from errands.store.schema import job_table, task_table  # noqa: E402

app = errands_tasks.app
OWNER = "bench-user"
CONCURRENCY = int(os.environ.get("BENCH_ERRANDS_CONCURRENCY", "16"))
PIDFILE = os.environ.get("BENCH_ERRANDS_PIDFILE")
BATCH_NAME = "w1batch"  # the batch's task name on PostgreSQL: no worker runs it
ERRANDS_TABLES = ("errands_output", "errands_job", "errands_task", "errands_worker")
TASK_KINDS = {
    "async": "async def, run on the worker's event loop",
    "thread": "plain def, one thread per attempt",
}


def _sqlite_files(url_app: Errands) -> list[Path]:
    path = url_app.db.sqlite_path
    if path is None:
        return []
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm")]


def _remove(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _count(name: str, status: Status, *, progress_at: float | None = None) -> int:
    """How many records of task ``name`` have ``status`` (one ``count(*)``)."""
    t = task_table.c
    query = (
        select(func.count()).select_from(task_table).where(t.name == name, t.status == status.value)
    )
    if progress_at is not None:
        query = query.where(t.progress_current == progress_at)
    return int(app.db.read(lambda conn: conn.execute(query).scalar_one()))


def _last_done(task_id: str) -> bool:
    status = app.sync.get(task_id, owner=OWNER).status
    if status.done and status is not Status.SUCCEEDED:
        raise RuntimeError(f"task {task_id} ended {status.value}")
    return status is Status.SUCCEEDED


def _wait_all(name: str, ids: list[str]) -> float:
    """time.time() when every record of this phase reads ``succeeded``: the last one
    through ``app.sync.get``, then all of them (task ``name``) with one count."""

    def count() -> int:
        bad = _count(name, Status.FAILED) + _count(name, Status.CANCELLED)
        if bad:
            raise RuntimeError(f"{bad} {name} tasks failed or were cancelled")
        return _count(name, Status.SUCCEEDED)

    return float(common.count_wait(count, len(ids), last_done=lambda: _last_done(ids[-1])))


def source_fingerprint() -> str:
    """Which library source runs: the pinned commit (run.py ``--ref``) or the working
    tree, plus a hash of the imported package's files (others edit src/ meanwhile)."""
    where = Path(errands.__file__).resolve().parent
    ref = os.environ.get("BENCH_ERRANDS_REF") or "working tree"
    return f"{ref[:12]} ({where}), files sha1 {fingerprint(where)}"


def _is_postgres(target: Errands) -> bool:
    return target.db.dialect == "postgresql"


def _unsent(target: Errands, name: str, table: Table = job_table) -> int:
    """How many waiting jobs of task ``name`` are not marked sent to the broker."""
    j = table.c
    query = (
        select(func.count())
        .select_from(table)
        .where(j.name == name, j.sent_at.is_(None), j.lease_owner.is_(None))
    )
    return int(target.db.read(lambda conn: conn.execute(query).scalar_one()))


def _published(target: Errands, name: str) -> None:
    """Celery engine: return once every waiting job of ``name`` is marked sent."""
    if ENGINE == "sql":
        return
    deadline = time.monotonic() + common.PHASE_TIMEOUT
    while _unsent(target, name):
        if time.monotonic() > deadline:
            raise common.PhaseTimeout(f"{name}: jobs still unpublished after the phase timeout")
        time.sleep(common.DONE_POLL_S)


def _delete_queues(*, batch: bool = False) -> None:
    """Celery engine: delete the run's queues (``batch``: only W1's batch queue)."""
    if errands_tasks.BROKER is not None:
        queue = errands_tasks.QUEUE
        queues = [] if batch else [queue]
        _celery.delete_queues(errands_tasks.BROKER, [*queues, _celery.batch_queue(queue)])


def _analyze(target: Errands) -> None:
    """Planner statistics for the errands tables (PostgreSQL; outside a transaction)."""
    with target.db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in ERRANDS_TABLES:
            conn.execute(text(f"ANALYZE {table}"))


class Adapter(common.Adapter):  # type: ignore[misc, name-defined]
    system = "errands"
    packages = ("errands", "sqlalchemy", "pydantic", "psycopg", "redis", "celery", "kombu", "amqp")
    batch_api = "app.sync.submit_many(name, payloads, owner=...): one transaction"

    def __init__(self) -> None:
        url = app.db.url
        executor = errands_tasks.EXECUTOR
        suffix = "" if executor == "async" else f"-{executor}"
        if ENGINE != "sql":
            suffix = f"-{ENGINE}{suffix}"
        if _is_postgres(app):
            default_variant = "pg" + suffix
            store = (
                "PostgreSQL (default durable settings: fsync and synchronous_commit on) "
                "over TCP 127.0.0.1; workers woken by LISTEN/NOTIFY"
            )
        else:
            sync = str(url.query.get("synchronous", "full")).lower()
            default_variant = f"sqlite-{sync}" + suffix
            store = f"SQLite file, WAL, synchronous={sync.upper()}"
        self.variant = os.environ.get("BENCH_ERRANDS_VARIANT", default_variant)
        worker = (
            f"{common.WORKERS} x `python -m errands worker bench.errands_tasks:app "
            f"--concurrency {CONCURRENCY}`"
        )
        engine = "sql (the database is the queue)"
        if errands_tasks.BROKER is not None:
            broker = _celery.broker_name(errands_tasks.BROKER)
            engine = (
                f"celery: CeleryEngine({_celery.safe(errands_tasks.BROKER)}, "
                f"queue={errands_tasks.QUEUE!r}) — {broker} broker, no Celery result "
                "backend (records and outcomes in the database)"
            )
            worker += (
                f": each a Celery worker (thread pool of {CONCURRENCY}, prefetch 1, late ack) "
                "and an errands worker in one process"
            )
        self.extra: dict[str, dict[str, Any]] = {"w1": {}, "w3": {}}
        self.config = {
            "store": store,
            "engine": engine,
            "worker": worker,
            "tasks": TASK_KINDS[executor],
            "enqueue": "app.sync.submit() one at a time; batch: app.sync.submit_many() "
            "(one call, one transaction)"
            + (
                "; timed until every message is published and marked sent"
                if ENGINE != "sql"
                else ""
            ),
            "done": "W1/W3: app.sync.get(last) until succeeded, then count(*) of succeeded "
            "records; W2: app.sync.wait (cross-process notifications, no polling)",
            "progress": "ctx.progress() x 20 (coalesced, written at most every 0.25 s per "
            "task + with the outcome)",
            "after_enqueue": (
                "ANALYZE (untimed), as the peer harness does for Procrastinate and PgQueuer"
                if _is_postgres(app)
                else "nothing"
            ),
            "source": source_fingerprint(),
        }

    def worker_cmds(self) -> list[list[str]]:
        cmd = [
            sys.executable,
            "-m",
            "errands",
            "worker",
            "bench.errands_tasks:app",
            "--concurrency",
            str(CONCURRENCY),
        ]
        return [list(cmd) for _ in range(common.WORKERS)]

    def reset(self) -> None:
        _delete_queues()  # a queue name given by hand may have been used before
        if _is_postgres(app):
            app.db.ensure_schema()  # only checks that the database was migrated
            with app.db.engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {', '.join(ERRANDS_TABLES)}"))
            return
        _remove(_sqlite_files(app))
        app.db.ensure_schema()  # untimed, like the peers' schema set-up

    def after_enqueue(self) -> None:
        if _is_postgres(app):
            _analyze(app)

    # -- W1 ------------------------------------------------------------------------------
    def w1_enqueue_batch(self, n: int) -> float:
        """``submit_many`` of n no-op payloads, timed; into a scratch SQLite file, or on
        PostgreSQL under a task name no worker runs, deleted afterwards."""
        payloads = [{"i": i} for i in range(n)]
        # Celery engine: messages to a queue of their own that no worker reads
        engine = errands_tasks.make_engine(_celery.batch_queue(errands_tasks.QUEUE))
        if _is_postgres(app):
            scratch = Errands(app.db.url, engine=engine)

            @scratch.task(name=BATCH_NAME)
            async def w1batch(ctx: Any, payload: dict[str, Any]) -> None:
                return None

            try:
                t0 = time.perf_counter()
                records = scratch.sync.submit_many(BATCH_NAME, payloads, owner=OWNER)
                committed = time.perf_counter() - t0
                _published(scratch, BATCH_NAME)
                elapsed = time.perf_counter() - t0
                assert len(records) == n
                if ENGINE != "sql":
                    self.extra["w1"]["batch_commit_s"] = committed
                with scratch.db.engine.begin() as conn:
                    conn.execute(delete(job_table).where(job_table.c.name == BATCH_NAME))
                    conn.execute(delete(task_table).where(task_table.c.name == BATCH_NAME))
                return elapsed
            finally:
                scratch.close()
                _delete_queues(batch=True)
        url = app.db.url.set(database=f"{app.db.sqlite_path}.batch")
        scratch = Errands(url, engine=engine)
        errands_tasks.register(scratch)
        files = _sqlite_files(scratch)
        _remove(files)
        try:
            scratch.db.ensure_schema()
            t0 = time.perf_counter()
            records = scratch.sync.submit_many("noop", payloads, owner=OWNER)
            committed = time.perf_counter() - t0
            _published(scratch, "noop")
            elapsed = time.perf_counter() - t0
            assert len(records) == n
            if ENGINE != "sql":
                self.extra["w1"]["batch_commit_s"] = committed
            return elapsed
        finally:
            scratch.close()
            shutil.rmtree(getattr(scratch.notifier, "root", "/nonexistent"), ignore_errors=True)
            _remove(files)
            _delete_queues(batch=True)

    def _enqueue(self, phase: str, name: str, n: int) -> list[str]:
        """n single submits, then (Celery engine) until every message is published."""
        t0 = time.perf_counter()
        ids = [app.sync.submit(name, {"i": i}, owner=OWNER).id for i in range(n)]
        committed = time.perf_counter() - t0
        _published(app, name)
        if ENGINE != "sql":
            self.extra[phase]["enqueue_commit_s"] = committed
            self.extra[phase]["enqueue_publish_tail_s"] = time.perf_counter() - t0 - committed
        return ids

    def w1_enqueue(self, n: int) -> list[str]:
        return self._enqueue("w1", "noop", n)

    def w1_wait(self, handles: list[str]) -> float:
        return _wait_all("noop", handles)

    def w1_check(self, handles: list[str]) -> dict[str, Any]:
        last = app.sync.get(handles[-1], owner=OWNER)
        return {
            "last_result": last.result,
            "succeeded": _count("noop", Status.SUCCEEDED),
            **self.extra["w1"],
        }

    # -- W2 ------------------------------------------------------------------------------
    def w2_one(self, key: str) -> tuple[float, float]:
        t0 = time.time()
        record = app.sync.submit("w2task", {"key": key}, owner=OWNER)
        final = app.sync.wait(record.id, owner=OWNER, timeout=60)
        t1 = time.time()
        if final.status is not Status.SUCCEEDED:
            raise RuntimeError(f"w2 task {record.id} ended {final.status.value}")
        return t0, t1

    # -- W3 ------------------------------------------------------------------------------
    def w3_enqueue(self, n: int) -> list[str]:
        return self._enqueue("w3", "w3task", n)

    def w3_wait(self, handles: list[str]) -> float:
        return _wait_all("w3task", handles)

    def w3_check(self, handles: list[str]) -> dict[str, Any]:
        first = app.sync.get(handles[0], owner=OWNER)
        return {
            "progress": [first.progress.current, first.progress.total],
            "result_len": len(json.dumps(first.result)),
            "w3_done_with_final_progress": _count(
                "w3task", Status.SUCCEEDED, progress_at=float(common.W3_REPORTS)
            ),
            **self.extra["w3"],
        }

    def close(self) -> None:
        app.close()
        shutil.rmtree(getattr(app.notifier, "root", "/nonexistent"), ignore_errors=True)
        _delete_queues()


def _record_worker_pids() -> None:
    """Wrap the driver's start_workers to append worker pids to $BENCH_ERRANDS_PIDFILE."""
    if not PIDFILE:
        return
    original = common.start_workers

    def start_workers(adapter: Any, phase: str) -> Any:
        procs = original(adapter, phase)
        with open(PIDFILE, "a") as fh:
            fh.writelines(f"{p.pid}\n" for p in procs)
        return procs

    setattr(common, "start_workers", start_workers)  # noqa: B010


def main() -> int:
    # The workers run in the peers' directory; they must import bench.errands_tasks.
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    os.environ.setdefault("BENCH_PEERS_DIR", str(Path(common.HERE)))
    _record_worker_pids()
    return int(common.main(Adapter()))


if __name__ == "__main__":
    sys.exit(main())
