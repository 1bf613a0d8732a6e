"""The worker, in process, on a real SQLite file: progress coalescing, output, retries
with backoff, timeouts, cancellation, priority and run_at, payloads, burst mode and the
process executor."""

from __future__ import annotations

import asyncio
import importlib
import os
import threading
import time
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from errands import Errands, Retry, Status, TaskContext, TaskFailed, TaskRecord
from tests.conftest import FAST, eventually_async, stays_async

# The conformance suite: every test runs on SQLite and on PostgreSQL.
pytestmark = [pytest.mark.databases("sqlite", "postgresql"), pytest.mark.celery]

OWNER = "alice"


# -- helpers ---------------------------------------------------------------------------
async def wait_thread_event(event: threading.Event, timeout: float = 10.0) -> None:
    ok = await asyncio.to_thread(event.wait, timeout)
    assert ok, "the task thread did not get there in time"


def add_marker(app: Errands) -> None:
    """Register ``marker``, a task that does nothing. A test proves that something did
    not happen by submitting one and waiting for it (``marker_done``): the worker has
    moved past the moment it would have happened."""

    @app.task
    async def marker(ctx: TaskContext, payload: dict[str, Any]) -> str:
        return "marker"


async def marker_done(app: Errands) -> None:
    submitted = await app.submit("marker", owner=OWNER)
    done = await app.wait(submitted.id, owner=OWNER, timeout=10)
    assert done.status is Status.SUCCEEDED and done.result == "marker"


def elapsed(record: TaskRecord) -> float:
    assert record.started_at is not None and record.finished_at is not None
    return (record.finished_at - record.started_at).total_seconds()


# -- 1. progress coalescing ------------------------------------------------------------
N_PROGRESS = 100_000


def _write_bound(record: TaskRecord) -> int:
    """The most writes a task may cost: submit, claim, one flush per progress interval
    while it ran (plus one for a flush in flight at either end), the outcome."""
    interval = FAST["progress_interval"]
    return 1 + 1 + int(elapsed(record) / interval) + 2 + 1


async def test_progress_is_coalesced_sync(app: Errands, run_worker: Any) -> None:
    @app.task
    def count_sync(ctx: TaskContext, payload: dict[str, Any]) -> str:
        for i in range(1, N_PROGRESS + 1):
            ctx.progress(i, N_PROGRESS, f"item {i}")
        return "ok"

    submitted = await app.submit("count_sync", owner=OWNER)
    async with run_worker(app):
        done = await app.wait(submitted.id, owner=OWNER, timeout=30)
    assert done.status is Status.SUCCEEDED
    assert done.progress.current == N_PROGRESS
    assert done.progress.total == N_PROGRESS
    assert done.progress.message == f"item {N_PROGRESS}"
    assert done.progress.percent == 100.0
    # 100,000 calls, a handful of writes.
    assert 3 <= done.version <= _write_bound(done), (done.version, elapsed(done))


async def test_progress_is_coalesced_async(app: Errands, run_worker: Any) -> None:
    @app.task
    async def count_async(ctx: TaskContext, payload: dict[str, Any]) -> str:
        for i in range(1, N_PROGRESS + 1):
            ctx.progress(i, N_PROGRESS, f"item {i}")
            if i % 1000 == 0:
                await asyncio.sleep(0.001)  # let the worker's flush loop run
        return "ok"

    submitted = await app.submit("count_async", owner=OWNER)
    async with run_worker(app):
        done = await app.wait(submitted.id, owner=OWNER, timeout=30)
    assert done.status is Status.SUCCEEDED
    assert (done.progress.current, done.progress.total) == (N_PROGRESS, N_PROGRESS)
    assert done.progress.message == f"item {N_PROGRESS}"
    assert 3 <= done.version <= _write_bound(done), (done.version, elapsed(done))


async def test_progress_is_visible_while_running(app: Errands, run_worker: Any) -> None:
    release = asyncio.Event()

    @app.task
    async def halfway(ctx: TaskContext, payload: dict[str, Any]) -> None:
        ctx.progress(5, 10, "half")
        await release.wait()
        ctx.progress(10, 10, "all")

    submitted = await app.submit("halfway", owner=OWNER)
    async with run_worker(app):

        async def at_half() -> bool:
            r = await app.get(submitted.id, owner=OWNER)
            return r.progress.current == 5

        await eventually_async(at_half, "progress 5 of 10", timeout=10)
        running = await app.get(submitted.id, owner=OWNER)
        assert running.status is Status.RUNNING
        assert running.progress.total == 10 and running.progress.message == "half"
        assert running.progress.percent == 50.0
        release.set()
        done = await app.wait(submitted.id, owner=OWNER, timeout=10)
    assert done.status is Status.SUCCEEDED
    assert (done.progress.current, done.progress.message) == (10, "all")


# -- 2. emit ---------------------------------------------------------------------------
async def test_emitted_items_are_readable_while_running(app: Errands, run_worker: Any) -> None:
    release = asyncio.Event()

    @app.task
    async def producer(ctx: TaskContext, payload: dict[str, Any]) -> int:
        for i in range(1, 4):
            ctx.emit({"n": i})
        await release.wait()
        ctx.emit({"n": 4})
        ctx.emit("five")
        return 5

    submitted = await app.submit("producer", owner=OWNER)
    async with run_worker(app):

        async def three_visible() -> bool:
            return len(await app.outputs(submitted.id, owner=OWNER)) >= 3

        await eventually_async(three_visible, "three outputs", timeout=10)
        assert (await app.get(submitted.id, owner=OWNER)).status is Status.RUNNING
        assert await app.outputs(submitted.id, owner=OWNER) == [
            (1, {"n": 1}),
            (2, {"n": 2}),
            (3, {"n": 3}),
        ]
        release.set()
        done = await app.wait(submitted.id, owner=OWNER, timeout=10)
    assert done.status is Status.SUCCEEDED and done.result == 5
    everything = await app.outputs(submitted.id, owner=OWNER)
    assert everything == [(1, {"n": 1}), (2, {"n": 2}), (3, {"n": 3}), (4, {"n": 4}), (5, "five")]
    assert await app.outputs(submitted.id, owner=OWNER, after=3) == [(4, {"n": 4}), (5, "five")]
    assert await app.outputs(submitted.id, owner=OWNER, after=1, limit=2) == everything[1:3]
    assert await app.outputs(submitted.id, owner=OWNER, after=5) == []


# -- 3. retries ------------------------------------------------------------------------
async def test_retries_with_exponential_backoff(app: Errands, run_worker: Any) -> None:
    base = 0.4
    starts: list[float] = []

    @app.task(max_attempts=3, backoff=base)
    async def flaky(ctx: TaskContext, payload: dict[str, Any]) -> str:
        starts.append(time.monotonic())
        ctx.emit(f"attempt {ctx.attempt}")
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} broke")
        return f"ok on {ctx.attempt}"

    submitted = await app.submit("flaky", owner=OWNER)
    async with run_worker(app):
        done = await app.wait(submitted.id, owner=OWNER, timeout=20)
    assert done.status is Status.SUCCEEDED
    assert done.result == "ok on 3"
    assert done.attempts == 3
    assert len(starts) == 3
    assert done.error is None  # a success clears the earlier attempts' error
    # the output is the last attempt's; each attempt numbers its items above all before
    # (attempt 2's floor is 2, past item 1; attempt 3's is 4, past item 3)
    assert await app.outputs(submitted.id, owner=OWNER) == [(5, "attempt 3")]
    assert done.output_floor == 4
    for n, (a, b) in enumerate(pairwise(starts), start=1):
        delay = base * 2 ** (n - 1)
        gap = b - a
        # equal jitter: at least half the delay; at most the delay plus polling slack.
        assert gap >= delay / 2, (n, gap)
        assert gap < delay + 3.0, (n, gap)


async def test_retry_with_explicit_delay(app: Errands, run_worker: Any) -> None:
    starts: list[float] = []

    @app.task(max_attempts=2, backoff=0.0)
    async def again(ctx: TaskContext, payload: dict[str, Any]) -> int:
        starts.append(time.time())
        if ctx.attempt == 1:
            raise Retry(delay=2.0)  # a window a loaded machine's poll cannot miss
        return ctx.attempt

    submitted = await app.submit("again", owner=OWNER)
    async with run_worker(app):

        async def retrying() -> bool:
            r = await app.get(submitted.id, owner=OWNER)
            return r.status is Status.QUEUED and r.attempts == 1

        await eventually_async(retrying, "the task to be queued for a retry", timeout=10)
        between = await app.get(submitted.id, owner=OWNER)
        assert between.error is not None and between.error.type == "Retry"
        assert between.run_at.timestamp() >= starts[0] + 2.0
        done = await app.wait(submitted.id, owner=OWNER, timeout=10)
    assert done.status is Status.SUCCEEDED and done.result == 2
    assert len(starts) == 2
    assert starts[1] - starts[0] >= 1.99


async def test_retry_when_attempts_are_spent_fails(app: Errands, run_worker: Any) -> None:
    @app.task(max_attempts=2, backoff=0.01)
    async def always_retry(ctx: TaskContext, payload: dict[str, Any]) -> None:
        raise Retry(delay=0)

    submitted = await app.submit("always_retry", owner=OWNER)
    async with run_worker(app):
        done = await app.wait(submitted.id, owner=OWNER, timeout=10)
    assert done.status is Status.FAILED
    assert done.attempts == 2
    assert done.error is not None and done.error.type == "Retry"
    assert "attempts are spent" in done.error.message


async def test_failed_after_attempts_with_last_error(app: Errands, run_worker: Any) -> None:
    @app.task(max_attempts=3, backoff=0.01)
    def doomed(ctx: TaskContext, payload: dict[str, Any]) -> None:
        raise TaskFailed(f"could not do it (attempt {ctx.attempt})")

    submitted = await app.submit("doomed", owner=OWNER)
    async with run_worker(app):
        done = await app.wait(submitted.id, owner=OWNER, timeout=10)
    assert done.status is Status.FAILED
    assert done.attempts == 3
    assert done.error is not None
    assert done.error.type == "TaskFailed"
    assert done.error.message == "could not do it (attempt 3)"
    assert done.result is None
    assert done.finished_at is not None and done.expires_at is not None
    assert done.error_detail is not None and "Traceback" in done.error_detail


@pytest.mark.parametrize("executor", ["async", "thread"])
async def test_task_failed_without_retry_ends_at_once(
    app: Errands, run_worker: Any, executor: str
) -> None:
    """``TaskFailed(retry=False)``: failed on the first attempt, attempts left or not."""

    def refuse(ctx: TaskContext, payload: dict[str, Any]) -> None:
        raise TaskFailed(f"bad input (attempt {ctx.attempt})", retry=False)

    async def refuse_async(ctx: TaskContext, payload: dict[str, Any]) -> None:
        refuse(ctx, payload)

    app.task(name="refuse", max_attempts=3, backoff=0.01)(
        refuse_async if executor == "async" else refuse
    )
    submitted = await app.submit("refuse", owner=OWNER)
    async with run_worker(app):
        done = await app.wait(submitted.id, owner=OWNER, timeout=10)
    assert done.status is Status.FAILED
    assert done.attempts == 1
    assert done.error is not None and done.error.type == "TaskFailed"
    assert done.error.message == "bad input (attempt 1)"


async def test_unexpected_error_message_is_safe(app: Errands, run_worker: Any) -> None:
    @app.task(max_attempts=1)
    async def leaky(ctx: TaskContext, payload: dict[str, Any]) -> None:
        raise ValueError("secret password hunter2")

    submitted = await app.submit("leaky", owner=OWNER)
    async with run_worker(app):
        done = await app.wait(submitted.id, owner=OWNER, timeout=10)
    assert done.status is Status.FAILED
    assert done.attempts == 1
    assert done.error is not None
    assert done.error.type == "ValueError"
    assert "secret" not in done.error.message and "hunter2" not in done.error.message
    assert done.error.message  # something is shown
    assert "secret" not in repr(done)  # error_detail is kept out of the repr
    # the traceback is there, for administrators
    assert done.error_detail is not None
    assert "Traceback" in done.error_detail
    assert "ValueError: secret password hunter2" in done.error_detail
    assert "leaky" in done.error_detail


# -- 4. timeouts -----------------------------------------------------------------------
async def test_async_timeout_cancels_the_coroutine(app: Errands, run_worker: Any) -> None:
    saw_cancel = asyncio.Event()

    @app.task(timeout=0.3, max_attempts=1)
    async def sleepy(ctx: TaskContext, payload: dict[str, Any]) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            saw_cancel.set()
            raise
        return "never"

    submitted = await app.submit("sleepy", owner=OWNER)
    async with run_worker(app):
        done = await app.wait(submitted.id, owner=OWNER, timeout=10)
    assert saw_cancel.is_set()
    assert done.status is Status.FAILED
    assert done.error is not None and done.error.type == "TaskTimeout"
    assert "0.3" in done.error.message
    assert done.result is None
    assert 0.3 <= elapsed(done) < 5


async def test_thread_timeout_ignores_the_late_result(app: Errands, run_worker: Any) -> None:
    returned = threading.Event()

    @app.task(timeout=0.3, max_attempts=1)
    def stubborn(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, bool]:
        time.sleep(1.5)
        returned.set()
        return {"late": True}

    add_marker(app)
    submitted = await app.submit("stubborn", owner=OWNER)
    async with run_worker(app):
        done = await app.wait(submitted.id, owner=OWNER, timeout=10)
        assert not returned.is_set()  # failed before the function returned
        assert done.status is Status.FAILED
        assert done.error is not None and done.error.type == "TaskTimeout"
        assert 0.3 <= elapsed(done) < 1.5
        await wait_thread_event(returned)
        await marker_done(app)  # the late return reached the worker's loop before it
        after = await app.get(submitted.id, owner=OWNER)
    assert after.status is Status.FAILED
    assert after.result is None
    assert after.version == done.version
    assert after.error is not None and after.error.type == "TaskTimeout"


async def test_timed_out_attempt_is_retried(app: Errands, run_worker: Any) -> None:
    @app.task(timeout=0.3, max_attempts=2, backoff=0.05)
    async def slow_then_fast(ctx: TaskContext, payload: dict[str, Any]) -> int:
        if ctx.attempt == 1:
            await asyncio.sleep(30)
        return ctx.attempt

    submitted = await app.submit("slow_then_fast", owner=OWNER)
    async with run_worker(app):
        done = await app.wait(submitted.id, owner=OWNER, timeout=15)
    assert done.status is Status.SUCCEEDED
    assert done.result == 2
    assert done.attempts == 2


# -- 5. cancel -------------------------------------------------------------------------
async def test_cancel_queued_task_is_immediate(app: Errands, run_worker: Any) -> None:
    @app.task
    async def never_runs(ctx: TaskContext, payload: dict[str, Any]) -> None:
        raise AssertionError("a cancelled task must not run")

    add_marker(app)
    submitted = await app.submit("never_runs", owner=OWNER)
    cancelled = await app.cancel(submitted.id, owner=OWNER)
    assert cancelled.status is Status.CANCELLED
    assert cancelled.cancel_requested is True
    assert cancelled.finished_at is not None
    assert cancelled.version == submitted.version + 1
    assert (await app.get(submitted.id, owner=OWNER)).status is Status.CANCELLED
    # its job is gone: a worker finds nothing to do (a Celery message for it, if one
    # was sent before the cancel, runs nothing) but a marker submitted after it, which
    # one slot takes after whatever came first
    async with run_worker(app, concurrency=1) as worker:
        await marker_done(app)
    assert worker.started == 1  # the marker alone
    final = await app.get(submitted.id, owner=OWNER)
    assert final.status is Status.CANCELLED and final.attempts == 0


async def test_cancel_running_async_task(app: Errands, run_worker: Any) -> None:
    started = asyncio.Event()
    saw_cancel = asyncio.Event()
    heartbeat = 1.0

    @app.task
    async def endless(ctx: TaskContext, payload: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            saw_cancel.set()
            raise

    submitted = await app.submit("endless", owner=OWNER)
    async with run_worker(app, heartbeat_interval=heartbeat, lease_seconds=3 * heartbeat):
        await asyncio.wait_for(started.wait(), 10)
        t0 = time.monotonic()
        asked = await app.cancel(submitted.id, owner=OWNER)
        assert asked.status is Status.RUNNING and asked.cancel_requested is True
        done = await app.wait(submitted.id, owner=OWNER, timeout=10, poll=0.05)
        took = time.monotonic() - t0
    assert saw_cancel.is_set()
    assert done.status is Status.CANCELLED
    assert done.error is not None and done.error.type == "TaskCancelled"
    assert done.result is None
    assert took < 2 * heartbeat, took


async def test_cancel_running_sync_task_that_polls(app: Errands, run_worker: Any) -> None:
    started = threading.Event()
    noticed = threading.Event()

    @app.task
    def polite(ctx: TaskContext, payload: dict[str, Any]) -> str:
        started.set()
        deadline = time.monotonic() + 20
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        if ctx.cancelled:
            noticed.set()
        return "stopped early"

    submitted = await app.submit("polite", owner=OWNER)
    async with run_worker(app, cancel_grace=5.0):
        await wait_thread_event(started)
        t0 = time.monotonic()
        await app.cancel(submitted.id, owner=OWNER)
        done = await app.wait(submitted.id, owner=OWNER, timeout=10, poll=0.05)
        took = time.monotonic() - t0
    assert noticed.is_set()
    assert done.status is Status.CANCELLED
    assert done.result is None  # what it returned after the cancel is not a result
    assert took < 5.0  # ended because it stopped, not after the grace period


async def test_cancel_sync_task_that_ignores_the_flag(app: Errands, run_worker: Any) -> None:
    started = threading.Event()
    returned = threading.Event()
    grace = 0.3

    @app.task
    def deaf(ctx: TaskContext, payload: dict[str, Any]) -> str:
        started.set()
        time.sleep(2.0)
        returned.set()
        return "finished anyway"

    add_marker(app)
    submitted = await app.submit("deaf", owner=OWNER)
    async with run_worker(app, cancel_grace=grace):
        await wait_thread_event(started)
        t0 = time.monotonic()
        await app.cancel(submitted.id, owner=OWNER)
        done = await app.wait(submitted.id, owner=OWNER, timeout=10, poll=0.05)
        took = time.monotonic() - t0
        assert not returned.is_set()
        assert done.status is Status.CANCELLED
        assert grace <= took < 2.0, took
        await wait_thread_event(returned)
        await marker_done(app)  # the late return reached the worker's loop before it
        after = await app.get(submitted.id, owner=OWNER)
    assert after.status is Status.CANCELLED
    assert after.result is None
    assert after.version == done.version


async def test_cancel_finished_task_returns_it_unchanged(app: Errands, run_worker: Any) -> None:
    @app.task
    async def quick(ctx: TaskContext, payload: dict[str, Any]) -> int:
        return 42

    submitted = await app.submit("quick", owner=OWNER)
    async with run_worker(app):
        done = await app.wait(submitted.id, owner=OWNER, timeout=10)
    again = await app.cancel(submitted.id, owner=OWNER)
    assert again == done
    assert again.status is Status.SUCCEEDED and again.result == 42
    assert again.cancel_requested is False
    assert await app.get(submitted.id, owner=OWNER) == done


async def test_submit_while_every_slot_is_busy(app: Errands, run_worker: Any) -> None:
    """A job hint reaching a worker with no free slot must not stall its loop."""

    @app.task
    async def nap(ctx: TaskContext, payload: dict[str, Any]) -> str:
        await asyncio.sleep(payload["seconds"])
        return "rested"

    async with run_worker(app, concurrency=1) as worker:
        # A stalled loop cannot run this test either: a watchdog thread stops the
        # worker (its claim loop checks the flag), so the test fails instead of hanging.
        watchdog = threading.Timer(6, worker.stop)
        watchdog.start()
        try:
            first = await app.submit("nap", {"seconds": 0.5}, owner=OWNER)
            await eventually_async(
                lambda: _all_running(app, [first.id]),
                "the first nap to run",
                timeout=10,
                every=0.02,
            )
            t0 = time.monotonic()
            second = await app.submit("nap", {"seconds": 0.01}, owner=OWNER)
            done_first = await app.wait(first.id, owner=OWNER, timeout=10, poll=0.1)
            done_second = await app.wait(second.id, owner=OWNER, timeout=10, poll=0.1)
            took = time.monotonic() - t0
        finally:
            watchdog.cancel()
    assert done_first.status is Status.SUCCEEDED and done_second.status is Status.SUCCEEDED
    assert took < 5, took


# -- 6. priority and run_at ------------------------------------------------------------
@pytest.mark.sql_engine_only("the broker decides the order of Celery messages: no priorities")
async def test_higher_priority_runs_first(app: Errands, run_worker: Any) -> None:
    order: list[str] = []

    @app.task(priority=0)
    async def job(ctx: TaskContext, payload: dict[str, Any]) -> None:
        order.append(payload["label"])

    low = await app.submit("job", {"label": "low"}, owner=OWNER)
    default = await app.submit("job", {"label": "default"}, owner=OWNER, priority=None)
    high = await app.submit("job", {"label": "high"}, owner=OWNER, priority=10)
    negative = await app.submit("job", {"label": "negative"}, owner=OWNER, priority=-5)
    assert (low.priority, default.priority, high.priority, negative.priority) == (0, 0, 10, -5)
    async with run_worker(app, concurrency=1):
        for r in (low, default, high, negative):
            assert (await app.wait(r.id, owner=OWNER, timeout=10)).status is Status.SUCCEEDED
    # by priority, then oldest first
    assert order == ["high", "low", "default", "negative"]


async def test_run_at_delays_the_start(app: Errands, run_worker: Any) -> None:
    started_at: list[float] = []

    @app.task
    async def later(ctx: TaskContext, payload: dict[str, Any]) -> None:
        started_at.append(time.time())

    submitted = await app.submit("later", owner=OWNER, run_at=timedelta(seconds=1))
    due = submitted.run_at.timestamp()
    assert due >= submitted.created_at.timestamp() + 0.99
    async with run_worker(app):

        async def not_started() -> bool:
            early = await app.get(submitted.id, owner=OWNER)
            return early.status is Status.QUEUED and early.attempts == 0 and started_at == []

        await stays_async(not_started, "the task waiting for its run_at", 0.5)
        done = await app.wait(submitted.id, owner=OWNER, timeout=10)
    assert done.status is Status.SUCCEEDED
    assert len(started_at) == 1
    assert started_at[0] >= due
    assert done.started_at is not None and done.started_at.timestamp() >= due
    assert started_at[0] < due + 3.0  # and not much later


# -- 7. payloads -----------------------------------------------------------------------
class Order(BaseModel):
    item: str
    quantity: int = 1


class Receipt(BaseModel):
    item: str
    total: float
    lines: list[str]


async def test_payload_model_dict_and_model_result(app: Errands, run_worker: Any) -> None:
    seen: dict[str, Any] = {}

    @app.task
    async def buy(ctx: TaskContext, payload: Order) -> Receipt:
        seen["model"] = payload
        return Receipt(
            item=payload.item,
            total=payload.quantity * 2.5,
            lines=[payload.item] * payload.quantity,
        )

    @app.task
    def raw(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        seen["dict"] = payload
        return {"keys": sorted(payload)}

    bought = await app.submit("buy", Order(item="tea", quantity=3), owner=OWNER)
    assert bought.payload == {"item": "tea", "quantity": 3}
    defaulted = await app.submit("buy", {"item": "cake"}, owner=OWNER)
    assert defaulted.payload == {"item": "cake", "quantity": 1}
    plain = await app.submit("raw", {"b": [1, 2], "a": {"x": None}}, owner=OWNER)
    async with run_worker(app, concurrency=1):
        done = await app.wait(bought.id, owner=OWNER, timeout=10)
        done_raw = await app.wait(plain.id, owner=OWNER, timeout=10)
        done_default = await app.wait(defaulted.id, owner=OWNER, timeout=10)
    assert isinstance(seen["model"], Order)
    assert done.status is Status.SUCCEEDED
    assert done.result == {"item": "tea", "total": 7.5, "lines": ["tea", "tea", "tea"]}
    assert done_default.result == {"item": "cake", "total": 2.5, "lines": ["cake"]}
    assert type(seen["dict"]) is dict
    assert seen["dict"] == {"b": [1, 2], "a": {"x": None}}
    assert done_raw.result == {"keys": ["a", "b"]}
    # the stored result is plain JSON: reading it again gives the same value
    again = await app.get(bought.id, owner=OWNER)
    assert again.result == done.result and isinstance(again.result, dict)


async def test_non_json_result_fails_cleanly(app: Errands, run_worker: Any) -> None:
    @app.task(max_attempts=3)
    async def weird(ctx: TaskContext, payload: dict[str, Any]) -> object:
        return object()

    submitted = await app.submit("weird", owner=OWNER)
    async with run_worker(app):
        done = await app.wait(submitted.id, owner=OWNER, timeout=10)
    assert done.status is Status.FAILED
    assert done.attempts == 1  # not retried: it would fail the same way
    assert done.error is not None and "JSON" in done.error.message


async def test_values_every_database_stores_alike(app: Errands, run_worker: Any) -> None:
    """NUL characters in an error or a progress message become U+FFFD (PostgreSQL
    refuses NUL in text); NaN is refused in payloads, results and emitted items (it is
    not JSON) — on SQLite exactly as on PostgreSQL."""
    from errands import InvalidPayload

    @app.task(max_attempts=1)
    async def nul(ctx: TaskContext, payload: dict[str, Any]) -> None:
        ctx.progress(1, 2, "half\x00way")
        raise TaskFailed("bad\x00byte")

    @app.task(max_attempts=3)
    async def nan(ctx: TaskContext, payload: dict[str, Any]) -> float:
        if payload.get("emit"):
            try:
                ctx.emit({"x": float("nan")})
            except ValueError:
                ctx.emit("refused at once")
            return 1.0
        return float("nan")

    @app.task
    async def fine(ctx: TaskContext, payload: dict[str, Any]) -> str:
        return "ok"

    with pytest.raises(InvalidPayload):
        await app.submit("fine", {"x": float("inf")}, owner=OWNER)
    records = [
        await app.submit("nul", owner=OWNER),
        await app.submit("nan", owner=OWNER),
        await app.submit("nan", {"emit": True}, owner=OWNER),
        await app.submit("fine", owner=OWNER),
    ]
    async with run_worker(app, concurrency=4):
        done = [await app.wait(r.id, owner=OWNER, timeout=10) for r in records]
    assert [r.status for r in done] == [
        Status.FAILED,
        Status.FAILED,
        Status.SUCCEEDED,
        Status.SUCCEEDED,
    ]
    assert done[0].error is not None and done[0].error.message == "bad\ufffdbyte"
    assert done[0].progress.message == "half\ufffdway"
    assert done[1].error is not None and "JSON" in done[1].error.message
    assert done[1].attempts == 1
    assert await app.outputs(done[2].id, owner=OWNER) == [(1, "refused at once")]


async def test_an_outcome_the_database_refuses_fails_alone(
    app: Errands, run_worker: Any, database: str
) -> None:
    """A value the database refuses (here a real constraint added to the table) fails
    that task with OutcomeNotStored; the outcomes written beside it are not held up."""
    from sqlalchemy import text

    app.db.ensure_schema()
    with app.db.engine.begin() as conn:
        if database == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER no_poison BEFORE UPDATE ON errands_task "
                    "WHEN NEW.result LIKE '%poison%' BEGIN SELECT RAISE(ABORT, 'poison'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "ALTER TABLE errands_task ADD CONSTRAINT no_poison "
                    "CHECK (result IS NULL OR result::text NOT LIKE '%poison%')"
                )
            )
    gate = asyncio.Event()

    @app.task(max_attempts=1)
    async def echo(ctx: TaskContext, payload: dict[str, Any]) -> str:
        await gate.wait()  # all four finish together: their outcomes share one write
        return str(payload["word"])

    words = ["one", "poison", "three", "four"]
    records = [await app.submit("echo", {"word": w}, owner=OWNER) for w in words]
    async with run_worker(app, concurrency=4):
        await eventually_async(
            lambda: _all_running(app, [r.id for r in records]), "all four to run", timeout=10
        )
        gate.set()
        done = [await app.wait(r.id, owner=OWNER, timeout=10) for r in records]
    assert [r.status for r in done] == [Status.SUCCEEDED, Status.FAILED] + [Status.SUCCEEDED] * 2
    assert [r.result for r in done] == ["one", None, "three", "four"]
    assert done[1].error is not None and done[1].error.type == "OutcomeNotStored"
    assert "poison" not in done[1].error.message


async def _all_running(app: Errands, ids: list[str]) -> bool:
    records = await app.get_many(ids, owner=OWNER)
    return all(r.status is Status.RUNNING for r in records)


# -- 8. burst mode ---------------------------------------------------------------------
@pytest.mark.sql_engine_only(
    "burst mode drains the SQL queue; a Celery worker consumes its broker until stopped"
)
async def test_burst_worker_drains_the_queue_and_returns(app: Errands) -> None:
    ran: list[int] = []

    @app.task
    async def step(ctx: TaskContext, payload: dict[str, Any]) -> int:
        await asyncio.sleep(0.02)
        ran.append(payload["n"])
        return int(payload["n"]) * 10

    @app.task
    def step_sync(ctx: TaskContext, payload: dict[str, Any]) -> int:
        time.sleep(0.02)
        ran.append(payload["n"])
        return int(payload["n"]) * 10

    ids = []
    for n in range(8):
        name = "step" if n % 2 else "step_sync"
        ids.append((await app.submit(name, {"n": n}, owner=OWNER)).id)
    worker = app.worker(**(FAST | {"burst": True, "concurrency": 3}))
    await asyncio.wait_for(worker.run(), 30)
    assert worker.started == 8
    assert sorted(ran) == list(range(8))
    for n, task_id in enumerate(ids):
        record = await app.get(task_id, owner=OWNER)
        assert record.status is Status.SUCCEEDED, (n, record.status)
        assert record.result == n * 10
    # an empty queue (but for a job due later): returns at once
    later = await app.submit("step", {"n": 99}, owner=OWNER, run_at=timedelta(hours=1))
    t0 = time.monotonic()
    idle = app.worker(**(FAST | {"burst": True}))
    await asyncio.wait_for(idle.run(), 15)
    assert idle.started == 0
    assert time.monotonic() - t0 < 5
    assert (await app.get(later.id, owner=OWNER)).status is Status.QUEUED


@pytest.mark.sql_engine_only(
    "burst mode drains the SQL queue; a Celery worker consumes its broker until stopped"
)
async def test_burst_worker_returns_after_writing_the_last_outcome(app: Errands) -> None:
    @app.task
    async def single(ctx: TaskContext, payload: dict[str, Any]) -> int:
        return int(payload["n"])

    # One quick task per run: the outcome is still being written when the worker finds
    # the queue empty; run() must not return (or drop the write) before it is stored.
    for n in range(6):
        submitted = await app.submit("single", {"n": n}, owner=OWNER)
        worker = app.worker(**(FAST | {"burst": True}))
        await asyncio.wait_for(worker.run(), 15)
        record = await app.get(submitted.id, owner=OWNER)
        assert (record.status, record.result) == (Status.SUCCEEDED, n), n


@pytest.mark.sql_engine_only(
    "burst mode drains the SQL queue; a Celery worker consumes its broker until stopped"
)
async def test_burst_worker_runs_a_retry_that_is_due(app: Errands) -> None:
    @app.task(max_attempts=3)
    async def once_more(ctx: TaskContext, payload: dict[str, Any]) -> int:
        if ctx.attempt == 1:
            raise Retry(delay=0)
        return ctx.attempt

    submitted = await app.submit("once_more", owner=OWNER)
    worker = app.worker(**(FAST | {"burst": True}))
    await asyncio.wait_for(worker.run(), 15)
    done = await app.get(submitted.id, owner=OWNER)
    assert done.status is Status.SUCCEEDED
    assert (done.result, done.attempts, worker.started) == (2, 2, 2)


# -- 9. the process executor -----------------------------------------------------------
@pytest.fixture
def process_tasks(app: Errands, db_url: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """tests/apps_worker_tasks.py, its process tasks added to the test's app."""
    monkeypatch.setenv("ERRANDS_DATABASE_URL", db_url)
    module = importlib.import_module("tests.apps_worker_tasks")
    for definition in module.app.registry:
        app.registry.add(definition)
    return module


@pytest.mark.slow
async def test_process_task_result_and_progress(
    app: Errands, run_worker: Any, process_tasks: ModuleType
) -> None:
    n = 300_000
    cpu = await app.submit("cpu_sum_squares", {"n": n}, owner=OWNER)
    steps = await app.submit("slow_steps", {"steps": 8, "delay": 0.2}, owner=OWNER)
    # one slot: the CPU task first (it is older), then the steps in the same child
    async with run_worker(app, concurrency=1):
        done = await app.wait(cpu.id, owner=OWNER, timeout=30)

        async def progressing() -> bool:
            r = await app.get(steps.id, owner=OWNER)
            return r.status is Status.RUNNING and (r.progress.current or 0) >= 2

        await eventually_async(progressing, "the steps to progress", timeout=30)
        partial = await app.outputs(steps.id, owner=OWNER)
        done_steps = await app.wait(steps.id, owner=OWNER, timeout=30)
    assert done.status is Status.SUCCEEDED, done.error
    assert done.result["sum"] == sum(i * i for i in range(n))
    assert done.result["pid"] != os.getpid()  # it ran in a child process
    assert (done.progress.current, done.progress.total) == (n, n)
    assert done.progress.message == "done"
    assert done_steps.status is Status.SUCCEEDED and done_steps.result == 8
    assert (done_steps.progress.current, done_steps.progress.message) == (8, "step 8")
    assert partial[:1] == [(1, 1)]  # readable while it ran
    assert await app.outputs(steps.id, owner=OWNER) == [(i, i) for i in range(1, 9)]


@pytest.mark.slow
async def test_process_task_failed_without_retry(
    app: Errands, run_worker: Any, process_tasks: ModuleType
) -> None:
    submitted = await app.submit("refuse_in_child", owner=OWNER)
    async with run_worker(app):
        done = await app.wait(submitted.id, owner=OWNER, timeout=30)
    assert done.status is Status.FAILED and done.attempts == 1
    assert done.error is not None and done.error.message == "bad input (attempt 1)"


@pytest.mark.slow
async def test_process_timeout_kills_the_child(
    app: Errands, run_worker: Any, process_tasks: ModuleType, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    async with run_worker(app, concurrency=1):
        # warm the pool first, so the child is up when the timed attempt starts; a
        # failing task also shows a child's error is reported safely
        warm = await app.submit("leaky_in_child", {"secret": "hunter2"}, owner=OWNER)
        failed = await app.wait(warm.id, owner=OWNER, timeout=30)
        assert failed.status is Status.FAILED and failed.error is not None
        assert failed.error.type == "ValueError"
        assert "hunter2" not in failed.error.message
        assert failed.error_detail is not None
        assert "ValueError: secret hunter2" in failed.error_detail
        slow = await app.submit(
            "sleep_forever", {"pid_file": str(pid_file), "seconds": 60}, owner=OWNER
        )
        done = await app.wait(slow.id, owner=OWNER, timeout=30)
    assert done.status is Status.FAILED
    assert done.error is not None and done.error.type == "TaskTimeout"
    assert done.result is None
    assert elapsed(done) < 10
    assert pid_file.exists(), "the task never started in its child"
    pid = int(pid_file.read_text())
    assert pid != os.getpid()

    async def child_gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await eventually_async(child_gone, "the child process to end", timeout=10)


async def test_eta_from_the_observed_rate(app: Errands, run_worker: Any) -> None:
    """A running task's ETA: the time it took for ``current`` of ``total``, scaled to what
    is left; none before the first progress, without a total, or once finished."""
    from dataclasses import replace
    from datetime import timedelta

    gate = asyncio.Event()

    @app.task
    async def quarter(ctx: TaskContext, payload: dict[str, Any]) -> None:
        await asyncio.sleep(0.3)
        ctx.progress(1, 4, "a quarter")
        await gate.wait()

    rec = await app.submit("quarter", owner=OWNER)
    assert rec.eta_seconds(rec.created_at) is None  # queued
    async with run_worker(app):

        async def reported() -> bool:
            return (await app.get(rec.id, owner=OWNER)).progress.current == 1

        await eventually_async(reported, "progress 1", timeout=10)
        running = await app.get(rec.id, owner=OWNER)
        assert running.started_at is not None
        at = running.started_at + timedelta(seconds=2)
        assert running.eta_seconds(at) == 6.0  # 2 s for a quarter: 6 s for the rest
        assert (
            replace(running, progress=replace(running.progress, total=None)).eta_seconds(at) is None
        )
        gate.set()
        done = await app.wait(rec.id, owner=OWNER, timeout=10)
    assert done.eta_seconds(at) is None


async def test_wait_reads_the_record_when_it_ends_not_at_every_change(
    app: Errands, run_worker: Any
) -> None:
    """``wait`` is woken by the change that says the task ended: the start and every
    progress report before it cost no read (with a poll far away, the record is read
    once at the start of the wait and once at the end), in both the async and the
    synchronous twin."""

    @app.task
    async def steps(ctx: TaskContext, payload: dict[str, Any]) -> int:
        for i in range(10):
            await asyncio.sleep(0.06)  # past progress_interval: each report is written
            ctx.progress(i + 1, 10)
        return 10

    reads = 0
    real_get, real_sync_get = app.get, app.sync.get

    async def counted_get(task_id: str, *, owner: str) -> TaskRecord:
        nonlocal reads
        reads += 1
        return await real_get(task_id, owner=owner)

    def counted_sync_get(task_id: str, *, owner: str) -> TaskRecord:
        nonlocal reads
        reads += 1
        return real_sync_get(task_id, owner=owner)

    app.get = counted_get  # type: ignore[method-assign]
    app.sync.get = counted_sync_get  # type: ignore[method-assign]
    async with run_worker(app):
        first = await app.submit("steps", owner=OWNER)
        done = await app.wait(first.id, owner=OWNER, timeout=20, poll=30)
        assert done.status is Status.SUCCEEDED and done.progress.current == 10
        assert reads == 2, reads
        reads = 0
        second = await app.submit("steps", owner=OWNER)
        done = await asyncio.to_thread(app.sync.wait, second.id, owner=OWNER, timeout=20, poll=30)
        assert done.status is Status.SUCCEEDED and done.progress.current == 10
        assert reads == 2, reads
