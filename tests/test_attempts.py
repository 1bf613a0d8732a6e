"""Attempts with clear edges, with real worker processes (``errands worker
tests.apps.e2e:app``): a graceful shutdown, a SIGKILL, a worker paused past its lease
and a database that stops answering each end the attempt cleanly, and the task's
output is exactly its last run's items.

The ``emitter`` tasks give every run a token of its own, carried by each item it emits
and by its result, so an item of an earlier run in the output is seen. Worker logs are
searched for the write errors of colliding attempts. Every wait has a deadline.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from errands import ANY_OWNER, Errands, Status, TaskRecord
from errands.store.schema import job_table, worker_table
from tests.apps import e2e
from tests.conftest import WorkerProcess, errands_database, eventually
from tests.pgserver import PrivatePostgres
from tests.test_processes import finished, output_of, wait_ready

pytestmark = [pytest.mark.databases("sqlite", "postgresql"), pytest.mark.slow]

APP = "tests.apps.e2e:app"
LEASE = 2.0
ARGS = ("--lease", str(LEASE), "--heartbeat", "0.4", "--poll", "0.2")
SQL = (("sqlite", "sql"), ("postgresql", "sql"))
#: Each test that applies to the Celery engine runs on one broker/database pair of it
#: (tests/test_celery.py runs the lifecycle on all four).
ON_REDIS = pytest.mark.engine_runs(*SQL, ("sqlite", "celery-redis"))
ON_RABBITMQ = pytest.mark.engine_runs(*SQL, ("postgresql", "celery-rabbitmq"))
#: What a worker logs when two attempts' writes collide (the failures this module guards).
WRITE_ERRORS = ("UNIQUE constraint", "duplicate key", "OutcomeNotStored", "Traceback")


@pytest.fixture
def start_worker(spawn_worker: Callable[..., WorkerProcess]) -> Callable[..., WorkerProcess]:
    return partial(spawn_worker, APP)


def items(app: Errands, task_id: str) -> list[tuple[int, Any]]:
    return app.sync.outputs(task_id, owner=ANY_OWNER)


def check_output(app: Errands, record: TaskRecord, steps: int) -> None:
    """The task succeeded, and its output is exactly its last run's items, numbered
    from its floor on without a gap."""
    assert record.status is Status.SUCCEEDED, record
    run = record.result["run"]
    output = items(app, record.id)
    assert [data for _, data in output] == [{"run": run, "i": i} for i in range(steps)]
    first = record.output_floor + 1
    assert [seq for seq, _ in output] == list(range(first, first + steps))
    assert record.progress.current == steps  # the last run's progress


def check_logs(*workers: WorkerProcess) -> str:
    """Stop the workers; fail if any logged a write error. Their output."""
    text = "\n".join(output_of(w) for w in workers)
    for error in WRITE_ERRORS:
        assert error not in text, text
    return text


def runs(log: Path, task_id: str) -> list[tuple[str, int, int, float]]:
    """(event, attempt, pid, time) of the task's log lines."""
    return [
        (ev, att, pid, at) for ev, tid, att, pid, at in e2e.read_timed_log(log) if tid == task_id
    ]


def holder_pid(app: Errands, task_id: str) -> int:
    """The pid of the worker that holds the task's lease."""
    with app.db.engine.connect() as conn:
        pid = conn.execute(
            select(worker_table.c.pid)
            .join(job_table, job_table.c.lease_owner == worker_table.c.id)
            .where(job_table.c.task_id == task_id)
        ).scalar()
    assert pid is not None, "no worker holds the task"
    return int(pid)


def emitting(app: Errands, task_id: str, at_least: int) -> Callable[[], bool]:
    def check() -> bool:
        record = app.sync.get(task_id, owner=ANY_OWNER)
        assert not record.done, f"the task ended before the test could act: {record}"
        return record.status is Status.RUNNING and len(items(app, task_id)) >= at_least

    return check


# -- a graceful shutdown hands the attempt back ------------------------------------------
def _hand_back(app: Errands, start: Callable[..., WorkerProcess], log: Path, name: str) -> None:
    steps = 30
    first = start(*ARGS, "--shutdown-timeout", "0.5")
    record = app.sync.submit(name, {"steps": steps, "delay": 0.05, "log": str(log)}, owner="dave")
    eventually(emitting(app, record.id, 8), "the task to emit", timeout=30)
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(30) == 0, output_of(first)
    back = app.sync.get(record.id, owner="dave")
    assert back.status is Status.QUEUED and back.attempts == 0, back  # no attempt spent
    assert len(items(app, record.id)) >= 8  # still the output until a new attempt begins

    second = start(*ARGS)
    final = finished(app, record.id, second, timeout=40)
    assert final.attempts == 1
    assert final.output_floor >= 8
    check_output(app, final, steps)
    check_logs(first, second)
    starts = [(att, pid) for ev, att, pid, _ in runs(log, record.id) if ev == "start"]
    assert starts == [(1, first.proc.pid), (1, second.proc.pid)]


@ON_REDIS
def test_sigterm_hands_back_an_emitting_task(
    e2e_app: Errands, start_worker: Callable[..., WorkerProcess], log: Path
) -> None:
    """The deploy case: SIGTERM, a short shutdown timeout, a new worker. The task runs
    again as if from the start and succeeds; its output is the new run's alone."""
    _hand_back(e2e_app, start_worker, log, "emitter")


def test_sigterm_hands_back_an_emitting_thread(
    e2e_app: Errands, start_worker: Callable[..., WorkerProcess], log: Path
) -> None:
    _hand_back(e2e_app, start_worker, log, "emitter_sync")


# -- a SIGKILL: another worker on the host takes the task at once ---------------------------
@ON_RABBITMQ
def test_sigkill_retry_output_is_the_final_attempts(
    e2e_app: Errands, start_worker: Callable[..., WorkerProcess], log: Path
) -> None:
    """Two workers with the default 15 s lease; the one running the task is killed.
    The other sees that the process is gone and runs the task again within 5 s; the
    output is only the final attempt's items."""
    workers = [start_worker("--poll", "0.2", "-c", "2") for _ in range(2)]
    for w in workers:
        wait_ready(w)
    steps = 30
    record = e2e_app.sync.submit(
        "emitter", {"steps": steps, "delay": 0.05, "log": str(log)}, owner="erin"
    )
    eventually(emitting(e2e_app, record.id, 8), "the task to emit", timeout=30)
    pid = holder_pid(e2e_app, record.id)
    (victim,) = [w for w in workers if w.proc.pid == pid]
    (survivor,) = [w for w in workers if w is not victim]
    victim.kill()
    killed_at = time.time()

    final = finished(e2e_app, record.id, survivor, timeout=40)
    assert final.attempts == 2
    assert final.started_at is not None and final.started_at.timestamp() - killed_at < 5
    assert final.output_floor >= 8
    check_output(e2e_app, final, steps)
    check_logs(survivor)
    starts = [(att, pid) for ev, att, pid, _ in runs(log, record.id) if ev == "start"]
    assert starts == [(1, victim.proc.pid), (2, survivor.proc.pid)]


# -- a worker paused past its lease ---------------------------------------------------------
@ON_REDIS
def test_a_worker_paused_past_its_lease_writes_nothing_more(
    e2e_app: Errands, start_worker: Callable[..., WorkerProcess], log: Path
) -> None:
    """Worker A is paused (SIGSTOP) past its lease; B takes A's task; A resumes. A's
    stale writes are refused and its run stops; B's run succeeds with only its own
    items, and a bystander task on B keeps reporting progress throughout."""
    a = start_worker(*ARGS, "-c", "1")
    wait_ready(a)
    steps = 60
    payload = {"steps": steps, "delay": 0.05, "log": str(log)}
    task = e2e_app.sync.submit("emitter", payload, owner="fay")
    eventually(emitting(e2e_app, task.id, 5), "A to run the task", timeout=30)
    assert holder_pid(e2e_app, task.id) == a.proc.pid
    b = start_worker(*ARGS, "-c", "2")
    wait_ready(b)
    bystander = e2e_app.sync.submit("emitter", payload | {"steps": 150}, owner="gus")
    eventually(emitting(e2e_app, bystander.id, 3), "B to run the bystander", timeout=30)

    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        # A's lease runs out; B's reaper queues the task again and B runs it.
        def taken_by_b() -> bool:
            record = e2e_app.sync.get(task.id, owner=ANY_OWNER)
            return record.attempts == 2 and len(items(e2e_app, task.id)) >= 3

        # The lease runs out, then B's reaper finds it: slower on a loaded machine.
        eventually(taken_by_b, "B to take the task over", timeout=60)
        assert holder_pid(e2e_app, task.id) == b.proc.pid
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    resumed_at = time.time()

    # The bystander's progress keeps moving while A's stale writes are refused.
    seen = e2e_app.sync.get(bystander.id, owner=ANY_OWNER).progress.current or 0
    eventually(
        lambda: (e2e_app.sync.get(bystander.id, owner=ANY_OWNER).progress.current or 0) >= seen + 5,
        "the bystander's progress to move on",
        timeout=10,
    )
    final = finished(e2e_app, task.id, b, timeout=40)
    assert final.attempts == 2
    check_output(e2e_app, final, steps)
    check_output(e2e_app, finished(e2e_app, bystander.id, b, timeout=40), 150)
    # A's run was stopped soon after A resumed, and never finished.
    a_events = [(ev, at) for ev, _, pid, at in runs(log, task.id) if pid == a.proc.pid]
    assert [ev for ev, _ in a_events] == ["start", "stopped"], a_events
    assert a_events[1][1] - resumed_at < 2.0
    text = check_logs(a, b)
    assert "lost the lease" in text or "was not renewed" in text


@pytest.mark.databases("sqlite")
def test_a_lone_worker_paused_past_its_lease_runs_the_task_again(
    e2e_app: Errands, start_worker: Callable[..., WorkerProcess], log: Path
) -> None:
    """No other worker: the paused one itself finds its lease expired when it resumes,
    and runs the task again (its reaper, or a claim of its own beside the stale run);
    the stale run stops, and the output is the new run's alone."""
    worker = start_worker(*ARGS, "-c", "2")
    steps = 40
    task = e2e_app.sync.submit(
        "emitter", {"steps": steps, "delay": 0.05, "log": str(log)}, owner="jo"
    )
    eventually(emitting(e2e_app, task.id, 5), "the task to emit", timeout=30)
    os.kill(worker.proc.pid, signal.SIGSTOP)
    time.sleep(LEASE + 1)
    os.kill(worker.proc.pid, signal.SIGCONT)
    final = finished(e2e_app, task.id, worker, timeout=40)
    assert final.attempts == 2
    check_output(e2e_app, final, steps)
    events = [ev for ev, *_ in runs(log, task.id)]
    assert events.count("start") == 2 and events.count("done") == 1, events
    check_logs(worker)


# -- a database that stops answering ---------------------------------------------------------
def _outage(
    app: Errands,
    spawn: Callable[..., WorkerProcess],
    log: Path,
    name: str,
    block: Callable[[], None],
    unblock: Callable[[], None],
) -> None:
    """Run a task; make the database stop answering for longer than the lease; the
    worker must stop the attempt before its lease can run out (another worker could
    then start the task), and the task must succeed afterwards with one run's output."""
    worker = spawn(*ARGS)
    steps = 40
    record = app.sync.submit(name, {"steps": steps, "delay": 0.05, "log": str(log)}, owner="hal")
    eventually(emitting(app, record.id, 5), "the task to emit", timeout=30)
    block()
    blocked_at = time.time()
    try:
        eventually(
            lambda: any(ev == "stopped" for ev, *_ in runs(log, record.id)),
            "the worker to stop the attempt",
            timeout=LEASE + 5,
        )
        stopped_at = next(at for ev, _, _, at in runs(log, record.id) if ev == "stopped")
        # The lease was last renewed before the database stopped answering, so it runs
        # out at blocked_at + LEASE at the earliest: the attempt stopped before that.
        assert stopped_at - blocked_at < LEASE, stopped_at - blocked_at
        time.sleep(max(0.0, blocked_at + LEASE + 1 - time.time()))  # longer than a lease
    finally:
        unblock()
    final = finished(app, record.id, worker, timeout=60)
    check_output(app, final, steps)
    events = runs(log, record.id)
    starts = [at for ev, _, _, at in events if ev == "start"]
    assert len(starts) == 2 and starts[1] > stopped_at  # no two runs at once
    check_logs(worker)


@pytest.mark.databases("sqlite")
def test_worker_stops_its_thread_when_sqlite_stays_locked(
    e2e_app: Errands, start_worker: Callable[..., WorkerProcess], log: Path, db_url: str
) -> None:
    """Another process holds SQLite's write lock for longer than the lease; the task is
    a plain function (a thread): it sees ``ctx.cancelled``."""
    path = db_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, timeout=30)

    def block() -> None:
        holder.execute("BEGIN IMMEDIATE")

    def unblock() -> None:
        holder.execute("ROLLBACK")

    try:
        _outage(e2e_app, start_worker, log, "emitter_sync", block, unblock)
    finally:
        holder.close()


def test_worker_stops_its_coroutine_when_postgres_hangs(
    private_postgres: PrivatePostgres, log: Path
) -> None:
    """The PostgreSQL server stops answering (SIGSTOP: the connections stay open and
    every statement hangs) for longer than the lease; the task is a coroutine: it is
    cancelled."""
    url = errands_database(private_postgres)
    app = e2e.install(Errands(url))
    started: list[WorkerProcess] = []

    def spawn(*args: str) -> WorkerProcess:
        worker = WorkerProcess(APP, url, *args)
        started.append(worker)
        return worker

    try:
        _outage(app, spawn, log, "emitter", private_postgres.pause, private_postgres.resume)
    finally:
        private_postgres.resume()
        for w in started:
            w.close()
        app.close()


# -- the reaper at start-up ------------------------------------------------------------------
def test_a_new_worker_reaps_at_once(
    e2e_app: Errands, start_worker: Callable[..., WorkerProcess], log: Path
) -> None:
    """A task whose worker died elsewhere (another host: only its lease tells) and whose
    lease already ran out is recovered by a worker as soon as it starts, not one
    heartbeat interval later."""
    first = start_worker("--lease", "2", "--heartbeat", "0.5", "--poll", "0.2")
    record = e2e_app.sync.submit(
        "emitter", {"steps": 10, "delay": 0.05, "log": str(log)}, owner="ivy"
    )
    eventually(emitting(e2e_app, record.id, 2), "the task to emit", timeout=30)
    first.kill()
    with e2e_app.db.engine.begin() as conn:
        conn.execute(
            worker_table.update()
            .where(worker_table.c.pid == first.proc.pid)
            .values(hostname="elsewhere.example")
        )
        until = conn.execute(
            select(job_table.c.lease_expires_at).where(job_table.c.task_id == record.id)
        ).scalar_one()
    time.sleep(max(0.0, until - time.time() + 0.2))
    second = start_worker("--lease", "30", "--heartbeat", "10", "--poll", "0.2")
    wait_ready(second)
    ready_at = time.time()
    final = finished(e2e_app, record.id, second, timeout=30)
    assert final.attempts == 2
    assert final.started_at is not None and final.started_at.timestamp() - ready_at < 2.0
    check_output(e2e_app, final, 10)
    check_logs(second)
