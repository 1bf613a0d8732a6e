"""A worker's PostgreSQL connections do not grow with its concurrency.

A real ``errands worker tests.apps.e2e:app`` process on PostgreSQL, its slots filled
with slow tasks that report progress, first at ``--concurrency 16``, then at 64. Its
connections are counted on the server: the rows of ``pg_stat_activity`` whose client
port is one of the worker process's own TCP sockets (read from ``/proc/<pid>/fd`` and
``/proc/<pid>/net/tcp``), so every connection the process opened counts, pooled or not,
whatever errands passes to libpq.

How many connections a worker has open depends on how many of its database calls
overlapped so far (its pools open connections on demand and keep them), and more tasks
make longer statements, which overlap more often: sampled while the worker runs
undisturbed, the peak is timing, not structure (4 at 16 and 5 at 64 in most runs here,
the other way round in some). So each measurement first **stalls the database** for a
moment — a transaction of the test's holds ``EXCLUSIVE`` locks on errands' tables, so
every write of the worker waits — while its connections are sampled: each of its
periodic database calls (heartbeat, progress flush, reaper; the claim loop is idle with
every slot busy) then holds a connection at the same time, the worst case of a slow
database, whatever the concurrency. Then the locks go and the sampling goes on with the
worker running normally. The peak at 64 must not exceed the peak at 16.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from errands import ANY_OWNER, Errands, Status
from tests.conftest import WorkerProcess, eventually, stays

pytestmark = [pytest.mark.databases("postgresql"), pytest.mark.slow]

APP = "tests.apps.e2e:app"
#: A lease long enough that the stall (under its fence, two thirds of it) stops nothing.
WORKER_ARGS = ("--lease", "10", "--heartbeat", "0.3", "--poll", "0.2", "--shutdown-timeout", "1")
#: Seconds the worker's writes wait on the test's locks, then seconds of normal running,
#: both sampled (every reaper, heartbeat and progress flush comes within 0.3 s).
STALL = 2.0
WINDOW = 2.0
#: The tasks outlast the test: 600 steps of 0.1 s, progress after each.
SLOW = {"steps": 600, "delay": 0.1}
#: Every write of a worker waits on this (EXCLUSIVE lets reads through: the test's own).
LOCK = "LOCK TABLE errands_task, errands_job, errands_worker, errands_output IN EXCLUSIVE MODE"

Session = tuple[int, str | None, str | None]  # client port, state, start of the query


def socket_ports(pid: int, server_port: int) -> set[int]:
    """The local ports of process ``pid``'s TCP sockets connected to ``server_port``."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


class Connections:
    """A process's sessions in ``pg_stat_activity`` of the test's database."""

    def __init__(self, db_url: str) -> None:
        url = make_url(db_url)
        if not url.host or url.host.startswith("/"):
            pytest.skip("counting connections by client port needs PostgreSQL over TCP")
        self.url = db_url
        self.database = str(url.database)
        self.port = url.port or 5432
        self.conn = psycopg.connect(db_url, autocommit=True)

    def of(self, pid: int) -> list[Session]:
        ports = socket_ports(pid, self.port)
        rows = self.conn.execute(
            "SELECT client_port, state, left(query, 60) FROM pg_stat_activity "
            "WHERE datname = %s AND client_port = ANY(%s) ORDER BY client_port",
            (self.database, sorted(ports)),
        ).fetchall()
        return [(int(port), state, query) for port, state, query in rows]

    def close(self) -> None:
        self.conn.close()


def running(app: Errands, owner: str) -> int:
    """How many of ``owner``'s tasks are running (one query)."""
    return len(app.sync.list(owner=owner, status=Status.RUNNING.value, limit=500).items)


def peak_connections(
    app: Errands,
    spawn: Callable[..., WorkerProcess],
    connections: Connections,
    concurrency: int,
) -> list[Session]:
    """Start a worker at ``concurrency`` with more slow tasks than slots; once every
    slot is busy, stall the database for ``STALL`` s, then let it run for ``WINDOW``
    s, sampling the worker's sessions all along (every slot staying busy); the sessions
    seen at the peak. The worker is stopped and its tasks cancelled afterwards."""
    owner = f"c{concurrency}"
    ids = [app.sync.submit("slow_once", SLOW, owner=owner).id for _ in range(concurrency + 4)]
    worker = spawn(APP, *WORKER_ARGS, "--concurrency", str(concurrency))
    peak: list[Session] = []

    def sample() -> bool:
        nonlocal peak
        assert worker.proc.poll() is None, worker.output()
        sessions = connections.of(worker.proc.pid)
        if len(sessions) > len(peak):
            peak = sessions
        return running(app, owner) == concurrency

    try:
        eventually(
            lambda: running(app, owner) == concurrency or worker.proc.poll() is not None,
            f"{concurrency} tasks running",
            timeout=60,
            every=0.2,
        )
        with psycopg.connect(connections.url) as locker:
            locker.execute(LOCK)
            stays(sample, f"all {concurrency} slots busy (database stalled)", STALL, every=0.1)
            locker.rollback()
        stays(sample, f"all {concurrency} slots busy", WINDOW, every=0.1)
        return peak
    finally:
        worker.terminate()
        for task_id in ids:
            app.sync.cancel(task_id, owner=ANY_OWNER)


def test_a_worker_at_concurrency_64_holds_no_more_connections_than_at_16(
    e2e_app: Errands,
    spawn_worker: Callable[..., WorkerProcess],
    db_url: str,
) -> None:
    connections = Connections(db_url)
    try:
        at_16 = peak_connections(e2e_app, spawn_worker, connections, 16)
        at_64 = peak_connections(e2e_app, spawn_worker, connections, 64)
    finally:
        connections.close()
    print(f"worker connections: {len(at_16)} at --concurrency 16, {len(at_64)} at 64")
    assert at_16, "no connection of the worker was found: the count is broken"
    assert len(at_64) <= len(at_16), (
        f"{len(at_64)} connections at --concurrency 64, {len(at_16)} at 16\n"
        f"at 16: {at_16}\nat 64: {at_64}"
    )
