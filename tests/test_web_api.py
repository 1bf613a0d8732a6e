"""The HTTP API (``errands.web.task_api``) over real HTTP: a uvicorn server on the
test's database (``serve``) and, where tasks must run, real ``errands worker``
processes (``spawn_worker``). Part of the conformance suite: every test runs on SQLite
and on PostgreSQL.

Covered: the whole life of a task (submit, conditional reads, output, listing,
cancel, delete); the estimate of the time left; how failures look to the owner and to
an administrator; that another owner's task, queued, running or finished, is
indistinguishable from a missing one on every endpoint (status, headers, body); that
bad input is refused with the documented problem document and writes nothing;
mounting in a plain Starlette app; and ``/openapi.json``.

Every wait polls with a deadline; no sleep is an assertion.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.routing import Mount
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from errands import Errands
from errands.ids import new_task_id
from errands.store.schema import metadata
from errands.web import task_api
from tests.apps.web import current_owner, install, is_admin
from tests.conftest import LiveServer, WorkerProcess, eventually

# The conformance suite: every test runs on SQLite and on PostgreSQL.
pytestmark = [pytest.mark.databases("sqlite", "postgresql"), pytest.mark.celery]

PROBLEM = "application/problem+json"
WEB_APP = "tests.apps.web:app"
#: Fast worker timings, so a cancel reaches a running task within a fraction of a second.
WORKER_ARGS = ("--lease", "2", "--heartbeat", "0.3", "--poll", "0.2")


# -- helpers ----------------------------------------------------------------------------
def counts(app: Errands) -> dict[str, int]:
    """Rows in every table of errands' schema, by table name."""
    app.db.ensure_schema()
    with app.db.engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in metadata.sorted_tables
        }


def rows(
    *, task: int, job: int, output: int = 0, worker: int = 0, schedule: int = 0
) -> dict[str, int]:
    """What ``counts`` answers for these numbers of rows."""
    return {
        "errands_task": task,
        "errands_job": job,
        "errands_output": output,
        "errands_worker": worker,
        "errands_schedule": schedule,
    }


@contextlib.contextmanager
def client(server: LiveServer, user: str | None) -> Iterator[httpx.Client]:
    """A client on the server's root (so ``Location`` paths work as they are)."""
    headers = {"X-User": user} if user else {}
    with httpx.Client(base_url=server.root, headers=headers, timeout=10) as c:
        yield c


def id_ms(task_id: str) -> int:
    """The millisecond timestamp in a task id (UUIDv7)."""
    return int(task_id.replace("-", "")[:12], 16)


def past_ms_of(task_id: str) -> None:
    """Wait (a millisecond at most) until the clock is past ``task_id``'s millisecond,
    so the next id sorts after it (ids in one millisecond sort at random)."""
    while int(time.time() * 1000) <= id_ms(task_id):
        time.sleep(0.0002)


def submit(c: httpx.Client, name: str, payload: Any = None, **extra: Any) -> dict[str, Any]:
    r = c.post("/api/tasks", json={"name": name, "payload": payload, **extra})
    assert r.status_code == 202, r.text
    doc: dict[str, Any] = r.json()
    return doc


def get(c: httpx.Client, task_id: str) -> dict[str, Any]:
    r = c.get(f"/api/tasks/{task_id}")
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def wait_status(
    c: httpx.Client, task_id: str, *statuses: str, timeout: float = 20
) -> dict[str, Any]:
    return eventually(
        lambda: doc if (doc := get(c, task_id))["status"] in statuses else None,
        f"task {task_id} to be {'/'.join(statuses)}",
        timeout=timeout,
    )


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    doc: dict[str, Any] = r.json()
    assert doc["status"] == status and doc["title"] and doc["type"] == "about:blank"
    assert isinstance(doc["detail"], str) and doc["detail"]
    return doc


def ws_exchange(url: str, user: str | None) -> tuple[list[str], int | None]:
    """Every message the server sends on the WebSocket, and its close code."""
    headers = {"X-User": user} if user else {}
    messages: list[str] = []
    with ws_connect(url, additional_headers=headers, open_timeout=10) as ws:
        try:
            while True:
                message = ws.recv(timeout=10)
                assert isinstance(message, str)
                messages.append(message)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
    return messages, code


# -- 1. the whole life of a task --------------------------------------------------------
@pytest.mark.slow
def test_lifecycle_over_http(
    serve: Callable[..., LiveServer],
    spawn_worker: Callable[..., WorkerProcess],
    app: Errands,
) -> None:
    server = serve()
    with client(server, "alice") as c:
        # Submit: 202, Location, the queued resource.
        r = c.post("/api/tasks", json={"name": "steps", "payload": {"steps": 6, "delay": 0.15}})
        assert r.status_code == 202, r.text
        assert r.headers["content-type"] == "application/json"
        task = r.json()
        tid = task["id"]
        location = r.headers["location"]
        assert location == f"/api/tasks/{tid}"
        assert task["status"] == "queued" and task["done"] is False
        assert task["name"] == "steps" and task["version"] == 1
        assert task["payload"] == {"steps": 6, "delay": 0.15, "emit": True}
        assert "result" not in task and "error" not in task and "owner" not in task
        assert task["links"] == {
            "self": location,
            "events": f"{location}/events",
            "output": f"{location}/output",
            "cancel": f"{location}/cancel",
            "ws": f"{location}/ws",
        }
        assert r.headers["etag"] == '"1"'

        # Read it back, with its ETag and a Retry-After hint (not done yet).
        r = c.get(location)
        assert r.status_code == 200
        assert r.json()["id"] == tid and r.json()["status"] == "queued"
        etag = r.headers["etag"]
        assert etag == f'"{task["version"]}"'
        assert 1 <= int(r.headers["retry-after"]) <= 60

        # Conditional read: unchanged -> 304 with no body (no worker runs yet, so the
        # task cannot change under us); every form of If-None-Match that matches.
        for header in (etag, f"W/{etag}", f'"999", {etag}', "*"):
            r = c.get(location, headers={"If-None-Match": header})
            assert r.status_code == 304, header
            assert r.content == b"" and r.headers["etag"] == etag
        r = c.get(location, headers={"If-None-Match": '"999"'})
        assert r.status_code == 200 and r.headers["etag"] == etag

        # A worker picks it up: the old ETag no longer matches -> 200 and a new ETag.
        spawn_worker(WEB_APP, *WORKER_ARGS)

        def changed() -> httpx.Response | None:
            resp = c.get(location, headers={"If-None-Match": etag})
            return resp if resp.status_code == 200 else None

        r = eventually(changed, "the task to change")
        seen = {r.json()["status"]}
        assert r.headers["etag"] != etag
        assert r.headers["etag"] == f'"{r.json()["version"]}"'
        assert r.json()["version"] > 1

        # Poll to completion: Retry-After on every unfinished answer, none at the end.

        def finished() -> dict[str, Any] | None:
            resp = c.get(location)
            assert resp.status_code == 200
            doc = resp.json()
            seen.add(doc["status"])
            if doc["done"]:
                assert "retry-after" not in resp.headers
                return dict(doc)
            assert 1 <= int(resp.headers["retry-after"]) <= 60
            return None

        done = eventually(finished, "the task to finish")
        assert "running" in seen
        assert done["status"] == "succeeded"
        assert done["result"] == {"steps": 6}
        assert "error" not in done
        assert done["progress"]["current"] == 6 and done["progress"]["total"] == 6
        assert done["progress"]["percent"] == 100
        assert done["attempts"] == 1 and done["started_at"] and done["finished_at"]

        # Output: every item, then only those after a sequence number.
        r = c.get(f"{location}/output")
        assert r.status_code == 200
        page = r.json()
        assert [i["seq"] for i in page["items"]] == [1, 2, 3, 4, 5, 6]
        assert [i["data"] for i in page["items"]] == [{"step": n} for n in range(1, 7)]
        assert page["last_seq"] == 6
        page = c.get(f"{location}/output", params={"after": 4}).json()
        assert page["items"] == [{"seq": 5, "data": {"step": 5}}, {"seq": 6, "data": {"step": 6}}]
        assert page["last_seq"] == 6
        page = c.get(f"{location}/output", params={"after": 2, "limit": 2}).json()
        assert [i["seq"] for i in page["items"]] == [3, 4] and page["last_seq"] == 4
        assert c.get(f"{location}/output", params={"after": 6}).json() == {
            "items": [],
            "last_seq": 6,
            "output_floor": 0,
        }
        assert_problem(c.get(f"{location}/output", params={"after": -1}), 422)

        # Cancel a running task: 202 (asked to stop), then cancelled with an error.
        sleeper = submit(c, "sleepy", {})
        wait_status(c, sleeper["id"], "running")
        r = c.post(sleeper["links"]["cancel"])
        assert r.status_code == 202, r.text
        assert r.json()["cancel_requested"] is True and r.json()["done"] is False
        cancelled = wait_status(c, sleeper["id"], "cancelled", "succeeded", "failed")
        assert cancelled["status"] == "cancelled" and cancelled["done"] is True
        assert isinstance(cancelled["error"]["type"], str) and cancelled["error"]["type"]
        assert cancelled["error"]["message"]
        assert "result" not in cancelled
        # Cancelling a finished task changes nothing: 200 and the same resource.
        r = c.post(sleeper["links"]["cancel"])
        assert r.status_code == 200 and r.json()["version"] == cancelled["version"]

        # DELETE of a running task: cancelled, waited for, deleted -> 204, then 404.
        runner = submit(c, "sleepy", {})
        wait_status(c, runner["id"], "running")
        r = c.delete(runner["links"]["self"])
        assert r.status_code == 204 and r.content == b""
        assert_problem(c.get(runner["links"]["self"]), 404)
        assert_problem(c.get(runner["links"]["output"]), 404)

        # DELETE of a finished task -> 204; its record and output are gone.
        assert counts(app)["errands_output"] == 6
        r = c.delete(location)
        assert r.status_code == 204 and r.content == b""
        assert_problem(c.get(location), 404)
        assert_problem(c.get(f"{location}/output"), 404)
        assert_problem(c.delete(location), 404)
        remaining = c.get("/api/tasks").json()["items"]
        assert [t["id"] for t in remaining] == [sleeper["id"]]
        after = counts(app)
        assert after["errands_task"] == 1 and after["errands_output"] == 0


@pytest.mark.slow
def test_progress_eta_seconds(
    serve: Callable[..., LiveServer], spawn_worker: Callable[..., WorkerProcess]
) -> None:
    # ``progress.eta_seconds`` is always in the resource: null until a running task has
    # reported progress against a total, then the seconds its rate so far leaves.
    server = serve()
    with client(server, "alice") as c:
        stepper = submit(c, "steps", {"steps": 200, "delay": 0.05})  # 10 s, cancelled sooner
        idle = submit(c, "sleepy", {"seconds": 60})  # runs, reports no progress
        queued = [stepper, idle, get(c, stepper["id"]), *c.get("/api/tasks").json()["items"]]
        for doc in queued:
            assert doc["status"] == "queued"
            assert "eta_seconds" in doc["progress"] and doc["progress"]["eta_seconds"] is None

        spawn_worker(WEB_APP, *WORKER_ARGS)
        running = wait_status(c, idle["id"], "running")
        assert running["progress"]["current"] is None
        assert running["progress"]["eta_seconds"] is None

        def estimated() -> tuple[dict[str, Any], float, float] | None:
            asked = time.time()
            doc = get(c, stepper["id"])
            answered = time.time()
            assert not doc["done"], f"the task ended before an estimate: {doc}"
            if doc["progress"]["eta_seconds"] is None:
                return None
            return doc, asked, answered

        doc, asked, answered = eventually(estimated, "an estimate of the time left")
        progress, eta = doc["progress"], doc["progress"]["eta_seconds"]
        assert doc["status"] == "running" and progress["total"] == 200
        assert isinstance(eta, int | float) and not isinstance(eta, bool)
        assert eta >= 0
        # The estimate is the rate since the start, at some moment of the request:
        # elapsed * left / done, rounded to 0.1 s.
        started_at = datetime.fromisoformat(doc["started_at"])
        assert started_at.utcoffset() is not None
        started = started_at.timestamp()
        current = progress["current"]
        assert 0 < current <= 200
        low = (asked - started) * (200 - current) / current
        high = (answered - started) * (200 - current) / current
        assert low - 0.06 <= eta <= high + 0.06, (eta, low, high)

        # Finished (here: cancelled), the field stays, null again.
        assert c.post(stepper["links"]["cancel"]).status_code == 202
        cancelled = wait_status(c, stepper["id"], "cancelled", "succeeded", "failed")
        assert cancelled["status"] == "cancelled"
        assert cancelled["progress"]["current"] and cancelled["progress"]["eta_seconds"] is None
        assert c.post(idle["links"]["cancel"]).status_code == 202


def test_list_newest_first_with_cursors_and_filters(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    with client(server, "alice") as alice, client(server, "bob") as bob:
        submitted: list[str] = []
        for n in range(5):
            if submitted:
                past_ms_of(submitted[-1])
            submitted.append(submit(alice, "steps", {"steps": n})["id"])
        past_ms_of(submitted[-1])
        failing = submit(alice, "fail", {"message": "x"})["id"]
        bobs = submit(bob, "steps", {})["id"]

        # Walk the pages of alice's `steps` tasks, two at a time.
        pages: list[list[str]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2, "name": "steps"}
            if cursor:
                params["cursor"] = cursor
            r = alice.get("/api/tasks", params=params)
            assert r.status_code == 200, r.text
            doc = r.json()
            pages.append([t["id"] for t in doc["items"]])
            cursor = doc["next_cursor"]
            if cursor is None:
                break
            assert cursor == pages[-1][-1]
            assert len(pages) < 10, "the cursors do not end"
        assert [len(p) for p in pages] == [2, 2, 1]
        walked = [i for p in pages for i in p]
        assert len(set(walked)) == len(walked) == 5  # no duplicates, nothing missing
        assert walked == submitted[::-1]  # newest first

        # Unfiltered: every task of alice's and none of bob's.
        everything = [t["id"] for t in alice.get("/api/tasks").json()["items"]]
        assert everything == [failing, *submitted[::-1]]
        assert [t["id"] for t in bob.get("/api/tasks").json()["items"]] == [bobs]

        # Filters by name and status.
        names = alice.get("/api/tasks", params={"name": "fail"}).json()["items"]
        assert [t["id"] for t in names] == [failing]
        assert alice.get("/api/tasks", params={"name": "crash"}).json()["items"] == []
        r = alice.post(f"/api/tasks/{submitted[2]}/cancel")  # queued: cancelled at once
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert r.json()["done"] is True and r.json()["error"]["type"]
        by_status = alice.get("/api/tasks", params={"status": "cancelled"}).json()["items"]
        assert [t["id"] for t in by_status] == [submitted[2]]
        queued = alice.get("/api/tasks", params={"status": "queued", "name": "steps"}).json()
        assert [t["id"] for t in queued["items"]] == [
            i for i in submitted[::-1] if i != submitted[2]
        ]
        assert alice.get("/api/tasks", params={"status": "succeeded"}).json()["items"] == []

        # Bad list parameters are problems naming the field.
        bad: list[tuple[dict[str, Any], str]] = [
            ({"status": "sleeping"}, "status"),
            ({"limit": 0}, "limit"),
            ({"limit": "many"}, "limit"),
            ({"limit": 501}, "limit"),
            ({"owner": "bob"}, "owner"),
            ({"name": "a\x00b"}, "name"),  # NUL: no name or owner can hold one
        ]
        for params, field in bad:
            doc = assert_problem(alice.get("/api/tasks", params=params), 422)
            assert [e["field"] for e in doc["errors"]] == [field], params
        with client(server, "admin") as admin:
            doc = assert_problem(admin.get("/api/tasks", params={"owner": "\x00"}), 422)
            assert [e["field"] for e in doc["errors"]] == ["owner"]


# -- 2. failures, as the owner and as an administrator sees them ------------------------
@pytest.mark.slow
def test_failed_and_crashed_tasks(
    serve: Callable[..., LiveServer], spawn_worker: Callable[..., WorkerProcess]
) -> None:
    server = serve()
    with client(server, "alice") as alice, client(server, "admin") as admin:
        failed_id = submit(alice, "fail", {"message": "the disk is full"})["id"]
        crashed_id = submit(alice, "crash", {})["id"]
        spawn_worker(WEB_APP, *WORKER_ARGS)
        failed = wait_status(alice, failed_id, "failed", "succeeded", "cancelled")
        crashed = wait_status(alice, crashed_id, "failed", "succeeded", "cancelled")

        assert failed["status"] == "failed" and failed["done"] is True
        assert failed["error"] == {"type": "TaskFailed", "message": "the disk is full"}
        assert "result" not in failed and "owner" not in failed

        assert crashed["status"] == "failed" and crashed["done"] is True
        assert set(crashed["error"]) == {"type", "message"}  # no detail for the owner
        assert crashed["error"]["message"]
        raw = alice.get(f"/api/tasks/{crashed_id}").text
        assert "secret internal detail" not in raw and "Traceback" not in raw
        listed = alice.get("/api/tasks", params={"status": "failed"}).json()["items"]
        assert {t["id"] for t in listed} == {failed_id, crashed_id}
        assert all("detail" not in t["error"] and "owner" not in t for t in listed)

        # The administrator sees the traceback and the owner.
        seen = get(admin, crashed_id)
        assert seen["owner"] == "alice"
        assert seen["error"]["type"] == crashed["error"]["type"]
        assert seen["error"]["message"] == crashed["error"]["message"]
        assert "Traceback" in seen["error"]["detail"]
        assert "RuntimeError: secret internal detail" in seen["error"]["detail"]
        assert get(admin, failed_id)["owner"] == "alice"
        everyone = admin.get("/api/tasks", params={"owner": "*"}).json()["items"]
        assert {t["id"] for t in everyone} == {failed_id, crashed_id}
        assert all(t["owner"] == "alice" for t in everyone)
        # The administrator's own list (no ?owner) is their own tasks: none.
        assert admin.get("/api/tasks").json()["items"] == []


# -- 3. another owner's task is a missing task ------------------------------------------
#: (method, path after /api, extra headers) for every endpoint that names a task.
TASK_ENDPOINTS = [
    ("GET", "/tasks/{id}", {}),
    ("GET", "/tasks/{id}", {"If-None-Match": '"1"'}),
    ("GET", "/tasks/{id}", {"If-None-Match": "*"}),
    ("GET", "/tasks/{id}/output", {}),
    ("GET", "/tasks/{id}/output?after=0&limit=5", {}),
    ("GET", "/tasks/{id}/events", {}),
    ("GET", "/tasks/{id}/events", {"Last-Event-ID": "1-0"}),
    ("GET", "/tasks/{id}/events?last_event_id=1-0", {}),
    # Past the end of any task: the owner of a finished one gets 204, everyone else 404.
    ("GET", "/tasks/{id}/events", {"Last-Event-ID": "999999-999999"}),
    ("GET", "/tasks/{id}/events?last_event_id=999999-999999", {}),
    ("POST", "/tasks/{id}/cancel", {}),
    ("DELETE", "/tasks/{id}", {}),
]
#: The WebSocket's query strings (the same cursors).
WS_QUERIES = ["", "?last_event_id=1-0", "?last_event_id=999999-999999"]

Answer = tuple[int, list[tuple[str, str]], bytes]


def answer(r: httpx.Response) -> Answer:
    """All a client can tell of an answer: status, headers in order (but ``date``), body."""
    return r.status_code, [(k, v) for k, v in r.headers.multi_items() if k != "date"], r.content


def assert_hidden(
    server: LiveServer,
    app: Errands,
    alice: httpx.Client,
    bob: httpx.Client,
    tid: str,
    missing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """bob gets for alice's task ``tid``, on every endpoint, exactly what he gets for a
    missing id and for a malformed one, and changes nothing. Returns his answers, by
    endpoint; with ``missing`` (such answers, for ids that do not exist) only ``tid`` is
    asked for and compared with them."""

    def written() -> dict[str, int]:  # (but workers' rows: one may be starting)
        return {table: n for table, n in counts(app).items() if table != "errands_worker"}

    before = alice.get(f"/api/tasks/{tid}")
    assert before.status_code == 200
    rows_before = written()

    # The id is real: alice reads it on every read endpoint.
    etag = before.headers["etag"]
    assert alice.get(f"/api/tasks/{tid}", headers={"If-None-Match": etag}).status_code == 304
    assert alice.get(f"/api/tasks/{tid}/output").status_code == 200
    with alice.stream("GET", f"/api/tasks/{tid}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert next(stream.iter_bytes()).startswith(b"retry: 2000")

    ids = (tid,) if missing else (tid, new_task_id(), "nope")
    seen: dict[str, Any] = {}
    for method, path, headers in TASK_ENDPOINTS:
        key = f"{method} {path} {headers}"
        answers = [
            answer(bob.request(method, "/api" + path.format(id=task_id), headers=headers))
            for task_id in ids
        ]
        answers += [missing[key]] * 2 if missing else []
        status, head, body = answers[0]
        assert status == 404, key
        assert dict(head)["content-type"] == PROBLEM
        assert json.loads(body)["detail"]
        assert answers[0] == answers[1] == answers[2], (key, answers)
        seen[key] = answers[0]

    # The WebSocket: the same error message and close code.
    for query in WS_QUERIES:
        key = f"WS {query}"
        ws_answers = [
            ws_exchange(f"{server.ws_url}/tasks/{task_id}/ws{query}", "bob") for task_id in ids
        ]
        ws_answers += [missing[key]] * 2 if missing else []
        assert ws_answers[0] == ws_answers[1] == ws_answers[2], (key, ws_answers)
        messages, code = ws_answers[0]
        assert code == 4404
        assert len(messages) == 1 and json.loads(messages[0])["data"]["status"] == 404
        seen[key] = ws_answers[0]

    # Nothing bob did touched alice's task.
    after = alice.get(f"/api/tasks/{tid}")
    assert after.status_code == 200
    assert after.json() == before.json()
    assert after.headers["etag"] == etag
    assert after.json()["cancel_requested"] is False
    assert written() == rows_before
    # bob's own list does not show it either.
    assert bob.get("/api/tasks").json()["items"] == []
    assert bob.get("/api/tasks", params={"owner": "alice"}).status_code == 422
    return seen


@pytest.mark.slow
def test_other_owners_task_is_indistinguishable_from_a_missing_one(
    serve: Callable[..., LiveServer],
    spawn_worker: Callable[..., WorkerProcess],
    app: Errands,
) -> None:
    server = serve()
    with client(server, "alice") as alice, client(server, "bob") as bob:
        # Queued (due in an hour), running, and finished with outputs: bob gets the
        # bytes he gets for ids that do not exist, whatever the state.
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        waiting = submit(alice, "sleepy", {"seconds": 60}, run_at=later)["id"]
        spawn_worker(WEB_APP, *WORKER_ARGS)  # (it starts while bob asks about `waiting`)
        missing = assert_hidden(server, app, alice, bob, waiting)
        assert get(alice, waiting)["status"] == "queued"

        sleeper = submit(alice, "sleepy", {"seconds": 60})["id"]
        finisher = submit(alice, "steps", {"steps": 2, "delay": 0})["id"]
        finished = wait_status(alice, finisher, "succeeded", "failed", "cancelled")
        assert finished["status"] == "succeeded"
        wait_status(alice, sleeper, "running")
        assert_hidden(server, app, alice, bob, sleeper, missing)
        assert get(alice, sleeper)["status"] == "running"
        assert_hidden(server, app, alice, bob, finisher, missing)
        assert get(alice, waiting)["status"] == "queued"

        # The owner's view of the finished task past its end is 204 (bob's was 404).
        past_end = {"Last-Event-ID": "999999-999999"}
        assert alice.get(f"/api/tasks/{finisher}/events", headers=past_end).status_code == 204
        assert alice.get(f"/api/tasks/{finisher}/output").json()["last_seq"] == 2


# -- 4. bad input: the documented 4xx, and nothing written ------------------------------
BIG = "x" * 3000

BAD_SUBMITS: list[tuple[str, dict[str, Any], int, str | None]] = [
    # (case, request, status, the field named in errors[])
    ("malformed-json", {"content": b'{"name": "steps",'}, 422, "body"),
    ("not-utf8", {"content": b'{"name": "\xff"}'}, 422, "body"),
    ("json-list", {"json": [{"name": "steps"}]}, 422, "body"),
    ("json-string", {"json": "steps"}, 422, "body"),
    ("json-null", {"json": None}, 422, "body"),
    ("steps-not-int", {"json": {"name": "steps", "payload": {"steps": "x"}}}, 422, "payload.steps"),
    (
        "steps-too-big",
        {"json": {"name": "steps", "payload": {"steps": 10**6}}},
        422,
        "payload.steps",
    ),
    ("payload-not-object", {"json": {"name": "steps", "payload": "x"}}, 422, "payload"),
    ("name-not-string", {"json": {"name": 5}}, 422, "name"),
    ("name-empty", {"json": {"name": ""}}, 422, "name"),
    ("priority-not-int", {"json": {"name": "steps", "priority": "high"}}, 422, "priority"),
    ("priority-too-big", {"json": {"name": "steps", "priority": 10**9}}, 422, "priority"),
    ("unknown-field", {"json": {"name": "steps", "bogus": 1}}, 422, "bogus"),
    ("unknown-task", {"json": {"name": "no_such_task"}}, 422, "name"),
    ("missing-name", {"json": {"payload": {"steps": 1}}}, 422, "name"),
    ("naive-run-at", {"json": {"name": "steps", "run_at": "2030-01-01T00:00:00"}}, 422, "run_at"),
    ("bad-run-at", {"json": {"name": "steps", "run_at": "tomorrow"}}, 422, "run_at"),
    (
        "text-plain",
        {"content": b'{"name": "steps"}', "headers": {"Content-Type": "text/plain"}},
        415,
        None,
    ),
    ("form", {"data": {"name": "steps"}}, 415, None),
    (
        "no-content-type",
        {"content": b'{"name": "steps"}', "headers": {"Content-Type": ""}},
        415,
        None,
    ),
    ("oversized", {"json": {"name": "steps", "payload": {"pad": BIG}}}, 413, None),
    (
        "oversized-chunked",  # no Content-Length: the limit holds on the streamed body
        {"chunks": [b'{"name": "steps", "payload": {"pad": "', BIG.encode(), b'"}}']},
        413,
        None,
    ),
]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "field"),
    [pytest.param(kw, status, field, id=case) for case, kw, status, field in BAD_SUBMITS],
)
def test_bad_submit_is_refused_and_writes_nothing(
    serve: Callable[..., LiveServer],
    app: Errands,
    request_kwargs: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    server = serve(max_body_bytes=2000)
    with client(server, "alice") as c:
        submit(c, "steps", {"steps": 1})  # the tables exist and are not empty
        written = counts(app)
        kwargs = dict(request_kwargs)
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        if "json" in kwargs:
            kwargs["content"] = json.dumps(kwargs.pop("json")).encode()
        if "chunks" in kwargs:
            kwargs["content"] = iter(kwargs.pop("chunks"))
        if "data" in kwargs or not headers["Content-Type"]:
            del headers["Content-Type"]
        r = c.post("/api/tasks", headers=headers, **kwargs)
        doc = assert_problem(r, status)
        if field is not None:
            assert field in [e["field"] for e in doc["errors"]], doc
            assert all(e["message"] for e in doc["errors"])
        assert counts(app) == written


def test_payload_over_the_apps_limit_is_413(serve: Callable[..., LiveServer], app: Errands) -> None:
    """With the default body limit (payload limit + 16 KiB) a payload just over the
    app's ``max_payload_bytes`` passes the body check and is refused by the app."""
    server = serve()
    with client(server, "alice") as c:
        submit(c, "steps", {"steps": 1})
        written = counts(app)
        pad = "x" * (app.max_payload_bytes + 10)
        assert_problem(c.post("/api/tasks", json={"name": "crash", "payload": {"pad": pad}}), 413)
        big = "x" * (app.max_payload_bytes + 20_000)
        assert_problem(c.post("/api/tasks", json={"name": "crash", "payload": {"pad": big}}), 413)
        assert counts(app) == written


def test_huge_header_is_refused_and_writes_nothing(
    serve: Callable[..., LiveServer], app: Errands
) -> None:
    # Over the route class's 16 KiB limit, on every endpoint: 431 as a problem document,
    # before any handler runs (nothing is submitted, cancelled, deleted or streamed).
    # (Both sizes stay under loopback's 64 KiB MTU: the header section reaches uvicorn in
    # one read. Delivered in pieces, h11 refuses an incomplete section over 16 KiB itself,
    # with a plain-text 400.)
    server = serve()
    with client(server, "alice") as c:
        tid = submit(c, "steps", {"steps": 1})["id"]
        before = c.get(f"/api/tasks/{tid}")
        written = counts(app)
        endpoints: list[tuple[str, str, dict[str, str]]] = [
            ("POST", "/tasks", {}),
            ("GET", "/tasks", {}),
            ("GET", "/events", {}),
        ]
        for size in (17_000, 40_000):
            huge = {"X-Padding": "a" * size}
            for method, path, headers in [*endpoints, *TASK_ENDPOINTS]:
                kwargs: dict[str, Any] = {"headers": headers | huge}
                if method == "POST" and path == "/tasks":
                    kwargs["json"] = {"name": "steps"}
                r = c.request(method, "/api" + path.format(id=tid), **kwargs)
                assert_problem(r, 431)
        assert counts(app) == written
        after = c.get(f"/api/tasks/{tid}")
        assert after.json() == before.json() and after.json()["status"] == "queued"
        # A header section just under the limit is fine.
        assert c.get("/api/tasks", headers={"X-Padding": "a" * 8000}).status_code == 200


def assert_401_everywhere(anonymous: httpx.Client, tid: str) -> None:
    """Every endpoint, for task ``tid`` and for a missing one, answers the one 401."""
    bodies = set()
    for method, path, headers in [
        ("POST", "/tasks", {}),
        ("GET", "/tasks", {}),
        ("GET", "/events", {}),
        *TASK_ENDPOINTS,
    ]:
        for task_id in (tid, new_task_id()):
            kwargs: dict[str, Any] = {"headers": headers}
            if method == "POST" and path == "/tasks":
                kwargs["json"] = {"name": "steps"}
            r = anonymous.request(method, "/api" + path.format(id=task_id), **kwargs)
            assert_problem(r, 401)
            bodies.add(r.content)
    assert len(bodies) == 1  # one answer, whatever was asked


def test_no_identity_is_401_everywhere(serve: Callable[..., LiveServer], app: Errands) -> None:
    server = serve()
    with client(server, "alice") as alice:
        tid = submit(alice, "steps", {"steps": 1})["id"]
    written = counts(app)
    with client(server, None) as anonymous:
        assert_401_everywhere(anonymous, tid)
        r = anonymous.post("/api/tasks", json={"name": "steps"}, headers={"X-User": ""})
        assert_problem(r, 401)
    messages, code = ws_exchange(f"{server.ws_url}/tasks/{tid}/ws", None)
    assert code == 4401 and json.loads(messages[0])["data"]["status"] == 401
    assert counts(app) == written
    with client(server, "alice") as alice:
        assert get(alice, tid)["status"] == "queued"


def test_submit_rate_limit(serve: Callable[..., LiveServer], app: Errands) -> None:
    server = serve(submit_rate=0.05, submit_burst=3)  # no refill while the test runs
    with client(server, "alice") as alice, client(server, "bob") as bob:
        for _ in range(3):
            submit(alice, "steps", {"steps": 1})
        r = alice.post("/api/tasks", json={"name": "steps", "payload": {"steps": 1}})
        assert_problem(r, 429)
        assert int(r.headers["retry-after"]) >= 1
        assert counts(app) == rows(task=3, job=3)
        assert len(alice.get("/api/tasks").json()["items"]) == 3
        # The limit is per owner: bob still has his burst.
        submit(bob, "steps", {"steps": 1})
        assert counts(app) == rows(task=4, job=4)


# -- 5. mounted in a plain Starlette app ------------------------------------------------
@contextlib.contextmanager
def uvicorn_server(asgi: Any) -> Iterator[str]:
    """Serve ``asgi`` with uvicorn in a thread (as ``LiveServer`` does); yields its root."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets (without it,
    # Nagle and delayed ACKs add 40 ms to every small response).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(asgi, log_level="warning", lifespan="off", ws="websockets-sansio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        eventually(lambda: server.started or not thread.is_alive(), "uvicorn to start", timeout=10)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.parametrize("prefix", ["", "/v1"])
def test_mounted_in_a_starlette_app(app: Errands, prefix: str) -> None:
    install(app)
    sub = FastAPI()
    sub.include_router(
        task_api(app, current_owner=current_owner, is_admin=is_admin, submit_rate=None),
        prefix=prefix,
    )
    host = Starlette(routes=[Mount("/api", app=sub)])
    base = f"/api{prefix}/tasks"
    with (
        uvicorn_server(host) as root,
        httpx.Client(base_url=root, headers={"X-User": "alice"}, timeout=10) as c,
    ):
        r = c.post(base, json={"name": "steps", "payload": {"steps": 2}})
        assert r.status_code == 202, r.text
        location = r.headers["location"]
        tid = r.json()["id"]
        assert location == f"{base}/{tid}"
        assert r.json()["links"]["self"] == location
        assert all(link.startswith(f"{base}/{tid}") for link in r.json()["links"].values())

        r = c.get(location)
        assert r.status_code == 200 and r.json()["id"] == tid
        assert r.json()["links"]["self"] == location
        assert c.get(r.json()["links"]["output"]).json() == {
            "items": [],
            "last_seq": 0,
            "output_floor": 0,
        }
        listed = c.get(base).json()["items"]
        assert [t["links"]["self"] for t in listed] == [location]
        r = c.post(r.json()["links"]["cancel"])
        assert r.status_code == 200 and r.json()["links"]["self"] == location
        assert r.json()["status"] == "cancelled"
        assert c.delete(location).status_code == 204
        assert_problem(c.get(location), 404)


# -- 6. /openapi.json --------------------------------------------------------------------
def test_openapi_documents_payloads_resources_and_problems(
    serve: Callable[..., LiveServer],
) -> None:
    server = serve()
    r = httpx.get(server.root + "/openapi.json", timeout=10)
    assert r.status_code == 200
    spec = r.json()
    paths = spec["paths"]
    schemas = spec["components"]["schemas"]

    # POST /tasks: one variant per registered task, each with its payload schema.
    post = paths["/api/tasks"]["post"]
    body = post["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    assert "$defs" not in json.dumps(schema)  # inlined: no dangling refs
    variants = {v["properties"]["name"]["const"]: v for v in schema["anyOf"]}
    assert set(variants) == {"steps", "patient", "two_tries", "fail", "crash", "sleepy"}
    for variant in variants.values():
        assert variant["additionalProperties"] is False
        assert variant["required"] == ["name"]
        assert {"name", "payload", "priority", "run_at"} <= set(variant["properties"])
    steps_payload = variants["steps"]["properties"]["payload"]
    assert set(steps_payload["properties"]) == {"steps", "delay", "emit"}
    assert steps_payload["properties"]["steps"]["type"] == "integer"
    assert steps_payload["properties"]["steps"]["maximum"] == 10_000
    assert variants["fail"]["properties"]["payload"]["properties"]["message"]["type"] == "string"
    assert variants["crash"]["properties"]["payload"]["type"] == "object"

    # The task resource.
    resource = schemas["TaskResource"]
    assert {"id", "name", "status", "done", "result", "error", "links", "version"} <= set(
        resource["properties"]
    )
    assert set(resource["required"]) >= {"id", "status", "done", "links"}
    assert post["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TaskResource"
    }
    read = paths["/api/tasks/{task_id}"]["get"]["responses"]
    assert read["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/TaskResource")
    assert "304" in read

    # Problem answers: documented as application/problem+json with the problem schema.
    declared = {
        ("post", "/api/tasks"): {"401", "413", "415", "422", "429", "431"},
        ("get", "/api/tasks"): {"401", "422", "431"},
        ("get", "/api/tasks/{task_id}"): {"401", "404", "431"},
        ("get", "/api/tasks/{task_id}/output"): {"401", "404", "422", "431"},
        ("post", "/api/tasks/{task_id}/cancel"): {"401", "404", "431"},
        ("delete", "/api/tasks/{task_id}"): {"401", "404", "409", "431"},
        ("get", "/api/tasks/{task_id}/events"): {"401", "404", "422", "431"},
        ("get", "/api/events"): {"401", "431"},
    }
    for (method, path), codes in declared.items():
        responses = paths[path][method]["responses"]
        assert codes <= set(responses), (method, path)
        for code in codes:
            content = responses[code]["content"]
            assert set(content) == {PROBLEM}, (method, path, code, content)
            problem = content[PROBLEM]["schema"]
            assert {"type", "title", "status", "detail", "errors"} <= set(problem["properties"])
