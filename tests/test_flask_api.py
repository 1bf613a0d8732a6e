"""The HTTP API in Flask (``errands.flask.task_blueprint``) over real HTTP: a threaded
werkzeug server in the test's process, on the test's SQLite file, with real workers
(in this process, on a thread of their own).

Covered: submit (202, ``Location``), ``ETag``/``304``, listing and output; that another
owner's task is indistinguishable from a missing one on every endpoint; 401, 413, 415,
422, 429 and 431 as problem documents that write nothing; answers byte for byte equal
to FastAPI's ``task_api`` on the same app; a task's SSE stream to its ``done`` event
with a real worker; the caller's ``/events``; that a client leaving a stream releases
its watch; the element's script; and the event loop thread the views await on
(``errands.flask.loop``).

Every wait polls with a deadline; no sleep is an assertion.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from typing import Any

import flask
import httpx
import pytest
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from errands import ANY_OWNER, Errands
from errands.flask import task_blueprint
from errands.flask.blueprint import ELEMENT_SCRIPT
from errands.flask.loop import LoopThread, loop_for
from errands.ids import new_task_id
from errands.web.hub import ChangeHub, hub_for
from tests.apps.web import install
from tests.conftest import FAST, LiveServer, eventually
from tests.test_web_api import (
    BAD_SUBMITS,
    TASK_ENDPOINTS,
    assert_401_everywhere,
    assert_problem,
    counts,
    rows,
    submit,
)
from tests.test_web_live import Event, iter_sse

PROBLEM = "application/problem+json"
DEADLINE = 20.0


# -- the server ---------------------------------------------------------------------------
def owner_of(request: flask.Request) -> str | None:
    """The identity of the tests: the ``X-User`` header."""
    return request.headers.get("X-User") or None


def admin_of(request: flask.Request) -> bool:
    return request.headers.get("X-User") == "admin"


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No line per request (errors are still logged)."""


class FlaskServer:
    """A Flask application with the blueprint at ``prefix``, served by werkzeug's
    threaded server (one thread per request) on a free port."""

    def __init__(self, target: Errands, prefix: str = "/api", **options: Any) -> None:
        if "steps" not in target.registry:
            install(target)
        self.app = target
        self.flask = flask.Flask(__name__)
        blueprint = task_blueprint(target, current_owner=owner_of, is_admin=admin_of, **options)
        self.flask.register_blueprint(blueprint, url_prefix=prefix)
        self.server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, self.flask, threaded=True, request_handler=_QuietHandler
        )
        self.root = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def hub(self) -> ChangeHub:
        return hub_for(self.app.runtime)

    def client(self, user: str | None) -> httpx.Client:
        """A client on the server's root (``Location`` paths work as they are)."""
        headers = {"X-User": user} if user else {}
        return httpx.Client(base_url=self.root, headers=headers, timeout=DEADLINE, trust_env=False)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


Serve = Callable[..., FlaskServer]


@pytest.fixture
def flask_serve(app: Errands) -> Iterator[Serve]:
    """``flask_serve(**task_blueprint options)``: the API for ``app`` in Flask."""
    servers: list[FlaskServer] = []

    def start(**options: Any) -> FlaskServer:
        options.setdefault("poll_interval", 0.2)
        options.setdefault("submit_rate", None)
        server = FlaskServer(app, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def work(app: Errands) -> None:
    """Run every queued task to its end with a real worker (burst: it drains the queue
    and returns)."""
    app.run_worker(**(FAST | {"burst": True}))


def events_of(response: httpx.Response) -> Iterator[Event]:
    for item in iter_sse(response):
        assert isinstance(item, Event)
        yield item


def watching(server: FlaskServer) -> tuple[int, int, int]:
    hub = server.hub
    return hub.watchers, len(hub.feeds), len(hub.owners)


# -- submit, read, list, output, cancel, delete -------------------------------------------
def test_submit_is_202_with_location_and_reads_are_conditional(
    flask_serve: Serve, app: Errands
) -> None:
    server = flask_serve()
    with server.client("alice") as c:
        r = c.post("/api/tasks", json={"name": "steps", "payload": {"steps": 3, "delay": 0}})
        assert r.status_code == 202, r.text
        assert r.headers["content-type"] == "application/json"
        task = r.json()
        location = r.headers["location"]
        assert location == f"/api/tasks/{task['id']}"
        assert task["status"] == "queued" and task["version"] == 1
        # No WebSocket in WSGI: the resource links none.
        assert task["links"] == {
            "self": location,
            "events": f"{location}/events",
            "output": f"{location}/output",
            "cancel": f"{location}/cancel",
        }
        assert r.headers["etag"] == '"1"'
        assert r.headers["cache-control"] == "private, no-cache"

        r = c.get(location)
        assert r.status_code == 200 and r.json()["id"] == task["id"]
        etag = r.headers["etag"]
        assert etag == '"1"' and 1 <= int(r.headers["retry-after"]) <= 60
        for header in (etag, f"W/{etag}", f'"999", {etag}', "*"):
            r = c.get(location, headers={"If-None-Match": header})
            assert r.status_code == 304, header
            assert r.content == b"" and r.headers["etag"] == etag
            assert "content-type" not in r.headers
        assert c.get(location, headers={"If-None-Match": '"999"'}).status_code == 200

        work(app)
        r = c.get(location, headers={"If-None-Match": etag})
        assert r.status_code == 200 and r.headers["etag"] != etag
        done = r.json()
        assert done["status"] == "succeeded" and done["result"] == {"steps": 3}
        assert r.headers["etag"] == f'"{done["version"]}"' and "retry-after" not in r.headers

        page = c.get(f"{location}/output").json()
        assert page == {
            "items": [{"seq": n, "data": {"step": n}} for n in (1, 2, 3)],
            "last_seq": 3,
            "output_floor": 0,
        }
        page = c.get(f"{location}/output", params={"after": 1, "limit": 1}).json()
        assert page["items"] == [{"seq": 2, "data": {"step": 2}}] and page["last_seq"] == 2

        queued = submit(c, "sleepy", {"seconds": 60})
        listed = c.get("/api/tasks").json()
        assert [t["id"] for t in listed["items"]] == [queued["id"], task["id"]]
        assert listed["next_cursor"] is None
        first = c.get("/api/tasks", params={"limit": 1}).json()
        assert [t["id"] for t in first["items"]] == [queued["id"]]
        rest = c.get("/api/tasks", params={"limit": 1, "cursor": first["next_cursor"]}).json()
        assert [t["id"] for t in rest["items"]] == [task["id"]]
        only = c.get("/api/tasks", params={"status": "queued"}).json()["items"]
        assert [t["id"] for t in only] == [queued["id"]]

        # Cancel a queued task: 200 at once; cancelling again changes nothing.
        r = c.post(queued["links"]["cancel"])
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        again = c.post(queued["links"]["cancel"])
        assert again.status_code == 200 and again.json()["version"] == r.json()["version"]

        # Delete: 204 without a body or a Content-Type; then it is gone.
        r = c.delete(location)
        assert r.status_code == 204 and r.content == b"" and "content-type" not in r.headers
        assert_problem(c.get(location), 404)
        assert_problem(c.get(f"{location}/output"), 404)


def test_an_administrator_sees_every_owners_tasks(flask_serve: Serve) -> None:
    server = flask_serve()
    with server.client("alice") as alice, server.client("admin") as admin:
        tid = submit(alice, "crash", {})["id"]
        work(server.app)
        seen = admin.get(f"/api/tasks/{tid}").json()
        assert seen["owner"] == "alice" and seen["status"] == "failed"
        assert "secret internal detail" in seen["error"]["detail"]  # the traceback
        assert "detail" not in alice.get(f"/api/tasks/{tid}").json()["error"]
        everyone = admin.get("/api/tasks", params={"owner": "*"}).json()["items"]
        assert [t["id"] for t in everyone] == [tid]
        assert admin.get("/api/tasks").json()["items"] == []  # its own
        doc = assert_problem(alice.get("/api/tasks", params={"owner": "bob"}), 422)
        assert [e["field"] for e in doc["errors"]] == ["owner"]


def test_links_follow_the_blueprints_prefix(app: Errands) -> None:
    server = FlaskServer(app, prefix="/v2/errands", submit_rate=None)
    try:
        with server.client("alice") as c:
            r = c.post("/v2/errands/tasks", json={"name": "steps", "payload": {"steps": 1}})
            assert r.status_code == 202, r.text
            base = f"/v2/errands/tasks/{r.json()['id']}"
            assert r.headers["location"] == base
            assert all(link.startswith(base) for link in r.json()["links"].values())
            assert c.get(base).json()["links"]["self"] == base
    finally:
        server.stop()


# -- someone else's task ---------------------------------------------------------------------
def test_another_owners_task_is_a_missing_one_on_every_endpoint(
    flask_serve: Serve, app: Errands
) -> None:
    server = flask_serve()
    with server.client("alice") as alice, server.client("bob") as bob:
        finished = submit(alice, "steps", {"steps": 2, "delay": 0})["id"]
        work(app)
        queued = submit(alice, "sleepy", {"seconds": 60})["id"]
        written = counts(app)

        def answer(r: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
            head = sorted((k, v) for k, v in r.headers.items() if k not in ("date",))
            return r.status_code, head, r.content

        for tid in (finished, queued):
            for method, path, headers in TASK_ENDPOINTS:
                answers = [
                    answer(bob.request(method, "/api" + path.format(id=i), headers=headers))
                    for i in (tid, new_task_id(), "nope")
                ]
                status, head, body = answers[0]
                assert status == 404, (method, path)
                assert dict(head)["content-type"] == PROBLEM
                assert json.loads(body)["detail"] == "No such task."
                assert answers[0] == answers[1] == answers[2], (method, path, answers)
        assert counts(app) == written
        assert alice.get(f"/api/tasks/{queued}").json()["status"] == "queued"
        # The owner of the finished task, past its end: 204 (bob's was 404).
        past_end = {"Last-Event-ID": "999999-999999"}
        r = alice.get(f"/api/tasks/{finished}/events", headers=past_end)
        assert r.status_code == 204 and r.content == b""


# -- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_kwargs", "status", "field"),
    [pytest.param(kw, status, field, id=case) for case, kw, status, field in BAD_SUBMITS],
)
def test_bad_submit_is_refused_and_writes_nothing(
    flask_serve: Serve,
    app: Errands,
    request_kwargs: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    # The cases of the FastAPI suite (tests/test_web_api.py): 413, 415 and 422.
    server = flask_serve(max_body_bytes=2000)
    with server.client("alice") as c:
        submit(c, "steps", {"steps": 1})
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
        assert counts(app) == written


def test_bad_queries_are_422(flask_serve: Serve) -> None:
    server = flask_serve()
    with server.client("alice") as c:
        tid = submit(c, "sleepy", {"seconds": 60})["id"]
        for path, field in [
            ("/api/tasks?limit=abc", "limit"),
            ("/api/tasks?limit=0", "limit"),
            ("/api/tasks?status=bogus", "status"),
            ("/api/tasks?cursor=nope", "cursor"),
            (f"/api/tasks/{tid}/output?after=-1", "after"),
            (f"/api/tasks/{tid}/output?limit=1001", "limit"),
            (f"/api/tasks/{tid}/events?last_event_id=x-y", "Last-Event-ID"),
        ]:
            doc = assert_problem(c.get(path), 422)
            assert [e["field"] for e in doc["errors"]] == [field], path


def test_no_identity_is_401_everywhere(flask_serve: Serve, app: Errands) -> None:
    server = flask_serve()
    with server.client("alice") as alice:
        tid = submit(alice, "steps", {"steps": 1})["id"]
    written = counts(app)
    with server.client(None) as anonymous:
        assert_401_everywhere(anonymous, tid)
    assert counts(app) == written


def test_submit_rate_limit_is_429_per_owner(flask_serve: Serve, app: Errands) -> None:
    server = flask_serve(submit_rate=0.05, submit_burst=2)  # no refill while the test runs
    with server.client("alice") as alice, server.client("bob") as bob:
        submit(alice, "steps", {"steps": 1})
        submit(alice, "steps", {"steps": 1})
        r = alice.post("/api/tasks", json={"name": "steps", "payload": {"steps": 1}})
        assert_problem(r, 429)
        assert int(r.headers["retry-after"]) >= 1
        submit(bob, "steps", {"steps": 1})
        assert counts(app) == rows(task=3, job=3)


def test_huge_header_section_is_431_before_anything_runs(flask_serve: Serve, app: Errands) -> None:
    server = flask_serve()
    with server.client("alice") as c:
        tid = submit(c, "sleepy", {"seconds": 60})["id"]
        written = counts(app)
        huge = {"X-Padding": "a" * 17_000}
        for method, path, headers in [
            ("POST", "/tasks", {}),
            ("GET", "/tasks", {}),
            ("GET", "/events", {}),
            *TASK_ENDPOINTS,
        ]:
            kwargs: dict[str, Any] = {"headers": headers | huge}
            if method == "POST" and path == "/tasks":
                kwargs["json"] = {"name": "steps"}
            r = c.request(method, "/api" + path.format(id=tid), **kwargs)
            assert_problem(r, 431)
        assert counts(app) == written
        assert c.get(f"/api/tasks/{tid}").json()["status"] == "queued"
        assert c.get("/api/tasks", headers={"X-Padding": "a" * 8000}).status_code == 200


def test_the_hosts_max_content_length_is_413_as_a_problem(app: Errands) -> None:
    server = FlaskServer(app, submit_rate=None)
    server.flask.config["MAX_CONTENT_LENGTH"] = 100
    try:
        with server.client("alice") as c:
            body = json.dumps({"name": "steps", "payload": {"pad": "x" * 200}}).encode()
            chunked = c.post(
                "/api/tasks",
                content=iter([body[:50], body[50:]]),
                headers={"Content-Type": "application/json"},
            )
            assert_problem(chunked, 413)
    finally:
        server.stop()


# -- the same bytes as FastAPI --------------------------------------------------------------
def without_ws_link(body: bytes) -> bytes:
    """A FastAPI answer less its resources' WebSocket links (Flask serves none)."""
    return re.sub(rb',"ws":"[^"]*/ws"', b"", body)


def test_answers_are_byte_for_byte_fastapis(
    flask_serve: Serve, serve: Callable[..., LiveServer], app: Errands
) -> None:
    fast = serve(max_body_bytes=2000)
    server = flask_serve(max_body_bytes=2000)
    clients = ExitStack()
    with clients:
        fa = clients.enter_context(httpx.Client(base_url=fast.root, headers={"X-User": "alice"}))
        fl = clients.enter_context(server.client("alice"))
        fa_bob = clients.enter_context(httpx.Client(base_url=fast.root, headers={"X-User": "bob"}))
        fl_bob = clients.enter_context(server.client("bob"))
        anonymous = clients.enter_context(httpx.Client(base_url=fast.root))
        fl_anonymous = clients.enter_context(server.client(None))

        done = submit(fa, "steps", {"steps": 3, "delay": 0})["id"]
        failed = submit(fl, "fail", {"message": "no luck"})["id"]
        work(app)
        queued = submit(fa, "sleepy", {"seconds": 60})["id"]
        cancelled = submit(fl, "sleepy", {"seconds": 60})["id"]

        def same(method: str, path: str, *, a: httpx.Client, b: httpx.Client, **kw: Any) -> int:
            ra, rb = a.request(method, path, **kw), b.request(method, path, **kw)
            assert rb.status_code == ra.status_code, (path, ra.text, rb.text)
            assert rb.content == without_ws_link(ra.content), path
            for header in ("content-type", "etag", "cache-control", "location", "retry-after"):
                assert rb.headers.get(header) == ra.headers.get(header), (path, header)
            return ra.status_code

        def both(method: str, path: str, **kw: Any) -> int:
            return same(method, path, a=fa, b=fl, **kw)

        assert both("GET", f"/api/tasks/{done}") == 200
        assert both("GET", f"/api/tasks/{failed}") == 200
        assert both("GET", f"/api/tasks/{done}", headers={"If-None-Match": '"1"'}) == 200
        version = fa.get(f"/api/tasks/{done}").headers["etag"]
        assert both("GET", f"/api/tasks/{done}", headers={"If-None-Match": version}) == 304
        assert both("GET", f"/api/tasks/{done}/output") == 200
        assert both("GET", f"/api/tasks/{done}/output?after=1&limit=1") == 200
        assert both("GET", "/api/tasks?status=succeeded") == 200
        assert both("GET", "/api/tasks?status=failed&limit=1") == 200
        assert both("POST", f"/api/tasks/{cancelled}/cancel") == 200  # the first: a change
        assert both("POST", f"/api/tasks/{cancelled}/cancel") == 200
        assert both("GET", f"/api/tasks/{cancelled}") == 200
        past_end = {"Last-Event-ID": "999999-999999"}
        assert both("GET", f"/api/tasks/{done}/events", headers=past_end) == 204
        # The problems.
        for tid in (done, queued, new_task_id(), "nope"):
            assert same("GET", f"/api/tasks/{tid}", a=fa_bob, b=fl_bob) == 404
            assert same("GET", f"/api/tasks/{tid}/output", a=fa_bob, b=fl_bob) == 404
            assert same("POST", f"/api/tasks/{tid}/cancel", a=fa_bob, b=fl_bob) == 404
            assert same("DELETE", f"/api/tasks/{tid}", a=fa_bob, b=fl_bob) == 404
            assert same("GET", f"/api/tasks/{tid}/events", a=fa_bob, b=fl_bob) == 404
        assert same("GET", "/api/tasks", a=anonymous, b=fl_anonymous) == 401
        assert same("GET", f"/api/tasks/{done}", a=anonymous, b=fl_anonymous) == 401
        for query in ("limit=abc", "limit=0", "status=bogus", "cursor=x", "owner=bob"):
            assert both("GET", f"/api/tasks?{query}") == 422, query
        for query in ("after=-1", "limit=1001", "after=x"):
            assert both("GET", f"/api/tasks/{done}/output?{query}") == 422, query
        assert both("GET", f"/api/tasks/{done}/events?last_event_id=x") == 422
        for _case, kwargs, status, _field in BAD_SUBMITS:
            content = kwargs.get("content") or json.dumps(kwargs.get("json")).encode()
            headers = {"Content-Type": "application/json", **kwargs.get("headers", {})}
            if "data" in kwargs:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                content = b"name=steps"
            if "chunks" in kwargs:
                content = b"".join(kwargs["chunks"])
            assert both("POST", "/api/tasks", content=content, headers=headers) == status
        assert both("GET", "/api/tasks", headers={"X-Padding": "a" * 17_000}) == 431


# -- live events ---------------------------------------------------------------------------
@pytest.mark.databases("sqlite", "postgresql")
def test_task_events_to_done_with_a_real_worker(flask_serve: Serve, app: Errands) -> None:
    server = flask_serve()
    with server.client("alice") as c:
        tid = submit(c, "steps", {"steps": 5, "delay": 0.05})["id"]
        with c.stream("GET", f"/api/tasks/{tid}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            stream = events_of(response)
            first = next(stream)
            assert first.event == "status" and first.data["status"] == "queued"
            worker = threading.Thread(target=work, args=(app,), daemon=True)
            worker.start()
            events = [first, *stream]  # until the server ends the stream
        worker.join(DEADLINE)
        assert not worker.is_alive()
    last = events[-1]
    assert last.event == "done" and last.data["status"] == "succeeded"
    assert last.data["result"] == {"steps": 5} and last.data["id"] == tid
    assert [e.data for e in events if e.event == "output"] == [
        {"seq": n, "data": {"step": n}} for n in range(1, 6)
    ]
    assert [e.event for e in events].count("done") == 1
    keys = [tuple(int(p) for p in e.id.split("-")) for e in events]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert "running" in {e.data["status"] for e in events if e.event in ("status", "progress")}
    eventually(lambda: watching(server) == (0, 0, 0), "the watch to go", tolerate=(RuntimeError,))


def test_owner_events_show_only_the_callers_tasks(flask_serve: Serve, app: Errands) -> None:
    server = flask_serve(keepalive=0.2)  # (the stream's end is noticed at a keep-alive)
    with (
        server.client("alice") as alice,
        server.client("bob") as bob,
        alice.stream("GET", "/api/events") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        eventually(lambda: server.hub.owners.get("alice"), "alice's watch")
        submit(bob, "steps", {"steps": 1})
        mine = submit(alice, "steps", {"steps": 2, "delay": 0})["id"]
        work(app)
        seen: list[dict[str, Any]] = []
        for event in events_of(response):
            assert event.event == "task"
            seen.append(event.data)
            if event.data["done"]:
                break
    assert {doc["id"] for doc in seen} == {mine}
    assert seen[-1]["status"] == "succeeded"
    eventually(lambda: watching(server) == (0, 0, 0), "the watch to go", tolerate=(RuntimeError,))


def test_a_client_leaving_a_stream_releases_its_watch(flask_serve: Serve) -> None:
    # A WSGI server learns that the client left when it next writes: a keep-alive comes
    # every `keepalive` seconds.
    server = flask_serve(keepalive=0.1)
    with server.client("alice") as c:
        tid = submit(c, "sleepy", {"seconds": 60})["id"]
        with ExitStack() as streams:
            for _ in range(3):
                response = streams.enter_context(c.stream("GET", f"/api/tasks/{tid}/events"))
                assert next(events_of(response)).data["status"] == "queued"
            for _ in range(2):
                response = streams.enter_context(c.stream("GET", "/api/events"))
                assert next(response.iter_bytes()).startswith(b"retry: 2000")
            eventually(
                lambda: watching(server) == (5, 1, 1),
                "every stream to be watching",
                tolerate=(RuntimeError,),
            )
        eventually(
            lambda: watching(server) == (0, 0, 0),
            "the hub to forget every watch",
            tolerate=(RuntimeError,),
        )
        # Nothing changed the task, and the hub still serves.
        assert c.get(f"/api/tasks/{tid}").json()["status"] == "queued"
        with c.stream("GET", f"/api/tasks/{tid}/events") as response:
            stream = events_of(response)
            assert next(stream).data["status"] == "queued"
            assert c.post(f"/api/tasks/{tid}/cancel").status_code == 200
            last = list(stream)[-1]
        assert last.event == "done" and last.data["status"] == "cancelled"


def test_keepalive_comments_while_nothing_changes(flask_serve: Serve) -> None:
    server = flask_serve(keepalive=0.1)
    with server.client("alice") as c:
        tid = submit(c, "sleepy", {"seconds": 60})["id"]
        for path in (f"/api/tasks/{tid}/events", "/api/events"):
            with c.stream("GET", path) as response:
                comments = (i for i in iter_sse(response, comments=True) if isinstance(i, str))
                assert next(comments) == ": keep-alive"
                assert next(comments) == ": keep-alive"


def test_closing_the_app_ends_open_streams(flask_serve: Serve, app: Errands) -> None:
    server = flask_serve()
    with server.client("alice") as c:
        tid = submit(c, "sleepy", {"seconds": 60})["id"]
        with c.stream("GET", f"/api/tasks/{tid}/events") as response:
            stream = events_of(response)
            assert next(stream).data["status"] == "queued"
            runner = loop_for(app)
            assert runner.running
            app.close()
            assert list(stream) == []  # the server ended the response
        assert not runner.running
        assert loop_for(app) is not runner  # a later request gets a new loop


def test_the_element_script_is_served(flask_serve: Serve) -> None:
    server = flask_serve()
    with server.client(None) as c:
        r = c.get("/api/errands-task.js")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/javascript")
        assert r.content == ELEMENT_SCRIPT.read_bytes()
        assert "customElements.define" in r.text
        r = c.get("/api/errands-task.js", headers={"If-None-Match": r.headers["etag"]})
        assert r.status_code == 304


# -- the loop thread ------------------------------------------------------------------------
def test_loop_thread_runs_coroutines_and_closes_what_waits() -> None:
    runner = LoopThread(name="errands-test-loop")
    try:

        async def double(n: int) -> int:
            await asyncio.sleep(0)
            return 2 * n

        async def broken() -> None:
            raise ValueError("from the loop")

        assert runner.run(double(21)) == 42
        with pytest.raises(ValueError, match="from the loop"):
            runner.run(broken())

        async def numbers() -> AsyncIterator[int]:
            for n in range(3):
                yield n

        assert list(runner.iterate(numbers())) == [0, 1, 2]

        # Closing a stream part-way closes its async generator on the loop.
        finished = threading.Event()

        async def holding() -> AsyncIterator[int]:
            try:
                yield 1
                yield 2
            finally:
                finished.set()

        stream = runner.iterate(holding())
        assert next(stream) == 1
        stream.close()
        assert finished.is_set()
        assert list(stream) == []

        # A caller waiting on the loop when it closes is not left waiting.
        forever = asyncio.Event()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(runner.run, forever.wait())
            eventually(lambda: any(t.get_name() for t in _tasks(runner)), "the wait to start")
            runner.close()
            with pytest.raises(concurrent.futures.CancelledError):
                waiting.result(DEADLINE)
        assert not runner.running
        assert "errands-test-loop" not in {t.name for t in threading.enumerate()}
        assert runner.run(double(1)) == 2  # a new loop
    finally:
        runner.close()


def _tasks(runner: LoopThread) -> set[asyncio.Task[Any]]:
    loop = runner.loop()

    async def others() -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    return asyncio.run_coroutine_threadsafe(others(), loop).result()


def test_one_loop_per_app_closed_with_it(tmp_path: Any) -> None:
    first = Errands(f"sqlite:///{tmp_path / 'one.db'}")
    second = Errands(f"sqlite:///{tmp_path / 'two.db'}")
    try:
        assert loop_for(first) is loop_for(first)
        assert loop_for(first) is not loop_for(second)
        runner = loop_for(first)
        assert runner.run(first.list(owner=ANY_OWNER)).items == []
        first.close()
        assert not runner.running
        assert loop_for(second).run(second.list(owner=ANY_OWNER)).items == []
    finally:
        first.close()
        second.close()
