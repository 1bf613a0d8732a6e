"""The status machine as the store enforces it: guarded transitions, lease-guarded
completions, the reaper, and races between workers (real SQLite, real threads)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy

from errands import ANY_OWNER, Errands, Status, TaskContext
from errands.records import Change
from errands.store.driver import Driver
from errands.store.schema import task_table
from errands.store.values import Claimed, Outcome, OutputItem, Report

# The conformance suite: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.databases("sqlite", "postgresql")

NAMES = ["job"]


def expiry(_name: str) -> datetime | None:
    return datetime.now(UTC) + timedelta(days=1)


@pytest.fixture
def store_app(app: Errands) -> Errands:
    @app.task(max_attempts=2)
    def job(ctx: TaskContext, payload: dict[str, Any]) -> None:
        return None

    return app


def submit(app: Errands, n: int = 1) -> list[str]:
    return [app.sync.submit("job", {"i": i}, owner="alice").id for i in range(n)]


def claim(
    app: Errands, worker: str, limit: int = 10, lease: float = 30.0, now: float | None = None
) -> list[Claimed]:
    return app.db.write(
        app.db.driver.job_claim,
        worker,
        names=NAMES,
        limit=limit,
        now=now or time.time(),
        lease_seconds=lease,
    )[0]


def finish(app: Errands, worker: str, *outcomes: Outcome) -> list[Change]:
    return app.db.write(app.db.driver.attempt_finish, worker, list(outcomes), now=time.time())


def driver(app: Errands) -> Driver:
    return app.db.driver


def status(app: Errands, task_id: str) -> Status:
    return app.sync.get(task_id, owner="alice").status


def job_count(app: Errands) -> int:
    from sqlalchemy import func, select

    from errands.store.schema import job_table

    with app.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(job_table)).scalar_one())


def test_queued_running_succeeded(store_app: Errands) -> None:
    (tid,) = submit(store_app)
    (job,) = claim(store_app, "w1")
    assert job.task_id == tid and job.attempt == 1 and job.payload == {"i": 0}
    rec = store_app.sync.get(tid, owner="alice")
    assert rec.status is Status.RUNNING and rec.attempts == 1 and rec.started_at is not None
    assert claim(store_app, "w2") == []  # leased: nobody else gets it
    changes = finish(store_app, "w1", Outcome(tid, Status.SUCCEEDED, result={"ok": 1}))
    assert [(c.task_id, c.status) for c in changes] == [(tid, Status.SUCCEEDED)]
    rec = store_app.sync.get(tid, owner="alice")
    assert rec.status is Status.SUCCEEDED and rec.result == {"ok": 1} and rec.finished_at
    assert job_count(store_app) == 0


@pytest.mark.parametrize("end", [Status.FAILED, Status.CANCELLED])
def test_running_to_failed_or_cancelled(store_app: Errands, end: Status) -> None:
    (tid,) = submit(store_app)
    claim(store_app, "w1")
    finish(store_app, "w1", Outcome(tid, end, error_type="X", error_message="m", error_detail="tb"))
    rec = store_app.sync.get(tid, owner="alice")
    assert rec.status is end and rec.error is not None and rec.error.message == "m"
    assert rec.error_detail == "tb"


def test_retry_goes_back_to_queued_then_runs_again(store_app: Errands) -> None:
    (tid,) = submit(store_app)
    claim(store_app, "w1")
    at = time.time() + 5  # far enough that a slow machine still claims before it
    finish(store_app, "w1", Outcome(tid, Status.QUEUED, error_type="E", retry_at=at))
    rec = store_app.sync.get(tid, owner="alice")
    assert rec.status is Status.QUEUED and abs(rec.run_at.timestamp() - at) < 0.01
    assert claim(store_app, "w2") == []  # not due yet
    next_due = store_app.db.read(driver(store_app).job_next_due, NAMES)
    assert next_due is not None and abs(next_due - at) < 0.01
    (job,) = claim(store_app, "w2", now=at + 0.01)
    assert job.attempt == 2 and status(store_app, tid) is Status.RUNNING


def test_illegal_transitions_are_refused(store_app: Errands) -> None:
    a, b = submit(store_app, 2)
    # A queued task cannot be completed: nobody holds its lease.
    assert finish(store_app, "w1", Outcome(a, Status.SUCCEEDED)) == []
    assert status(store_app, a) is Status.QUEUED
    # A worker without the lease cannot complete a running task.
    assert [j.task_id for j in claim(store_app, "w1", limit=1)] == [a]
    assert finish(store_app, "intruder", Outcome(a, Status.FAILED)) == []
    assert status(store_app, a) is Status.RUNNING
    # Terminal states never change again.
    finish(store_app, "w1", Outcome(a, Status.SUCCEEDED, result=1))
    before = store_app.sync.get(a, owner="alice")
    assert finish(store_app, "w1", Outcome(a, Status.FAILED)) == []
    assert finish(store_app, "w1", Outcome(a, Status.QUEUED, retry_at=time.time())) == []
    assert store_app.sync.cancel(a, owner="alice") == before
    assert (
        store_app.db.write(driver(store_app).attempt_release, "w1", [(a, 0)], now=time.time()) == []
    )
    assert (
        store_app.db.write(driver(store_app).job_reap, now=time.time() + 999, expiry_for=expiry)
        == []
    )
    assert store_app.sync.get(a, owner="alice") == before
    # A cancelled task cannot be claimed or run.
    store_app.sync.cancel(b, owner="alice")
    finish(store_app, "w1", Outcome(b, Status.SUCCEEDED))
    assert status(store_app, b) is Status.CANCELLED


def test_cancel_running_sets_the_flag_and_the_worker_ends_it(store_app: Errands) -> None:
    (tid,) = submit(store_app)
    claim(store_app, "w1")
    rec = store_app.sync.cancel(tid, owner="alice")
    assert rec.status is Status.RUNNING and rec.cancel_requested
    held, cancel = store_app.db.write(
        driver(store_app).job_heartbeat, "w1", [tid], lease_until=time.time() + 30
    )
    assert held == {tid} and cancel == {tid}
    finish(store_app, "w1", Outcome(tid, Status.CANCELLED))
    assert status(store_app, tid) is Status.CANCELLED


def test_reaper_requeues_fails_or_cancels_expired_leases(store_app: Errands) -> None:
    a, b, c = submit(store_app, 3)
    now = time.time()
    claim(store_app, "dead", lease=1.0, now=now)
    store_app.sync.cancel(c, owner="alice")  # c: cancel requested while running
    assert (
        store_app.db.write(driver(store_app).job_reap, now=now + 0.5, expiry_for=expiry) == []
    )  # not expired
    changes = store_app.db.write(driver(store_app).job_reap, now=now + 2, expiry_for=expiry)
    assert {ch.task_id: ch.status for ch in changes} == {
        a: Status.QUEUED,
        b: Status.QUEUED,
        c: Status.CANCELLED,
    }
    # second life for a and b; the dead worker's late result is refused
    claim(store_app, "w2", lease=1.0, now=now + 3)
    assert finish(store_app, "dead", Outcome(a, Status.SUCCEEDED)) == []
    # second expiry: attempts (2) are spent -> failed
    changes = store_app.db.write(driver(store_app).job_reap, now=now + 5, expiry_for=expiry)
    assert {ch.status for ch in changes} == {Status.FAILED}
    rec = store_app.sync.get(a, owner="alice")
    assert rec.status is Status.FAILED and rec.error is not None
    assert rec.error.type == "WorkerLost" and rec.attempts == 2 and rec.expires_at is not None
    assert job_count(store_app) == 0


def test_release_hands_back_without_spending_an_attempt(store_app: Errands) -> None:
    (tid,) = submit(store_app)
    claim(store_app, "w1")
    store_app.db.write(driver(store_app).attempt_release, "w1", [(tid, 0)], now=time.time())
    rec = store_app.sync.get(tid, owner="alice")
    assert rec.status is Status.QUEUED and rec.attempts == 0
    (job,) = claim(store_app, "w2")
    assert job.attempt == 1


def test_priority_then_age_order(store_app: Errands) -> None:
    low = store_app.sync.submit("job", {}, owner="alice", priority=0).id
    high = store_app.sync.submit("job", {}, owner="alice", priority=9).id
    low2 = store_app.sync.submit("job", {}, owner="alice", priority=0).id
    order = [claim(store_app, "w", limit=1)[0].task_id for _ in range(3)]
    assert order == [high, low, low2]


def _complete(
    app: Errands,
    barrier: threading.Barrier,
    results: dict[str, list[Change]],
    worker: str,
    task_id: str,
    floor: int,
) -> None:
    barrier.wait()
    outcome = Outcome(task_id, Status.SUCCEEDED, result=worker, floor=floor)
    results[worker] = finish(app, worker, outcome)


def test_two_workers_racing_to_complete_exactly_one_wins(store_app: Errands) -> None:
    """Worker A is presumed dead (lease expired), the task goes to B; both then try to
    complete it at the same moment from different threads: only B's result stands."""
    for _ in range(20):
        (tid,) = submit(store_app)
        now = time.time()
        (a,) = claim(store_app, "A", lease=0.01, now=now)
        store_app.db.write(driver(store_app).job_reap, now=now + 1, expiry_for=expiry)
        (b,) = claim(store_app, "B", now=now + 1)
        assert (a.output_floor, b.output_floor) == (0, 1)  # B's attempt: a floor of its own
        results: dict[str, list[Change]] = {}
        barrier = threading.Barrier(2)
        threads = [
            threading.Thread(
                target=_complete, args=(store_app, barrier, results, w, tid, job.output_floor)
            )
            for w, job in (("A", a), ("B", b))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results["A"] == [] and len(results["B"]) == 1
        rec = store_app.sync.get(tid, owner="alice")
        assert rec.status is Status.SUCCEEDED and rec.result == "B"


def test_concurrent_claims_never_hand_out_a_job_twice(store_app: Errands) -> None:
    ids = set(submit(store_app, 300))
    got: list[str] = []
    lock = threading.Lock()

    def claimer(worker: str) -> None:
        while True:
            batch = claim(store_app, worker, limit=7)
            if not batch:
                return
            with lock:
                got.extend(j.task_id for j in batch)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(ids)


def test_flush_writes_progress_only_while_the_lease_is_held(store_app: Errands) -> None:
    (tid,) = submit(store_app)
    claim(store_app, "w1")
    report = [Report(tid, 0, (5, 10, "half"))]
    outputs = [OutputItem(tid, 1, {"x": 1})]
    changes = store_app.db.write(
        driver(store_app).attempt_report, "w1", report, outputs, now=time.time()
    )
    assert changes[0].version == 3
    rec = store_app.sync.get(tid, owner="alice")
    assert rec.progress.current == 5 and rec.progress.percent == 50.0
    assert store_app.sync.outputs(tid, owner="alice") == [(1, {"x": 1})]
    other = [Report(tid, 0, (9, 10, "no"))]
    items = [OutputItem(tid, 2, "no")]
    assert (
        store_app.db.write(
            driver(store_app).attempt_report, "intruder", other, items, now=time.time()
        )
        == []
    )
    stale = [Report(tid, 7, (9, 10, "no"))]  # another attempt's floor
    assert (
        store_app.db.write(driver(store_app).attempt_report, "w1", stale, items, now=time.time())
        == []
    )
    assert store_app.sync.get(tid, owner="alice").progress.current == 5
    assert store_app.sync.outputs(tid, owner="alice") == [(1, {"x": 1})]


def test_purge_deletes_only_expired_records(store_app: Errands) -> None:
    a, b, c = submit(store_app, 3)
    store_app.sync.cancel(a, owner="alice")
    store_app.sync.cancel(b, owner="alice")
    past = datetime.now(UTC) - timedelta(seconds=1)

    from sqlalchemy import update

    from errands.store.schema import task_table

    with store_app.db.engine.begin() as conn:
        conn.execute(update(task_table).where(task_table.c.id == a).values(expires_at=past))
    assert store_app.db.write(driver(store_app).task_purge_expired, datetime.now(UTC), 100) == (
        1,
        [],
    )
    assert {r.id for r in store_app.sync.list(owner="alice")} == {b, c}


def test_fast_paths_write_what_the_sqlalchemy_types_write(store_app: Errands) -> None:
    """The hot-path statements (store/sqlite_fast.py, store/postgres_fast.py) and the
    SQLAlchemy Core statements store identical values."""
    from sqlalchemy import text

    from errands.store.driver import task_row

    [task] = store_app._tasks("job", [{"i": 1, "s": "é"}], owner="alice", priority=3)
    store_app.db.write(store_app.db.driver.task_create, [task])  # the driver's own statement
    row = task_row(task)
    twin = dict(row, id=row["id"][:-4] + "ffff")
    with store_app.db.engine.begin() as conn:
        conn.execute(task_table.insert(), twin)  # the SQLAlchemy Core path
    columns = "payload, status, run_at, created_at, updated_at, cancel_requested, version"

    def raw(task_id: str) -> Any:
        with store_app.db.engine.connect() as conn:
            sql = text(
                f"SELECT {columns}, result, finished_at, expires_at FROM errands_task WHERE id = :i"
            )
            return tuple(conn.execute(sql, {"i": task_id}).one())

    assert raw(row["id"]) == raw(twin["id"])
    # An outcome written both ways.
    claim(store_app, "w1", limit=1)
    finished = datetime.now(UTC)
    keep = finished + timedelta(days=1)
    finish(
        store_app, "w1", Outcome(row["id"], Status.SUCCEEDED, result={"n": [1, 2]}, expires_at=keep)
    )
    stamp = store_app.sync.get(row["id"], owner="alice").finished_at
    with store_app.db.engine.begin() as conn:  # the same values through the Core types
        conn.execute(
            task_table.update()
            .where(task_table.c.id == twin["id"])
            .values(
                status="succeeded",
                result={"n": [1, 2]},
                finished_at=stamp,
                expires_at=keep,
                error_type=None,
                error_message=None,
                error_detail=None,
                updated_at=stamp,
            )
        )
    fast, core = raw(row["id"]), raw(twin["id"])
    assert fast[:6] + fast[7:] == core[:6] + core[7:]  # all but the version
    assert store_app.sync.get(row["id"], owner="alice").result == {"n": [1, 2]}


@pytest.mark.databases("sqlite")
def test_only_writes_marked_non_durable_skip_the_fsync(app: Errands) -> None:
    """With synchronous=FULL (the default), claims/heartbeats/progress may skip the
    fsync; every other write keeps it."""

    def level(conn: Any) -> int:
        return int(conn.exec_driver_sql("PRAGMA synchronous").scalar())

    full, normal = 2, 1
    assert app.db.write(level) == full
    assert app.db.write(level, durable=False) == normal
    assert app.db.write(level) == full
    assert app.db.write(level, durable=False) == normal
    assert app.db.read(level) in (full, normal)  # reads do not commit anything
    relaxed = Errands(str(app.db.url) + "?synchronous=normal")
    try:
        assert relaxed.db.write(level) == normal
        assert relaxed.db.write(level, durable=False) == normal
    finally:
        relaxed.close()


@pytest.mark.databases("sqlite")
def test_sqlite_fast_read_returns_what_the_sqlalchemy_types_return(store_app: Errands) -> None:
    """The driver's ``task_get`` and ``task_version`` read on the DBAPI cursor on SQLite;
    the record must equal the one the SQLAlchemy Core query and types build, in every
    state."""
    from errands.store import codec

    get_any = task_table.select().where(task_table.c.id == sqlalchemy.bindparam("_id"))
    d = driver(store_app)

    running = store_app.sync.submit("job", {}, owner="alice").id
    done = store_app.sync.submit("job", {}, owner="bob").id
    failed = store_app.sync.submit("job", {}, owner="bob").id
    claimed = {c.task_id for c in claim(store_app, "w1", limit=3)}
    assert claimed == {running, done, failed}
    queued = store_app.sync.submit("job", {"s": "é", "n": [1, 2.5, None]}, owner="alice").id
    cancelled = store_app.sync.submit("job", {}, owner="bob").id
    store_app.sync.cancel(cancelled, owner="bob")
    store_app.db.write(
        driver(store_app).attempt_report,
        "w1",
        [Report(running, 0, (2.0, 7.0, "two"))],
        [],
        now=time.time(),
    )
    keep = datetime.now(UTC) + timedelta(days=1)
    finish(store_app, "w1", Outcome(done, Status.SUCCEEDED, result=42, expires_at=keep))
    finish(
        store_app,
        "w1",
        Outcome(
            failed, Status.FAILED, error_type="TaskFailed", error_message="no", error_detail="tb"
        ),
    )
    for task_id in (queued, running, done, failed, cancelled, "missing"):
        with store_app.db.engine.connect() as conn:
            row = conn.execute(get_any, {"_id": task_id}).first()
            core = None if row is None else codec.record(row._mapping)
            fast = d.task_get(conn, task_id, None)
            assert fast == core
            if core is not None:
                assert fast is not None and fast.error_detail == core.error_detail
                assert d.task_version(conn, task_id, core.owner) == core.version
                assert d.task_get(conn, task_id, "someone-else") is None
                assert d.task_version(conn, task_id, "someone-else") is None


@pytest.mark.parametrize("autocommit", [False, True])
def test_claim_round_says_when_the_next_job_is_due(store_app: Errands, autocommit: bool) -> None:
    """The worker's claim: jobs up to the limit and, when fewer were due, when the next
    one waiting becomes due. On PostgreSQL one statement, also run in autocommit."""

    def claim_round(limit: int, at: float | None = None) -> tuple[list[Claimed], float | None]:
        return store_app.db.write(
            store_app.db.driver.job_claim,
            "w1",
            names=NAMES,
            limit=limit,
            now=at or now,
            lease_seconds=30,
            autocommit=autocommit,
        )

    due_now = submit(store_app, 3)
    later = store_app.sync.submit("job", {}, owner="alice", run_at=timedelta(seconds=60)).id
    # A job whose record stopped being queued behind the queue's back is dropped.
    orphan = submit(store_app, 1)[0]
    with store_app.db.engine.begin() as conn:
        conn.execute(
            task_table.update().where(task_table.c.id == orphan).values(status="cancelled")
        )
    now = time.time()
    claimed, due = claim_round(2)
    assert [c.task_id for c in claimed] == due_now[:2] and due is None  # the limit was reached
    assert all(c.attempt == 1 and c.owner == "alice" for c in claimed)
    claimed, due = claim_round(10)
    assert [c.task_id for c in claimed] == due_now[2:]
    assert due is not None and abs(due - (now + 60)) < 2
    assert status(store_app, due_now[2]) is Status.RUNNING
    assert claim_round(10) == ([], due)  # nothing more until then, however often asked
    claimed, due = claim_round(10, at=now + 61)
    assert [c.task_id for c in claimed] == [later] and due is None
    assert job_count(store_app) == 4  # the orphan's job is gone; the four leased remain


def test_payloads_holding_nul_go_through_every_submit_path(store_app: Errands) -> None:
    """JSON may escape a NUL character; PostgreSQL's JSON operators refuse to read one
    (the batch insert passes such payloads as text), and its json type keeps it."""
    app = store_app
    odd = {"x": "a\x00b", "y": "\\u0000 as text"}
    single = app.sync.submit("job", odd, owner="ann")
    keyed = app.sync.submit("job", odd, owner="ann", idempotency_key="nul")
    batch = app.sync.submit_many("job", [odd, {"x": "plain"}], owner="ann")
    mixed = app.sync.submit_many("job", [odd, {"x": "plain"}], owner="bob")
    group = app.sync.submit_group("job", [odd, {"x": "plain"}], owner="ann")
    parts = app.sync.parts(group.id, owner="ann")
    for record in [single, keyed, *batch, *mixed, *parts]:
        stored = app.sync.get(record.id, owner=record.owner)
        assert stored.payload == record.payload
    assert app.sync.get(single.id, owner="ann").payload == odd
    assert [p.payload for p in parts] == [odd, {"x": "plain"}]


def test_count_is_the_owners_records_with_the_lists_filters(store_app: Errands) -> None:
    @store_app.task
    def other(ctx: TaskContext, payload: dict[str, Any]) -> None:
        return None

    a, b, _ = submit(store_app, 3)
    store_app.sync.submit("other", {}, owner="alice")
    store_app.sync.submit("job", {}, owner="bob")
    store_app.sync.submit("other", {}, owner="bob")
    store_app.sync.cancel(a, owner="alice")
    store_app.sync.cancel(b, owner="alice")
    count = store_app.sync.count
    assert count(owner="alice") == 4
    assert count(owner="alice", name="job") == 3
    assert count(owner="alice", status="cancelled") == 2
    assert count(owner="alice", status=Status.QUEUED, name="job") == 1
    assert count(owner="alice", status="running") == 0
    assert count(owner="bob") == 2  # never alice's
    assert count(owner="carol") == 0
    assert count(owner=ANY_OWNER, name="other") == 2
    # The same numbers as the lists they count.
    for status in (None, "queued", "cancelled"):
        for name in (None, "job", "other"):
            listed = store_app.sync.list(owner="alice", status=status, name=name, limit=500)
            assert count(owner="alice", status=status, name=name) == len(listed.items)
    with pytest.raises(ValueError):
        count(owner="alice", status="nonsense")


async def test_count_on_the_event_loop(store_app: Errands) -> None:
    await store_app.submit("job", {}, owner="alice")
    assert await store_app.count(owner="alice", name="job") == 1
    assert await store_app.count(owner="alice", name="nothing") == 0


def test_lists_and_counts_of_groups_or_all_but_them(store_app: Errands) -> None:
    """``is_group``: True keeps groups' own records, False every other record (their
    parts included); the count says the same as the list."""
    (single,) = submit(store_app, 1)
    group = store_app.sync.submit_group("job", [{"i": 1}, {"i": 2}], owner="alice")
    store_app.sync.submit_group("job", [{"i": 3}], owner="bob")
    parts = {p.id for p in store_app.sync.parts(group.id, owner="alice")}
    assert len(parts) == 2
    for is_group, expected in ((True, {group.id}), (False, {single, *parts}), (None, None)):
        listed = store_app.sync.list(owner="alice", is_group=is_group, limit=500).items
        if expected is not None:
            assert {r.id for r in listed} == expected, is_group
        assert store_app.sync.count(owner="alice", is_group=is_group) == len(listed)
    assert store_app.sync.count(owner="alice", name="job", is_group=True) == 1
    assert store_app.sync.count(owner="alice", status=group.status, is_group=True) == 1
    assert store_app.sync.count(owner="alice", status="succeeded", is_group=True) == 0
    assert store_app.sync.count(owner=ANY_OWNER, is_group=True) == 2
