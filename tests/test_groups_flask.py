"""Groups in Flask (``errands.flask.task_blueprint``) over real HTTP, on SQLite and on
PostgreSQL: submit a group, read it and its children, another user's identical 404,
and answers byte for byte equal to FastAPI's ``task_api`` on the same app."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from errands import Errands
from errands.ids import new_task_id
from tests.apps import groups
from tests.apps.web import install
from tests.conftest import LiveServer
from tests.test_flask_api import FlaskServer, without_ws_link
from tests.test_web_api import answer, assert_problem, client, counts

pytestmark = pytest.mark.databases("sqlite", "postgresql")


@pytest.fixture
def app(db_url: str) -> Iterator[Errands]:
    target = groups.install(install(Errands(db_url)))
    target.db.ensure_schema()
    yield target
    target.close()


@pytest.fixture
def server(app: Errands) -> Iterator[FlaskServer]:
    live = FlaskServer(app, submit_rate=None)
    yield live
    live.stop()


def test_a_group_its_children_and_another_users_404(server: FlaskServer, app: Errands) -> None:
    with server.client("ann") as ann, server.client("bob") as bob:
        payloads = [{"n": n} for n in range(5)]
        r = ann.post("/api/tasks", json={"name": "part", "payloads": payloads, "then": "collect"})
        assert r.status_code == 202, r.text
        group = r.json()
        location = f"/api/tasks/{group['id']}"
        assert r.headers["location"] == group["links"]["self"] == location
        assert group["group"] == {"size": 5}
        assert group["links"]["children"] == f"{location}/children"
        assert "ws" not in group["links"]
        assert ann.get(location).json() == group

        page = ann.get(f"{location}/children?limit=4").json()
        assert [c["group_index"] for c in page["items"]] == [0, 1, 2, 3]
        assert page["next_cursor"] == 3
        rest = ann.get(f"{location}/children?after=3&limit=4").json()
        assert [c["group_index"] for c in rest["items"]] == [4, 5]
        assert rest["next_cursor"] is None
        parts = page["items"] + rest["items"]
        assert [c["name"] for c in parts] == ["part"] * 5 + ["collect"]
        for child in parts:
            assert child["parent_id"] == group["id"] and child["links"]["group"] == location

        written = counts(app)
        missing = answer(bob.get(f"/api/tasks/{new_task_id()}"))
        assert missing[0] == 404
        for path in [location, f"{location}/children", *(c["links"]["self"] for c in parts)]:
            assert answer(bob.get(path)) == missing, path
        missing_children = answer(bob.get(f"/api/tasks/{new_task_id()}/children"))
        assert answer(bob.get(f"{location}/children")) == missing_children
        assert answer(ann.get(f"{parts[0]['links']['self']}/children")) == missing_children
        problem = assert_problem(ann.get(f"{location}/children?limit=501"), 422)
        assert [e["field"] for e in problem["errors"]] == ["limit"]
        bad = {"name": "steps", "payloads": [{"steps": 1}, {"steps": -1}]}
        problem = assert_problem(ann.post("/api/tasks", json=bad), 422)
        assert [e["field"] for e in problem["errors"]] == ["payloads.1.steps"]
        assert counts(app) == written


def test_answers_are_byte_for_byte_fastapis(server: FlaskServer, app: Errands) -> None:
    fast = LiveServer(app, submit_rate=None, poll_interval=0.2)
    try:
        with client(fast, "ann") as ann_fast, server.client("ann") as ann:
            group = ann_fast.post(
                "/api/tasks", json={"name": "part", "payloads": [{"n": 1}, {"n": 2}]}
            ).json()
            location = group["links"]["self"]

            def same(path: str, **kw: Any) -> int:
                ra, rb = ann_fast.get(path, **kw), ann.get(path, **kw)
                assert rb.status_code == ra.status_code, (path, ra.text, rb.text)
                assert rb.content == without_ws_link(ra.content), path
                return ra.status_code

            assert same(location) == 200
            assert same(f"{location}/children") == 200
            assert same(f"{location}/children?after=0&limit=1") == 200
            assert same(f"{location}/children?after=x") == 422
            assert same(f"/api/tasks/{new_task_id()}/children") == 404
    finally:
        fast.stop()
