"""Prometheus metrics for an errands app: ``metrics_app(app)`` is an ASGI app that serves
the Prometheus text format on any path; mount it where your scraper looks (the demo
mounts it at ``/metrics``). It needs the ``metrics`` extra (``pip install
'errands[metrics]'``: ``prometheus-client``) and Starlette (the ``web`` extra).

Two sources feed it:

* **What this process saw**, from an observer added to ``app.observers``: the counters
  ``errands_tasks_{submitted,started,succeeded,failed,cancelled,retried}_total`` and the
  histogram ``errands_task_run_seconds`` (run time of each attempt), all by task
  ``name``. An attempt that ends asking for another one (``Retry``, an exception with
  attempts left, a lost lease) counts as *retried*. A queued task cancelled before it
  ran counts as *cancelled* in the process that cancelled it (it has no run time). In
  the demo the web server and the worker are one process, so every event is seen. With
  separate worker processes each process exports only what it saw (a web process:
  submissions; a worker: starts, outcomes and run times): scrape every process and add
  the series up (``sum by (name) (...)``).
  They restart from zero with the process, as Prometheus counters do.
* **The database's view**, read at scrape time and kept for ``cache_seconds`` (2 s) so
  that a burst of scrapes costs one pair of queries: ``errands_queue_depth`` (jobs
  waiting for a worker, due or not), ``errands_queue_due`` (of them, due now),
  ``errands_oldest_queued_age_seconds`` (how long the oldest due job has waited; 0 when
  none is due) and ``errands_task_records{name,status}`` (records in the database, for
  every registered or stored name and every status). These are the same whichever
  process is scraped. When the database cannot be read they are left out of the
  output (and the error is logged) rather than shown stale.

Each call makes its own :class:`prometheus_client.CollectorRegistry`: nothing goes to
the global default registry, so several apps in one process do not clash.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send

from .admin import QueueState
from .app import Errands
from .records import Status, TaskEvent

log = logging.getLogger("errands.metrics")

#: Run-time buckets, seconds: 1 ms to 10 min.
# fmt: off
RUN_SECONDS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)
# fmt: on

ALLOWED_METHODS = ("GET", "HEAD")


class _Counters:
    """The observer-fed metrics, and the observer that feeds them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(what: str, doc: str) -> Counter:
            return Counter(f"errands_tasks_{what}", doc, ["name"], registry=registry)

        self.submitted = counter("submitted", "Tasks submitted by this process.")
        self.started = counter("started", "Attempts started by workers in this process.")
        self.succeeded = counter("succeeded", "Attempts that ended succeeded (this process).")
        self.failed = counter("failed", "Attempts that ended failed (this process).")
        self.cancelled = counter("cancelled", "Attempts that ended cancelled (this process).")
        self.retried = counter(
            "retried", "Attempts that ended with the task queued for another (this process)."
        )
        self.run_seconds = Histogram(
            "errands_task_run_seconds",
            "Run time of attempts that ended in this process, seconds.",
            ["name"],
            buckets=RUN_SECONDS_BUCKETS,
            registry=registry,
        )
        self._finished = {
            Status.SUCCEEDED: self.succeeded,
            Status.FAILED: self.failed,
            Status.CANCELLED: self.cancelled,
            Status.QUEUED: self.retried,
        }

    def observe(self, event: TaskEvent) -> None:
        """The ``app.observers`` callback (quick, thread-safe)."""
        if event.kind == "submitted":
            self.submitted.labels(event.name).inc()
        elif event.kind == "started":
            self.started.labels(event.name).inc()
        elif event.kind == "finished":
            outcome = self._finished.get(event.status)
            if outcome is not None:
                outcome.labels(event.name).inc()
            if event.seconds is not None:
                self.run_seconds.labels(event.name).observe(max(0.0, event.seconds))

    def touch(self, names: Iterable[str]) -> None:
        """Give every name a series (at 0) before its first event, so that rates and
        absences can be told apart."""
        for name in names:
            for metric in (*self._finished.values(), self.submitted, self.started):
                metric.labels(name)
            self.run_seconds.labels(name)


@dataclass(frozen=True, slots=True)
class _Figures:
    queue: QueueState
    records: list[tuple[str, str, int, int]]


class _DatabaseCollector(Collector):
    """Gauges from the database. ``collect`` is synchronous and cannot query, so the
    handler awaits :meth:`refresh` first and ``collect`` reads what it cached."""

    def __init__(self, app: Errands, cache_seconds: float) -> None:
        self._app = app
        self._cache_seconds = cache_seconds
        self._lock = asyncio.Lock()
        self._figures: _Figures | None = None
        self._read_at: float | None = None

    def _fresh(self) -> bool:
        return self._read_at is not None and (
            time.monotonic() - self._read_at < self._cache_seconds
        )

    async def refresh(self) -> None:
        if self._fresh():
            return
        async with self._lock:  # concurrent scrapes share one read
            if self._fresh():
                return
            try:
                queue = await self._app.admin.queue()
                records = await self._app.admin.name_status_counts()
            except Exception:
                log.exception("errands metrics: could not read the database")
                self._figures = None
            else:
                self._figures = _Figures(queue, records)
            # A failure is kept as long as a success, so a broken database is not
            # queried on every scrape either.
            self._read_at = time.monotonic()

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return [] if self._figures is None else self._families(self._figures)

    def _families(self, figures: _Figures | None) -> list[Metric]:
        depth = GaugeMetricFamily(
            "errands_queue_depth", "Jobs waiting for a worker, due now or later (database)."
        )
        due = GaugeMetricFamily(
            "errands_queue_due", "Jobs waiting for a worker that are due now (database)."
        )
        oldest = GaugeMetricFamily(
            "errands_oldest_queued_age_seconds",
            "Seconds the oldest due job has waited; 0 when none is due (database).",
        )
        records = GaugeMetricFamily(
            "errands_task_records",
            "Task records in the database by name and status.",
            labels=["name", "status"],
        )
        if figures is not None:
            queue = figures.queue
            depth.add_metric([], queue.waiting)
            due.add_metric([], queue.due)
            oldest.add_metric([], queue.oldest_age or 0.0)
            counts = {(name, str(status)): n for name, status, n, _ in figures.records}
            names = set(self._app.registry.names()) | {name for name, _ in counts}
            for name in sorted(names):
                for status in Status:
                    records.add_metric([name, status.value], counts.get((name, status.value), 0))
        return [depth, due, oldest, records]


class _MetricsEndpoint:
    """The ASGI app (a class, not a function, so that Starlette also takes it as a
    ``Route`` endpoint and does not wrap it as a request handler)."""

    def __init__(self, app: Errands, cache_seconds: float) -> None:
        self._app = app
        self.registry = CollectorRegistry()
        self._counters = _Counters(self.registry)
        self._database = _DatabaseCollector(app, cache_seconds)
        self.registry.register(self._database)
        app.observers.add(self._counters.observe)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # served on its own: a router's, nothing to set up
            await Router().lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        method = scope["method"].upper()
        if method not in ALLOWED_METHODS:
            refusal = PlainTextResponse(
                "Method Not Allowed", 405, headers={"Allow": ", ".join(ALLOWED_METHODS)}
            )
            await refusal(scope, receive, send)
            return
        await self._database.refresh()
        self._counters.touch(self._app.registry.names())
        response = Response(
            generate_latest(self.registry),
            media_type=CONTENT_TYPE_LATEST,
            headers={"Cache-Control": "no-store"},
        )
        if method == "HEAD":  # the headers of a GET (its length included), no body
            response.body = b""
        await response(scope, receive, send)


def metrics_app(app: Errands, *, cache_seconds: float = 2.0) -> ASGIApp:
    """An ASGI app serving ``app``'s metrics in the Prometheus text format on every
    path, for GET and HEAD (405 otherwise). Adds an observer to ``app.observers``.

    ``cache_seconds``: how long the figures read from the database are reused.
    """
    return _MetricsEndpoint(app, cache_seconds)
