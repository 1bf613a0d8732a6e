"""Schedules with real worker processes, on both databases: several workers fire one
task per tick (also while one is SIGKILLed and another starts), and the schedules
declared in code follow the code of the live workers (restarts and side-by-side
versions)."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select

from errands import ANY_OWNER, Errands
from errands.store.schema import schedule_table, task_table
from tests.conftest import WorkerProcess, eventually

pytestmark = [pytest.mark.databases("sqlite", "postgresql"), pytest.mark.slow]

S = schedule_table.c
T = task_table.c
APP = "tests.apps.scheduled:app"
# A short lease: reconciling runs every heartbeat (1 s), and a worker not seen for two
# leases (6 s) no longer counts as alive.
ARGS = ("--lease", "3", "--poll", "0.2")


@pytest.fixture
def sched(db_url: str) -> Iterator[Errands]:
    app = Errands(db_url)
    app.db.ensure_schema()
    yield app
    app.close()


@pytest.fixture
def start(
    spawn_worker: Callable[..., WorkerProcess],
) -> Callable[..., WorkerProcess]:
    def run(*schedules: dict[str, Any]) -> WorkerProcess:
        env = {"ERRANDS_TEST_SCHEDULES": json.dumps(list(schedules))}
        return spawn_worker(APP, *ARGS, env=env)

    return run


def ticks(app: Errands, key: str) -> list[float]:
    """The ticks of the code schedule ``key`` that made a task, in order."""
    with app.db.engine.connect() as conn:
        sid = conn.execute(select(S.id).where(S.code_key == key)).scalar()
        rows = conn.execute(
            select(T.scheduled_for).where(T.schedule_id == sid).order_by(T.scheduled_for)
        )
        return [r.scheduled_for.timestamp() for r in rows]


def declared(app: Errands) -> dict[str, Any]:
    """Code schedules in the database: key → (every, cron)."""
    with app.db.engine.connect() as conn:
        rows = conn.execute(
            select(S.code_key, S.every_seconds, S.cron).where(S.code_key.is_not(None))
        )
        return {r.code_key: (r.every_seconds, r.cron) for r in rows}


def assert_every_tick_once(found: list[float], step: float) -> None:
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(found)]
    assert gaps and set(gaps) == {step}, gaps  # none twice, none missing


def test_three_workers_make_one_task_per_tick(sched: Errands, start: Any) -> None:
    workers = [start({"key": "pulse", "every": 1}) for _ in range(3)]
    eventually(lambda: ticks(sched, "pulse"), "the first tick", timeout=30)
    time.sleep(10)
    found = ticks(sched, "pulse")
    for w in workers:
        assert w.terminate() == 0
    assert 9 <= len(found) <= 13, found
    assert_every_tick_once(found, 1.0)
    # Every tick's task ran, owned by the code schedule's owner.
    page = sched.sync.list(owner="system", name="beat", limit=500)
    assert len(page.items) >= len(found) - 2  # the last may still be queued at the stop
    assert all(r.schedule_id is not None for r in page.items)


def test_a_worker_killed_while_another_starts_still_one_task_per_tick(
    sched: Errands, start: Any
) -> None:
    a = start({"key": "pulse", "every": 1})
    b = start({"key": "pulse", "every": 1})
    eventually(lambda: len(ticks(sched, "pulse")) >= 3, "three ticks", timeout=30)
    a.kill()
    c = start({"key": "pulse", "every": 1})
    time.sleep(6)
    b.kill()  # c alone now, b's row still "alive" for a while
    time.sleep(4)
    found = ticks(sched, "pulse")
    assert c.terminate() == 0
    assert len(found) >= 10, found
    assert_every_tick_once(found, 1.0)


def test_code_schedules_follow_the_code_across_restarts(sched: Errands, start: Any) -> None:
    v1 = start({"key": "pulse", "every": 1})
    eventually(lambda: declared(sched) == {"pulse": (1.0, None)}, "v1's schedule", timeout=30)
    assert v1.terminate() == 0
    # v2: pulse changed, report added.
    v2 = start({"key": "pulse", "every": 2}, {"key": "report", "cron": "0 8 * * 1"})
    eventually(
        lambda: declared(sched) == {"pulse": (2.0, None), "report": (None, "0 8 * * 1")},
        "v2's schedules",
        timeout=30,
    )
    assert v2.terminate() == 0
    # v3 declares none: both stop.
    v3 = start()
    eventually(lambda: declared(sched) == {}, "no schedule left", timeout=30)
    assert v3.terminate() == 0
    # The code schedules were listed for admins while they existed, and a user never
    # saw them.
    assert sched.sync.schedules.list(owner="ann") == []
    assert sched.sync.schedules.list(owner=ANY_OWNER) == []


def test_two_versions_side_by_side_do_not_fight(sched: Errands, start: Any) -> None:
    old = start({"key": "pulse", "every": 1})
    eventually(lambda: declared(sched) == {"pulse": (1.0, None)}, "the old schedule", timeout=30)
    new = start({"key": "pulse", "every": 2})
    # Both run for a while: the row keeps the definition it has (no flip-flopping).
    seen = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        seen.add(declared(sched)["pulse"])
        time.sleep(0.2)
    assert seen == {(1.0, None)}
    # The old version stops: the new code's definition takes effect.
    assert old.terminate() == 0
    eventually(lambda: declared(sched) == {"pulse": (2.0, None)}, "the new schedule", timeout=30)
    assert new.terminate() == 0
