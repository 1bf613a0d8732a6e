"""tests/pgserver.py's private PostgreSQL server, for tests that stop, restart, crash or
pause PostgreSQL: it does all that to itself (never to the shared server), recovers,
and leaves no process behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import TupleRow

from errands import ANY_OWNER, Errands
from tests.conftest import ROOT, errands_database
from tests.pgserver import PrivatePostgres, reap_leftovers

pytestmark = pytest.mark.slow


def connect(server: PrivatePostgres, timeout: int = 10) -> psycopg.Connection[TupleRow]:
    return psycopg.connect(server.url(), connect_timeout=timeout, autocommit=True)


def answers(server: PrivatePostgres) -> bool:
    with connect(server) as conn:
        return conn.execute("SELECT 1").fetchone() == (1,)


def still_running(pids: list[int]) -> list[int]:
    """Those of ``pids`` that still run (a zombie waiting for init is not running)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            running.append(pid)
    return running


def pgrep(pattern: str) -> str:
    found = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True)
    return found.stdout


def test_start_restart_pause_kill_close(private_postgres: PrivatePostgres) -> None:
    server = private_postgres
    assert server.port != 5432 and server.url() == (
        f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    )
    print(f"initdb + start: {server.startup_seconds:.2f} s")
    assert answers(server)
    server.start()  # already running: nothing to do
    with connect(server) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (42)")

    # restart: a connection opened before is cut, a new one works.
    before = connect(server)
    postmaster = server.postmaster_pid()
    server.restart()
    with pytest.raises(psycopg.OperationalError):
        before.execute("SELECT 1")
    before.close()
    assert server.postmaster_pid() not in (None, postmaster)
    assert answers(server)

    # pause: the server hangs, its port open: a connection attempt times out (libpq
    # rounds a connect_timeout under 2 s up to 2 s).
    held = connect(server)
    server.pause()
    server.pause()
    assert server.paused and server.running()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="timeout"):
        connect(server, timeout=1)
    assert time.monotonic() - started < 10
    server.resume()
    assert not server.paused and answers(server)
    assert held.execute("SELECT 2").fetchone() == (2,)  # a connection survives a pause
    held.close()

    # kill: a crash (from a paused state, the hardest); start recovers, data kept.
    server.pause()
    pids = server.pids()
    server.kill()
    assert not server.running() and not still_running(pids)
    with pytest.raises(psycopg.OperationalError):
        connect(server, timeout=2)
    server.kill()  # nothing to kill
    server.start()
    with connect(server) as conn:
        assert conn.execute("SELECT n FROM kept").fetchall() == [(42,)]
    assert "database system was interrupted" in (server.logfile.read_text())

    # stop and start again, on the same port.
    port = server.port
    server.stop()
    server.stop()
    assert not server.running()
    server.start()
    assert server.port == port and answers(server)

    # close, paused: no process left, no directory.
    server.pause()
    pids = server.pids()
    assert len(pids) > 1  # the postmaster and its children
    server.close()
    assert not still_running(pids)
    assert not pgrep(str(server.root)), pgrep(str(server.root))
    assert not server.root.exists()
    server.close()  # again: nothing to do
    server.stop()
    server.pause()
    server.resume()


def test_errands_database_on_a_private_server(private_postgres: PrivatePostgres) -> None:
    url = errands_database(private_postgres, "app")
    assert url == private_postgres.url("app")
    app = Errands(url)
    try:
        assert app.sync.list(owner=ANY_OWNER).items == []  # migrated: the tables exist
    finally:
        app.close()


def test_a_crashed_runs_server_is_reaped() -> None:
    """A server whose owner process died without closing it (no ``atexit``: os._exit)
    is killed, and its directory deleted, by a later run's ``reap_leftovers``."""
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from tests.pgserver import PrivatePostgres\n"
        "server = PrivatePostgres(Path(sys.argv[1]) / 'errands-pg-orphan')\n"
        "server.start()\n"
        "print(*server.pids(), flush=True)\n"
        "os._exit(0)\n"
    )
    # Not in tmp_path: the server runs as the postgres user when we are root, and
    # pytest's temporary directories are closed to other users.
    parent = Path(tempfile.mkdtemp(prefix="errands-reap-"))
    parent.chmod(0o755)
    orphan = parent / "errands-pg-orphan"
    try:
        out = subprocess.run(
            [sys.executable, "-c", script, str(parent)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        pids = [int(p) for p in out.split()]
        # Left running by its dead owner (a short-lived child of it may have ended).
        assert pids and still_running(pids)
        assert reap_leftovers(parent) == [orphan]
        assert not still_running(pids)
        assert not orphan.exists()
    finally:
        PrivatePostgres(orphan).close()
        shutil.rmtree(parent, ignore_errors=True)
