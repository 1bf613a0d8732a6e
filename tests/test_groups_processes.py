"""Groups with real worker processes, on both databases: 200 parts across two workers
(the group's progress never goes back; its result lists the 200 results in order), and
each group's ``then`` queued exactly once while workers are SIGKILLed over and over."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from errands import Errands, Status
from tests.apps import groups
from tests.conftest import WorkerProcess, eventually

pytestmark = [pytest.mark.databases("sqlite", "postgresql"), pytest.mark.slow]

APP = "tests.apps.groups:app"


def test_two_hundred_parts_across_two_workers(
    app: Errands, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    groups.install(app)
    group = app.sync.submit_group(
        "part", [{"n": n, "delay": 0.02} for n in range(200)], owner="ann"
    )
    workers = [spawn_worker(APP, "-c", "8") for _ in range(2)]
    seen: list[float] = []

    def finished() -> bool:
        record = app.sync.get(group.id, owner="ann")
        seen.append(record.progress.current or 0.0)
        return record.done

    eventually(finished, "the group to finish", timeout=120, every=0.02)
    for w in workers:
        assert w.terminate() == 0
    done = app.sync.get(group.id, owner="ann")
    assert done.status is Status.SUCCEEDED
    assert done.result == [n * 10 for n in range(200)]
    assert seen == sorted(seen), "the group's progress went back"
    assert len(set(seen)) > 5  # it moved in steps, not at once
    parts = app.sync.parts(group.id, owner="ann", limit=500)
    assert len(parts) == 200 and {p.status for p in parts} == {Status.SUCCEEDED}


def test_then_is_queued_once_per_group_under_a_sigkill_loop(
    app: Errands, spawn_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    groups.install(app)
    log = tmp_path / "runs.log"
    env = {"ERRANDS_TEST_LOG": str(log)}
    # 20 groups of 4 parts that take the same time, so a group's last parts end
    # together, in different workers.
    made = [
        app.sync.submit_group(
            "steady", [{"n": n, "delay": 0.1} for n in range(4)], owner="ann", then="collect"
        )
        for _ in range(20)
    ]

    def start() -> WorkerProcess:
        return spawn_worker(APP, "-c", "4", "--lease", "2", env=env)

    workers = [start(), start()]
    rng = random.Random(17)
    deadline = time.monotonic() + 12
    kills = 0
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.3, 0.9))
        victim = workers.pop(rng.randrange(len(workers)))
        victim.kill()
        kills += 1
        workers.append(start())

    def all_done() -> bool:
        return all(app.sync.get(g.id, owner="ann").done for g in made)

    eventually(all_done, "every group to finish", timeout=120)
    for w in workers:
        w.terminate()
    runs = Counter(line.split()[1] for line in log.read_text().splitlines())
    for g in made:
        record = app.sync.get(g.id, owner="ann")
        parts = app.sync.parts(g.id, owner="ann")
        then = parts[-1]
        assert record.status is Status.SUCCEEDED, (record.error, kills)
        assert record.result == sum(n * 10 for n in range(4))
        assert then.status is Status.SUCCEEDED and then.name == "collect"
        # Queued once: each of its runs was an attempt of its own (a kill during a run
        # makes another attempt, as for any task), never two runs of one attempt.
        assert 1 <= runs[then.id] <= then.attempts, (runs[then.id], then.attempts)
        assert then.payload == {"results": [0, 10, 20, 30]}
    assert kills >= 10
