"""Groups in Django (``errands.django.urls``): Django's test client on the example
project in this process. Submit a group, read it and its children (their links under
the project's mount), and another user's identical 404 on the group, its children and
every part; a refused payload named by its place, writing nothing."""

from __future__ import annotations

import json
from typing import Any

from tests.django_site import setup_in_process

DB = setup_in_process()

from django.contrib.auth.models import User  # noqa: E402
from django.test import Client  # noqa: E402

from errands.django import get_app  # noqa: E402
from errands.ids import new_task_id  # noqa: E402
from tests.apps import django_tasks  # noqa: E402, F401 (registers the tasks)

ECHO = "tests.apps.django_tasks.echo"
JSON = "application/json"
PROBLEM = "application/problem+json"


def _client(name: str) -> Client:
    user, _ = User.objects.get_or_create(username=name)
    client = Client()
    client.force_login(user)
    return client


def _submit(client: Client, body: Any) -> Any:
    return client.post("/tasks/", json.dumps(body), content_type=JSON)


def _answer(r: Any) -> tuple[int, str, bytes]:
    return r.status_code, r["Content-Type"], r.content


def test_a_group_its_children_and_another_users_404() -> None:
    ann, bob = _client("group-ann"), _client("group-bob")
    payloads = [{"args": [n]} for n in range(3)]
    r = _submit(ann, {"name": ECHO, "payloads": payloads})
    assert r.status_code == 202, r.content
    group = r.json()
    location = f"/tasks/{group['id']}"
    assert r["Location"] == group["links"]["self"] == location
    assert group["group"] == {"size": 3} and group["status"] == "running"
    assert group["links"]["children"] == f"{location}/children"
    assert ann.get(location).json() == group

    page = ann.get(f"{location}/children", {"limit": 2}).json()
    assert [c["group_index"] for c in page["items"]] == [0, 1] and page["next_cursor"] == 1
    rest = ann.get(f"{location}/children", {"after": 1, "limit": 2}).json()
    assert [c["group_index"] for c in rest["items"]] == [2] and rest["next_cursor"] is None
    parts = page["items"] + rest["items"]
    assert [c["payload"] for c in parts] == [{"args": [n], "kwargs": {}} for n in range(3)]
    for child in parts:
        assert child["parent_id"] == group["id"] and child["links"]["group"] == location
        assert "group" not in child

    missing = _answer(bob.get(f"/tasks/{new_task_id()}"))
    assert missing[:2] == (404, PROBLEM)
    for path in [location, *(c["links"]["self"] for c in parts)]:
        assert _answer(bob.get(path)) == missing, path
    missing_children = _answer(bob.get(f"/tasks/{new_task_id()}/children"))
    assert _answer(bob.get(f"{location}/children")) == missing_children
    assert _answer(ann.get(f"{parts[0]['links']['self']}/children")) == missing_children
    assert _answer(bob.get(f"{location}/children")) == missing


def test_a_refused_payload_is_named_by_its_place_and_writes_nothing() -> None:
    ann = _client("group-ann2")
    owner = str(User.objects.get(username="group-ann2").pk)
    before = get_app().sync.list(owner=owner).items
    cases = [
        ({"name": ECHO, "payloads": [{"args": [1]}, {"nope": 1}]}, "payloads.1"),
        ({"name": ECHO, "payloads": []}, "payloads"),
        ({"name": ECHO, "payloads": [{}], "then": "no.such.task"}, "then"),
        ({"name": ECHO, "payloads": [{}], "payload": {}}, "payload"),
    ]
    for body, field in cases:
        r = _submit(ann, body)
        assert r.status_code == 422 and r["Content-Type"] == PROBLEM, r.content
        fields = [e["field"] for e in r.json()["errors"]]
        assert len(fields) == 1 and fields[0].startswith(field), (body, fields)
    assert get_app().sync.list(owner=owner).items == before
