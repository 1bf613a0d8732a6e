"""The Python API: submit, get, list, cancel, wait, outputs, delete; errors; owner
isolation; the sync facade; the transactional twin."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, Field
from sqlalchemy import create_engine, func, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from errands import (
    ANY_OWNER,
    Errands,
    InvalidPayload,
    InvalidTransition,
    PayloadTooLarge,
    Status,
    TaskContext,
    TaskNotFound,
    UnknownTask,
    WaitTimeout,
)
from errands.ids import is_task_id, new_task_id
from errands.store.schema import job_table, output_table, task_table

# The conformance suite: every test runs on SQLite and on PostgreSQL.
pytestmark = [pytest.mark.databases("sqlite", "postgresql"), pytest.mark.celery]


class SearchIn(BaseModel):
    query: str = Field(min_length=1, max_length=100)
    limit: int = 10


def register(app: Errands) -> None:
    @app.task(max_attempts=2)
    async def search(ctx: TaskContext, payload: SearchIn) -> dict[str, Any]:
        ctx.emit({"hit": payload.query})
        return {"query": payload.query, "hits": 1}

    @app.task
    def anything(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    @app.task
    async def block(ctx: TaskContext, payload: dict[str, Any]) -> None:
        await asyncio.sleep(60)


def counts(app: Errands) -> tuple[int, int, int]:
    app.db.ensure_schema()
    with app.db.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (task_table, job_table, output_table)
        )


@pytest.fixture
def api(app: Errands) -> Errands:
    register(app)
    return app


# -- submit -----------------------------------------------------------------------------
async def test_submit_returns_queued_record(api: Errands) -> None:
    rec = await api.submit("search", {"query": "x"}, owner="alice")
    assert is_task_id(rec.id)
    assert rec.status is Status.QUEUED and not rec.done
    assert rec.owner == "alice" and rec.name == "search"
    assert rec.payload == {"query": "x", "limit": 10}  # validated and normalised
    assert rec.version == 1 and rec.attempts == 0 and rec.max_attempts == 2
    stored = await api.get(rec.id, owner="alice")
    assert stored == rec
    assert counts(api) == (1, 1, 0)


def test_ids_are_time_ordered_and_unguessable() -> None:
    ids = [new_task_id(1_700_000_000 + i / 1000) for i in range(50)]
    assert ids == sorted(ids)
    same_ms = {new_task_id(1_700_000_000.0) for _ in range(1000)}
    assert len(same_ms) == 1000  # 74 random bits: no collisions
    burst = [new_task_id() for _ in range(5000)]  # many per millisecond
    assert burst == sorted(burst)  # one process's ids keep their order


@pytest.mark.parametrize(
    ("name", "payload", "error", "text"),
    [
        ("nope", {}, UnknownTask, "nope"),
        ("search", {}, InvalidPayload, "query"),
        ("search", {"query": ""}, InvalidPayload, "query"),
        ("search", {"query": "x", "limit": "many"}, InvalidPayload, "limit"),
        ("search", "not an object", InvalidPayload, "payload"),
        ("anything", {"x": object()}, InvalidPayload, "JSON"),
    ],
)
async def test_bad_submit_is_refused_and_writes_nothing(
    api: Errands, name: str, payload: Any, error: type[Exception], text: str
) -> None:
    with pytest.raises(error) as info:
        await api.submit(name, payload, owner="alice")
    assert text in str(info.value)
    assert counts(api) == (0, 0, 0)


async def test_submit_many_one_transaction_in_order(api: Errands, run_worker: Any) -> None:
    queries = [f"q{i}" for i in range(250)]
    records = await api.submit_many("search", [{"query": q} for q in queries], owner="alice")
    assert [r.payload["query"] for r in records] == queries
    assert [r.id for r in records] == sorted(r.id for r in records)  # submit order kept
    assert all(r.status is Status.QUEUED and r.owner == "alice" for r in records)
    assert counts(api) == (250, 250, 0)
    assert await api.get(records[7].id, owner="alice") == records[7]
    async with run_worker(api, concurrency=8):
        for rec in records:
            done = await api.wait(rec.id, owner="alice", timeout=20, poll=0.05)
            assert done.status is Status.SUCCEEDED
            assert done.result == {"query": rec.payload["query"], "hits": 1}
    assert await api.submit_many("search", [], owner="alice") == []
    # A large batch: still one transaction.
    many = await api.submit_many("anything", [{"i": i} for i in range(4500)], owner="bob")
    assert counts(api) == (4750, 4500, 250)
    assert (await api.get(many[-1].id, owner="bob")).payload == {"i": 4499}


@pytest.mark.parametrize(
    ("payloads", "error"),
    [
        ([{"query": "a"}, {"query": ""}, {"query": "c"}], InvalidPayload),
        ([{"query": "a"}, "not an object"], InvalidPayload),
        ({"query": "a"}, TypeError),  # one payload, not a list of them
        ("abc", TypeError),
    ],
)
async def test_submit_many_refuses_all_if_one_is_bad(
    api: Errands, payloads: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await api.submit_many("search", payloads, owner="alice")
    with pytest.raises(UnknownTask):
        await api.submit_many("nope", [{}], owner="alice")
    assert counts(api) == (0, 0, 0)


def test_submit_many_sync_and_in_callers_transaction(api: Errands, db_url: str) -> None:
    engine = create_engine(db_url)
    with Session(engine) as session:
        api.sync.submit_many("search", [{"query": "a"}] * 3, owner="bob", connection=session)
        session.rollback()
    assert counts(api) == (0, 0, 0)
    with Session(engine) as session:
        kept = api.sync.submit_many(
            "search", [{"query": "a"}] * 3, owner="bob", priority=5, connection=session
        )
        session.commit()
    engine.dispose()
    more = api.sync.submit_many("search", ({"query": str(i)} for i in range(2)), owner="bob")
    assert counts(api) == (5, 5, 0)
    stored = api.sync.list(owner="bob").items
    assert {r.id for r in stored} == {r.id for r in kept + more}
    assert {r.priority for r in stored if r.id in {k.id for k in kept}} == {5}


async def test_invalid_payload_names_the_field(api: Errands) -> None:
    with pytest.raises(InvalidPayload) as info:
        await api.submit("search", {"query": "x", "limit": "many"}, owner="alice")
    assert info.value.errors[0]["loc"] == ["limit"]


async def test_oversized_payload_is_refused(db_url: str) -> None:
    app = Errands(db_url, max_payload_bytes=1000)
    register(app)
    try:
        with pytest.raises(PayloadTooLarge) as info:
            await app.submit("anything", {"blob": "x" * 2000}, owner="alice")
        assert info.value.limit == 1000 and info.value.size > 2000
        assert counts(app) == (0, 0, 0)
        await app.submit("anything", {"blob": "x" * 100}, owner="alice")
    finally:
        app.close()


@pytest.mark.parametrize("owner", ["", None, 42, "nul\x00byte"])
async def test_owner_is_required(api: Errands, owner: Any) -> None:
    with pytest.raises(ValueError, match="owner"):
        await api.submit("search", {"query": "x"}, owner=owner)
    assert counts(api) == (0, 0, 0)
    with pytest.raises(ValueError, match="owner"):  # no read takes it either
        await api.get(new_task_id(), owner=owner)


async def test_run_at_and_priority(api: Errands) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    a = await api.submit("search", {"query": "x"}, owner="alice", run_at=later, priority=5)
    assert abs((a.run_at - later).total_seconds()) < 0.001 and a.priority == 5
    b = await api.submit("search", {"query": "x"}, owner="alice", run_at=timedelta(seconds=30))
    assert b.run_at > b.created_at + timedelta(seconds=29)
    with pytest.raises(ValueError, match="timezone"):
        await api.submit("search", {"query": "x"}, owner="alice", run_at=datetime.now())


# -- owner isolation ----------------------------------------------------------------------
async def test_other_owner_sees_exactly_what_a_missing_id_gets(api: Errands) -> None:
    rec = await api.submit("search", {"query": "secret"}, owner="alice")
    missing = new_task_id()

    async def outcome(coro: Any) -> tuple[type[BaseException], str]:
        with pytest.raises(Exception) as info:
            await coro
        return type(info.value), str(info.value)

    for op in (
        lambda i: api.get(i, owner="bob"),
        lambda i: api.cancel(i, owner="bob"),
        lambda i: api.wait(i, owner="bob", timeout=0.1),
        lambda i: api.outputs(i, owner="bob"),
        lambda i: api.delete(i, owner="bob"),
    ):
        theirs = await outcome(op(rec.id))
        absent = await outcome(op(missing))
        assert theirs == absent
        assert theirs[0] is TaskNotFound
    page = await api.list(owner="bob")
    assert page.items == []
    # and nothing was changed by bob's attempts
    again = await api.get(rec.id, owner="alice")
    assert again == rec
    # a malformed id is also just "not found"
    with pytest.raises(TaskNotFound):
        await api.get("../../etc/passwd", owner="alice")


async def test_admin_any_owner(api: Errands) -> None:
    rec = await api.submit("search", {"query": "x"}, owner="alice")
    assert (await api.get(rec.id, owner=ANY_OWNER)).id == rec.id
    assert [r.id for r in await api.list(owner=ANY_OWNER)] == [rec.id]


# -- list -----------------------------------------------------------------------------------
async def test_list_newest_first_with_cursor_and_filters(api: Errands) -> None:
    mine = [(await api.submit("search", {"query": f"q{i}"}, owner="alice")).id for i in range(7)]
    await api.submit("search", {"query": "other"}, owner="bob")
    await api.cancel(mine[0], owner="alice")
    seen: list[str] = []
    cursor = None
    while True:
        page = await api.list(owner="alice", limit=3, cursor=cursor)
        seen += [r.id for r in page]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(mine))
    cancelled = await api.list(owner="alice", status="cancelled")
    assert [r.id for r in cancelled] == [mine[0]]
    assert len(await api.list(owner="alice", name="search", status=Status.QUEUED)) == 6
    with pytest.raises(ValueError):
        await api.list(owner="alice", limit=0)
    with pytest.raises(ValueError):
        await api.list(owner="alice", status="bogus")
    with pytest.raises(ValueError, match="NUL"):
        await api.list(owner="alice", name="search\x00")


# -- cancel / delete / wait ----------------------------------------------------------------
async def test_cancel_queued_is_immediate_and_final(api: Errands) -> None:
    rec = await api.submit("search", {"query": "x"}, owner="alice")
    done = await api.cancel(rec.id, owner="alice")
    assert done.status is Status.CANCELLED and done.done and done.finished_at is not None
    assert done.version == 2 and done.expires_at is not None
    assert counts(api) == (1, 0, 0)  # the job is gone
    again = await api.cancel(rec.id, owner="alice")  # a finished task is left as it is
    assert again == done


async def test_delete(api: Errands, run_worker: Any) -> None:
    rec = await api.submit("block", {}, owner="alice")
    with pytest.raises(InvalidTransition):
        await api.delete(rec.id, owner="alice")  # still queued
    await api.cancel(rec.id, owner="alice")
    await api.delete(rec.id, owner="alice")
    with pytest.raises(TaskNotFound):
        await api.get(rec.id, owner="alice")
    assert counts(api) == (0, 0, 0)


async def test_wait_times_out_with_the_last_record(api: Errands) -> None:
    rec = await api.submit("block", {}, owner="alice")
    with pytest.raises(WaitTimeout) as info:
        await api.wait(rec.id, owner="alice", timeout=0.2)
    assert info.value.record.id == rec.id and info.value.record.status is Status.QUEUED


async def test_wait_is_woken_by_the_worker(api: Errands, run_worker: Any) -> None:
    rec = await api.submit("search", {"query": "x"}, owner="alice")
    async with run_worker(api):
        done = await api.wait(rec.id, owner="alice", timeout=10, poll=30)
    assert done.status is Status.SUCCEEDED and done.result == {"query": "x", "hits": 1}


# -- the sync facade -------------------------------------------------------------------------
def test_sync_facade(api: Errands) -> None:
    rec = api.sync.submit("search", {"query": "x"}, owner="alice")
    assert api.sync.get(rec.id, owner="alice") == rec
    assert [r.id for r in api.sync.list(owner="alice")] == [rec.id]
    with pytest.raises(TaskNotFound):
        api.sync.get(rec.id, owner="bob")
    with pytest.raises(TaskNotFound):
        api.sync.cancel(rec.id, owner="bob")
    with pytest.raises(WaitTimeout):
        api.sync.wait(rec.id, owner="alice", timeout=0.1)
    assert api.sync.outputs(rec.id, owner="alice") == []
    assert api.sync.cancel(rec.id, owner="alice").status is Status.CANCELLED
    assert api.sync.wait(rec.id, owner="alice", timeout=1).status is Status.CANCELLED
    api.sync.delete(rec.id, owner="alice")
    assert counts(api) == (0, 0, 0)


# -- transactional submit -------------------------------------------------------------------
async def test_submit_in_callers_connection(api: Errands, db_url: str, run_worker: Any) -> None:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        conn.begin()
        rec = await api.submit("search", {"query": "rolled back"}, owner="alice", connection=conn)
        conn.rollback()
    assert counts(api) == (0, 0, 0)
    with pytest.raises(TaskNotFound):
        await api.get(rec.id, owner="alice")

    with engine.connect() as conn, conn.begin():
        rec = await api.submit("search", {"query": "kept"}, owner="alice", connection=conn)
    async with run_worker(api):
        done = await api.wait(rec.id, owner="alice", timeout=10)
    assert done.status is Status.SUCCEEDED
    engine.dispose()


def test_submit_in_callers_session(api: Errands, db_url: str) -> None:
    engine = create_engine(db_url)
    with Session(engine) as session:
        api.sync.submit("search", {"query": "no"}, owner="alice", connection=session)
        session.rollback()
    assert counts(api) == (0, 0, 0)
    with Session(engine) as session:
        rec = api.sync.submit("search", {"query": "yes"}, owner="alice", connection=session)
        session.commit()
    assert api.sync.get(rec.id, owner="alice").status is Status.QUEUED
    engine.dispose()


async def test_submit_in_callers_async_session(api: Errands, db_url: str) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession

    engine = create_async_engine(db_url.replace("sqlite://", "sqlite+aiosqlite://"))
    async with AsyncSession(engine) as session:
        await api.submit("search", {"query": "no"}, owner="alice", connection=session)
        await session.rollback()
    assert counts(api) == (0, 0, 0)
    async with AsyncSession(engine) as session:
        rec = await api.submit("search", {"query": "yes"}, owner="alice", connection=session)
        await session.commit()
    assert (await api.get(rec.id, owner="alice")).status is Status.QUEUED
    await engine.dispose()


async def test_connection_must_be_sqlalchemy(api: Errands) -> None:
    with pytest.raises(TypeError):
        await api.submit("search", {"query": "x"}, owner="alice", connection=object())
    assert counts(api) == (0, 0, 0)
