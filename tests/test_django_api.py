"""errands' HTTP API in Django (``errands.django.urls``): Django's test client on the
example project in this process, and the project under a real ASGI server (uvicorn)
for the live events, with a worker on the same database."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.django_site import SiteServer, setup_in_process

DB = setup_in_process()

from django.contrib.auth.models import User  # noqa: E402
from django.test import Client  # noqa: E402

from errands.django import get_app  # noqa: E402
from errands.ids import new_task_id  # noqa: E402
from tests.apps import django_tasks  # noqa: E402, F401 (registers the tasks)

ECHO = "tests.apps.django_tasks.echo"
JSON = "application/json"


def _client(name: str, *, csrf: bool = False) -> Client:
    user, _ = User.objects.get_or_create(username=name)
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def _submit(client: Client, body: Any, **headers: str) -> Any:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post("/tasks/", data, content_type=headers.pop("ctype", JSON), headers=headers)


def test_submit_read_list_and_conditional_get() -> None:
    alice = _client("api-alice")
    created = _submit(alice, {"name": ECHO, "payload": {"args": ["hi"]}})
    assert created.status_code == 202, created.content
    doc = created.json()
    assert created["Location"] == f"/tasks/{doc['id']}" == doc["links"]["self"]
    assert doc["links"] == {
        "self": f"/tasks/{doc['id']}",
        "events": f"/tasks/{doc['id']}/events",
        "output": f"/tasks/{doc['id']}/output",
        "cancel": f"/tasks/{doc['id']}/cancel",
    }
    assert doc["status"] == "queued" and doc["payload"] == {"args": ["hi"], "kwargs": {}}
    read = alice.get(created["Location"])
    assert read.status_code == 200 and read["ETag"] == f'"{doc["version"]}"'
    assert read["Cache-Control"] == "private, no-cache"
    same = alice.get(created["Location"], headers={"If-None-Match": read["ETag"]})
    assert same.status_code == 304 and same.content == b""
    listed = alice.get("/tasks/", {"name": ECHO}).json()
    assert doc["id"] in [t["id"] for t in listed["items"]]
    output = alice.get(f"/tasks/{doc['id']}/output").json()
    assert output == {"items": [], "last_seq": 0, "output_floor": 0}


def test_someone_elses_task_is_the_same_404_as_a_missing_one_everywhere() -> None:
    alice, bob = _client("api-alice"), _client("api-bob")
    task_id = _submit(alice, {"name": ECHO, "payload": {"args": [1]}}).json()["id"]
    missing = new_task_id()
    for method, suffix in (
        ("get", ""),
        ("get", "/output"),
        ("post", "/cancel"),
        ("delete", ""),
        ("get", "/events"),
    ):
        theirs = getattr(bob, method)(f"/tasks/{task_id}{suffix}")
        absent = getattr(bob, method)(f"/tasks/{missing}{suffix}")
        assert theirs.status_code == absent.status_code == 404, (method, suffix)
        assert theirs.content == absent.content, (method, suffix)
        assert theirs["Content-Type"] == "application/problem+json"
    assert bob.get("/tasks/").json()["items"] == [] or all(
        t["id"] != task_id for t in bob.get("/tasks/").json()["items"]
    )
    assert get_app().sync.get(task_id, owner=str(User.objects.get(username="api-alice").pk))


def test_errors_are_problem_documents() -> None:
    anonymous = Client()
    refused = anonymous.get("/tasks/")
    assert refused.status_code == 401 and refused["Content-Type"] == "application/problem+json"
    assert refused.json()["title"] == "Unauthorized"
    alice = _client("api-alice")
    assert _submit(alice, "not json").status_code == 422
    assert _submit(alice, b"{}", ctype="text/plain").status_code == 415
    invalid = _submit(alice, {"name": ECHO, "payload": {"nope": 1}})
    assert invalid.status_code == 422 and invalid.json()["errors"][0]["field"].startswith("payload")
    unknown = _submit(alice, {"name": "no.such.task"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "name"
    big = _submit(alice, {"name": ECHO, "payload": {"args": ["x" * 2_000_000]}})
    assert big.status_code == 413
    assert alice.get("/tasks/", {"limit": "0"}).status_code == 422
    assert alice.put("/tasks/").status_code == 405
    # Under WSGI (the test client), live events say to poll instead.
    task_id = _submit(alice, {"name": ECHO, "payload": {"args": [1]}}).json()["id"]
    assert alice.get(f"/tasks/{task_id}/events").status_code == 501


def test_writes_with_the_session_cookie_need_the_csrf_token() -> None:
    alice = _client("api-alice", csrf=True)
    refused = _submit(alice, {"name": ECHO, "payload": {"args": [1]}})
    assert refused.status_code == 403 and refused["Content-Type"] == "application/problem+json"
    alice.get("/tasks/")  # no token cookie yet: make one
    from django.middleware.csrf import _get_new_csrf_string

    token = _get_new_csrf_string()
    alice.cookies["csrftoken"] = token
    for header in ("X-CSRFToken", "X-CSRF-Token"):  # Django's name, and the element's
        accepted = _submit(alice, {"name": ECHO, "payload": {"args": [1]}}, **{header: token})
        assert accepted.status_code == 202, accepted.content


@pytest.mark.slow
async def test_live_events_over_asgi_reach_done(run_worker: Any) -> None:
    from asgiref.sync import sync_to_async

    @sync_to_async
    def login() -> tuple[str, str]:
        client = _client("api-live")
        task_id = client.post(
            "/tasks/",
            json.dumps({"name": "tests.apps.django_tasks.report", "payload": {"args": [3]}}),
            content_type=JSON,
        ).json()["id"]
        return client.cookies["sessionid"].value, task_id

    session, task_id = await login()
    server = SiteServer(DB)
    try:
        cookies = {"sessionid": session}
        async with (
            httpx.AsyncClient(base_url=server.url, cookies=cookies, timeout=30) as http,
            run_worker(get_app()),
        ):
            events: list[str] = []
            async with http.stream("GET", f"/tasks/{task_id}/events") as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                async for line in stream.aiter_lines():
                    if line.startswith("event: "):
                        events.append(line.removeprefix("event: "))
                    if events[-1:] == ["done"] and line.startswith("data: "):
                        final = json.loads(line.removeprefix("data: "))
                        break
            assert events.count("output") == 3 and events[-1] == "done"
            assert final["status"] == "succeeded" and final["progress"]["current"] == 3
            # Another user's stream is the same 404 as a missing task's.
            other = await sync_to_async(lambda: _client("api-other").cookies["sessionid"].value)()
            async with httpx.AsyncClient(base_url=server.url, cookies={"sessionid": other}) as them:
                theirs = await them.get(f"/tasks/{task_id}/events")
                absent = await them.get(f"/tasks/{new_task_id()}/events")
            assert theirs.status_code == absent.status_code == 404
            assert theirs.content == absent.content
    finally:
        server.close()
