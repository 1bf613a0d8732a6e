"""Fair claims, on both databases: owners take turns, so one owner's backlog does not
delay another's tasks; ``max_running_per_owner`` caps how many of an owner's tasks of
one name run at once; priorities still order the claims."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from errands import ANY_OWNER, Errands, Status, TaskContext
from errands.errors import ConfigurationError
from errands.store.schema import task_table
from tests.conftest import eventually_async

pytestmark = pytest.mark.databases("sqlite", "postgresql")

T = task_table.c


def started_in_order(app: Errands, name: str) -> list[str]:
    """Owners of the tasks of ``name`` that have started, in the order they started."""
    with app.db.engine.connect() as conn:
        return list(
            conn.execute(
                select(T.owner)
                .where(T.name == name, T.started_at.is_not(None))
                .order_by(T.started_at, T.id)
            ).scalars()
        )


async def test_a_backlog_does_not_delay_another_owner(app: Errands, run_worker: Any) -> None:
    starts: list[str] = []

    @app.task
    async def export(ctx: TaskContext, payload: dict[str, Any]) -> None:
        starts.append(ctx.owner)
        await asyncio.sleep(0.01)

    app.db.ensure_schema()
    await app.submit_many("export", [{"n": i} for i in range(500)], owner="alice")
    async with run_worker(app, concurrency=4):
        await eventually_async(lambda: len(starts) >= 8, "alice's first tasks", timeout=60)
        await app.submit_many("export", [{"n": i} for i in range(5)], owner="bob")
        before = len(starts)
        await eventually_async(lambda: starts.count("bob") == 5, "bob's tasks", timeout=60)
        last_bob = max(i for i, owner in enumerate(starts) if owner == "bob")
        alice_meanwhile = starts[before:last_bob].count("alice")
    # Every one of bob's tasks started before alice started 20 more (here: about 5, one
    # turn each, plus those already claimed when bob submitted).
    assert alice_meanwhile < 20, starts[before : last_bob + 1]
    # The record layer saw the same order.
    recorded = started_in_order(app, "export")
    last = max(i for i, owner in enumerate(recorded) if owner == "bob")
    assert recorded[: last + 1].count("alice") < len(recorded[:before]) + 20


def claim_one_by_one(app: Errands, count: int, **options: Any) -> list[str]:
    """Ids of the jobs ``count`` claims of one job each take (the claim order)."""
    now = time.time() + 1
    order: list[str] = []
    for _ in range(count):
        with app.db.transaction() as conn:
            got = app.db.driver.job_claim(conn, "w", limit=1, now=now, lease_seconds=30, **options)[
                0
            ]
        order += [c.task_id for c in got]
    return order


async def test_priority_first_then_turns_then_due_time(app: Errands) -> None:
    @app.task
    async def job(ctx: TaskContext, payload: dict[str, Any]) -> None:
        return None

    app.db.ensure_schema()
    a = await app.submit_many("job", [{"n": i} for i in range(4)], owner="alice")
    b = await app.submit_many("job", [{"n": i} for i in range(2)], owner="bob")
    urgent = await app.submit("job", {"n": "urgent"}, owner="alice", priority=5)
    order = claim_one_by_one(app, 10, names=["job"])
    # The high priority first; then alice and bob alternate while both wait; then the
    # rest of alice's backlog in the order she submitted it.
    assert order == [urgent.id, a[0].id, b[0].id, a[1].id, b[1].id, a[2].id, a[3].id]


async def test_a_new_owner_joins_at_the_frontier(app: Errands) -> None:
    """Turns already taken do not count: an owner arriving late goes next, not first
    for as long as the others have waited."""

    @app.task
    async def job(ctx: TaskContext, payload: dict[str, Any]) -> None:
        return None

    app.db.ensure_schema()
    a = await app.submit_many("job", [{"n": i} for i in range(10)], owner="alice")
    assert claim_one_by_one(app, 6, names=["job"]) == [r.id for r in a[:6]]
    b = await app.submit_many("job", [{"n": i} for i in range(3)], owner="bob")
    # alice's turns 6..9 wait; bob's start at the frontier (the lowest waiting turn, 6):
    # they alternate, alice first on equal turns as her job has waited longer.
    assert claim_one_by_one(app, 10, names=["job"]) == [
        a[6].id,
        b[0].id,
        a[7].id,
        b[1].id,
        a[8].id,
        b[2].id,
        a[9].id,
    ]


async def test_max_running_per_owner(app: Errands, run_worker: Any) -> None:
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    @app.task(max_running_per_owner=2)
    async def export(ctx: TaskContext, payload: dict[str, Any]) -> None:
        running[ctx.owner] += 1
        peak[ctx.owner] = max(peak[ctx.owner], running[ctx.owner])
        await asyncio.sleep(0.05)
        running[ctx.owner] -= 1

    @app.task
    async def search(ctx: TaskContext, payload: dict[str, Any]) -> None:
        await asyncio.sleep(0.05)

    app.db.ensure_schema()
    owners = ["alice", "bob", "carol"]
    for owner in owners:
        await app.submit_many("export", [{"n": i} for i in range(12)], owner=owner)
    await app.submit_many("search", [{"n": i} for i in range(12)], owner="alice")
    beside = [0]  # the most of alice's tasks (both names) seen running at once
    observed_peak: Counter[tuple[str, str]] = Counter()

    def sample() -> int:
        with app.db.engine.connect() as conn:
            rows = conn.execute(
                select(T.owner, T.name, func.count())
                .where(T.status == Status.RUNNING.value)
                .group_by(T.owner, T.name)
            ).all()
            left = conn.execute(
                select(func.count()).where(
                    T.status.in_([Status.QUEUED.value, Status.RUNNING.value])
                )
            ).scalar_one()
        now = {(owner, name): n for owner, name, n in rows}
        for key, n in now.items():
            observed_peak[key] = max(observed_peak[key], n)
        beside[0] = max(
            beside[0], now.get(("alice", "search"), 0) + now.get(("alice", "export"), 0)
        )
        return int(left)

    # Two workers of 4 slots each claim concurrently.
    async with run_worker(app, concurrency=4), run_worker(app, concurrency=4):
        # sample() counts the tasks left, noting the peaks it sees on the way
        await eventually_async(lambda: sample() == 0, "the tasks to finish", timeout=90, every=0.01)
    assert all(observed_peak[(o, "export")] <= 2 for o in owners), observed_peak
    assert max(peak.values()) <= 2, peak
    # The cap was reached (the sampling saw it) and is per task name: alice's searches
    # ran beside her exports.
    assert max(observed_peak[(o, "export")] for o in owners) == 2
    assert beside[0] > 2
    page = await app.list(owner=ANY_OWNER, status=Status.SUCCEEDED, limit=100)
    assert len(page.items) == 48


async def test_the_app_default_cap_and_bad_caps(db_url: str) -> None:
    app = Errands(db_url, max_running_per_owner=1)
    try:

        @app.task
        async def a(ctx: TaskContext, payload: dict[str, Any]) -> None:
            return None

        @app.task(max_running_per_owner=3)
        async def b(ctx: TaskContext, payload: dict[str, Any]) -> None:
            return None

        assert app.running_caps(["a", "b"]) == {"a": 1, "b": 3}
        app.db.ensure_schema()
        await app.submit_many("a", [{}, {}, {}], owner="alice")
        await app.submit_many("b", [{}, {}, {}, {}], owner="alice")
        now = time.time() + 1
        with app.db.transaction() as conn:
            claimed, _ = app.db.driver.job_claim(
                conn,
                "w",
                names=["a", "b"],
                limit=10,
                now=now,
                lease_seconds=30,
                caps=app.running_caps(["a", "b"]),
            )
        assert Counter(c.name for c in claimed) == {"a": 1, "b": 3}
    finally:
        app.close()
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigurationError):
            Errands(db_url, max_running_per_owner=bad)  # type: ignore[arg-type]
        other = Errands(db_url)
        try:
            with pytest.raises(ConfigurationError):
                other.task(max_running_per_owner=bad)(a.fn)  # type: ignore[arg-type]
        finally:
            other.close()
