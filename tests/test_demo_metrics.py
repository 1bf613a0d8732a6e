"""The demo's Prometheus endpoint (``errands.metrics``), on a real SQLite file with
an in-process worker, read through ``httpx.ASGITransport`` and prometheus_client's
parser."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from errands import ANY_OWNER, Errands, Retry, Status, TaskContext, TaskFailed

pytest.importorskip("prometheus_client")

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from errands.metrics import metrics_app

# The conformance suite: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.databases("sqlite", "postgresql")

COUNTERS = ("submitted", "started", "succeeded", "failed", "cancelled", "retried")
ALL_STATUSES = {s.value for s in Status}


def _register(app: Errands) -> tuple[asyncio.Event, asyncio.Event]:
    """ok succeeds; boom fails; flaky retries once, then succeeds when the payload
    says so and asks again (so fails) otherwise; endless runs until cancelled."""
    started = asyncio.Event()
    release = asyncio.Event()

    @app.task(max_attempts=1)
    async def ok(ctx: TaskContext, payload: dict[str, Any]) -> str:
        return "fine"

    @app.task(max_attempts=1)
    async def boom(ctx: TaskContext, payload: dict[str, Any]) -> None:
        raise TaskFailed("no")

    @app.task(max_attempts=2)
    async def flaky(ctx: TaskContext, payload: dict[str, Any]) -> str:
        if ctx.attempt == 1 or not payload["recover"]:
            raise Retry(delay=0)
        return "recovered"

    @app.task(max_attempts=1)
    async def endless(ctx: TaskContext, payload: dict[str, Any]) -> None:
        started.set()
        await release.wait()

    return started, release


async def scrape(asgi: Any, path: str = "/") -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """GET the metrics; ``{sample name: {sorted labels: value}}``."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=asgi), base_url="http://test"
    ) as client:
        response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def by_name(
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]], metric: str
) -> dict[str, float]:
    return {dict(labels)["name"]: value for labels, value in samples[metric].items()}


async def test_counters_histogram_and_records_after_a_run(app: Errands, run_worker: Any) -> None:
    started, release = _register(app)
    asgi = metrics_app(app, cache_seconds=0)
    before = await scrape(asgi)
    for what in COUNTERS:  # every registered name has its series from the start
        assert by_name(before, f"errands_tasks_{what}_total") == dict.fromkeys(
            ["ok", "boom", "flaky", "endless"], 0.0
        )

    submitted = [
        *[await app.submit("ok", {}, owner="alice") for _ in range(3)],
        await app.submit("boom", {}, owner="bob"),
        await app.submit("flaky", {"recover": True}, owner="alice"),
        await app.submit("flaky", {"recover": False}, owner="alice"),
    ]
    endless = await app.submit("endless", {}, owner="carol")
    # Cancelled while queued: no attempt ran, but it counts as cancelled.
    dropped = await app.submit("ok", {}, owner="dave")
    await app.cancel(dropped.id, owner="dave")
    async with run_worker(app, concurrency=4):
        await asyncio.wait_for(started.wait(), 10)
        await app.cancel(endless.id, owner="carol")
        for rec in [*submitted, endless]:
            await app.wait(rec.id, owner=ANY_OWNER, timeout=10, poll=0.05)
    # The worker has stopped: every outcome it wrote has reached the observer.
    assert not release.is_set()
    final = {(await app.get(r.id, owner=ANY_OWNER)).status for r in submitted[4:]}
    assert final == {Status.SUCCEEDED, Status.FAILED}

    after = await scrape(asgi, "/metrics")
    expected = {
        "submitted": {"ok": 4, "boom": 1, "flaky": 2, "endless": 1},
        "started": {"ok": 3, "boom": 1, "flaky": 4, "endless": 1},
        "succeeded": {"ok": 3, "boom": 0, "flaky": 1, "endless": 0},
        "failed": {"ok": 0, "boom": 1, "flaky": 1, "endless": 0},
        "cancelled": {"ok": 1, "boom": 0, "flaky": 0, "endless": 1},
        "retried": {"ok": 0, "boom": 0, "flaky": 2, "endless": 0},
    }
    for what, counts in expected.items():
        assert by_name(after, f"errands_tasks_{what}_total") == counts, what

    # One observation per finished attempt, in the buckets and the count alike.
    attempts = {"ok": 3, "boom": 1, "flaky": 4, "endless": 1}
    assert by_name(after, "errands_task_run_seconds_count") == attempts
    inf = {
        dict(labels)["name"]: value
        for labels, value in after["errands_task_run_seconds_bucket"].items()
        if dict(labels)["le"] == "+Inf"
    }
    assert inf == attempts
    buckets = {dict(labels)["le"] for labels in after["errands_task_run_seconds_bucket"]}
    assert {"0.001", "600.0", "+Inf"} <= buckets
    sums = by_name(after, "errands_task_run_seconds_sum")
    assert all(value >= 0 for value in sums.values()) and sums["endless"] > 0

    # The database's view: every (registered name, status), zeros included.
    records = {
        (dict(labels)["name"], dict(labels)["status"]): value
        for labels, value in after["errands_task_records"].items()
    }
    assert {status for _, status in records} == ALL_STATUSES
    stored = {(n, s): c for n, s, c, _ in await app.admin.name_status_counts()}
    assert {key: value for key, value in records.items() if value} == stored
    assert records[("ok", "succeeded")] == 3 and records[("flaky", "failed")] == 1
    assert records[("flaky", "succeeded")] == 1 and records[("endless", "cancelled")] == 1
    assert records[("boom", "failed")] == 1 and records[("ok", "queued")] == 0
    assert after["errands_queue_depth"] == {(): 0.0}
    assert after["errands_queue_due"] == {(): 0.0}
    assert after["errands_oldest_queued_age_seconds"] == {(): 0.0}


async def test_queue_gauges_and_cache(app: Errands) -> None:
    _register(app)
    asgi = metrics_app(app, cache_seconds=60)
    for _ in range(3):
        await app.submit("ok", {}, owner="alice")
    await app.submit("boom", {}, owner="bob", run_at=timedelta(hours=1))  # not due for an hour
    await asyncio.sleep(0.05)
    first = await scrape(asgi)
    assert first["errands_queue_depth"] == {(): 4.0}
    assert first["errands_queue_due"] == {(): 3.0}
    assert first["errands_oldest_queued_age_seconds"][()] > 0
    records = first["errands_task_records"]
    assert records[(("name", "ok"), ("status", "queued"))] == 3
    assert records[(("name", "boom"), ("status", "queued"))] == 1
    assert by_name(first, "errands_tasks_submitted_total") == {
        "ok": 3,
        "boom": 1,
        "flaky": 0,
        "endless": 0,
    }

    # Within cache_seconds the database figures are reused; the counters are live.
    await app.submit("ok", {}, owner="alice")
    second = await scrape(asgi)
    assert second["errands_queue_depth"] == {(): 4.0}
    assert by_name(second, "errands_tasks_submitted_total")["ok"] == 4

    # A fresh endpoint (its own registry: no clash with the first) reads them again.
    other = await scrape(metrics_app(app, cache_seconds=0))
    assert other["errands_queue_depth"] == {(): 5.0}
    assert other["errands_queue_due"] == {(): 4.0}
    # It was created after the submissions: it saw none of them.
    assert by_name(other, "errands_tasks_submitted_total")["ok"] == 0


async def test_concurrent_scrapes_read_the_database_once(
    app: Errands, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register(app)
    calls = 0
    real_queue = app.admin.queue

    async def counted_queue() -> Any:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return await real_queue()

    monkeypatch.setattr(app.admin, "queue", counted_queue)
    asgi = metrics_app(app)
    results = await asyncio.gather(*[scrape(asgi) for _ in range(10)])
    assert calls == 1
    assert all(r["errands_queue_depth"] == {(): 0.0} for r in results)


async def test_database_failure_leaves_out_the_gauges(
    app: Errands, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _register(app)

    async def broken() -> Any:
        raise RuntimeError("database is down")

    monkeypatch.setattr(app.admin, "queue", broken)
    samples = await scrape(metrics_app(app))
    assert "errands_queue_depth" not in samples and "errands_task_records" not in samples
    assert by_name(samples, "errands_tasks_submitted_total")["ok"] == 0
    assert "could not read the database" in caplog.text


async def test_methods(app: Errands) -> None:
    asgi = metrics_app(app)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=asgi), base_url="http://test"
    ) as client:
        refused = await client.post("/", content=b"x")
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, HEAD"
        assert (await client.put("/metrics")).status_code == 405
        got = await client.get("/")
        head = await client.head("/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == CONTENT_TYPE_LATEST
    assert int(head.headers["content-length"]) > 0
    assert got.text.startswith("# HELP")


async def test_served_at_metrics_and_metrics_slash(app: Errands) -> None:
    """A ``Mount("/metrics")`` passes ``/metrics/`` (as path ``/``) but never matches a
    bare ``/metrics``: that takes a ``Route`` too (else, beside a catch-all
    ``Mount("/")`` like the demo's pages, ``/metrics`` is a 404). The endpoint serves
    any path, so one instance does for both."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def pages(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("page", 404)(scope, receive, send)

    endpoint = metrics_app(app)
    site = Starlette(
        routes=[Route("/metrics", endpoint), Mount("/metrics", endpoint), Mount("/", pages)]
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=site), base_url="http://test"
    ) as client:
        for path in ("/metrics", "/metrics/"):
            response = await client.get(path, follow_redirects=False)
            assert response.status_code == 200, path
            assert "errands_queue_depth 0.0" in response.text
        assert (await client.post("/metrics")).status_code == 405
