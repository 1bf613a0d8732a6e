"""Users' schedules in Flask (``errands.flask.task_blueprint``'s ``/schedules``) over
real HTTP, on SQLite and on PostgreSQL: create, read, list, pause, resume and delete;
another owner's schedule answering like a missing one; 401, 413, 415 and 422 naming
the field; links under the blueprint's prefix; and answers byte for byte equal to
FastAPI's ``task_api`` on the same app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from errands import Errands
from errands.ids import new_task_id
from tests.apps.web import install
from tests.conftest import LiveServer
from tests.test_flask_api import FlaskServer, without_ws_link
from tests.test_schedules_http import BAD_CHANGES, BAD_CREATES, FIELDS, LIMIT, MAX_PAYLOAD, tick_now
from tests.test_web_api import PROBLEM, assert_problem, counts

pytestmark = pytest.mark.databases("sqlite", "postgresql")

MAX_BODY = 4000


@pytest.fixture
def app(db_url: str) -> Iterator[Errands]:
    target = install(Errands(db_url, max_schedules_per_owner=LIMIT, max_payload_bytes=MAX_PAYLOAD))
    target.db.ensure_schema()
    yield target
    target.close()


@pytest.fixture
def server(app: Errands) -> Iterator[FlaskServer]:
    live = FlaskServer(app, submit_rate=None, max_body_bytes=MAX_BODY)
    yield live
    live.stop()


def test_create_read_list_pause_resume_delete(server: FlaskServer, app: Errands) -> None:
    with server.client("ann") as ann:
        r = ann.post("/api/schedules", json={"name": "steps", "cron": "15 7 * * 1-5"})
        assert r.status_code == 201, r.text
        assert r.headers["content-type"] == "application/json"
        doc = r.json()
        location = r.headers["location"]
        assert location == f"/api/schedules/{doc['id']}" == doc["links"]["self"]
        assert set(doc) == FIELDS
        assert (doc["owner"], doc["cron"], doc["every"], doc["timezone"]) == (
            "ann",
            "15 7 * * 1-5",
            None,
            "UTC",
        )
        assert app.sync.schedules.get(doc["id"], owner="ann").cron == "15 7 * * 1-5"
        assert ann.get(location).json() == doc
        assert ann.get("/api/schedules").json() == {"items": [doc], "next_cursor": None}

        paused = ann.patch(location, json={"paused": True}).json()
        assert paused["paused"] is True and paused["next_run_at"] is None
        resumed = ann.patch(location, json={"paused": False}).json()
        assert resumed["paused"] is False and resumed["next_run_at"] == doc["next_run_at"]

        r = ann.delete(location)
        assert r.status_code == 204 and r.content == b""
        assert assert_problem(ann.get(location), 404)["detail"] == "No such schedule."
        assert ann.get("/api/schedules").json()["items"] == []


def test_another_owners_schedule_is_a_missing_one(server: FlaskServer, app: Errands) -> None:
    with server.client("ann") as ann, server.client("bob") as bob:
        doc = ann.post("/api/schedules", json={"name": "steps", "every": 3600}).json()
        written = counts(app)
        verbs: list[tuple[str, dict[str, Any]]] = [
            ("GET", {}),
            ("PATCH", {"json": {"paused": True}}),
            ("DELETE", {}),
        ]
        for method, kwargs in verbs:
            answers = []
            for sid in (doc["id"], new_task_id(), "nope"):
                r = bob.request(method, f"/api/schedules/{sid}", **kwargs)
                head = sorted((k, v) for k, v in r.headers.items() if k != "date")
                answers.append((r.status_code, head, r.content))
            assert answers[0][0] == 404 and dict(answers[0][1])["content-type"] == PROBLEM
            assert answers[0] == answers[1] == answers[2], (method, answers)
        assert counts(app) == written
        assert ann.get(doc["links"]["self"]).json() == doc
        assert bob.get("/api/schedules").json()["items"] == []


def test_refusals_are_problems_that_write_nothing(server: FlaskServer, app: Errands) -> None:
    with server.client("ann") as ann, server.client(None) as anonymous:
        doc = ann.post("/api/schedules", json={"name": "steps", "every": 3600}).json()
        written = counts(app)
        for path in ("/api/schedules", doc["links"]["self"]):
            assert_problem(anonymous.get(path), 401)
        assert_problem(anonymous.post("/api/schedules", json={"name": "steps", "every": 60}), 401)
        refusals = [("POST", "/api/schedules", *case) for case in BAD_CREATES]
        refusals += [("PATCH", doc["links"]["self"], *case) for case in BAD_CHANGES]
        for method, path, case, request_kwargs, status, field in refusals:
            kwargs = dict(request_kwargs)
            if "content" in kwargs:
                kwargs.setdefault("headers", {"Content-Type": "application/json"})
            problem = assert_problem(ann.request(method, path, **kwargs), status)
            if field is not None:
                assert [e["field"] for e in problem["errors"]] == [field], case
        assert counts(app) == written
        assert ann.get(doc["links"]["self"]).json() == doc


def test_links_follow_the_blueprints_prefix(app: Errands) -> None:
    server = FlaskServer(app, prefix="/v2/errands", submit_rate=None)
    try:
        with server.client("ann") as ann:
            r = ann.post("/v2/errands/schedules", json={"name": "steps", "every": 60})
            assert r.status_code == 201, r.text
            location = f"/v2/errands/schedules/{r.json()['id']}"
            assert r.headers["location"] == r.json()["links"]["self"] == location
            tick_now(app, r.json()["id"])
            doc = ann.get(location).json()
            task = f"/v2/errands/tasks/{doc['last_task_id']}"
            assert doc["links"] == {"self": location, "last_task": task}
            assert ann.get(task).json()["links"]["schedule"] == location
    finally:
        server.stop()


def test_answers_are_byte_for_byte_fastapis(server: FlaskServer, app: Errands) -> None:
    fast = LiveServer(app, submit_rate=None, poll_interval=0.2, max_body_bytes=MAX_BODY)
    clients = ExitStack()
    try:
        with clients:

            def pair(user: str | None) -> tuple[httpx.Client, httpx.Client]:
                headers = {"X-User": user} if user else {}
                a = clients.enter_context(httpx.Client(base_url=fast.root, headers=headers))
                return a, clients.enter_context(server.client(user))

            ann, bob, nobody = pair("ann"), pair("bob"), pair(None)

            def same(
                who: tuple[httpx.Client, httpx.Client], method: str, path: str, **kw: Any
            ) -> int:
                ra, rb = (c.request(method, path, **kw) for c in who)
                assert rb.status_code == ra.status_code, (path, ra.text, rb.text)
                assert rb.content == without_ws_link(ra.content), (method, path)
                for header in ("content-type", "cache-control", "location"):
                    assert rb.headers.get(header) == ra.headers.get(header), (path, header)
                return ra.status_code

            made = ann[0].post("/api/schedules", json={"name": "steps", "every": 60}).json()
            sid = made["id"]
            tick_now(app, sid)
            task_id = ann[0].get(f"/api/schedules/{sid}").json()["last_task_id"]
            assert same(ann, "GET", f"/api/schedules/{sid}") == 200
            assert same(ann, "GET", "/api/schedules") == 200
            assert same(ann, "GET", "/api/schedules?limit=1") == 200
            assert same(ann, "GET", f"/api/tasks/{task_id}") == 200  # its schedule link
            assert same(ann, "PATCH", f"/api/schedules/{sid}", json={"paused": True}) == 200
            assert same(ann, "PATCH", f"/api/schedules/{sid}", json={"paused": True}) == 200
            for other in (sid, new_task_id(), "nope"):
                assert same(bob, "GET", f"/api/schedules/{other}") == 404
                assert same(bob, "PATCH", f"/api/schedules/{other}", json={"paused": False}) == 404
                assert same(bob, "DELETE", f"/api/schedules/{other}") == 404
            assert same(nobody, "GET", "/api/schedules") == 401
            assert same(nobody, "DELETE", f"/api/schedules/{sid}") == 401
            for query in ("limit=0", "limit=x", "cursor=x", "owner=bob"):
                assert same(ann, "GET", f"/api/schedules?{query}") == 422, query
            bad = [
                {"name": "steps", "cron": "0 25 * * *"},
                {"name": "steps", "every": 1},
                {"name": "steps", "every": 60, "timezone": "Nowhere"},
                {"name": "nope", "every": 60},
                {"name": "steps", "every": 60, "payload": {"steps": -1}},
            ]
            for body in bad:
                assert same(ann, "POST", "/api/schedules", json=body) == 422, body
            plain = {
                "content": json.dumps({"name": "steps"}),
                "headers": {"Content-Type": "text/plain"},
            }
            assert same(ann, "POST", "/api/schedules", **plain) == 415
            big = {"name": "steps", "every": 60, "payload": {"pad": "x" * MAX_BODY}}
            assert same(ann, "POST", "/api/schedules", json=big) == 413
            assert ann[0].delete(f"/api/schedules/{sid}").status_code == 204
            assert same(ann, "DELETE", f"/api/schedules/{sid}") == 404  # gone for both
    finally:
        fast.stop()
