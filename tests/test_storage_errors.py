"""Database failures reach callers as errands errors, never as driver errors:
:class:`DatabaseUnavailable` for a database that cannot serve now (unreachable,
connection lost, locked past the wait), :class:`StorageFull` for one out of space —
each with the driver's error as ``__cause__``, and with nothing half-written.

The full disk is real: a small tmpfs (mounting one needs root; the tests skip
otherwise), filled with submits and a filler file that is deleted to free space again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy.exc
from argon2 import PasswordHasher
from sqlalchemy import Connection, create_engine, text
from starlette.testclient import TestClient

from errands import (
    ANY_OWNER,
    DatabaseUnavailable,
    Errands,
    ErrandsError,
    Status,
    StorageFull,
    TaskContext,
    TaskRecord,
)
from errands.demo import accounts
from errands.demo.web import Demo, DemoSettings, create_app
from errands.ids import new_task_id
from errands.store import database
from errands.store.database import is_unavailable, log_failure
from tests.apps import e2e
from tests.apps.demo_site import PASSWORD, DemoClient
from tests.apps.web import make_api
from tests.conftest import ROOT, eventually_async, running_worker, stays_async

DISK_KIB = 1024  # the small file system
FILLER = 128 * 1024  # bytes of the file deleted to free space
PAD = 16_000  # characters of padding per payload: the disk fills in a few dozen submits
E2E = "tests.apps.e2e:app"


# -- a small file system ----------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a tmpfs of ``DISK_KIB`` KiB, unmounted afterwards."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("filling a real file system needs a small tmpfs, and mounting needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_KIB}k,mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)


def keep(ctx: TaskContext, payload: dict[str, Any]) -> None:
    return None


def disk_app(where: Path) -> Errands:
    app = Errands(f"sqlite:///{where / 'tasks.db'}")
    app.task(name="keep")(keep)
    return app


def fill(app: Errands, start: int, pad: int) -> tuple[list[TaskRecord], list[int], StorageFull]:
    """Submit payloads ``{"n": start, …}`` with ``pad`` characters of padding until the
    disk refuses three in a row; the records submitted, the ``n`` of those refused and
    the first refusal."""
    submitted: list[TaskRecord] = []
    refused: list[int] = []
    first: StorageFull | None = None
    in_a_row = 0
    for n in range(start, start + 2000):
        try:
            submitted.append(app.sync.submit("keep", {"n": n, "pad": "x" * pad}, owner="alice"))
            in_a_row = 0
        except StorageFull as exc:
            first = first or exc
            refused.append(n)
            in_a_row += 1
            if in_a_row == 3:
                return submitted, refused, first
    raise AssertionError("the disk never filled up")


def stored(path: Path) -> tuple[dict[int, str], set[str]]:
    """What the database holds, read behind errands' back: ``{payload n: task id}`` and
    the ids of the queued jobs."""
    with sqlite3.connect(path) as conn:
        tasks = dict(conn.execute("SELECT json_extract(payload, '$.n'), id FROM errands_task"))
        jobs = {row[0] for row in conn.execute("SELECT task_id FROM errands_job")}
    conn.close()
    return tasks, jobs


def driver_error(exc: ErrandsError) -> sqlite3.Error:
    """The SQLite error behind ``exc`` (SQLAlchemy's wrapper's, or the driver's own)."""
    cause = exc.__cause__
    assert isinstance(cause, sqlalchemy.exc.DBAPIError | sqlite3.Error), repr(cause)
    orig = cause.orig if isinstance(cause, sqlalchemy.exc.DBAPIError) else cause
    assert isinstance(orig, sqlite3.Error)
    return orig


# -- SQLite: a full disk -----------------------------------------------------------------
async def test_a_full_disk_refuses_whole_submits_until_space_is_freed(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = disk_app(small_disk)
    try:
        first = app.sync.submit("keep", {"n": -1}, owner="alice")  # creates the schema
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * FILLER)

        submitted, refused, full = fill(app, 0, PAD)
        assert len(submitted) >= 5, "the disk filled up before the test began"
        assert str(full) == "The database has no space left."
        assert driver_error(full).sqlite_errorcode == sqlite3.SQLITE_FULL
        with pytest.raises(StorageFull) as async_twin:
            await app.submit("keep", {"n": 5000, "pad": "x" * PAD}, owner="alice")
        assert driver_error(async_twin.value).sqlite_errorcode == sqlite3.SQLITE_FULL
        with pytest.raises(StorageFull):
            await app.submit_many("keep", [{"n": 5001, "pad": "x" * PAD}], owner="alice")

        # Every submit that returned is there and readable; every refused one left
        # neither a record nor a job.
        expected = {r.payload["n"]: r.id for r in [first, *submitted]}
        tasks, jobs = stored(small_disk / "tasks.db")
        assert tasks == expected
        assert jobs == set(expected.values())
        assert not set(refused) & set(tasks)
        for record in submitted:
            assert app.sync.get(record.id, owner="alice").payload == record.payload
        page = await app.list(owner="alice", limit=500)
        assert {r.id for r in page.items} == set(expected.values())

        # The worker's contract: retry later, and one line in the log.
        assert is_unavailable(full)
        with caplog.at_level(logging.WARNING, logger="errands.test"):
            log_failure(logging.getLogger("errands.test"), full, "writing %s failed", "it")
        (line,) = caplog.records
        assert line.getMessage() == "writing it failed (database full: database or disk is full)"
        assert line.exc_info is None

        filler.unlink()
        again = await app.submit("keep", {"n": 10_000, "pad": "x" * PAD}, owner="alice")
        assert (await app.get(again.id, owner="alice")).payload["n"] == 10_000
        tasks, jobs = stored(small_disk / "tasks.db")
        assert tasks == expected | {10_000: again.id}
        assert jobs == set(tasks.values())
    finally:
        app.close()


async def test_the_http_api_answers_507_on_a_full_disk_and_reads_still_work(
    small_disk: Path,
) -> None:
    app = disk_app(small_disk)
    transport = httpx.ASGITransport(app=make_api(app, submit_rate=None))
    headers = {"X-User": "alice"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            created = await client.post(
                "/api/tasks", json={"name": "keep", "payload": {"n": -1}}, headers=headers
            )
            assert created.status_code == 202, created.text
            task_id = created.json()["id"]
            fill(app, 0, PAD)
            fill(app, 10_000, 0)  # and the last few pages, with the smallest submits
            before = stored(small_disk / "tasks.db")

            response = await client.post(
                "/api/tasks", json={"name": "keep", "payload": {"n": 99_999}}, headers=headers
            )
            assert response.status_code == 507, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert "retry-after" not in response.headers  # space comes back when freed
            problem = response.json()
            assert problem["status"] == 507 and problem["title"] == "Insufficient Storage"
            assert "space" in problem["detail"]
            assert str(small_disk) not in response.text and "sqlite" not in response.text
            assert stored(small_disk / "tasks.db") == before  # nothing written

            read = await client.get(f"/api/tasks/{task_id}", headers=headers)
            assert read.status_code == 200 and read.json()["payload"] == {"n": -1}
            listed = await client.get("/api/tasks?limit=500", headers=headers)
            assert listed.status_code == 200
            assert {t["id"] for t in listed.json()["items"]} == set(before[0].values())
    finally:
        app.close()


def test_the_command_line_exits_6_on_a_full_disk(small_disk: Path) -> None:
    url = f"sqlite:///{small_disk / 'tasks.db'}"
    app = e2e.install(Errands(url))
    app.task(name="keep")(keep)
    try:
        app.sync.submit("crash", {}, owner="alice")
        fill(app, 0, PAD)
        fill(app, 10_000, 0)
        before = stored(small_disk / "tasks.db")
        done = subprocess.run(
            [sys.executable, "-m", "errands", "submit", E2E, "crash", "{}", "--owner", "alice"],
            cwd=ROOT,
            env=os.environ | {"ERRANDS_DATABASE_URL": url, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 6, done.stderr
        assert done.stderr == "errands: the database is out of space: database or disk is full\n"
        assert stored(small_disk / "tasks.db") == before
    finally:
        app.close()


async def test_a_worker_keeps_an_outcome_it_cannot_write_until_space_is_freed(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = disk_app(small_disk)
    release, returned = threading.Event(), threading.Event()

    @app.task(max_attempts=1)
    def gated(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        release.wait(30)
        returned.set()
        # Larger than the room a refused submit leaves in the journal (an outcome
        # smaller than the smallest submit could still fit there).
        return {"n": payload["n"], "pad": "r" * 24_000}

    try:
        record = await app.submit("gated", {"n": 7}, owner="alice")
        (small_disk / "filler").write_bytes(b"\0" * FILLER)
        # A long lease: the test is about the outcome, not about leases running out.
        async with running_worker(app, names=["gated"], lease_seconds=60):

            async def running() -> bool:
                return (await app.get(record.id, owner="alice")).status is Status.RUNNING

            await eventually_async(running, "the task to start", timeout=10)
            await asyncio.to_thread(fill, app, 0, PAD)
            await asyncio.to_thread(fill, app, 10_000, 0)
            with caplog.at_level(logging.WARNING, logger="errands.worker"):
                release.set()
                assert await asyncio.to_thread(returned.wait, 10)
                # The worker tries to write the outcome, and again: the outcome waits in
                # the worker, retried later, not written alone as a bad batch (that path
                # logs an error and fails the task).
                await stays_async(running, "the task running while the disk is full", 1.5)
                assert (await app.get(record.id, owner="alice")).status is Status.RUNNING
            full = [r for r in caplog.records if "(database full: " in r.getMessage()]
            assert full and all(r.exc_info is None for r in full)  # one line each
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

            (small_disk / "filler").unlink()
            done = await app.wait(record.id, owner="alice", timeout=30, poll=0.1)
        assert done.status is Status.SUCCEEDED and done.result == {"n": 7, "pad": "r" * 24_000}
    finally:
        release.set()
        app.close()


def test_the_demo_pages_answer_503_and_507(
    small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    site = create_app(
        DemoSettings(
            database_url=f"sqlite:///{small_disk / 'demo.db'}",
            data_dir=tmp_path / "data",
            corpus=tmp_path,
            worker=False,
        )
    )
    demo: Demo = site.state.demo
    demo.errands.task(name="keep")(keep)
    demo.accounts.register("alice@example.com", PASSWORD)
    with TestClient(site) as client:
        pages = DemoClient(client, demo)
        pages.log_in("alice@example.com")
        search = {"query": "needle", "glob": "*.py", "csrf": pages.csrf()}

        monkeypatch.setattr(database, "_WRITE_WAIT", 0.2)
        holder = sqlite3.connect(small_disk / "demo.db", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            locked = client.post("/search", data=search, follow_redirects=False)
        finally:
            holder.close()
        assert locked.status_code == 503 and locked.headers["retry-after"] == "1"
        assert locked.headers["content-type"].startswith("text/html")
        assert "unavailable for a moment" in locked.text and "sqlite" not in locked.text

        fill(demo.errands, 0, PAD)
        fill(demo.errands, 10_000, 0)
        full = client.post("/search", data=search, follow_redirects=False)
        assert full.status_code == 507 and "retry-after" not in full.headers
        assert "out of storage space" in full.text and str(small_disk) not in full.text
        assert client.get("/tasks").status_code == 200  # reading still works


# -- SQLite: the write lock held past the wait -------------------------------------------
async def test_a_write_lock_held_past_the_wait_is_database_unavailable(
    app: Errands, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.task(name="keep")(keep)
    first = await app.submit("keep", {"n": 1}, owner="alice")
    monkeypatch.setattr(database, "_WRITE_WAIT", 0.2)
    holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process's writer, holding on
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as caught:
            app.sync.submit("keep", {"n": 2}, owner="alice")
        with pytest.raises(DatabaseUnavailable):
            await app.cancel(first.id, owner="alice")
        assert time.monotonic() - started < 5
        assert driver_error(caught.value).sqlite_errorcode == sqlite3.SQLITE_BUSY
        assert "busy" in str(caught.value) and is_unavailable(caught.value)
        assert (await app.get(first.id, owner="alice")).status is Status.QUEUED  # reads go on
    finally:
        holder.close()
    second = await app.submit("keep", {"n": 2}, owner="alice")
    assert {r.id for r in (await app.list(owner="alice")).items} == {first.id, second.id}


def test_a_submit_in_the_callers_transaction_raises_database_unavailable_too(
    app: Errands, db_url: str
) -> None:
    app.task(name="keep")(keep)
    app.sync.submit("keep", {"n": 1}, owner="alice")
    caller = create_engine(db_url, connect_args={"timeout": 0.1})  # a 0.1 s busy wait
    holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseUnavailable) as caught, caller.begin() as conn:
            app.sync.submit("keep", {"n": 2}, owner="alice", connection=conn)
        assert driver_error(caught.value).sqlite_errorcode == sqlite3.SQLITE_BUSY
    finally:
        holder.close()
        caller.dispose()
    assert [r.payload["n"] for r in app.sync.list(owner="alice").items] == [1]


def test_a_bad_statement_stays_a_driver_error(app: Errands) -> None:
    """Not the database being away: nothing to retry later, the traceback is logged."""
    with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
        app.db.read(lambda conn: conn.exec_driver_sql("SELECT * FROM no_such_table").all())
    assert not is_unavailable(caught.value)

    def twice(conn: Connection) -> None:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1), (1)")

    with pytest.raises(sqlalchemy.exc.IntegrityError) as clash:
        app.db.write(twice)
    assert not is_unavailable(clash.value)


# -- PostgreSQL ----------------------------------------------------------------------------
async def test_an_unreachable_postgresql_raises_database_unavailable_at_once() -> None:
    app = Errands("postgresql://postgres@127.0.0.1:1/nowhere")  # nothing listens on port 1
    app.task(name="keep")(keep)
    calls: list[Any] = [
        lambda: app.get(new_task_id(), owner="alice"),
        lambda: app.submit("keep", {}, owner="alice"),
        lambda: app.list(owner="alice"),
        lambda: app.cancel(new_task_id(), owner="alice"),
        lambda: app.wait(new_task_id(), owner="alice", timeout=1),
        lambda: app.outputs(new_task_id(), owner="alice"),
        lambda: app.delete(new_task_id(), owner="alice"),
        lambda: app.purge(),
        lambda: asyncio.to_thread(app.sync.get, new_task_id(), owner="alice"),
        lambda: asyncio.to_thread(app.sync.submit, "keep", {}, owner="alice"),
    ]
    try:
        for call in calls:
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable) as caught:
                await call()
            assert time.monotonic() - started < 5
            assert isinstance(caught.value.__cause__, sqlalchemy.exc.OperationalError)
            assert str(caught.value) == "the database cannot be reached; try again shortly"
    finally:
        app.close()


@pytest.mark.databases("postgresql")
async def test_a_lost_connection_is_read_again_or_database_unavailable(
    app: Errands, db_url: str
) -> None:
    app.task(name="keep")(keep)
    admin = create_engine(db_url)

    def kill_connections() -> None:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            conn.commit()

    async def submit_after_kill(n: int, sync: bool = False) -> TaskRecord | None:
        """The new record, or None when the submit met the dead connection."""
        kill_connections()
        try:
            if sync:
                return app.sync.submit("keep", {"n": n}, owner="alice")
            return await app.submit("keep", {"n": n}, owner="alice")
        except DatabaseUnavailable as exc:
            assert isinstance(exc.__cause__, sqlalchemy.exc.DBAPIError | psycopg.Error)
            return None

    transport = httpx.ASGITransport(app=make_api(app, submit_rate=None))
    headers = {"X-User": "alice"}
    try:
        first = await app.submit("keep", {"n": 0}, owner="alice")
        await app.get(first.id, owner="alice")
        kill_connections()
        assert (await app.get(first.id, owner="alice")).id == first.id  # read again
        kill_connections()
        assert app.sync.get(first.id, owner="alice").id == first.id

        outcomes = [await submit_after_kill(n, sync=n % 2 == 0) for n in range(1, 5)]
        created = [r for r in outcomes if r is not None]

        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answers = []
            for n in range(5, 8):  # a pooled connection used a moment ago is not pinged
                kill_connections()
                response = await client.post(
                    "/api/tasks", json={"name": "keep", "payload": {"n": n}}, headers=headers
                )
                answers.append(response.status_code)
                if response.status_code == 202:
                    created.append(await app.get(response.json()["id"], owner="alice"))
                    continue
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "1"
                assert response.headers["content-type"] == "application/problem+json"
                assert "127.0.0.1" not in response.text
            assert 503 in answers, answers
            kill_connections()
            read = await client.get(f"/api/tasks/{first.id}", headers=headers)
            assert read.status_code == 200, read.text

        # Every submit that returned is there; every refused one left nothing.
        page = await app.list(owner=ANY_OWNER, limit=100)
        assert {r.id for r in page.items} == {first.id} | {r.id for r in created}
    finally:
        admin.dispose()
