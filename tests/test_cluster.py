"""A small cluster on PostgreSQL, all real processes: web processes (uvicorn serving
``tests.apps.cluster:api``, the ``task_api`` router) and ``errands worker
tests.apps.e2e:app`` processes sharing one database, talking through LISTEN/NOTIFY.

- a task submitted through one web process is followed live (SSE) on another;
- a worker killed mid-task: the task finishes on another worker;
- PostgreSQL restarted while tasks run: every task ends once, nothing is left behind,
  and every process serves new tasks afterwards;
- idle workers wake on a notification, not on their (long) poll.

Each test runs on a PostgreSQL server of its own (``private_postgres``,
tests/pgserver.py): one restarts it, which must not cut off the tests that use the
shared server meanwhile.

Tasks log each start and each completion of their function to a per-test file
(``tests.apps.e2e.log_line``: one ``O_APPEND`` write a line), so a task whose function
ran to completion twice is seen. Process output goes to files in the test's temporary
directory; it is printed when the processes are stopped, so pytest shows it (under
"Captured stdout teardown") when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from errands import ANY_OWNER, Errands, Status, TaskRecord
from errands.store.schema import job_table
from tests.apps import e2e
from tests.conftest import ROOT, errands_database, eventually
from tests.pgserver import PrivatePostgres

pytestmark = [pytest.mark.databases("postgresql"), pytest.mark.slow]

WORKER_APP = "tests.apps.e2e:app"
WEB_APP = "tests.apps.cluster:api"
USER = "alice"
#: The longest a single wait may take before the test fails (never reached when all is well).
DEADLINE = 30.0


# -- processes ----------------------------------------------------------------------------
class Proc:
    """A child process whose output goes to a file (a pipe nobody reads could fill up
    and block it, e.g. with tracebacks while the database is down)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (unless :meth:`terminate` sent it), then SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()

    def describe(self) -> str:
        state = "running" if self.alive() else f"exit {self.proc.returncode}"
        return f"--- {self.name} (pid {self.pid}, {state}):\n{self.output()}"


class Web(Proc):
    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            WEB_APP,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--timeout-graceful-shutdown",
            "2",
        ]
        super().__init__(name, argv, env, log)
        self.url = f"http://127.0.0.1:{self.port}/api"

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"X-User": USER},
            timeout=httpx.Timeout(DEADLINE),
            trust_env=False,
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    workers: list[Proc]
    webs: list[Web]

    @property
    def processes(self) -> list[Proc]:
        return [*self.workers, *self.webs]

    def check_alive(self) -> None:
        dead = [f"{p.name} (exit {p.proc.returncode})" for p in self.processes if not p.alive()]
        assert not dead, f"processes died: {', '.join(dead)} (their output follows the test)"


StartCluster = Callable[..., Cluster]


@pytest.fixture
def start_cluster(db_url: str, tmp_path: Path) -> Iterator[StartCluster]:
    """``start_cluster(workers=3, webs=2, worker_args=..., web_poll=1.0)``: start the
    processes on the test's database and wait until each of them serves."""
    started: list[Proc] = []

    def start(
        *,
        workers: int = 3,
        webs: int = 2,
        worker_args: tuple[str, ...] = (),
        web_poll: float = 1.0,
    ) -> Cluster:
        env = os.environ | {
            "ERRANDS_DATABASE_URL": db_url,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        ws = []
        for i in range(webs):
            web_env = env | {"ERRANDS_TEST_WEB_POLL": str(web_poll)}
            ws.append(Web(f"web{i + 1}", web_env, tmp_path / f"web{i + 1}.log"))
            started.append(ws[-1])
        wk = []
        for i in range(workers):
            argv = [sys.executable, "-m", "errands", "worker", WORKER_APP, *worker_args]
            wk.append(Proc(f"worker{i + 1}", argv, env, tmp_path / f"worker{i + 1}.log"))
            started.append(wk[-1])
        cluster = Cluster(wk, ws)
        for w in wk:
            eventually(partial(started_or_dead, w), f"{w.name} to start", timeout=DEADLINE)
        for web in ws:
            eventually(partial(serves_or_dead, web), f"{web.name} to serve", timeout=DEADLINE)
        cluster.check_alive()
        return cluster

    yield start
    for p in started:
        p.terminate()
    for p in started:
        p.stop()
    for p in started:  # captured: shown when the test failed
        print(p.describe())


def started_or_dead(worker: Proc) -> bool:
    return " started: " in worker.output() or not worker.alive()


def serves_or_dead(web: Web) -> bool:
    if not web.alive():
        return True
    try:
        with web.client() as http:
            return http.get("/tasks", params={"limit": "1"}).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def db_url(database: str, private_postgres: PrivatePostgres) -> str:
    """The test's database: a migrated one on the test's private server (the conftest's
    ``app`` and this module's fixtures use it)."""
    assert database == "postgresql"
    return errands_database(private_postgres)


# -- clients ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    event: str
    id: str
    data: Any
    #: When the client received it (``time.monotonic()``).
    at: float

    @property
    def version(self) -> int:
        version, sep, seq = self.id.partition("-")
        assert sep and version.isdigit() and seq.isdigit(), f"malformed event id {self.id!r}"
        return int(version)


def read_events(response: httpx.Response, timeout: float = DEADLINE) -> list[Event]:
    """The events of a task's SSE stream until the server ends it (after ``done``).
    The server sends a keep-alive comment every second, so the deadline is checked."""
    deadline = time.monotonic() + timeout
    events: list[Event] = []
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            raise AssertionError(f"the stream did not end within {timeout} s: {events}")
        if not line:
            if data:
                text = "\n".join(data)
                kind, event_id = fields.get("event", ""), fields.get("id", "")
                events.append(Event(kind, event_id, json.loads(text), time.monotonic()))
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name in ("id", "event"):
            fields[name] = value
    return events


def follow(web: Web, task_id: str, timeout: float = DEADLINE) -> list[Event]:
    """Watch the task on ``web`` until its ``done`` event."""
    with web.client() as http, http.stream("GET", f"/tasks/{task_id}/events") as response:
        assert response.status_code == 200, response.read()
        return read_events(response, timeout)


def check_stream(events: list[Event], task_id: str, steps: int) -> list[Event]:
    """A whole stream of a ``slow`` task that succeeded: record events only, ``done``
    last and once, versions strictly increasing, progress never going back. Returns
    the ``progress`` events."""
    kinds = [e.event for e in events]
    assert set(kinds) <= {"status", "progress", "done"}, kinds
    assert kinds.count("done") == 1 and kinds[-1] == "done", kinds
    versions = [e.version for e in events]
    assert versions == sorted(set(versions)), f"versions do not strictly increase: {versions}"
    assert [e.data["version"] for e in events] == versions
    currents = [e.data["progress"]["current"] or 0 for e in events]
    assert currents == sorted(currents), currents
    assert all(e.data["id"] == task_id and not e.data["done"] for e in events[:-1])
    done = events[-1].data
    assert done["id"] == task_id and done["status"] == "succeeded", done
    assert done["result"]["steps"] == steps, done
    assert done["progress"]["current"] == steps, done
    return [e for e in events if e.event == "progress"]


def submit(http: httpx.Client, name: str, payload: dict[str, Any]) -> str:
    response = http.post("/tasks", json={"name": name, "payload": payload})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


# -- the database -------------------------------------------------------------------------
def all_records(app: Errands) -> list[TaskRecord]:
    return app.sync.list(owner=ANY_OWNER, limit=500).items


def job_count(app: Errands) -> int:
    with app.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(job_table)).scalar_one())


def check_settled(app: Errands) -> list[TaskRecord]:
    """Every record finished (none ``queued`` or ``running``) and no job row left."""
    records = all_records(app)
    active = [r for r in records if not r.done]
    assert not active, f"records left unfinished: {active}"
    assert job_count(app) == 0, "job rows outlived their tasks"
    return records


# -- 1. live events across web processes ----------------------------------------------------
def test_sse_on_one_web_process_follows_a_task_submitted_on_another(
    start_cluster: StartCluster, log: Path
) -> None:
    # The web processes poll for changes only every 5 s: progress events several times
    # a second can only come from the workers' notifications.
    cluster = start_cluster(workers=3, webs=2, worker_args=("-c", "4"), web_poll=5.0)
    web1, web2 = cluster.webs
    steps = 15
    with web1.client() as http:
        task_id = submit(http, "slow", {"steps": steps, "delay": 0.1, "log": str(log)})
    events = follow(web2, task_id)

    progress = check_stream(events, task_id, steps)
    assert len(progress) >= 3, f"progress came by polling, not notifications: {events}"
    assert events[-1].data["result"] == {"steps": steps, "attempt": 1}
    # One run, by one of the workers.
    rows = e2e.read_log(log)
    assert [(event, attempt) for event, _, attempt, _ in rows] == [("start", 1), ("done", 1)]
    assert rows[0][3] == rows[1][3] in {w.pid for w in cluster.workers}
    cluster.check_alive()


# -- 2. a worker killed mid-task ------------------------------------------------------------
def test_task_of_a_killed_worker_finishes_on_another(
    start_cluster: StartCluster, e2e_app: Errands, log: Path
) -> None:
    args = ("-c", "4", "--lease", "2", "--heartbeat", "0.3", "--poll", "0.5")
    cluster = start_cluster(workers=3, webs=0, worker_args=args)
    steps = 20
    record = e2e_app.sync.submit(
        "slow", {"steps": steps, "delay": 0.1, "log": str(log)}, owner=USER
    )

    def running_with_progress() -> TaskRecord | None:
        r = e2e_app.sync.get(record.id, owner=ANY_OWNER)
        assert not r.done, f"the task ended before the test could kill its worker: {r}"
        return r if r.status is Status.RUNNING and r.progress.current else None

    eventually(running_with_progress, "the task to report progress", timeout=DEADLINE)
    [(event, _, attempt, pid)] = e2e.read_log(log)
    assert (event, attempt) == ("start", 1)
    [victim] = [w for w in cluster.workers if w.pid == pid]
    victim.kill()
    survivors = [w for w in cluster.workers if w is not victim]

    final = e2e_app.sync.wait(record.id, owner=ANY_OWNER, timeout=DEADLINE, poll=0.2)
    assert final.status is Status.SUCCEEDED, final
    # slow has max_attempts=3: once the lease runs out, a reaper requeues the task and
    # the lost attempt counts.
    assert final.attempts == 2
    assert final.result == {"steps": steps, "attempt": 2}
    assert final.progress.current == steps
    rows = e2e.read_log(log)
    assert [(event, attempt) for event, _, attempt, _ in rows] == [
        ("start", 1),
        ("start", 2),
        ("done", 2),
    ]
    assert rows[1][3] == rows[2][3] in {w.pid for w in survivors}
    check_settled(e2e_app)
    assert all(w.alive() for w in survivors)


# -- 3. PostgreSQL restarted mid-run --------------------------------------------------------
def test_everything_recovers_from_a_postgres_restart(
    start_cluster: StartCluster,
    e2e_app: Errands,
    log: Path,
    private_postgres: PrivatePostgres,
) -> None:
    # The lease outlasts the restart: a worker that holds a task keeps it (its
    # heartbeats resume in time), so every function runs to completion exactly once.
    # Workers and web processes poll only every 5 s, so what happens within a second
    # after the restart was notified.
    poll = 5.0
    args = ("-c", "4", "--lease", "10", "--heartbeat", "0.5", "--poll", str(poll))
    cluster = start_cluster(workers=3, webs=2, worker_args=args, web_poll=poll)
    web1, web2 = cluster.webs
    count, steps, long_steps = 30, 20, 80

    def payload(n: int) -> dict[str, Any]:
        return {"steps": n, "delay": 0.1, "log": str(log)}

    ids = []
    with web1.client() as h1, web2.client() as h2:
        for i in range(count):  # the first two run through the restart and beyond
            ids.append(submit((h1, h2)[i % 2], "slow", payload(long_steps if i < 2 else steps)))

    def starts() -> int:
        return sum(event == "start" for event, *_ in e2e.read_log(log))

    with ThreadPoolExecutor(2) as pool:
        # Each web process streams a long task's events through the restart.
        streams = [
            pool.submit(follow, web, task_id, 60)
            for web, task_id in zip(cluster.webs, ids[:2], strict=True)
        ]
        # Restart once the second wave (12 run at once) has begun: tasks are running,
        # some are done, the rest queued; running ones finish while the server is down.
        eventually(lambda: starts() > 12, "the second wave", timeout=DEADLINE, every=0.05)
        # A fast shutdown (every connection is cut) and a start; it returns once the
        # server accepts connections again.
        private_postgres.restart("fast")
        for stream, task_id in zip(streams, ids[:2], strict=True):
            check_stream(stream.result(), task_id, long_steps)

    def settled() -> bool:
        records = all_records(e2e_app)
        return len(records) == count and all(r.done for r in records)

    try:
        eventually(settled, "every task to finish", timeout=60, every=0.5)
    except AssertionError:
        stuck = [(r.id, r.status.value, r.attempts) for r in all_records(e2e_app) if not r.done]
        raise AssertionError(f"tasks not finished: {stuck}") from None
    cluster.check_alive()
    records = {r.id: r for r in check_settled(e2e_app)}
    assert sorted(records) == sorted(ids)

    # Each function ran to completion exactly once, in the attempt the record reports.
    rows = e2e.read_log(log)
    done_runs = Counter(task_id for event, task_id, _, _ in rows if event == "done")
    start_runs = Counter(task_id for event, task_id, _, _ in rows if event == "start")
    twice = {t: n for t, n in done_runs.items() if n != 1}
    assert not twice, f"functions that completed more than once: {twice}"
    for r in records.values():
        assert r.status is Status.SUCCEEDED, r
        assert done_runs[r.id] == 1, f"the function of {r.id} never completed"
        [attempt] = [a for event, t, a, _ in rows if event == "done" and t == r.id]
        assert r.attempts == attempt, r
        assert r.result == {"steps": r.payload["steps"], "attempt": attempt}, r
        assert start_runs[r.id] <= r.attempts, r

    # Every process serves after the restart. One task through each web process, followed
    # there to the end: the workers' wake-up and the live progress must be notified.
    late: list[str] = []
    for web in cluster.webs:
        # First a task from this process (whose notifier sends for the first time now,
        # on a fresh connection) wakes every worker: each one's next poll is 5 s away,
        # so the web process's task starts within a second only if notified.
        quick = e2e_app.sync.submit("quick", {"log": str(log)}, owner=USER)
        final = e2e_app.sync.wait(quick.id, owner=ANY_OWNER, timeout=DEADLINE, poll=0.2)
        assert final.status is Status.SUCCEEDED, final
        with web.client() as http:
            task_id = submit(http, "slow", payload(15))
        progress = check_stream(follow(web, task_id), task_id, 15)
        record = e2e_app.sync.get(task_id, owner=ANY_OWNER)
        assert record.started_at is not None
        latency = (record.started_at - record.created_at).total_seconds()
        if latency >= 1.0:
            late.append(f"{web.name}: a task submitted there started after {latency:.2f} s")
        if len(progress) < 3:
            late.append(f"{web.name}: {len(progress)} progress events (polled, not notified)")
    # Then 12 at once (4 slots a worker, 1.5 s each): every worker takes some.
    new: list[str] = []
    with web1.client() as h1, web2.client() as h2:
        for i in range(12):
            new.append(submit((h1, h2)[i % 2], "slow", payload(15)))
    for task_id in new:
        final = e2e_app.sync.wait(task_id, owner=ANY_OWNER, timeout=DEADLINE, poll=0.2)
        assert final.status is Status.SUCCEEDED, final
    ran_new = {pid for event, t, _, pid in e2e.read_log(log) if event == "start" and t in new}
    workers = {w.name: w.pid for w in cluster.workers}
    assert ran_new == set(workers.values()), f"not every worker took new tasks: {workers}"
    check_settled(e2e_app)
    cluster.check_alive()
    assert not late, "notifications after the restart were lost:\n" + "\n".join(late)


# -- 4. idle workers wake on notifications --------------------------------------------------
def test_idle_workers_start_a_new_task_on_notification(
    start_cluster: StartCluster, e2e_app: Errands, log: Path
) -> None:
    poll = 5.0
    cluster = start_cluster(workers=3, webs=1, worker_args=("-c", "4", "--poll", str(poll)))
    [web] = cluster.webs
    # Every worker past the claims it makes on starting, then idle: 12 tasks of 1 s for
    # 3 workers of 4 slots, submitted together, keep every slot busy at once.
    with web.client() as http:
        warm_up = [
            submit(http, "slow", {"steps": 10, "delay": 0.1, "log": str(log)}) for _ in range(12)
        ]
    for task_id in warm_up:
        final = e2e_app.sync.wait(task_id, owner=ANY_OWNER, timeout=DEADLINE, poll=0.2)
        assert final.status is Status.SUCCEEDED, final
    ran = {pid for event, t, _, pid in e2e.read_log(log) if event == "start" and t in warm_up}
    assert ran == {w.pid for w in cluster.workers}, "the warm-up did not reach every worker"
    latencies = []
    with web.client() as http:
        for _ in range(3):
            task_id = submit(http, "quick", {"log": str(log)})
            final = e2e_app.sync.wait(task_id, owner=ANY_OWNER, timeout=DEADLINE, poll=0.2)
            assert final.status is Status.SUCCEEDED, final
            assert final.started_at is not None
            latencies.append((final.started_at - final.created_at).total_seconds())
            # Every task resets the workers' poll timers: the next one, submitted right
            # after, would wait most of a poll interval for a poll.
            time.sleep(0.3)
    # A poll would take seconds; a notification takes milliseconds (1 s: slack for a
    # busy machine).
    assert max(latencies) < 1.0, f"submit → start took {latencies} s"
    cluster.check_alive()
