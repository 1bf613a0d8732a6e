"""Which worker claims a new job (``errands.peers``): of the workers that run its task
name, the one a hint chooses claims it at once; the others stay asleep. A chosen worker
with no free slot passes the hint to every worker, and a job whose chosen worker is
dead is claimed by another's poll."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import Connection

from errands import Errands, Status, TaskContext
from errands.ids import new_task_id
from errands.peers import Peers
from errands.store.codec import utc
from errands.store.values import Claimed
from errands.worker import QueueSource, Worker, WorkerSettings
from tests.conftest import FAST, eventually_async

pytestmark = pytest.mark.databases("sqlite", "postgresql")

OWNER = "alice"
# Hints only: the fallback poll would hide a worker that did not claim when chosen. A
# worker is live for two heartbeats: 2 s, so that a loaded machine's stall of half a
# second does not drop a worker from the others' lists in the middle of a test.
HINTS_ONLY: dict[str, Any] = FAST | {
    "poll_interval": 30.0,
    "heartbeat_interval": 1.0,
    "lease_seconds": 10.0,
}


def test_one_worker_of_those_that_run_the_name_is_chosen_for_each_job() -> None:
    ids = ["host:1:aa", "host:2:bb", "host:3:cc"]
    views = [Peers(me) for me in ids]
    for view in views:
        view.update([(w, ["export", "search"]) for w in ids] + [("host:9:zz", ["other"])])
    jobs = [new_task_id(time.time()) for _ in range(600)]
    chosen: Counter[str] = Counter()
    for job in jobs:
        yes = [view.me for view in views if view.chooses_me(("export", job))]
        assert len(yes) == 1, (job, yes)
        chosen[yes[0]] += 1
    assert all(n > 120 for n in chosen.values()), chosen  # spread, about 200 each
    # A worker that leaves moves only its own jobs: the others keep theirs.
    before = {job: next(v.me for v in views if v.chooses_me(("export", job))) for job in jobs}
    for view in views[:2]:
        view.update([(w, ["export"]) for w in ids[:2]])
    for job, me in before.items():
        if me != ids[2]:
            assert views[ids.index(me)].chooses_me(("export", job))
    # Not (yet) in its own list, or alone there: a worker claims.
    assert Peers("host:4:dd").chooses_me(("export", jobs[0]))
    alone = Peers(ids[0])
    alone.update([(ids[0], ["export"]), (ids[1], ["search"])])
    assert alone.chooses_me(("export", jobs[0]))


class CountingSource(QueueSource):
    """The SQL queue, counting this worker's claims: how many ran, and what each got."""

    def __init__(self) -> None:
        self.claims: list[list[str]] = []

    def claim(self, conn: Connection, limit: int, now: float) -> tuple[list[Claimed], float | None]:
        claimed, due = super().claim(conn, limit, now)
        self.claims.append([c.task_id for c in claimed])
        return claimed, due


def counting_worker(app: Errands, **settings: Any) -> tuple[Worker, CountingSource]:
    source = CountingSource()
    return Worker(app.runtime, WorkerSettings(**(HINTS_ONLY | settings)), source), source


async def run_all(workers: Sequence[Worker]) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(w.run()) for w in workers]
    await eventually_async(
        lambda: all(len(w.peers.workers("tick")) == len(workers) for w in workers),
        "every worker to see the others",
        timeout=10,
    )
    return tasks


async def stop_all(workers: Sequence[Worker], tasks: Sequence[asyncio.Task[None]]) -> None:
    for w in workers:
        w.stop()
        w.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)


def register_tick(app: Errands) -> None:
    @app.task
    async def tick(ctx: TaskContext, payload: dict[str, Any]) -> str:
        return "tock"


async def test_only_the_chosen_worker_claims_a_submitted_job(app: Errands) -> None:
    """Two idle workers hear every submit; only one claims, and it is the chosen one
    (before, both claimed and one of them came back empty-handed every time)."""
    register_tick(app)
    (first, one), (second, two) = counting_worker(app), counting_worker(app)
    tasks = await run_all([first, second])
    try:
        one.claims.clear()
        two.claims.clear()
        ran: list[str] = []
        for _ in range(30):
            record = await app.submit("tick", owner=OWNER)
            done = await app.wait(record.id, owner=OWNER, timeout=10)
            assert done.status is Status.SUCCEEDED
            ran.append(record.id)
    finally:
        await stop_all([first, second], tasks)
    # A worker that was not chosen may still take a job when it runs a round anyway
    # (a recheck, its own outcome) before the chosen one claims: rare, and harmless.
    # Without the choice, both claimed every job: about half the jobs went to the
    # worker that was not chosen, and one claim per job came back empty.
    strays = 0
    for worker, source in ((first, one), (second, two)):
        mine = {task_id for got in source.claims for task_id in got}
        strays += len(mine - {t for t in ran if worker.peers.chooses_me(("tick", t))})
    empty = sum(1 for source in (one, two) for got in source.claims if not got)
    assert strays <= 3 and empty <= 3, (strays, one.claims, two.claims)
    assert 0 < len(ran) - sum(map(len, one.claims)) < len(ran)  # both ran some


async def test_a_chosen_worker_without_a_free_slot_passes_the_job_on(app: Errands) -> None:
    register_tick(app)
    release = asyncio.Event()

    @app.task
    async def hold(ctx: TaskContext, payload: dict[str, Any]) -> str:
        await release.wait()
        return "released"

    # Only the worker with one slot runs the hold; both run ticks.
    (busy, _), (free, _) = counting_worker(app, concurrency=1), counting_worker(app, names=["tick"])
    tasks = await run_all([busy, free])
    try:
        held = await app.submit("hold", owner=OWNER)
        await eventually_async(
            lambda: _status(app, held.id) is Status.RUNNING, "the hold to run", timeout=10
        )
        # The full worker is chosen for some ticks: they must run at once all the same
        # (on the other worker), not after the 30 s poll.
        passed = 0
        for _ in range(12):
            record = await app.submit("tick", owner=OWNER)
            done = await app.wait(record.id, owner=OWNER, timeout=10)
            assert done.status is Status.SUCCEEDED
            passed += busy.peers.chooses_me(("tick", record.id))
        assert passed, "no tick chose the full worker: the test proved nothing"
    finally:
        release.set()
        await stop_all([busy, free], tasks)


async def test_a_job_whose_chosen_worker_is_dead_runs_after_a_poll(app: Errands) -> None:
    """A worker killed without its peers knowing yet is still in their lists: the jobs
    it is chosen for wait for another worker's poll, and run."""
    register_tick(app)
    now = time.time()
    dead = "host:1:dead"
    app.db.write(
        app.db.driver.worker_register,
        {
            "id": dead,
            "hostname": "elsewhere",
            "pid": 1,
            "process_key": None,
            "names": ["tick"],
            "concurrency": 4,
            "schedules": {},
            "started_at": utc(now),
            "seen_at": utc(now + 3600),  # seen "now" for the test's whole length
        },
    )
    alive, _ = counting_worker(app, poll_interval=0.5)
    tasks = [asyncio.create_task(alive.run())]
    try:
        await eventually_async(
            lambda: len(alive.peers.workers("tick")) == 2, "the worker to see both", timeout=10
        )
        waited: dict[bool, list[float]] = {True: [], False: []}
        while not (waited[True] and waited[False]) and len(waited[True] + waited[False]) < 40:
            t0 = time.monotonic()
            record = await app.submit("tick", owner=OWNER)
            done = await app.wait(record.id, owner=OWNER, timeout=10)
            assert done.status is Status.SUCCEEDED
            waited[alive.peers.chooses_me(("tick", record.id))].append(time.monotonic() - t0)
        assert waited[True] and waited[False]
    finally:
        await stop_all([alive], tasks)


def _status(app: Errands, task_id: str) -> Status:
    return app.sync.get(task_id, owner=OWNER).status


class PausingSource(QueueSource):
    """The SQL queue, whose next claim (``pause_next``) waits after it ran, until the
    test lets it return: a claim on its way back while a hint arrives."""

    def __init__(self) -> None:
        self.pause_next = False
        self.paused, self.go = threading.Event(), threading.Event()

    def claim(self, conn: Connection, limit: int, now: float) -> tuple[list[Claimed], float | None]:
        got = super().claim(conn, limit, now)
        if self.pause_next:
            self.pause_next = False
            self.paused.set()
            self.go.wait(10)
        return got


@pytest.mark.databases("postgresql")  # its claim commits alone: the submit can commit meanwhile
async def test_a_hint_heard_while_a_claim_is_on_its_way_is_not_lost(app: Errands) -> None:
    """A claim that ran just before a job committed comes back empty; the hint for that
    job, heard while the claim was on its way back, must still make the worker claim
    (it once ended up asleep until its poll: here 30 s)."""
    register_tick(app)
    source = PausingSource()
    worker = Worker(app.runtime, WorkerSettings(**HINTS_ONLY), source)
    tasks = await run_all([worker])
    try:
        source.pause_next = True
        worker._call_soon(worker._poke)  # a claim now: it finds nothing and waits
        assert await asyncio.to_thread(source.paused.wait, 10)
        assert not worker._hinted
        record = await asyncio.to_thread(app.sync.submit, "tick", owner=OWNER)
        await eventually_async(lambda: worker._hinted, "the hint to reach the worker")
        source.go.set()
        done = await app.wait(record.id, owner=OWNER, timeout=5)
        assert done.status is Status.SUCCEEDED
    finally:
        source.go.set()
        await stop_all([worker], tasks)
