"""Schedules on both databases: users' schedules are owner-scoped and limited, ticks
create exactly one task each (carrying the schedule and the tick), missed ticks make
one catch-up task, and pausing stops ticks."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from errands import (
    ANY_OWNER,
    Errands,
    InvalidPayload,
    InvalidSchedule,
    ScheduleNotFound,
    Status,
    TaskContext,
    TaskNotFound,
)
from errands.schedules.ticker import Ticker
from errands.store.schema import schedule_table, task_table
from tests.conftest import eventually_async

pytestmark = pytest.mark.databases("sqlite", "postgresql")

S = schedule_table.c
T = task_table.c


@pytest.fixture
def sched_app(db_url: str) -> Any:
    from pydantic import BaseModel

    app = Errands(db_url, min_schedule_interval=0, max_schedules_per_owner=3)

    class Export(BaseModel):
        folder: str

    @app.task(payload=Export)
    async def export(ctx: TaskContext, payload: Any) -> str:
        return str(payload.folder)

    app.db.ensure_schema()
    yield app
    app.close()


def scheduled_tasks(app: Errands, schedule_id: str) -> list[Any]:
    with app.db.engine.connect() as conn:
        return list(
            conn.execute(
                select(T.id, T.owner, T.scheduled_for, T.schedule_id)
                .where(T.schedule_id == schedule_id)
                .order_by(T.scheduled_for)
            )
        )


def schedule_count(app: Errands) -> int:
    with app.db.engine.connect() as conn:
        return len(conn.execute(select(S.id)).all())


async def test_a_users_schedule_is_theirs_alone(sched_app: Errands) -> None:
    app = sched_app
    s = await app.schedules.create(
        "export", {"folder": "inbox"}, owner="ann", cron="0 8 * * 1", timezone="Europe/Berlin"
    )
    assert (s.owner, s.name, s.payload, s.cron, s.every, s.timezone) == (
        "ann",
        "export",
        {"folder": "inbox"},
        "0 8 * * 1",
        None,
        "Europe/Berlin",
    )
    assert not s.paused and s.last_task_id is None and s.next_run_at is not None
    assert s.next_run_at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin")).hour == 8
    assert await app.schedules.get(s.id, owner="ann") == s
    assert [x.id for x in await app.schedules.list(owner="ann")] == [s.id]
    assert await app.schedules.list(owner="bob") == []
    for call in (
        app.schedules.get,
        app.schedules.pause,
        app.schedules.resume,
        app.schedules.delete,
    ):
        with pytest.raises(ScheduleNotFound) as other:
            await call(s.id, owner="bob")
        with pytest.raises(ScheduleNotFound) as missing:
            await call("0" * 32, owner="ann")
        assert str(other.value) == str(missing.value)
    with pytest.raises(ScheduleNotFound):
        await app.schedules.get("not an id", owner="ann")
    # The admin sees everyone's.
    assert [x.id for x in await app.schedules.list(owner=ANY_OWNER)] == [s.id]

    paused = await app.schedules.pause(s.id, owner="ann")
    assert paused.paused and paused.next_run_at is None
    resumed = await app.schedules.resume(s.id, owner="ann")
    assert not resumed.paused and resumed.next_run_at is not None
    await app.schedules.delete(s.id, owner="ann")
    with pytest.raises(ScheduleNotFound):
        await app.schedules.get(s.id, owner="ann")


async def test_bad_schedules_are_refused_and_write_nothing(sched_app: Errands) -> None:
    app = sched_app
    strict = Errands(app.db.url, max_schedules_per_owner=3)  # the default minimum: 60 s
    for definition in app.registry:
        strict.registry.add(definition)
    cases: list[tuple[Any, dict[str, Any], type[Exception] | None, str | None]] = [
        (app, {"cron": "0 25 * * *"}, InvalidSchedule, "cron"),
        (app, {"cron": "0 8 * * *", "timezone": "Nowhere/Land"}, InvalidSchedule, "timezone"),
        (app, {"every": -1}, InvalidSchedule, "every"),
        (strict, {"every": 1}, InvalidSchedule, "every"),
        (strict, {"cron": "*/1 * * * *", "every": None}, None, None),  # 60 s: allowed
        (app, {"every": 60, "name": "nope"}, InvalidSchedule, "name"),
        (app, {"every": 60, "payload": {"folder": 3}}, InvalidPayload, None),
        (app, {"every": 60, "owner": ""}, InvalidSchedule, "owner"),
    ]
    try:
        for target, options, error, field in cases:
            args = {"name": "export", "payload": {"folder": "x"}, "owner": "ann"} | options
            name, payload = args.pop("name"), args.pop("payload")
            if error is None:
                made = target.sync.schedules.create(name, payload, **args)
                target.sync.schedules.delete(made.id, owner="ann")
                continue
            with pytest.raises(error) as caught:
                await target.schedules.create(name, payload, **args)
            if field is not None:
                assert getattr(caught.value, "field", None) == field, options
        assert schedule_count(app) == 0
        # At most 3 per owner (this app's limit); other owners are not affected.
        for i in range(3):
            await app.schedules.create("export", {"folder": str(i)}, owner="ann", every=60)
        with pytest.raises(InvalidSchedule) as caught:
            await app.schedules.create("export", {"folder": "4"}, owner="ann", every=60)
        assert caught.value.field == "schedules"
        await app.schedules.create("export", {"folder": "b"}, owner="bob", every=60)
        assert schedule_count(app) == 4
    finally:
        strict.close()


async def test_ticks_create_one_task_each_for_the_owner(
    sched_app: Errands, run_worker: Any
) -> None:
    app = sched_app
    s = await app.schedules.create(
        "export", {"folder": "a"}, owner="ann", every=timedelta(seconds=0.5)
    )
    async with run_worker(app, poll_interval=0.1):
        await eventually_async(
            lambda: len(scheduled_tasks(app, s.id)) >= 3, "three ticks", timeout=20
        )
    rows = scheduled_tasks(app, s.id)
    assert {r.owner for r in rows} == {"ann"}
    ticks = [r.scheduled_for.timestamp() for r in rows]
    steps = [round(b - a, 3) for a, b in itertools.pairwise(ticks)]
    assert set(steps) == {0.5}, steps  # consecutive ticks, none twice, none missing
    first = await app.get(rows[0].id, owner="ann")
    assert first.schedule_id == s.id and first.scheduled_for == rows[0].scheduled_for
    assert first.status is Status.SUCCEEDED and first.result == "a"
    with pytest.raises(TaskNotFound):
        await app.get(rows[0].id, owner="bob")
    after = await app.schedules.get(s.id, owner="ann")
    assert after.last_task_id in {r.id for r in scheduled_tasks(app, s.id)}


def stored_next(app: Errands, schedule_id: str) -> float:
    """The schedule's next tick as stored (``Schedule.next_run_at`` is that to the
    microsecond)."""
    with app.db.engine.connect() as conn:
        value = conn.execute(select(S.next_run_at).where(S.id == schedule_id)).scalar_one()
        return float(value)


def make_due(app: Errands, schedule_id: str, tick: float) -> None:
    """Move the schedule's next tick to ``tick`` (in the past: firing with a clock
    ahead would date this process's later task ids in the future)."""
    with app.db.engine.begin() as conn:
        conn.execute(update(schedule_table).where(S.id == schedule_id).values(next_run_at=tick))


def fire_once(app: Errands, now: float | None = None) -> None:
    Ticker(app.runtime, "test", app.registry.names()).fire(time.time() if now is None else now)


async def test_missed_ticks_make_one_catch_up_task(sched_app: Errands) -> None:
    app = sched_app
    s = await app.schedules.create("export", {"folder": "a"}, owner="ann", every=60)
    # Nothing ran for an hour: sixty ticks were missed.
    assert s.next_run_at is not None
    with app.db.engine.begin() as conn:
        conn.execute(
            update(schedule_table).where(S.id == s.id).values(next_run_at=time.time() - 3600)
        )
    now = time.time()
    fire_once(app, now)
    fire_once(app, now)
    rows = scheduled_tasks(app, s.id)
    assert len(rows) == 1
    after = await app.schedules.get(s.id, owner="ann")
    assert after.next_run_at is not None and now < after.next_run_at.timestamp() <= now + 60
    assert after.last_task_id == rows[0].id


async def test_a_paused_schedule_makes_no_tasks(sched_app: Errands) -> None:
    app = sched_app
    s = await app.schedules.create("export", {"folder": "a"}, owner="ann", every=1)
    await app.schedules.pause(s.id, owner="ann")
    make_due(app, s.id, time.time() - 10)
    fire_once(app)
    assert scheduled_tasks(app, s.id) == []
    resumed = await app.schedules.resume(s.id, owner="ann")
    assert resumed.next_run_at is not None and resumed.next_run_at.timestamp() > time.time()
    make_due(app, s.id, time.time() - 0.5)
    fire_once(app)
    assert len(scheduled_tasks(app, s.id)) == 1


def test_workers_firing_together_make_one_task_per_tick(sched_app: Errands) -> None:
    """Eight tickers fire the same due ticks at once, over and over: each tick has one
    task (the database's unique index and the guarded move decide)."""
    app = sched_app
    s = app.sync.schedules.create("export", {"folder": "a"}, owner="ann", every=1)
    tickers = [Ticker(app.runtime, f"w{i}", ["export"]) for i in range(8)]
    errors: list[BaseException] = []

    def run(ticker: Ticker, now: float) -> None:
        try:
            ticker.fire(now)
        except BaseException as exc:
            errors.append(exc)

    made: list[float] = []
    for _ in range(10):
        made.append(round(time.time() - 0.5, 3))
        make_due(app, s.id, made[-1])
        now = time.time()
        threads = [threading.Thread(target=run, args=(t, now)) for t in tickers]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert errors == []
    ticks = [round(r.scheduled_for.timestamp(), 3) for r in scheduled_tasks(app, s.id)]
    assert ticks == made


async def test_a_unique_task_is_not_doubled_by_its_schedule(db_url: str) -> None:
    app = Errands(db_url, min_schedule_interval=0)

    @app.task(unique=True)
    async def sync_inbox(ctx: TaskContext, payload: dict[str, Any]) -> None:
        return None

    try:
        app.db.ensure_schema()
        s = await app.schedules.create("sync_inbox", {}, owner="ann", every=1)
        start = time.time() - 5
        make_due(app, s.id, start)
        fire_once(app)
        make_due(app, s.id, start + 1)
        fire_once(app)  # the first is still queued: no second task
        assert len(scheduled_tasks(app, s.id)) == 1
        assert stored_next(app, s.id) > time.time()
    finally:
        app.close()


@pytest.mark.celery  # the ticks' tasks are published to the broker like any submit
async def test_a_code_schedule_runs_its_tasks_on_every_engine(
    app: Errands, run_worker: Any
) -> None:
    @app.task
    async def pulse(ctx: TaskContext, payload: dict[str, Any]) -> str:
        return f"{ctx.owner}:{payload['n']}"

    app.schedule("pulse", {"n": 1}, every=0.5, key="half-second")
    app.db.ensure_schema()
    async with run_worker(app, poll_interval=0.1):

        async def two_done() -> bool:
            page = await app.list(owner="system", status="succeeded")
            return len(page.items) >= 2

        await eventually_async(two_done, "two ticks run", timeout=30)
    page = await app.list(owner="system", status="succeeded")
    assert {r.result for r in page.items} == {"system:1"}
    listed = await app.schedules.list(owner=ANY_OWNER)
    assert [(s.code_key, s.owner, s.every) for s in listed] == [
        ("half-second", "system", timedelta(seconds=0.5))
    ]
    assert {r.schedule_id for r in page.items} == {listed[0].id}


@pytest.mark.databases("sqlite")
def test_reconciling_unchanged_schedules_takes_no_write_lock(db_url: str) -> None:
    """Every worker reconciles each heartbeat; on SQLite a write transaction, even an
    empty one, takes the database's one write lock. Once the stored schedules match the
    code, reconciling only reads: it runs while another connection holds that lock."""
    import sqlite3

    app = Errands(db_url, min_schedule_interval=0)

    @app.task
    async def pulse(ctx: TaskContext, payload: dict[str, Any]) -> str:
        return "ok"

    app.schedule("pulse", {"n": 1}, every=60, key="minutely")
    app.db.ensure_schema()
    try:
        ticker = Ticker(app.runtime, "w1", ["pulse"])
        ticker.reconcile(time.time())  # stores the declaration: a write
        assert schedule_count(app) == 1
        holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held
        try:
            ticker.reconcile(time.time())  # nothing differs: reads only
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    finally:
        app.close()
