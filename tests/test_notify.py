"""The cross-process notifiers: Unix datagram sockets beside a SQLite file, LISTEN/NOTIFY
on PostgreSQL. Two notifier instances stand for two processes (each has its own
listener and, on PostgreSQL, its own token), so what one publishes must reach the other
once, and reach its own subscribers once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import text

from errands.events import Notifier, Subscription, notifier_for
from errands.events.notifier import Hint
from errands.records import Change, Status
from errands.store.database import Database
from tests.conftest import eventually, stays

pytestmark = pytest.mark.databases("sqlite", "postgresql")


class Inbox:
    """Collects what a notifier delivers, from whatever thread delivers it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs = 0
        self.hints: list[Hint | None] = []
        self.cancels: list[str] = []
        self.changes: list[Change] = []

    def on_jobs(self, hint: Hint | None) -> None:
        with self.lock:
            self.jobs += 1
            self.hints.append(hint)

    def on_cancel(self, ids: Sequence[str]) -> None:
        with self.lock:
            self.cancels.extend(ids)

    def on_changes(self, changes: Sequence[Change]) -> None:
        with self.lock:
            self.changes.extend(changes)

    def subscribe(self, notifier: Notifier) -> list[Subscription]:
        """Hear everything ``notifier`` delivers: worker messages and changes."""
        return [
            notifier.listen_worker(self.on_jobs, self.on_cancel),
            notifier.subscribe_changes(self.on_changes),
        ]


@pytest.fixture
def pair(db_url: str) -> Iterator[tuple[Notifier, Notifier]]:
    db = Database(db_url)
    db.ensure_schema()
    first, second = notifier_for(db), notifier_for(db)
    yield first, second
    first.close()
    second.close()
    db.close()


def changes(n: int, owner: str = "alice") -> list[Change]:
    return [Change(f"task-{i:05d}", owner, i + 1, Status.RUNNING) for i in range(n)]


def test_messages_reach_the_other_process_and_our_own_subscribers_once(
    pair: tuple[Notifier, Notifier],
) -> None:
    a, b = pair
    assert a.cross_process and b.cross_process
    mine, theirs = Inbox(), Inbox()
    subs = mine.subscribe(a) + theirs.subscribe(b)
    a.publish_jobs()
    a.publish_cancel(["t1", "t2"])
    sent = changes(500)  # more than one message's worth: sent in chunks
    a.publish_changes(sent)
    eventually(
        lambda: theirs.jobs >= 1 and len(theirs.changes) >= 500 and theirs.cancels,
        "the other process to hear it all",
    )
    stays(  # anything delivered twice would arrive in this window
        lambda: (
            (theirs.jobs, len(theirs.cancels), len(theirs.changes)) == (1, 2, 500)
            and (mine.jobs, len(mine.cancels), len(mine.changes)) == (1, 2, 500)
        ),
        "each message delivered once",
        0.3,
    )
    assert theirs.cancels == ["t1", "t2"]
    assert sorted(theirs.changes, key=lambda c: c.version) == sent
    assert theirs.jobs == 1
    # In-process subscribers hear it at once, and not a second time from the server.
    assert (mine.jobs, mine.cancels, mine.changes) == (1, ["t1", "t2"], sent)
    for sub in subs:
        sub.close()


def test_a_new_jobs_hint_names_its_job_in_every_process(
    pair: tuple[Notifier, Notifier],
) -> None:
    """A hint about one job carries its task name and id to the other process and to
    this one's subscribers (the workers choose among themselves who claims it); a hint
    without one still reaches them as None."""
    a, b = pair
    mine, theirs = Inbox(), Inbox()
    subs = mine.subscribe(a) + theirs.subscribe(b)
    a.publish_jobs(("export", "task-00001"))
    eventually(lambda: theirs.jobs >= 1, "the other process to hear the hint")
    a.publish_jobs()
    eventually(lambda: theirs.jobs >= 2, "the other process to hear the plain hint")
    assert theirs.hints == [("export", "task-00001"), None]
    assert mine.hints == [("export", "task-00001"), None]
    for sub in subs:
        sub.close()


def test_a_closed_subscription_hears_nothing(pair: tuple[Notifier, Notifier]) -> None:
    a, b = pair
    gone, kept = Inbox(), Inbox()
    sub = b.subscribe_changes(gone.on_changes)
    b.subscribe_changes(kept.on_changes)
    sub.close()
    a.publish_changes(changes(3))
    eventually(lambda: len(kept.changes) == 3, "the kept subscription to hear 3 changes")
    assert gone.changes == []


def test_close_is_prompt_and_final(db_url: str) -> None:
    db = Database(db_url)
    db.ensure_schema()
    notifier = notifier_for(db)
    inbox = Inbox()
    inbox.subscribe(notifier)
    started = time.monotonic()
    notifier.close()
    assert time.monotonic() - started < 1.0  # listeners are woken, not waited out
    notifier.publish_jobs()  # publishing after close is a no-op, not an error
    notifier.publish_changes(changes(1))
    db.close()


@pytest.mark.databases("postgresql")
def test_listener_reconnects_after_its_connection_is_killed(
    pair: tuple[Notifier, Notifier], db_url: str
) -> None:
    """The server dropping the LISTEN connection (a restart, a failover, an admin's
    pg_terminate_backend) costs messages sent while it is down, nothing more: the
    listener reconnects with backoff and tells workers to look for jobs."""
    a, b = pair
    inbox = Inbox()
    inbox.subscribe(b)
    a.publish_changes(changes(1))
    eventually(lambda: len(inbox.changes) == 1, "the first change")

    db = Database(db_url)
    with db.engine.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        ).all()
        conn.commit()
    db.close()
    assert len(killed) == 2  # both of b's listeners (jobs and changes); a listens on none

    eventually(
        lambda: inbox.jobs >= 1, "a look-for-jobs call", timeout=10
    )  # "look for jobs": some may have come

    def published_again() -> bool:  # sent until one arrives: the listener is back
        a.publish_changes([Change("task-after", "alice", 9, Status.SUCCEEDED)])
        return len(inbox.changes) >= 2

    eventually(published_again, "a change sent after the reconnect", timeout=10, every=0.1)
    assert inbox.changes[0].task_id == "task-00000"
    assert inbox.changes[-1].task_id == "task-after"


def test_payload_with_unusual_characters_round_trips(pair: tuple[Notifier, Notifier]) -> None:
    a, b = pair
    inbox = Inbox()
    b.subscribe_changes(inbox.on_changes)
    odd: list[Any] = [Change("t'1", 'o"wner; DROP', 1, Status.QUEUED)]
    odd.append(Change("t2", "ünïcode ☃", 2, Status.CANCELLED))
    a.publish_changes(odd)
    eventually(lambda: len(inbox.changes) == 2, "both changes")
    assert inbox.changes == odd


def test_a_batch_delivers_everything_it_held(pair: tuple[Notifier, Notifier]) -> None:
    a, b = pair
    inbox = Inbox()
    inbox.subscribe(b)
    with a.batch():
        a.publish_jobs()
        with a.batch():  # nested: sent with the outer block
            a.publish_cancel(["t9"])
        a.publish_changes(changes(130))
    eventually(
        lambda: inbox.jobs and inbox.cancels and len(inbox.changes) == 130, "the whole batch"
    )
    assert inbox.cancels == ["t9"]


def test_writes_carry_their_notifications_on_postgresql_only(
    db_url: str, pair: tuple[Notifier, Notifier]
) -> None:
    """A submit and a round of outcomes send their own notifications from inside the
    statement (PostgreSQL): they reach every process's subscribers once — the sending
    process's too, through its listener — and only if the write commits."""
    from errands.ids import new_task_id
    from errands.store.values import NewTask, Outcome

    a, b = pair
    db = Database(db_url)
    try:
        if db.dialect == "sqlite":  # Unix datagrams cannot ride in a statement
            assert a.carrier(jobs=True, written=True) is None
            assert not db.driver.carries
            return
        mine, theirs = Inbox(), Inbox()
        subs = mine.subscribe(a) + theirs.subscribe(b)
        now = time.time()
        task = NewTask(new_task_id(now), "alice", "job", {}, "{}", 1, 0, now, now)
        queued = Change(task.id, "alice", 1, Status.QUEUED)
        carrier = a.carrier(jobs=True, hint=("job", task.id), changes=[queued])
        with pytest.raises(RuntimeError), db.transaction() as conn:
            db.driver.task_create(conn, [task], carrier)
            raise RuntimeError("the transaction rolls back")
        db.write(db.driver.task_create, [task], carrier)
        eventually(  # jobs and changes come on two channels, each on its own listener
            lambda: theirs.jobs and theirs.changes and mine.jobs and mine.changes,
            "both processes to hear the submit on both channels",
        )
        stays(
            lambda: (
                (theirs.jobs, theirs.changes, mine.jobs, mine.changes) == (1, [queued], 1, [queued])
            ),
            "the committed submit heard once, the rolled-back one never",
            0.3,
        )
        assert theirs.hints == mine.hints == [("job", task.id)]  # the carried hint's job
        [claimed], _ = db.write(
            db.driver.job_claim, "w1", names=["job"], limit=1, now=time.time(), lease_seconds=30
        )
        done = Outcome(task.id, Status.SUCCEEDED, result=1, floor=claimed.output_floor)
        db.write(
            db.driver.attempt_finish, "w1", [done], now=time.time(), carrier=a.carrier(written=True)
        )
        finished = Change(task.id, "alice", 3, Status.SUCCEEDED)
        eventually(
            lambda: theirs.changes[-1:] == [finished] and mine.changes[-1:] == [finished],
            "both processes to hear the outcome the statement wrote",
        )
        for sub in subs:
            sub.close()
    finally:
        db.close()
