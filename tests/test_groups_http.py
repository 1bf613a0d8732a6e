"""Groups over HTTP (``errands.web.task_api``): ``POST /tasks`` with ``payloads``, the
group's resource and ``GET /tasks/{id}/children``, on a real uvicorn server over SQLite
and PostgreSQL, the parts run by a real worker process (``tests.apps.groups``).

Covered: a group's whole run as its owner sees it (its resource, progress and result;
its parts paged in order, each linking its group); another user's identical 404 on the
group, its children and every part; refusals naming the field and writing nothing;
cancelling the group over HTTP; and its event stream running to ``done``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from errands import Errands
from errands.ids import new_task_id
from errands.web.groups import MAX_PARTS
from tests.apps import groups
from tests.apps.web import install
from tests.conftest import LiveServer, eventually
from tests.test_web_api import answer, assert_problem, client, counts, rows
from tests.test_web_live import Event, iter_sse

pytestmark = pytest.mark.databases("sqlite", "postgresql")

WORKER = ("tests.apps.groups:app", "--concurrency", "4", "--poll", "0.2")
#: The keys only groups and their parts have.
GROUP_KEYS = {"group", "parent_id", "group_index"}


@pytest.fixture
def app(db_url: str) -> Iterator[Errands]:
    """The web tests' tasks and the group tests' (``part``, ``collect``)."""
    target = groups.install(install(Errands(db_url)))
    target.db.ensure_schema()
    yield target
    target.close()


@pytest.fixture
def server(app: Errands) -> Iterator[LiveServer]:
    live = LiveServer(
        app, submit_rate=None, poll_interval=0.2, keepalive=1.0, max_client_priority=5
    )
    yield live
    live.stop()


def submit_group(c: httpx.Client, name: str, payloads: list[Any], **extra: Any) -> dict[str, Any]:
    r = c.post("/api/tasks", json={"name": name, "payloads": payloads, **extra})
    assert r.status_code == 202, r.text
    doc: dict[str, Any] = r.json()
    assert r.headers["location"] == doc["links"]["self"] == f"/api/tasks/{doc['id']}"
    return doc


def read(c: httpx.Client, path: str) -> dict[str, Any]:
    r = c.get(path)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def wait_done(c: httpx.Client, path: str) -> dict[str, Any]:
    return eventually(lambda: (doc := read(c, path))["done"] and doc, "the group to end")


def all_children(c: httpx.Client, group: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Every child of ``group``, read ``limit`` at a time by following ``next_cursor``."""
    children: list[dict[str, Any]] = []
    query = f"limit={limit}"
    while True:
        page = read(c, f"{group['links']['children']}?{query}")
        children += page["items"]
        if page["next_cursor"] is None:
            return children
        assert len(page["items"]) == limit
        assert page["next_cursor"] == page["items"][-1]["group_index"]
        query = f"limit={limit}&after={page['next_cursor']}"


def test_a_group_runs_and_its_parts_are_paged_in_order(
    server: LiveServer, spawn_worker: Any
) -> None:
    with client(server, "ann") as ann:
        payloads = [{"n": n, "delay": 0.01} for n in range(7)]
        group = submit_group(ann, "part", payloads, then="collect", priority=3)
        self_link = group["links"]["self"]
        assert group["group"] == {"size": 7} and group["status"] == "running"
        assert group["links"]["children"] == f"{self_link}/children"
        assert "parent_id" not in group and "group" not in group["links"]
        assert (group["priority"], group["progress"]["total"]) == (3, 7.0)

        queued = all_children(ann, group, limit=3)
        assert [c["group_index"] for c in queued] == list(range(8))
        assert [c["name"] for c in queued] == ["part"] * 7 + ["collect"]
        assert [c["payload"] for c in queued[:7]] == payloads

        spawn_worker(*WORKER)
        done = wait_done(ann, self_link)
        assert (done["status"], done["result"]) == ("succeeded", sum(n * 10 for n in range(7)))
        assert done["progress"]["current"] == 7.0 and done["progress"]["percent"] == 100.0
        assert done["group"] == {"size": 7}

        first = read(ann, f"{group['links']['children']}?limit=3")
        assert first["next_cursor"] == 2 and len(first["items"]) == 3
        middle = read(ann, f"{group['links']['children']}?after=2&limit=3")
        assert [c["group_index"] for c in middle["items"]] == [3, 4, 5]
        last = read(ann, f"{group['links']['children']}?after=5&limit=3")
        assert [c["group_index"] for c in last["items"]] == [6, 7]
        assert last["next_cursor"] is None
        everything = read(ann, group["links"]["children"])  # default: from the first, 100
        assert everything["next_cursor"] is None
        assert read(ann, f"{group['links']['children']}?after=7")["items"] == []

        children = everything["items"]
        assert [c["group_index"] for c in children] == list(range(8))
        for child in children:
            assert child["status"] == "succeeded"
            assert child["parent_id"] == group["id"]
            assert child["links"]["group"] == self_link
            assert "group" not in child and "children" not in child["links"]
            assert read(ann, child["links"]["self"]) == child
        assert [c["result"] for c in children[:7]] == [n * 10 for n in range(7)]
        assert children[7]["payload"] == {"results": [n * 10 for n in range(7)]}

        # Other tasks' resources carry none of the groups' fields.
        plain = ann.post("/api/tasks", json={"name": "steps", "payload": {"steps": 1}}).json()
        assert not GROUP_KEYS & set(plain)
        assert not {"children", "group"} & set(plain["links"])


def test_another_user_gets_the_missing_tasks_404(server: LiveServer, app: Errands) -> None:
    with client(server, "ann") as ann, client(server, "bob") as bob:
        group = submit_group(ann, "part", [{"n": n} for n in range(3)], then="collect")
        parts = read(ann, group["links"]["children"])["items"]
        assert len(parts) == 4
        missing = new_task_id()
        written = counts(app)
        for path in (f"/api/tasks/{missing}", f"/api/tasks/{missing}/children"):
            nothing = answer(bob.get(path))
            assert nothing[0] == 404
            targets = [group["links"]["self"], *(p["links"]["self"] for p in parts)]
            suffix = path.removeprefix(f"/api/tasks/{missing}")
            for target in targets:
                assert answer(bob.get(target + suffix)) == nothing, target + suffix
            assert answer(bob.get("/api/tasks/nope" + suffix)) == nothing
        # A task that is not a group has no children: the same 404, for its owner too.
        assert answer(ann.get(parts[0]["links"]["self"] + "/children")) == answer(
            ann.get(f"/api/tasks/{missing}/children")
        )
        assert_problem(bob.post(group["links"]["cancel"]), 404)
        assert counts(app) == written
        assert read(ann, group["links"]["self"])["status"] == "running"
        assert bob.get("/api/tasks").json()["items"] == []
        # An administrator reads anyone's group and its children.
        with client(server, "admin") as admin:
            assert len(read(admin, group["links"]["children"])["items"]) == 4


REFUSALS: list[tuple[str, dict[str, Any], dict[str, str], str]] = [
    ("empty payloads", {"name": "steps", "payloads": []}, {}, "payloads"),
    ("payloads not a list", {"name": "steps", "payloads": {"steps": 1}}, {}, "payloads"),
    (
        "payload and payloads",
        {"name": "steps", "payload": {"steps": 1}, "payloads": [{"steps": 1}]},
        {},
        "payload",
    ),
    (
        "a bad payload at index 3",
        {"name": "steps", "payloads": [{"steps": 1}] * 3 + [{"steps": -1}, {"steps": 1}]},
        {},
        "payloads.3.steps",
    ),
    ("unknown name", {"name": "nope", "payloads": [{}]}, {}, "name"),
    ("unknown then", {"name": "steps", "payloads": [{}], "then": "nope"}, {}, "then"),
    ("then without payloads", {"name": "steps", "payload": {}, "then": "collect"}, {}, "then"),
    ("too many payloads", {"name": "steps", "payloads": [{}] * (MAX_PARTS + 1)}, {}, "payloads"),
    (
        "run_at with payloads",
        {"name": "steps", "payloads": [{}], "run_at": "2030-01-01T00:00:00Z"},
        {},
        "run_at",
    ),
    (
        "a key with payloads",
        {"name": "steps", "payloads": [{}]},
        {"Idempotency-Key": "k"},
        "Idempotency-Key",
    ),
    (
        "priority out of range",
        {"name": "steps", "payloads": [{}], "priority": 10**9},
        {},
        "priority",
    ),
]


def test_refusals_name_the_field_and_write_nothing(server: LiveServer, app: Errands) -> None:
    with client(server, "ann") as ann:
        empty = counts(app)
        assert empty == rows(task=0, job=0)
        for case, body, headers, field in REFUSALS:
            problem = assert_problem(ann.post("/api/tasks", json=body, headers=headers), 422)
            assert [e["field"] for e in problem["errors"]] == [field], (case, problem)
        # Over the body limit (the payload limit plus 16 KiB): 413.
        big = {"name": "steps", "payloads": [{"pad": "x" * 1000}] * 300}
        assert_problem(ann.post("/api/tasks", json=big), 413)
        assert counts(app) == empty
        # The largest group passes, in one transaction.
        doc = submit_group(ann, "steps", [{"steps": 0}] * MAX_PARTS)
        assert doc["group"] == {"size": MAX_PARTS}
        assert counts(app)["errands_task"] == MAX_PARTS + 1


def test_a_group_is_one_submit_for_the_rate_limit(app: Errands) -> None:
    server = LiveServer(app, submit_rate=0.05, submit_burst=2)
    try:
        with client(server, "ann") as ann:
            submit_group(ann, "steps", [{"steps": 0}] * 50)
            submit_group(ann, "steps", [{"steps": 0}] * 50)
            r = ann.post("/api/tasks", json={"name": "steps", "payloads": [{}]})
            assert_problem(r, 429)
            assert "retry-after" in r.headers
    finally:
        server.stop()


def test_cancelling_the_group_cancels_its_parts(server: LiveServer, spawn_worker: Any) -> None:
    with client(server, "ann") as ann:
        payloads = [{"n": n, "steps": 50, "delay": 0.05} for n in range(12)]
        group = submit_group(ann, "part", payloads, then="collect")
        spawn_worker(*WORKER, "--heartbeat", "0.2", "--lease", "2")

        def some_running() -> bool:
            items = read(ann, group["links"]["children"])["items"]
            return any(c["status"] == "running" for c in items)

        eventually(some_running, "a part to run")
        r = ann.post(group["links"]["cancel"])
        assert r.status_code in (200, 202), r.text
        assert r.json()["id"] == group["id"]
        done = wait_done(ann, group["links"]["self"])
        assert done["status"] == "cancelled" and done["error"]["type"]

        def every_part_ended() -> list[dict[str, Any]] | None:
            items: list[dict[str, Any]] = read(ann, group["links"]["children"])["items"]
            return items if all(c["done"] for c in items) else None

        parts = eventually(every_part_ended, "every part to end")
        statuses = [c["status"] for c in parts]
        assert set(statuses) <= {"cancelled", "succeeded"}
        assert statuses[-1] == "cancelled"  # then never runs
        assert statuses.count("cancelled") >= 8


def test_the_groups_events_run_to_done(server: LiveServer, spawn_worker: Any) -> None:
    with httpx.Client(base_url=server.url, headers={"X-User": "ann"}, timeout=30) as http:
        r = http.post("/tasks", json={"name": "part", "payloads": [{"n": n} for n in range(5)]})
        group = r.json()
        with http.stream("GET", f"/tasks/{group['id']}/events") as response:
            assert response.status_code == 200
            stream = iter_sse(response)
            first = next(stream)
            assert isinstance(first, Event) and first.event == "status"
            assert first.data["group"] == {"size": 5}
            assert first.data["links"]["children"] == f"/api/tasks/{group['id']}/children"
            spawn_worker(*WORKER)
            events = [first, *stream]  # to the end of the stream
    done = events[-1]
    assert isinstance(done, Event) and done.event == "done"
    assert done.data["status"] == "succeeded"
    assert done.data["result"] == [n * 10 for n in range(5)]
    assert done.data["group"] == {"size": 5}
    outputs = [e for e in events if isinstance(e, Event) and e.event == "output"]
    assert [e.data["seq"] for e in outputs] == list(range(1, 6))
    items = sorted((e.data["data"] for e in outputs), key=lambda item: item["part"])
    assert [(i["part"], i["item"]) for i in items] == [(n, {"n": n}) for n in range(5)]
