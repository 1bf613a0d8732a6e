"""Groups on both databases (and the Celery engine where marked): one record watched for
many parts — its progress, output, result, failure and cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from errands import (
    Errands,
    InvalidPayload,
    InvalidTransition,
    Status,
    TaskNotFound,
    UnknownTask,
)
from errands.store.schema import task_table
from tests.apps import groups
from tests.conftest import eventually_async

pytestmark = [pytest.mark.databases("sqlite", "postgresql"), pytest.mark.celery]

T = task_table.c


@pytest.fixture
def gapp(app: Errands) -> Errands:
    app = groups.install(app)
    app.db.ensure_schema()
    return app


def task_count(app: Errands) -> int:
    with app.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(task_table)).scalar_one())


async def test_a_group_succeeds_with_its_parts_results_in_order(
    gapp: Errands, run_worker: Any
) -> None:
    app = gapp
    group = await app.submit_group("part", [{"n": n} for n in range(30)], owner="ann")
    assert (group.status, group.group_size, group.name) == (Status.RUNNING, 30, "part")
    assert (group.progress.current, group.progress.total) == (0.0, 30.0)
    seen: list[float] = []

    async def watch() -> None:
        while True:
            record = await app.get(group.id, owner="ann")
            seen.append(record.progress.current or 0.0)
            if record.done:
                return
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    async with run_worker(app, concurrency=4):
        done = await app.wait(group.id, owner="ann", timeout=60)
    await watcher
    assert done.status is Status.SUCCEEDED
    assert done.result == [n * 10 for n in range(30)]
    assert done.progress.current == 30.0
    assert seen == sorted(seen), "the group's progress went back"
    parts = await app.parts(group.id, owner="ann", limit=500)
    assert [p.group_index for p in parts] == list(range(30))
    assert {p.parent_id for p in parts} == {group.id}
    assert {p.status for p in parts} == {Status.SUCCEEDED}
    # Every part's item, in the group's output, tagged with its part.
    items = await app.outputs(group.id, owner="ann")
    assert sorted(item["part"] for _, item in items) == list(range(30))
    assert all(item["item"] == {"n": item["part"]} for _, item in items)
    assert [seq for seq, _ in items] == list(range(1, 31))


async def test_then_gets_the_results_and_gives_the_groups_result(
    gapp: Errands, run_worker: Any
) -> None:
    app = gapp
    group = await app.submit_group(
        "part", [{"n": n} for n in range(10)], owner="ann", then="collect"
    )
    parts = await app.parts(group.id, owner="ann")
    assert [p.name for p in parts] == ["part"] * 10 + ["collect"]
    assert parts[-1].status is Status.QUEUED  # waiting for the parts, with no job
    async with run_worker(app, concurrency=4):
        done = await app.wait(group.id, owner="ann", timeout=60)
    assert (done.status, done.result) == (Status.SUCCEEDED, sum(n * 10 for n in range(10)))
    then = (await app.parts(group.id, owner="ann", after=9))[0]
    assert then.payload == {"results": [n * 10 for n in range(10)]}
    assert then.status is Status.SUCCEEDED


async def test_a_failing_part_fails_the_group_and_cancels_the_rest(
    gapp: Errands, run_worker: Any
) -> None:
    app = gapp
    payloads = [{"n": 0, "fail": True}] + [{"n": n, "delay": 0.2} for n in range(1, 40)]
    group = await app.submit_group("part", payloads, owner="ann", then="collect")
    async with run_worker(app, concurrency=2):
        done = await app.wait(group.id, owner="ann", timeout=60)

        async def all_ended() -> bool:
            return all(p.done for p in await app.parts(group.id, owner="ann", limit=500))

        await eventually_async(all_ended, "every part to end", timeout=60)
    assert done.status is Status.FAILED
    assert done.error is not None and done.error.type == "PartFailed"
    assert done.error.message.startswith("part 0 failed")
    parts = await app.parts(group.id, owner="ann", limit=500)
    statuses = [p.status for p in parts]
    assert statuses[0] is Status.FAILED
    assert Status.CANCELLED in statuses  # the rest did not all run
    assert parts[-1].status is Status.CANCELLED  # then never ran
    with pytest.raises(InvalidTransition):  # its payload is a summary, not a task's
        await app.retry(group.id, owner="ann")


async def test_cancelling_the_group_cancels_every_part(gapp: Errands, run_worker: Any) -> None:
    app = gapp
    payloads = [{"n": n, "steps": 50, "delay": 0.05} for n in range(20)]
    group = await app.submit_group("part", payloads, owner="ann")
    async with run_worker(app, concurrency=4, heartbeat_interval=0.2, lease_seconds=2):

        async def some_running() -> bool:
            parts = await app.parts(group.id, owner="ann")
            return any(p.status is Status.RUNNING for p in parts)

        await eventually_async(some_running, "a part to run", timeout=30)
        cancelled = await app.cancel(group.id, owner="ann")
        assert cancelled.status is Status.CANCELLED

        async def all_ended() -> bool:
            return all(p.done for p in await app.parts(group.id, owner="ann"))

        await eventually_async(all_ended, "every part to end", timeout=30)
    parts = await app.parts(group.id, owner="ann")
    assert {p.status for p in parts} <= {Status.CANCELLED, Status.SUCCEEDED}
    assert sum(p.status is Status.CANCELLED for p in parts) >= 16
    assert (await app.get(group.id, owner="ann")).status is Status.CANCELLED


async def test_cancelling_the_group_stops_its_running_parts_at_once(
    gapp: Errands, run_worker: Any
) -> None:
    """The running parts are told at once, not at their worker's next heartbeat (here
    one a minute, longer than the wait below)."""
    app = gapp
    payloads = [{"n": n, "steps": 1000, "delay": 0.05} for n in range(3)]  # 50 s each
    group = await app.submit_group("part", payloads, owner="ann")
    async with run_worker(app, concurrency=3, heartbeat_interval=60, lease_seconds=120):

        async def all_running() -> bool:
            parts = await app.parts(group.id, owner="ann")
            return all(p.status is Status.RUNNING for p in parts)

        await eventually_async(all_running, "every part to run", timeout=30)
        await app.cancel(group.id, owner="ann")

        seen: list[Any] = []

        async def all_cancelled() -> bool:
            parts = await app.parts(group.id, owner="ann")
            seen[:] = [(p.status.value, p.cancel_requested, p.attempts) for p in parts]
            return all(p.status is Status.CANCELLED for p in parts)

        try:
            await eventually_async(all_cancelled, "every part to be cancelled", timeout=20)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the parts: {seen}") from None


@pytest.mark.sql_engine_only("no worker needed: a queued part is cancelled")
async def test_cancelling_a_queued_part_tells_the_groups_watchers(gapp: Errands) -> None:
    app = gapp
    heard: list[Any] = []
    app.runtime.notifier.subscribe_changes(heard.extend)
    group = await app.submit_group("part", [{"n": 0}, {"n": 1}], owner="ann")
    first = (await app.parts(group.id, owner="ann"))[0]
    await app.cancel(first.id, owner="ann")
    ended = await app.get(group.id, owner="ann")
    assert ended.status is Status.FAILED

    def told(task_id: str, status: Status) -> bool:
        return any(c.task_id == task_id and c.status is status for c in heard)

    await eventually_async(
        lambda: told(group.id, Status.FAILED), "the group's change to be published", timeout=10
    )
    other = (await app.parts(group.id, owner="ann"))[1]
    await eventually_async(
        lambda: told(other.id, Status.CANCELLED), "the other part's change", timeout=10
    )


@pytest.mark.sql_engine_only("no worker needed: reads only")
async def test_another_owner_sees_neither_the_group_nor_its_parts(gapp: Errands) -> None:
    app = gapp
    group = await app.submit_group(
        "part", [{"n": n} for n in range(3)], owner="ann", then="collect"
    )
    parts = await app.parts(group.id, owner="ann")
    for task_id in [group.id, *(p.id for p in parts)]:
        with pytest.raises(TaskNotFound):
            await app.get(task_id, owner="bob")
    with pytest.raises(TaskNotFound):
        await app.parts(group.id, owner="bob")
    with pytest.raises(TaskNotFound):  # a part is not a group
        await app.parts(parts[0].id, owner="ann")
    with pytest.raises(TaskNotFound):
        await app.cancel(group.id, owner="bob")
    assert (await app.get(group.id, owner="ann")).status is Status.RUNNING


@pytest.mark.sql_engine_only("no worker needed: refusals write nothing")
async def test_bad_groups_are_refused_and_write_nothing(gapp: Errands) -> None:
    app = gapp
    with pytest.raises(ValueError):
        await app.submit_group("part", [], owner="ann")
    with pytest.raises(UnknownTask):
        await app.submit_group("nope", [{"n": 1}], owner="ann")
    with pytest.raises(UnknownTask):
        await app.submit_group("part", [{"n": 1}], owner="ann", then="nope")
    with pytest.raises(InvalidPayload):
        await app.submit_group("part", [{"n": 1}, {"n": float("nan")}], owner="ann")
    with pytest.raises(ValueError):
        await app.submit_group("part", [{"n": 1}], owner="")
    assert task_count(app) == 0


@pytest.mark.sql_engine_only("one transaction of the store: no worker")
def test_ten_thousand_parts_in_one_transaction(gapp: Errands) -> None:
    app = gapp
    group = app.sync.submit_group("part", [{"n": n} for n in range(10_000)], owner="ann")
    assert group.group_size == 10_000
    assert task_count(app) == 10_001
    last = app.sync.parts(group.id, owner="ann", after=9_994)
    assert [p.group_index for p in last] == list(range(9_995, 10_000))
