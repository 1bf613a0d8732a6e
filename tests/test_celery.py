"""The Celery engine with real brokers and real Celery worker processes.

The conformance modules (``test_api``, ``test_worker``, ``test_web_api``, marked
``celery``) run on Celery with Redis on SQLite and RabbitMQ on PostgreSQL; here the
lifecycle runs on all four pairs, and what only a separate process can show: a Celery
worker killed mid-task leaves no record running, and a submit whose process died
between its commit and the publication is published on restart and runs once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from errands import ANY_OWNER, Errands, Status, TaskNotFound
from errands.engines.celery import CeleryEngine
from errands.errors import ConfigurationError
from errands.store.schema import job_table
from tests.apps.web import install
from tests.conftest import ROOT, WorkerProcess, eventually

ALL_PAIRS = [
    ("sqlite", "celery-redis"),
    ("sqlite", "celery-rabbitmq"),
    ("postgresql", "celery-redis"),
    ("postgresql", "celery-rabbitmq"),
]
PAIRS = [("sqlite", "celery-redis"), ("postgresql", "celery-rabbitmq")]
WEB_APP = "tests.apps.web:app"
WORKER_ARGS = ("--lease", "2", "--heartbeat", "0.3", "--poll", "0.2", "--concurrency", "4")

Spawn = Callable[..., WorkerProcess]


def status_of(app: Errands, task_id: str) -> Status:
    return app.sync.get(task_id, owner=ANY_OWNER).status


@pytest.mark.engine_runs(*ALL_PAIRS)
def test_lifecycle_on_every_broker_and_database(app: Errands, spawn_worker: Spawn) -> None:
    install(app)
    app.db.ensure_schema()
    worker = spawn_worker(WEB_APP, *WORKER_ARGS)
    records = app.sync.submit_many("steps", [{"steps": 3, "delay": 0.02}] * 5, owner="alice")
    failing = app.sync.submit("fail", {"message": "no luck"}, owner="alice")
    sleepy = app.sync.submit("sleepy", {"seconds": 30}, owner="bob")
    for r in records:
        done = app.sync.wait(r.id, owner="alice", timeout=30)
        assert (done.status, done.result, done.attempts) == (Status.SUCCEEDED, {"steps": 3}, 1)
        assert [item for _, item in app.sync.outputs(r.id, owner="alice")] == [
            {"step": 1},
            {"step": 2},
            {"step": 3},
        ]
        assert done.progress.current == 3 and done.progress.message == "step 3"
    failed = app.sync.wait(failing.id, owner="alice", timeout=30)
    assert failed.status is Status.FAILED and failed.error is not None
    assert failed.error.message == "no luck"
    # Cancel a running task: the cooperative flag reaches the Celery worker's attempt.
    eventually(lambda: status_of(app, sleepy.id) is Status.RUNNING, "sleepy to start")
    app.sync.cancel(sleepy.id, owner="bob")
    cancelled = app.sync.wait(sleepy.id, owner="bob", timeout=30)
    assert cancelled.status is Status.CANCELLED
    # Owners still see only their own tasks.
    with pytest.raises(TaskNotFound):
        app.sync.get(sleepy.id, owner="alice")
    assert worker.terminate() == 0


@pytest.mark.slow
@pytest.mark.engine_runs(*PAIRS)
def test_a_killed_celery_worker_leaves_no_task_running(app: Errands, spawn_worker: Spawn) -> None:
    install(app)
    app.db.ensure_schema()
    first = spawn_worker(WEB_APP, *WORKER_ARGS)
    record = app.sync.submit("patient", {"steps": 40, "delay": 0.05}, owner="alice")

    def running_with_progress() -> bool:
        r = app.sync.get(record.id, owner="alice")
        return r.status is Status.RUNNING and (r.progress.current or 0) >= 3

    eventually(running_with_progress, "the task to run", timeout=30)
    first.kill()  # SIGKILL, mid-task: its message is unacknowledged, its lease held
    assert status_of(app, record.id) is Status.RUNNING
    second = spawn_worker(WEB_APP, *WORKER_ARGS)
    # The lease runs out, the second worker's reaper queues the job again and publishes
    # it; the second attempt runs to the end.
    done = app.sync.wait(record.id, owner="alice", timeout=60)
    assert (done.status, done.attempts) == (Status.SUCCEEDED, 2)
    assert done.result == {"steps": 40}
    # The second attempt's items follow the first's: no sequence number twice.
    seqs = [seq for seq, _ in app.sync.outputs(record.id, owner="alice")]
    assert seqs == sorted(set(seqs))
    with app.db.engine.connect() as conn:
        assert conn.execute(select(job_table.c.task_id)).all() == []
    assert second.terminate() == 0


_DIE_AFTER_COMMIT = """
import os, threading, time
from tests.apps.web import app

told = threading.Event()

def die(jobs):  # the publisher thread, right after the submit's commit
    told.wait(10)
    os._exit(17)

app.engine._publish = die
record = app.sync.submit("steps", {"steps": 4, "delay": 0.01}, owner="carol")
print(record.id, flush=True)
told.set()
time.sleep(10)
"""


@pytest.mark.engine_runs(*PAIRS)
def test_outbox_publishes_what_a_dead_process_committed(
    app: Errands, spawn_worker: Spawn, db_url: str, engine_name: str
) -> None:
    install(app)
    app.db.ensure_schema()
    env = os.environ | {
        "ERRANDS_DATABASE_URL": db_url,
        "PYTHONPATH": str(ROOT),
        "ERRANDS_TEST_ENGINE": engine_name,
        "ERRANDS_TEST_QUEUE": app.engine.queue,  # type: ignore[attr-defined]
    }
    child = subprocess.run(
        [sys.executable, "-c", _DIE_AFTER_COMMIT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 17, child.stderr
    task_id = child.stdout.split()[0]
    # Committed, never published: the job waits, unsent.
    assert status_of(app, task_id) is Status.QUEUED
    with app.db.engine.connect() as conn:
        unsent = app.db.driver.job_unsent(conn, before=time.time())
    assert [t for t, _ in unsent] == [task_id]
    # A worker's relay publishes it; it runs once.
    worker = spawn_worker(WEB_APP, *WORKER_ARGS)
    done = app.sync.wait(task_id, owner="carol", timeout=30)
    assert (done.status, done.attempts, done.result) == (Status.SUCCEEDED, 1, {"steps": 4})
    assert [seq for seq, _ in app.sync.outputs(task_id, owner="carol")] == [1, 2, 3, 4]
    assert worker.terminate() == 0


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERRANDS_CELERY_BROKER", raising=False)
    with pytest.raises(ConfigurationError, match="broker"):
        CeleryEngine()
    with pytest.raises(ConfigurationError, match="relay_after"):
        CeleryEngine("redis://127.0.0.1:6379/13", relay_after=0)
    with pytest.raises(ConfigurationError, match="unknown engine"):
        Errands("sqlite://", engine="celery")
    engine = CeleryEngine("redis://127.0.0.1:6379/13")
    app = Errands("sqlite://", engine=engine)
    try:
        with pytest.raises(ConfigurationError, match="burst"):
            app.worker(burst=True)
        with pytest.raises(ConfigurationError, match="one Errands app"):
            Errands("sqlite://", engine=engine)
    finally:
        app.close()
