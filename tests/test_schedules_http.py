"""Users' schedules over HTTP (``errands.web.task_api``'s ``/schedules``): a real uvicorn
server on the test's database, on SQLite and on PostgreSQL.

Covered: a schedule's whole life (create, read, list, pause, resume, delete); a tick's
task and its schedule linking each other; that another owner's schedule answers
exactly like a missing one on every verb and is left untouched, while an administrator
sees and changes it; 401 everywhere; refused input (a bad cron, time zone or interval,
an interval under the app's minimum, an owner over the app's limit, bad bodies, 413,
415) as problem documents naming the field and writing nothing; paging; and
``/openapi.json``, against which the answers are validated.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import schemathesis
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import update

from errands import ANY_OWNER, Errands, ScheduleNotFound
from errands.ids import new_task_id
from errands.schedules.ticker import Ticker
from errands.store.schema import schedule_table
from tests.apps.web import install
from tests.conftest import LiveServer
from tests.test_web_api import PROBLEM, answer, assert_problem, client, counts, past_ms_of, submit

pytestmark = pytest.mark.databases("sqlite", "postgresql")

#: Schedules an owner may have in these tests' app.
LIMIT = 3
#: The app's payload limit, and the API's body limit.
MAX_PAYLOAD = 1000
MAX_BODY = 4000

FIELDS = {
    "id",
    "owner",
    "name",
    "payload",
    "cron",
    "every",
    "timezone",
    "paused",
    "next_run_at",
    "last_task_id",
    "last_run_at",
    "created_at",
    "links",
}


@pytest.fixture
def app(db_url: str) -> Iterator[Errands]:
    """An app with the web tests' tasks, the default minimum interval (60 s) and at most
    ``LIMIT`` schedules per owner."""
    target = install(Errands(db_url, max_schedules_per_owner=LIMIT, max_payload_bytes=MAX_PAYLOAD))
    target.db.ensure_schema()
    yield target
    target.close()


@pytest.fixture
def server(app: Errands) -> Iterator[LiveServer]:
    live = LiveServer(app, submit_rate=None, poll_interval=0.2, max_body_bytes=MAX_BODY)
    yield live
    live.stop()


def create(c: httpx.Client, **body: Any) -> dict[str, Any]:
    r = c.post("/api/schedules", json={"name": "steps", **body})
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    assert r.headers["location"] == doc["links"]["self"]
    return doc


def tick_now(app: Errands, schedule_id: str) -> float:
    """Let the schedule's next tick come now: a worker fires it, as it does with a due
    tick. (The tick is moved back to the present, rather than the worker's clock ahead:
    a worker that fired "in an hour" would make the ids this process makes next sort an
    hour ahead.) Returns the tick."""
    tick = round(time.time() - 0.5, 3)
    with app.db.engine.begin() as conn:
        conn.execute(
            update(schedule_table)
            .where(schedule_table.c.id == schedule_id)
            .values(next_run_at=tick)
        )
    Ticker(app.runtime, "test", app.registry.names()).fire(time.time())
    return tick


def when(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() is not None, text
    return moment


# -- a schedule's life ------------------------------------------------------------------------
def test_create_read_list_pause_resume_delete(server: LiveServer, app: Errands) -> None:
    with client(server, "ann") as ann:
        before = time.time()
        r = ann.post(
            "/api/schedules",
            json={
                "name": "steps",
                "payload": {"steps": 2},
                "cron": "0 8 * * 1",
                "timezone": "Europe/Berlin",
            },
        )
        assert r.status_code == 201, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.headers["cache-control"] == "private, no-cache"
        doc = r.json()
        sid = doc["id"]
        location = r.headers["location"]
        assert location == f"/api/schedules/{sid}"
        assert set(doc) == FIELDS
        assert {k: doc[k] for k in FIELDS - {"id", "next_run_at", "created_at"}} == {
            "owner": "ann",
            "name": "steps",
            "payload": {"steps": 2, "delay": 0.05, "emit": True},  # as the model made it
            "cron": "0 8 * * 1",
            "every": None,
            "timezone": "Europe/Berlin",
            "paused": False,
            "last_task_id": None,
            "last_run_at": None,
            "links": {"self": location},
        }
        # The next tick: Monday 08:00 on Berlin's clock, within the coming week.
        next_run = when(doc["next_run_at"])
        local = next_run.astimezone(ZoneInfo("Europe/Berlin"))
        assert (local.weekday(), local.hour, local.minute, local.second) == (0, 8, 0, 0)
        assert before < next_run.timestamp() <= before + 7 * 86400 + 3600
        assert before - 1 <= when(doc["created_at"]).timestamp() <= time.time() + 1
        stored = app.sync.schedules.get(sid, owner="ann")
        assert stored.next_run_at == next_run and stored.timezone == "Europe/Berlin"

        r = ann.get(location)
        assert r.status_code == 200 and r.json() == doc
        assert r.headers["cache-control"] == "private, no-cache"
        assert ann.get("/api/schedules").json() == {"items": [doc], "next_cursor": None}

        # An interval: whole seconds are an integer; the zone defaults to UTC.
        r = ann.post("/api/schedules", json={"name": "steps", "every": 3600})
        assert r.status_code == 201, r.text
        assert '"every":3600,' in r.text
        hourly = r.json()
        assert (hourly["cron"], hourly["every"], hourly["timezone"]) == (None, 3600, "UTC")
        assert hourly["payload"] == {"steps": 5, "delay": 0.05, "emit": True}
        gap = when(hourly["next_run_at"]) - when(hourly["created_at"])
        assert gap == timedelta(hours=1)
        half = create(ann, every=90.5)
        assert half["every"] == 90.5

        # Pause: no next tick; pausing again changes nothing.
        r = ann.patch(location, json={"paused": True})
        assert r.status_code == 200, r.text
        paused = r.json()
        assert paused["paused"] is True and paused["next_run_at"] is None
        assert {k: v for k, v in paused.items() if k not in ("paused", "next_run_at")} == {
            k: v for k, v in doc.items() if k not in ("paused", "next_run_at")
        }
        assert app.sync.schedules.get(sid, owner="ann").paused
        assert ann.patch(location, json={"paused": True}).json() == paused
        assert ann.get(location).json() == paused

        # Resume: the next tick is the first after now (the same Monday 08:00 here).
        r = ann.patch(location, json={"paused": False})
        assert r.status_code == 200, r.text
        resumed = r.json()
        assert resumed["paused"] is False and resumed["next_run_at"] == doc["next_run_at"]
        assert not app.sync.schedules.get(sid, owner="ann").paused

        # Delete: 204, then the schedule is gone on every verb.
        r = ann.delete(location)
        assert r.status_code == 204 and r.content == b""
        verbs: list[tuple[str, dict[str, Any]]] = [
            ("GET", {}),
            ("PATCH", {"json": {"paused": True}}),
            ("DELETE", {}),
        ]
        for method, kwargs in verbs:
            gone = assert_problem(ann.request(method, location, **kwargs), 404)
            assert gone["detail"] == "No such schedule."
        listed = ann.get("/api/schedules").json()["items"]
        assert [s["id"] for s in listed] == [hourly["id"], half["id"]]
        with pytest.raises(ScheduleNotFound):
            app.sync.schedules.get(sid, owner=ANY_OWNER)


def test_a_ticks_task_and_its_schedule_link_each_other(server: LiveServer, app: Errands) -> None:
    with client(server, "ann") as ann:
        schedule = create(ann, payload={"steps": 1}, every=60)
        location = schedule["links"]["self"]
        tick = tick_now(app, schedule["id"])

        doc = ann.get(location).json()
        task_id = doc["last_task_id"]
        assert task_id is not None
        assert when(doc["last_run_at"]).timestamp() == pytest.approx(tick, abs=1e-3)
        assert when(doc["next_run_at"]).timestamp() == pytest.approx(tick + 60, abs=1e-3)
        assert doc["links"] == {"self": location, "last_task": f"/api/tasks/{task_id}"}

        # The task: its schedule, the tick, and a link back.
        r = ann.get(doc["links"]["last_task"])
        assert r.status_code == 200, r.text
        task = r.json()
        assert task["id"] == task_id and task["payload"] == {
            "steps": 1,
            "delay": 0.05,
            "emit": True,
        }
        assert task["schedule_id"] == schedule["id"]
        assert when(task["scheduled_for"]).timestamp() == pytest.approx(tick, abs=1e-3)
        assert task["links"]["schedule"] == location
        assert "owner" not in task  # the owner's view, as for every task
        listed = ann.get("/api/tasks").json()["items"]
        assert [(t["id"], t["schedule_id"], t["links"]["schedule"]) for t in listed] == [
            (task_id, schedule["id"], location)
        ]
        # The live events carry the same resource.
        with ann.stream("GET", task["links"]["events"]) as stream:
            assert stream.status_code == 200
            data = next(
                line for line in stream.iter_lines() if line.startswith("data: ")
            ).removeprefix("data: ")
        assert json.loads(data)["links"]["schedule"] == location
        assert json.loads(data)["scheduled_for"] == task["scheduled_for"]

        # A task no schedule made has none of it: its resource is as it always was.
        plain = submit(ann, "steps", {"steps": 1})
        assert "schedule_id" not in plain and "scheduled_for" not in plain
        assert set(plain["links"]) == {"self", "events", "output", "cancel", "ws"}
        assert "schedule" not in ann.get(plain["links"]["self"]).text

        # Deleting the schedule leaves its task (whose link now finds nothing).
        assert ann.delete(location).status_code == 204
        assert ann.get(f"/api/tasks/{task_id}").json()["links"]["schedule"] == location
        assert_problem(ann.get(location), 404)


# -- ownership ------------------------------------------------------------------------------
def test_another_owners_schedule_is_a_missing_one(server: LiveServer, app: Errands) -> None:
    with (
        client(server, "ann") as ann,
        client(server, "bob") as bob,
        client(server, "admin") as admin,
    ):
        doc = create(ann, cron="30 6 * * *", timezone="America/New_York")
        sid = doc["id"]
        written = counts(app)
        verbs: list[tuple[str, dict[str, Any]]] = [
            ("GET", {}),
            ("PATCH", {"json": {"paused": True}}),
            ("PATCH", {"json": {"paused": False}}),
            ("DELETE", {}),
        ]
        for method, kwargs in verbs:
            answers = [
                answer(bob.request(method, f"/api/schedules/{i}", **kwargs))
                for i in (sid, new_task_id(), "nope")
            ]
            status, head, body = answers[0]
            assert status == 404, (method, body)
            assert dict(head)["content-type"] == PROBLEM
            assert json.loads(body)["detail"] == "No such schedule."
            assert answers[0] == answers[1] == answers[2], (method, answers)
        # Nothing bob did touched ann's schedule.
        assert counts(app) == written
        assert ann.get(f"/api/schedules/{sid}").json() == doc
        assert bob.get("/api/schedules").json() == {"items": [], "next_cursor": None}
        refused = assert_problem(bob.get("/api/schedules", params={"owner": "ann"}), 422)
        assert [e["field"] for e in refused["errors"]] == ["owner"]

        # An administrator's own list is their own schedules; ?owner= shows others'.
        assert admin.get("/api/schedules").json()["items"] == []
        for owner in ("*", "ann"):
            seen = admin.get("/api/schedules", params={"owner": owner}).json()["items"]
            assert seen == [doc], owner
        assert admin.get("/api/schedules", params={"owner": "bob"}).json()["items"] == []
        assert admin.get(f"/api/schedules/{sid}").json() == doc
        r = admin.patch(f"/api/schedules/{sid}", json={"paused": True})
        assert r.status_code == 200 and r.json()["paused"] is True
        assert ann.get(f"/api/schedules/{sid}").json()["paused"] is True
        assert admin.delete(f"/api/schedules/{sid}").status_code == 204
        assert_problem(ann.get(f"/api/schedules/{sid}"), 404)


def test_no_identity_is_401_everywhere(server: LiveServer, app: Errands) -> None:
    with client(server, "ann") as ann:
        doc = create(ann, every=600)
    written = counts(app)
    bodies = set()
    with client(server, None) as anonymous:
        for sid in (doc["id"], new_task_id()):
            requests: list[tuple[str, str, dict[str, Any]]] = [
                ("POST", "/api/schedules", {"json": {"name": "steps", "every": 600}}),
                ("GET", "/api/schedules", {}),
                ("GET", f"/api/schedules/{sid}", {}),
                ("PATCH", f"/api/schedules/{sid}", {"json": {"paused": True}}),
                ("DELETE", f"/api/schedules/{sid}", {}),
            ]
            for method, path, kwargs in requests:
                r = anonymous.request(method, path, **kwargs)
                assert_problem(r, 401)
                bodies.add(r.content)
    assert len(bodies) == 1
    assert counts(app) == written
    with client(server, "ann") as ann:
        assert ann.get(doc["links"]["self"]).json() == doc


# -- refusals -------------------------------------------------------------------------------
def _body(**fields: Any) -> dict[str, Any]:
    return {"json": {"name": "steps", **fields}}


BAD_CREATES: list[tuple[str, dict[str, Any], int, str | None]] = [
    # (case, request, status, the field named in errors[])
    ("cron-hour-25", _body(cron="0 25 * * *"), 422, "cron"),
    ("cron-six-fields", _body(cron="0 0 8 * * 1"), 422, "cron"),
    ("cron-words", _body(cron="@daily"), 422, "cron"),
    ("cron-never-fires", _body(cron="0 0 30 2 *"), 422, "cron"),
    ("cron-not-string", _body(cron=5), 422, "cron"),
    ("cron-and-every", _body(cron="0 8 * * *", every=3600), 422, "cron"),
    ("neither", _body(), 422, "cron"),
    ("timezone-unknown", _body(cron="0 8 * * *", timezone="Mars/Olympus_Mons"), 422, "timezone"),
    ("timezone-empty", _body(cron="0 8 * * *", timezone=""), 422, "timezone"),
    ("timezone-path", _body(cron="0 8 * * *", timezone="../../etc/passwd"), 422, "timezone"),
    ("timezone-not-string", _body(every=3600, timezone=1), 422, "timezone"),
    ("every-negative", _body(every=-60), 422, "every"),
    ("every-zero", _body(every=0), 422, "every"),
    ("every-under-the-minimum", _body(every=59.5), 422, "every"),
    ("every-string", _body(every="3600"), 422, "every"),
    ("every-boolean", _body(every=True), 422, "every"),
    ("every-past-the-calendar", _body(every=1e12), 422, "every"),
    (
        "every-huge-integer",
        {"content": b'{"name": "steps", "every": 1' + b"0" * 400 + b"}"},
        422,
        "every",
    ),
    ("name-unknown", {"json": {"name": "no_such_task", "every": 3600}}, 422, "name"),
    ("name-missing", {"json": {"every": 3600}}, 422, "name"),
    ("name-empty", {"json": {"name": "", "every": 3600}}, 422, "name"),
    ("payload-invalid", _body(every=3600, payload={"steps": "many"}), 422, "payload.steps"),
    ("payload-not-object", _body(every=3600, payload="x"), 422, "payload"),
    ("unknown-field", _body(every=3600, paused=True), 422, "paused"),
    ("malformed-json", {"content": b'{"name": "steps",'}, 422, "body"),
    ("json-list", {"json": [{"name": "steps", "every": 3600}]}, 422, "body"),
    ("nan", {"content": b'{"name": "steps", "every": NaN}'}, 422, "body"),
    ("text-plain", {"content": b"{}", "headers": {"Content-Type": "text/plain"}}, 415, None),
    ("form", {"data": {"name": "steps"}}, 415, None),
    ("body-too-large", _body(every=3600, payload={"pad": "x" * MAX_BODY}), 413, None),
    (
        "payload-too-large",
        {"json": {"name": "crash", "every": 3600, "payload": {"pad": "x" * MAX_PAYLOAD}}},
        413,
        None,
    ),
]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "field"),
    [pytest.param(kw, status, field, id=case) for case, kw, status, field in BAD_CREATES],
)
def test_bad_create_is_refused_and_writes_nothing(
    server: LiveServer,
    app: Errands,
    request_kwargs: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    with client(server, "ann") as ann:
        create(ann, every=3600)  # the table exists and is not empty
        written = counts(app)
        kwargs = dict(request_kwargs)
        if "content" in kwargs:
            kwargs.setdefault("headers", {"Content-Type": "application/json"})
        doc = assert_problem(ann.post("/api/schedules", **kwargs), status)
        if field is not None:
            assert [e["field"] for e in doc["errors"]] == [field], doc
            assert all(e["message"] for e in doc["errors"])
        assert counts(app) == written


def test_an_owner_over_the_limit_is_refused(server: LiveServer, app: Errands) -> None:
    with client(server, "ann") as ann, client(server, "bob") as bob:
        made = [create(ann, every=3600 * (n + 1)) for n in range(LIMIT)]
        written = counts(app)
        doc = assert_problem(ann.post("/api/schedules", json={"name": "steps", "every": 60}), 422)
        assert [e["field"] for e in doc["errors"]] == ["schedules"]
        assert str(LIMIT) in doc["errors"][0]["message"]
        assert counts(app) == written
        create(bob, every=60)  # the limit is per owner
        # Deleting one makes room.
        assert ann.delete(made[0]["links"]["self"]).status_code == 204
        create(ann, every=60)
        assert len(ann.get("/api/schedules").json()["items"]) == LIMIT


BAD_CHANGES: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("paused-string", {"json": {"paused": "yes"}}, 422, "paused"),
    ("paused-number", {"json": {"paused": 1}}, 422, "paused"),
    ("paused-null", {"json": {"paused": None}}, 422, "paused"),
    ("empty", {"json": {}}, 422, "paused"),
    ("another-field", {"json": {"paused": True, "cron": "0 9 * * *"}}, 422, "cron"),
    ("json-null", {"content": b"null"}, 422, "body"),
    ("malformed-json", {"content": b'{"paused": tr'}, 422, "body"),
    (
        "text-plain",
        {"content": b'{"paused": true}', "headers": {"Content-Type": "text/plain"}},
        415,
        None,
    ),
    ("body-too-large", {"json": {"paused": True, "pad": "x" * MAX_BODY}}, 413, None),
]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "field"),
    [pytest.param(kw, status, field, id=case) for case, kw, status, field in BAD_CHANGES],
)
def test_bad_change_is_refused_and_changes_nothing(
    server: LiveServer,
    app: Errands,
    request_kwargs: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    with client(server, "ann") as ann:
        doc = create(ann, every=3600)
        kwargs = dict(request_kwargs)
        if "content" in kwargs:
            kwargs.setdefault("headers", {"Content-Type": "application/json"})
        problem = assert_problem(ann.patch(doc["links"]["self"], **kwargs), status)
        if field is not None:
            assert [e["field"] for e in problem["errors"]] == [field], problem
        assert ann.get(doc["links"]["self"]).json() == doc


# -- listing --------------------------------------------------------------------------------
def test_list_oldest_first_in_pages(server: LiveServer) -> None:
    with client(server, "ann") as ann, client(server, "bob") as bob:
        made: list[str] = []
        for n in range(LIMIT):
            if made:
                past_ms_of(made[-1])
            made.append(create(ann, every=3600 * (n + 1))["id"])
        create(bob, every=3600)

        walked: list[str] = []
        cursor: str | None = None
        for _ in range(5):
            params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = ann.get("/api/schedules", params=params).json()
            walked += [s["id"] for s in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert cursor == walked[-1]
        assert walked == made
        everything = ann.get("/api/schedules", params={"limit": LIMIT}).json()
        assert [s["id"] for s in everything["items"]] == made
        assert everything["next_cursor"] == made[-1]  # a full page: there may be more
        after = ann.get("/api/schedules", params={"cursor": made[-1]}).json()
        assert after == {"items": [], "next_cursor": None}

        bad: list[tuple[dict[str, Any], str]] = [
            ({"limit": 0}, "limit"),
            ({"limit": 501}, "limit"),
            ({"limit": "many"}, "limit"),
            ({"cursor": "x"}, "cursor"),
            ({"owner": "bob"}, "owner"),
        ]
        for params, field in bad:
            doc = assert_problem(ann.get("/api/schedules", params=params), 422)
            assert [e["field"] for e in doc["errors"]] == [field], params


# -- /openapi.json --------------------------------------------------------------------------
def test_openapi_documents_the_schedules_and_the_answers_conform(
    server: LiveServer, app: Errands
) -> None:
    spec = httpx.get(server.root + "/openapi.json", timeout=10).json()
    paths = spec["paths"]
    declared = {
        ("post", "/api/schedules"): {"201", "401", "413", "415", "422", "431"},
        ("get", "/api/schedules"): {"200", "401", "422", "431"},
        ("get", "/api/schedules/{schedule_id}"): {"200", "401", "404", "431"},
        ("patch", "/api/schedules/{schedule_id}"): {"200", "401", "404", "413", "415", "422"},
        ("delete", "/api/schedules/{schedule_id}"): {"204", "401", "404", "431"},
    }
    for (method, path), codes in declared.items():
        assert codes <= set(paths[path][method]["responses"]), (method, path)
    resource = spec["components"]["schemas"]["ScheduleResource"]
    assert set(resource["required"]) == FIELDS - {"payload"}
    body = paths["/api/schedules"]["post"]["requestBody"]["content"]["application/json"]
    variants = {v["properties"]["name"]["const"]: v for v in body["schema"]["anyOf"]}
    assert set(variants) == set(app.registry.names())
    assert {"name", "payload", "cron", "every", "timezone"} == set(variants["steps"]["properties"])
    assert variants["steps"]["properties"]["payload"]["properties"]["steps"]["maximum"] == 10_000
    change = paths["/api/schedules/{schedule_id}"]["patch"]["requestBody"]
    assert change["content"]["application/json"]["schema"]["required"] == ["paused"]

    # Real answers, validated against the document.
    schema = schemathesis.openapi.from_dict(spec)
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]

    def conforms(method: str, path: str, r: httpx.Response, **params: str) -> None:
        case = schema[path][method].Case(path_parameters=params)
        case.validate_response(r, checks=checks)

    with client(server, "ann") as ann, client(server, "bob") as bob:
        r = ann.post("/api/schedules", json={"name": "steps", "every": 3600})
        conforms("POST", "/api/schedules", r)
        sid = r.json()["id"]
        tick_now(app, sid)
        one = "/api/schedules/{schedule_id}"
        reads: list[tuple[str, dict[str, Any]]] = [
            ("GET", {}),
            ("PATCH", {"json": {"paused": True}}),
        ]
        for method, kwargs in reads:
            conforms(
                method, one, ann.request(method, f"/api/schedules/{sid}", **kwargs), schedule_id=sid
            )
            conforms(
                method, one, bob.request(method, f"/api/schedules/{sid}", **kwargs), schedule_id=sid
            )
        conforms("GET", "/api/schedules", ann.get("/api/schedules"))
        bad = ann.post("/api/schedules", json={"name": "steps", "cron": "nope"})
        conforms("POST", "/api/schedules", bad)
        task_id = ann.get(f"/api/schedules/{sid}").json()["last_task_id"]
        task = ann.get(f"/api/tasks/{task_id}")
        assert task.json()["schedule_id"] == sid, task.text
        conforms("GET", "/api/tasks/{task_id}", task, task_id=task_id)
        conforms("DELETE", one, ann.delete(f"/api/schedules/{sid}"), schedule_id=sid)
