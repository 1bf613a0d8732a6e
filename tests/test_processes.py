"""End-to-end tests with real worker processes (``errands worker tests.apps.e2e:app``).

Workers run with short leases (``--lease 2 --heartbeat 0.3 --poll 0.2``), so crash
recovery takes seconds. Every wait polls the database with a deadline; no sleep is an
assertion.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from errands import ANY_OWNER, Errands, Status, TaskRecord, WaitTimeout
from errands.engines import SqlEngine
from errands.events import LocalNotifier
from errands.store.schema import job_table, worker_table
from tests.apps import e2e
from tests.conftest import WorkerProcess, eventually

APP = "tests.apps.e2e:app"
LEASE = 2.0
HEARTBEAT = 0.3
WORKER_ARGS = ("--lease", str(LEASE), "--heartbeat", str(HEARTBEAT), "--poll", "0.2")
#: Slack on top of two heartbeat intervals for a cancel to land (the machine is shared).
CANCEL_SLACK = 1.0

pytestmark = pytest.mark.slow


def wait_ready(worker: WorkerProcess, timeout: float = 30) -> None:
    """Wait until the worker process logged that it started (it is claiming)."""
    seen: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert worker.proc.stdout is not None
        for line in worker.proc.stdout:
            seen.append(line)
            if " started: " in line:
                found.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found.is_set():
        code = worker.proc.poll()
        if code is None:
            worker.proc.kill()  # ends the reader too
            worker.proc.wait(10)
        reader.join(10)
        raise AssertionError(f"worker did not start (exit {code}):\n{''.join(seen)}")


def running_with_progress(app: Errands, task_id: str) -> Callable[[], TaskRecord | None]:
    """A check: the record is ``running`` and its task has reported progress."""

    def check() -> TaskRecord | None:
        record = app.sync.get(task_id, owner=ANY_OWNER)
        assert not record.done, f"the task ended before the test could act: {record}"
        if record.status is Status.RUNNING and record.progress.message is not None:
            return record
        return None

    return check


def finished(app: Errands, task_id: str, *workers: WorkerProcess, timeout: float) -> TaskRecord:
    """Wait for the task to finish; on timeout, fail with the workers' output."""
    try:
        return app.sync.wait(task_id, owner=ANY_OWNER, timeout=timeout, poll=0.2)
    except WaitTimeout as exc:
        outputs = "\n".join(output_of(w) for w in workers)
        raise AssertionError(
            f"task not finished after {timeout} s: {exc.record}\n{outputs}"
        ) from None


def output_of(worker: WorkerProcess) -> str:
    """Stop the worker (gracefully if it can) and return what it logged."""
    if worker.proc.poll() is None:
        worker.proc.send_signal(signal.SIGTERM)
        try:
            worker.proc.wait(10)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait(10)
    assert worker.proc.stdout is not None
    return f"--- worker {worker.proc.pid} (exit {worker.proc.returncode}):\n" + (
        worker.proc.stdout.read()
    )


def lease_expires_at(app: Errands, task_id: str) -> float:
    """When the lease on the task's job runs out (Unix seconds)."""
    with app.db.engine.connect() as conn:
        value = conn.execute(
            select(job_table.c.lease_expires_at).where(job_table.c.task_id == task_id)
        ).scalar_one()
    assert value is not None, "the job is not leased"
    return float(value)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def start_worker(
    spawn_worker: Callable[..., WorkerProcess],
) -> Callable[..., WorkerProcess]:
    """``spawn_worker`` for this module's tasks app."""
    return partial(spawn_worker, APP)


@pytest.fixture
def worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker(*WORKER_ARGS)


# -- many tasks, two workers ---------------------------------------------------------------
def test_two_workers_run_each_task_exactly_once(
    e2e_app: Errands, start_worker: Callable[..., WorkerProcess], log: Path
) -> None:
    workers = [start_worker(*WORKER_ARGS, "-c", "4") for _ in range(2)]
    for w in workers:
        wait_ready(w)
    ids = [
        e2e_app.sync.submit("quick", {"log": str(log), "sleep": 0.01}, owner=f"u{i % 3}").id
        for i in range(200)
    ]

    def all_succeeded() -> bool:
        page = e2e_app.sync.list(owner=ANY_OWNER, status="succeeded", limit=500)
        return len(page) == len(ids)

    try:
        eventually(all_succeeded, "200 tasks to succeed", timeout=90, every=0.2)
    except AssertionError:
        raise AssertionError("\n".join(output_of(w) for w in workers)) from None

    records = e2e_app.sync.list(owner=ANY_OWNER, limit=500).items
    assert sorted(r.id for r in records) == sorted(ids)
    for r in records:
        assert r.status is Status.SUCCEEDED
        assert r.attempts == 1
        assert r.result == {"id": r.id}
        assert r.error is None
    rows = e2e.read_log(log)
    runs = Counter(task_id for _, task_id, _, _ in rows)
    assert set(runs) == set(ids)
    assert [n for n in runs.values() if n != 1] == [], "some task ran more than once"
    assert {attempt for _, _, attempt, _ in rows} == {1}
    # Both worker processes took part.
    assert {pid for *_, pid in rows} == {w.proc.pid for w in workers}


# -- a worker dies mid-task ----------------------------------------------------------------
def move_to_another_host(app: Errands, pid: int) -> None:
    """Make the row of the worker process ``pid`` say it runs on another host: no worker
    here can then tell that it died, and only its lease's expiry recovers its tasks."""
    with app.db.engine.begin() as conn:
        changed = conn.execute(
            worker_table.update()
            .where(worker_table.c.pid == pid)
            .values(hostname="elsewhere.example")
        ).rowcount
    assert changed == 1


@pytest.mark.parametrize("host", ["same", "other"])
def test_killed_worker_task_is_rerun(
    e2e_app: Errands, start_worker: Callable[..., WorkerProcess], log: Path, host: str
) -> None:
    """A worker on the same host sees at once that the dead one's process is gone and
    recovers its task when it starts; across hosts, the lease's expiry is the rule. On
    the same host the dead worker's lease is long (30 s), so a recovery before it ran out
    is told apart from one after it even when the second worker starts slowly."""
    lease = LEASE if host == "other" else 30.0
    first = start_worker("--lease", str(lease), *WORKER_ARGS[2:])
    record = e2e_app.sync.submit(
        "slow", {"steps": 30, "delay": 0.1, "log": str(log)}, owner="alice"
    )
    eventually(running_with_progress(e2e_app, record.id), "the task to start", timeout=30)
    first.kill()
    # Nothing changes it while its lease is held by the dead worker.
    stuck = e2e_app.sync.get(record.id, owner="alice")
    assert stuck.status is Status.RUNNING and stuck.attempts == 1
    lease_expiry = lease_expires_at(e2e_app, record.id)
    if host == "other":
        move_to_another_host(e2e_app, first.proc.pid)

    second = start_worker(*WORKER_ARGS)
    final = finished(e2e_app, record.id, second, timeout=40)
    assert final.status is Status.SUCCEEDED, final
    assert final.attempts == 2
    assert final.result == {"steps": 30, "attempt": 2}
    assert final.progress.current == 30
    assert final.started_at is not None
    if host == "other":  # run again only once the dead worker's lease had run out
        assert final.started_at.timestamp() >= lease_expiry
    else:  # at once: before the lease ran out
        assert final.started_at.timestamp() < lease_expiry
    rows = e2e.read_log(log)
    assert [(event, attempt, pid) for event, _, attempt, pid in rows] == [
        ("start", 1, first.proc.pid),
        ("start", 2, second.proc.pid),
        ("done", 2, second.proc.pid),
    ]


def test_killed_worker_task_fails_when_attempts_are_spent(
    e2e_app: Errands, start_worker: Callable[..., WorkerProcess], log: Path
) -> None:
    first = start_worker(*WORKER_ARGS)
    record = e2e_app.sync.submit(
        "slow_once", {"steps": 30, "delay": 0.1, "log": str(log)}, owner="alice"
    )
    eventually(running_with_progress(e2e_app, record.id), "the task to start", timeout=30)
    first.kill()

    second = start_worker(*WORKER_ARGS)
    final = finished(e2e_app, record.id, second, timeout=30)
    assert final.status is Status.FAILED, final
    assert final.error is not None and final.error.type == "WorkerLost"
    assert final.attempts == 1
    assert final.finished_at is not None and final.expires_at is not None
    assert final.expires_at > final.finished_at
    rows = e2e.read_log(log)
    assert [(event, pid) for event, _, _, pid in rows] == [("start", first.proc.pid)]
    # The surviving worker is still healthy.
    quick = e2e_app.sync.submit("quick", {"log": str(log)}, owner="alice")
    assert finished(e2e_app, quick.id, second, timeout=30).status is Status.SUCCEEDED


# -- cancelling running tasks --------------------------------------------------------------
#: Payloads that keep each task busy for a long time, and ones that end quickly.
LONG: dict[str, dict[str, Any]] = {
    "slow": {"steps": 300, "delay": 0.1},
    "sync_loop": {"seconds": 30},
    "spin": {"seconds": 30},
}
SHORT: dict[str, dict[str, Any]] = {
    "slow": {"steps": 1, "delay": 0.1},
    "sync_loop": {"seconds": 0.2},
    "spin": {"seconds": 0.2},
}


@pytest.mark.parametrize(
    ("name", "hint"),
    [("slow", True), ("sync_loop", True), ("spin", True), ("slow", False)],
    ids=["async", "thread", "process", "async-no-hint"],
)
async def test_cancel_running_task(
    e2e_app: Errands, worker: WorkerProcess, log: Path, name: str, hint: bool
) -> None:
    if not hint:
        # Drop the cross-process "cancel" hint: the worker must find the request in
        # the database on its own heartbeat.
        e2e_app.engine = SqlEngine()
        e2e_app.engine.attach(SimpleNamespace(notifier=LocalNotifier()))  # type: ignore[arg-type]
    record = e2e_app.sync.submit(name, LONG[name] | {"log": str(log)}, owner="bob")
    eventually(running_with_progress(e2e_app, record.id), "the task to start", timeout=30)

    started = time.monotonic()
    if name == "slow":
        asked = await e2e_app.cancel(record.id, owner="bob")
    else:
        asked = e2e_app.sync.cancel(record.id, owner="bob")
    assert asked.status is Status.RUNNING and asked.cancel_requested
    final = finished(e2e_app, record.id, worker, timeout=30)
    elapsed = time.monotonic() - started

    assert final.status is Status.CANCELLED, final
    assert elapsed <= 2 * HEARTBEAT + CANCEL_SLACK, f"cancelled after {elapsed:.2f} s"
    assert final.attempts == 1
    assert final.result is None
    assert final.error is not None and final.error.type == "TaskCancelled"
    events = [event for event, *_ in e2e.read_log(log)]
    assert events[0] == "start" and "done" not in events
    if name == "sync_loop":
        # The thread saw ctx.cancelled and returned.
        eventually(
            lambda: "saw-cancel" in [event for event, *_ in e2e.read_log(log)],
            "the thread to see the cancel flag",
            timeout=10,
        )
    if name == "spin":
        # The child process that ran the busy loop was killed.
        child = e2e.read_log(log)[0][3]
        assert child != worker.proc.pid
        eventually(lambda: not pid_alive(child), "the child process to end", timeout=10)
    # The worker goes on working (for process tasks: with a fresh child).
    again = e2e_app.sync.submit(name, SHORT[name], owner="bob")
    assert finished(e2e_app, again.id, worker, timeout=30).status is Status.SUCCEEDED


def test_cancel_queued_task_is_immediate(
    e2e_app: Errands, start_worker: Callable[..., WorkerProcess], log: Path
) -> None:
    record = e2e_app.sync.submit("quick", {"log": str(log)}, owner="carol")
    cancelled = e2e_app.sync.cancel(record.id, owner="carol")
    assert cancelled.status is Status.CANCELLED
    assert cancelled.finished_at is not None
    stored = e2e_app.sync.get(record.id, owner="carol")
    assert stored.status is Status.CANCELLED and stored.attempts == 0
    # A worker that starts later finds nothing to run.
    burst = start_worker(*WORKER_ARGS, "--burst")
    assert burst.proc.wait(60) == 0, output_of(burst)
    assert e2e.read_log(log) == []
    assert e2e_app.sync.get(record.id, owner="carol").status is Status.CANCELLED


# -- graceful shutdown ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "payload", "result"),
    [
        ("slow", {"steps": 25, "delay": 0.1}, {"steps": 25, "attempt": 1}),
        ("sync_loop", {"seconds": 2.5}, {"finished": True}),
        ("spin", {"seconds": 2.5}, None),
    ],
    ids=["async", "thread", "process"],
)
def test_sigterm_hands_running_task_back(
    e2e_app: Errands,
    start_worker: Callable[..., WorkerProcess],
    log: Path,
    name: str,
    payload: dict[str, Any],
    result: Any,
) -> None:
    first = start_worker(*WORKER_ARGS, "--shutdown-timeout", "0.5")
    record = e2e_app.sync.submit(name, payload | {"log": str(log)}, owner="dave")
    eventually(running_with_progress(e2e_app, record.id), "the task to start", timeout=30)

    first.proc.send_signal(signal.SIGTERM)
    code = first.proc.wait(30)
    assert code == 0, output_of(first)
    back = e2e_app.sync.get(record.id, owner="dave")
    assert back.status is Status.QUEUED, back
    assert back.attempts == 0
    assert back.error is None and not back.cancel_requested
    if name == "spin":  # the worker killed its child before exiting
        [(_, _, _, child)] = e2e.read_log(log)
        assert child != first.proc.pid and not pid_alive(child)

    second = start_worker(*WORKER_ARGS)
    final = finished(e2e_app, record.id, second, timeout=40)
    assert final.status is Status.SUCCEEDED, final
    assert final.attempts == 1
    if result is not None:
        assert final.result == result
    else:
        assert final.result["iterations"] > 0
    starts = [(attempt, pid) for event, _, attempt, pid in e2e.read_log(log) if event == "start"]
    assert [attempt for attempt, _ in starts] == [1, 1]
    if name != "spin":  # process tasks run in a child of the worker
        assert [pid for _, pid in starts] == [first.proc.pid, second.proc.pid]
