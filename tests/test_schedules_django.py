"""Users' schedules in Django (``errands.django.urls.schedule_urls``, a second include
beside the tasks' one): Django's test client on the example project in this process,
with this module as the URLconf (the example project mounts only the tasks).

Covered: create, read, list, pause, resume and delete; another user's schedule
answering like a missing one; 401, 403 (CSRF), 405, 413, 415 and 422 naming the field;
the links between a tick's task and its schedule, under a namespaced mount too; and a
project that mounts no schedules, whose tasks link none."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.django_site import setup_in_process

DB = setup_in_process()

from django.contrib.auth.models import User  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import include, path  # noqa: E402

from errands.django import get_app  # noqa: E402
from errands.django.urls import schedule_urls  # noqa: E402
from errands.ids import new_task_id  # noqa: E402
from tests.apps import django_tasks  # noqa: E402, F401 (registers the tasks)
from tests.test_schedules_http import tick_now  # noqa: E402

ECHO = "tests.apps.django_tasks.echo"
JSON = "application/json"
PROBLEM = "application/problem+json"

urlpatterns = [
    path("tasks/", include("errands.django.urls")),
    path("schedules/", include(schedule_urls)),
]


class Namespaced:
    """A URLconf with both includes under a prefix, the tasks' in a namespace of its own."""

    urlpatterns = [
        path("v1/tasks/", include("errands.django.urls", namespace="v1-tasks")),
        path("v1/schedules/", include(schedule_urls)),
    ]


@pytest.fixture
def mounted() -> Iterator[None]:
    """This module's URLconf: the tasks' include and the schedules'."""
    with override_settings(ROOT_URLCONF=__name__):
        yield


def _client(name: str, *, csrf: bool = False) -> Client:
    user, _ = User.objects.get_or_create(username=name)
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def _owner(name: str) -> str:
    return str(User.objects.get(username=name).pk)


def _create(client: Client, body: Any, prefix: str = "", **headers: str) -> Any:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    ctype = headers.pop("ctype", JSON)
    return client.post(f"{prefix}/schedules/", data, content_type=ctype, headers=headers)


@pytest.mark.usefixtures("mounted")
def test_create_read_list_pause_resume_delete() -> None:
    ann = _client("sched-ann")
    created = _create(ann, {"name": ECHO, "payload": {"args": ["hi"]}, "every": 3600})
    assert created.status_code == 201, created.content
    doc = created.json()
    assert created["Location"] == f"/schedules/{doc['id']}" == doc["links"]["self"]
    assert created["Content-Type"] == JSON and created["Cache-Control"] == "private, no-cache"
    assert doc["owner"] == _owner("sched-ann") and doc["name"] == ECHO
    assert doc["payload"] == {"args": ["hi"], "kwargs": {}}
    assert (doc["every"], doc["cron"], doc["timezone"], doc["paused"]) == (3600, None, "UTC", False)
    assert get_app().sync.schedules.get(doc["id"], owner=_owner("sched-ann")).every is not None

    read = ann.get(created["Location"])
    assert read.status_code == 200 and read.json() == doc
    assert ann.get("/schedules/").json() == {"items": [doc], "next_cursor": None}

    paused = ann.patch(created["Location"], json.dumps({"paused": True}), content_type=JSON)
    assert paused.status_code == 200, paused.content
    assert paused.json()["paused"] is True and paused.json()["next_run_at"] is None
    resumed = ann.patch(created["Location"], json.dumps({"paused": False}), content_type=JSON)
    assert resumed.json()["paused"] is False and resumed.json()["next_run_at"] is not None

    deleted = ann.delete(created["Location"])
    assert deleted.status_code == 204 and deleted.content == b""
    gone = ann.get(created["Location"])
    assert gone.status_code == 404 and gone.json()["detail"] == "No such schedule."
    assert ann.get("/schedules/").json()["items"] == []


@pytest.mark.usefixtures("mounted")
def test_someone_elses_schedule_is_the_same_404_as_a_missing_one() -> None:
    ann, bob = _client("sched-ann2"), _client("sched-bob2")
    doc = _create(ann, {"name": ECHO, "cron": "0 9 * * *", "timezone": "Asia/Tokyo"}).json()
    for method, data in (("get", None), ("patch", {"paused": True}), ("delete", None)):
        answers = []
        for sid in (doc["id"], new_task_id(), "nope"):
            kwargs: dict[str, Any] = {}
            if data is not None:
                kwargs = {"data": json.dumps(data), "content_type": JSON}
            r = getattr(bob, method)(f"/schedules/{sid}", **kwargs)
            answers.append((r.status_code, r["Content-Type"], r.content))
        assert answers[0][:2] == (404, PROBLEM), method
        assert answers[0] == answers[1] == answers[2], (method, answers)
    assert ann.get(doc["links"]["self"]).json() == doc
    assert bob.get("/schedules/").json()["items"] == []
    refused = bob.get("/schedules/", {"owner": _owner("sched-ann2")})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "owner"


@pytest.mark.usefixtures("mounted")
def test_errors_are_problem_documents_that_write_nothing() -> None:
    anonymous = Client()
    for r in (anonymous.get("/schedules/"), anonymous.delete(f"/schedules/{new_task_id()}")):
        assert r.status_code == 401 and r["Content-Type"] == PROBLEM
    ann = _client("sched-ann3")
    before = get_app().sync.schedules.list(owner=_owner("sched-ann3"))
    cases: list[tuple[Any, dict[str, str], int, str | None]] = [
        ({"name": ECHO, "cron": "0 25 * * *"}, {}, 422, "cron"),
        ({"name": ECHO, "every": 10}, {}, 422, "every"),
        ({"name": ECHO, "every": 60, "timezone": "Nowhere/Land"}, {}, 422, "timezone"),
        ({"name": "no.such.task", "every": 60}, {}, 422, "name"),
        ({"name": ECHO, "every": 60, "payload": {"nope": 1}}, {}, 422, "payload"),
        ("not json", {}, 422, "body"),
        (b"{}", {"ctype": "text/plain"}, 415, None),
        ({"name": ECHO, "every": 60, "payload": {"args": ["x" * 2_000_000]}}, {}, 413, None),
    ]
    for body, headers, status, field in cases:
        r = _create(ann, body, **headers)
        assert r.status_code == status, (body, r.content)
        assert r["Content-Type"] == PROBLEM
        if field is not None:
            assert r.json()["errors"][0]["field"].startswith(field), r.json()
    assert get_app().sync.schedules.list(owner=_owner("sched-ann3")) == before
    assert ann.put("/schedules/").status_code == 405
    assert ann.post(f"/schedules/{new_task_id()}").status_code == 405
    # With the session cookie, writes need the CSRF token, as for tasks.
    guarded = _client("sched-ann3", csrf=True)
    refused = _create(guarded, {"name": ECHO, "every": 60})
    assert refused.status_code == 403 and refused["Content-Type"] == PROBLEM


@pytest.mark.usefixtures("mounted")
def test_a_ticks_task_and_its_schedule_link_each_other() -> None:
    ann = _client("sched-ann4")
    doc = _create(ann, {"name": ECHO, "payload": {"args": [1]}, "every": 60}).json()
    tick_now(get_app(), doc["id"])
    doc = ann.get(doc["links"]["self"]).json()
    task_id = doc["last_task_id"]
    assert task_id is not None and doc["last_run_at"] is not None
    assert doc["links"] == {"self": f"/schedules/{doc['id']}", "last_task": f"/tasks/{task_id}"}
    task = ann.get(doc["links"]["last_task"]).json()
    assert task["schedule_id"] == doc["id"] and task["scheduled_for"] == doc["last_run_at"]
    assert task["links"]["schedule"] == doc["links"]["self"]


def test_links_follow_a_namespaced_prefixed_mount() -> None:
    with override_settings(ROOT_URLCONF=Namespaced):
        _namespaced_prefixed_mount()


def _namespaced_prefixed_mount() -> None:
    ann = _client("sched-ann5")
    created = _create(ann, {"name": ECHO, "every": 60}, prefix="/v1")
    assert created.status_code == 201, created.content
    sid = created.json()["id"]
    assert created["Location"] == f"/v1/schedules/{sid}"
    tick_now(get_app(), sid)
    doc = ann.get(f"/v1/schedules/{sid}").json()
    assert doc["links"]["last_task"] == f"/v1/tasks/{doc['last_task_id']}"
    task = ann.get(doc["links"]["last_task"]).json()
    assert task["links"]["self"] == f"/v1/tasks/{doc['last_task_id']}"
    assert task["links"]["schedule"] == f"/v1/schedules/{sid}"


def test_a_project_without_the_schedules_include_links_none() -> None:
    """The example project mounts only ``tasks/``: a scheduled task says which schedule
    made it, but links no schedule URL."""
    owner = str(User.objects.get_or_create(username="sched-ann6")[0].pk)
    schedule = get_app().sync.schedules.create(ECHO, {"args": [2]}, owner=owner, every=60)
    tick_now(get_app(), schedule.id)
    task_id = get_app().sync.schedules.get(schedule.id, owner=owner).last_task_id
    task = _client("sched-ann6").get(f"/tasks/{task_id}").json()
    assert task["schedule_id"] == schedule.id
    assert set(task["links"]) == {"self", "events", "output", "cancel"}
