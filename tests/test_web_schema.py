"""Schemathesis against the HTTP API's own ``/openapi.json``.

Every operation is fuzzed with data that fits the schema and data that does not
(Schemathesis' positive and negative modes, its coverage phase included) on a real
uvicorn server, once over a real SQLite file and once over a PostgreSQL database. Every
response is checked: no 5xx, a documented status code, a documented content type, a
body that matches the documented schema.

The caller is named by the ``X-User`` header (``tests.apps.web``). It is not in the
schema, so the test supplies it: most cases run as ``alice``, who owns tasks in every
state, others as ``admin``, as ``bob`` (whom alice's tasks are "missing" for) or as
nobody (401). Generated task ids name no task, so some cases get a real one instead.

The schema is built at import (``@schema.parametrize()`` needs it then) from the same
app definition the server runs; the server's fixture checks it serves that document.
``schemathesis.pytest.from_fixture`` would load it from the server instead, but it does
not work with pytest 9.2 (it sets ``Node._nodeid``, which pytest no longer has).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from errands import Errands, Status
from tests.apps.web import install, make_api
from tests.conftest import LiveServer, PostgresDatabases, WorkerProcess

# Hypothesis cases against a live server and a worker process: slow.
pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

CONFIG = schemathesis.Config.from_dict(
    {
        # A request to an event stream ends after its first event; the owner's stream,
        # which may have none to send, after a second (`STREAM_TIMEOUT`).
        "request-timeout": 10,
        "max-stream-events": 1,
        "generation": {"mode": "all"},
    }
)

#: Seconds a request to the owner's event stream (``GET /events``) lasts.
STREAM_TIMEOUT = 1.0

#: Who sends a case, and which task a ``{task_id}`` case names: both are picked from
#: the case's own data, so a case always runs the same way (Hypothesis replays cases).
CALLERS = ("alice", "alice", "alice", "admin", "bob", None)
TARGETS = ("generated", "queued", "cancelled", "seeded")


def _openapi() -> dict[str, Any]:
    """``/openapi.json`` of ``tests.apps.web``'s API. Only the registered tasks shape
    it, so an app that never connects will do."""
    spec_app = install(Errands("sqlite://"))
    try:
        return make_api(spec_app).openapi()
    finally:
        spec_app.close()


OPENAPI = _openapi()
schema = schemathesis.openapi.from_dict(OPENAPI, config=CONFIG)


class Target:
    """The live API and alice's tasks in it."""

    def __init__(self, server: LiveServer, seeded: list[str]) -> None:
        self.server = server
        self.app = server.app
        #: alice's finished tasks: succeeded (with output), failed, crashed.
        self.seeded = seeded

    def fresh(self, cancelled: bool = False, payload: Any = None) -> str:
        """A new task of alice's, queued or cancelled."""
        record = self.app.sync.submit("sleepy", payload or {}, owner="alice")
        if cancelled:
            self.app.sync.cancel(record.id, owner="alice")
        return record.id


# Both tests run on both databases (the conformance suite). Fuzzing is the slow part of
# this module (~20 s a database); PostgreSQL is worth the time, since the odd values
# fuzzing and the edge cases send (any string, huge numbers, times at the ends of the
# calendar) are where the two databases' types and drivers differ.
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def target_db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The database URL for this module's server: one per database, shared by the
    module's tests (so the seeded tasks are made once)."""
    if request.param == "sqlite":
        tmp_path_factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
        yield f"sqlite:///{tmp_path_factory.mktemp('schema') / 'errands.db'}"
        return
    dbs: PostgresDatabases = request.getfixturevalue("postgres_databases")
    name, url = dbs.create()
    try:
        yield url
    finally:
        dbs.drop(name)


@pytest.fixture(scope="module")
def target(target_db_url: str) -> Iterator[Target]:
    app = install(Errands(target_db_url))
    try:
        seeded = _seed(app, target_db_url)
        server = LiveServer(app, submit_rate=None, poll_interval=0.2, keepalive=0.2, delete_wait=1)
        try:
            served = httpx.get(server.root + "/openapi.json").json()
            assert served == OPENAPI, "the server documents another API than the test's"
            yield Target(server, seeded)
        finally:
            server.stop()
        # Uvicorn stops once every request handler has returned: an event stream whose
        # client left must not run on (it once did, sending keep-alives to nobody).
        assert not server.thread.is_alive(), "a request handler outlived its client"
    finally:
        app.close()


def _seed(app: Errands, db_url: str) -> list[str]:
    """alice's tasks in every state (so her list shows every shape of the resource);
    returns the finished ones' ids."""
    finished = [
        app.sync.submit("steps", {"steps": 2, "delay": 0}, owner="alice"),
        app.sync.submit("fail", {"message": "nope"}, owner="alice"),
        app.sync.submit("crash", {}, owner="alice"),
    ]
    worker = WorkerProcess("tests.apps.web:app", db_url, "--burst")
    try:
        assert worker.proc.wait(30) == 0, worker.output()
    finally:
        worker.output()
        assert worker.proc.stdout is not None
        worker.proc.stdout.close()
    statuses = [app.sync.get(r.id, owner="alice").status for r in finished]
    assert statuses == [Status.SUCCEEDED, Status.FAILED, Status.FAILED]
    cancelled = app.sync.submit("sleepy", {}, owner="alice")
    assert app.sync.cancel(cancelled.id, owner="alice").status is Status.CANCELLED
    app.sync.submit("steps", {"steps": 1}, owner="alice", priority=7)
    return [r.id for r in finished]


def _prepare(case: schemathesis.Case[Any], target: Target) -> dict[str, str]:
    """Point ``case`` at a real task (sometimes); returns the headers to send it with."""
    pick = zlib.crc32(f"{case.method} {case.path} {case!r}".encode())
    caller = CALLERS[pick % len(CALLERS)]
    if "task_id" in (case.path_parameters or {}):
        kind = TARGETS[pick // len(CALLERS) % len(TARGETS)]
        if kind == "seeded" and case.method.upper() != "DELETE":
            task_id = target.seeded[pick % len(target.seeded)]
        elif kind != "generated":
            task_id = target.fresh(cancelled=kind == "cancelled")
        else:
            task_id = case.path_parameters["task_id"]
        case.path_parameters = {**case.path_parameters, "task_id": task_id}
    return {"X-User": caller} if caller else {}


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case: schemathesis.Case[Any], target: Target) -> None:
    headers = _prepare(case, target)
    owner_stream = case.path.endswith("/events") and "{task_id}" not in case.path
    extra: dict[str, Any] = {"timeout": STREAM_TIMEOUT} if owner_stream else {}
    case.call_and_validate(base_url=target.server.root, headers=headers, checks=CHECKS, **extra)


# Requests Schemathesis does not generate (bodies that are not plain JSON, numbers past
# 64 bits, times outside what UTC timestamps hold), checked the same way. Each once gave
# a 500, or a body that is not JSON.
DEEP = b"[" * 5000 + b"]" * 5000


def submit(body: bytes, id: str) -> Any:
    return pytest.param("POST", "/api/tasks", {}, body, id=id)


def read(path: str, query: dict[str, str], id: str) -> Any:
    return pytest.param("GET", path, query, None, id=id)


@pytest.mark.parametrize(
    ("method", "path", "query", "body"),
    [
        submit(b'{"name":"steps","run_at":"9999-12-31T23:59:59-23:59"}', "run_at-after-9999"),
        submit(b'{"name":"steps","run_at":"0001-01-01T00:00:00+01:00"}', "run_at-before-1"),
        submit(b'{"name":"steps","run_at":"9999-12-31T23:59:59.999999Z"}', "run_at-rounds-up"),
        submit(b'{"name":"crash","payload":{"x":' + DEEP + b"}}", "deep-payload"),
        submit(DEEP, "deep-body"),
        submit(b'{"name":"crash","payload":{"x":NaN}}', "NaN"),
        submit(b'{"name":"crash","payload":{"x":-Infinity}}', "Infinity"),
        submit(b'{"name":"crash","payload":{"x":1e999}}', "huge-float"),
        submit(b'{"name":"crash","payload":{"x":"\\ud800 \\ud83d\\ude00"}}', "lone-surrogate"),
        read("/api/tasks/{task_id}", {}, "lone-surrogate-read"),
        read("/api/tasks", {"status": "cancelled", "name": "sleepy"}, "lone-surrogate-list"),
        read("/api/tasks/{task_id}/output", {"after": str(2**63)}, "after-past-64-bits"),
        read("/api/tasks/{task_id}/output", {"after": "9" * 30}, "after-huge"),
        read("/api/tasks/{task_id}/events", {"last_event_id": f"1-{2**63}"}, "cursor-huge"),
    ],
)
def test_edge_cases_conform_to_the_schema(
    target: Target, method: str, path: str, query: dict[str, str], body: bytes | None
) -> None:
    operation = schema[path][method]
    # JSON may escape half a surrogate pair ("\\ud800"), which UTF-8 cannot encode.
    task_id = target.fresh(cancelled=True, payload={"text": "\ud800"})
    response = httpx.request(
        method,
        target.server.root + path.replace("{task_id}", task_id),
        params=query,
        content=body,
        headers={"X-User": "alice", "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code in (200, 202, 204, 422), response.text
    case = operation.Case(path_parameters={"task_id": task_id} if "{" in path else {}, query=query)
    case.validate_response(response, checks=CHECKS)
    if response.content:
        _strict_json(response.content)


def _strict_json(content: bytes) -> Any:
    """JSON as RFC 8259 has it (Python's reader also takes NaN and Infinity)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(content.decode("utf-8"), parse_constant=refuse)
