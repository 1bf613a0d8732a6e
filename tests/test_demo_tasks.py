"""The demo's "My tasks" page (``/tasks``): newest first, only the user's own tasks, the
status filter, paging through older tasks, and what its live script (``tasks-page.js``)
needs — the table it updates and the owner's event stream ``/api/events``, read here
with the session cookie. Then the accounts' hardening: Argon2id password hashes with
the production hasher, and session cookies that cannot be forged or altered.

The app runs with its in-process worker on a SQLite file (``TestClient`` as a context
manager runs the lifespan). Tasks that only need to be listed are submitted to run in
a week ahead, so no worker runs them.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
import uuid
from base64 import b64decode, b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import argon2
import itsdangerous
import pytest
from starlette.testclient import TestClient  # its httpx2 warning is ignored in pyproject

from errands import Status
from errands.demo import accounts, store
from errands.demo.mytasks import PAGE_SIZE
from errands.demo.web import Demo
from errands.web.hub import hub_for
from tests.apps.demo_site import PASSWORD, DemoClient, build_demo
from tests.conftest import eventually

ALICE = "alice@example.com"
BOB = "bob@example.com"
ADMIN = "boss@example.com"
# A week ahead: no worker runs them during a test (the API takes run_at up to 30 days
# ahead from users).
FUTURE = (datetime.now(UTC) + timedelta(days=7)).isoformat()
LATER = datetime(2999, 1, 1, tzinfo=UTC)
SESSION = "errands_session"
#: A row of the task table (``_task_rows.html``): id, title, status, progress column.
ROW = re.compile(
    r'<tr data-task-id="([0-9a-f-]{36})">\s*<td><a href="/tasks/\1">(.*?)</a></td>\s*'
    r'<td><span class="badge" data-status="(\w+)">\3</span></td>\s*<td>(.*?)</td>',
    re.S,
)


@dataclass
class Row:
    id: str
    title: str
    status: str
    progress: str


class Site(DemoClient):
    def rows(self, url: str = "/tasks") -> tuple[list[Row], str]:
        """The task rows of the page at ``url``, and the page."""
        r = self.client.get(url, follow_redirects=False)
        assert r.status_code == 200, (url, r.status_code)
        return [Row(*m) for m in ROW.findall(r.text)], r.text


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    app = build_demo(tmp_path, monkeypatch)
    demo: Demo = app.state.demo
    demo.accounts.register(ALICE, PASSWORD)
    demo.accounts.register(BOB, PASSWORD)
    with TestClient(app) as client:
        yield Site(client, demo)


def ids(rows: list[Row]) -> list[str]:
    return [row.id for row in rows]


def links(html: str) -> tuple[str | None, str | None]:
    """The pager's links: (Newest, Older), None where there is none."""
    pager = re.search(r'<p class="pager">(.*?)</p>', html, re.S)
    assert pager, html
    newest = re.search(r'<a href="([^"]+)">Newest</a>', pager[1])
    older = re.search(r'<a id="older" href="([^"]+)">Older</a>', pager[1])
    return (
        newest[1].replace("&amp;", "&") if newest else None,
        older[1].replace("&amp;", "&") if older else None,
    )


# -- the list ------------------------------------------------------------------------------
def test_my_tasks_lists_only_my_tasks_newest_first(site: Site) -> None:
    site.log_in(None)
    r = site.client.get("/tasks", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/tasks"

    site.log_in(BOB)
    bob_search = site.search("hay")
    bob_waiting = site.submit("search", {"query": "bob later"}, run_at=FUTURE)
    site.log_in(ALICE)
    rows, html = site.rows()
    assert rows == [] and "No tasks yet." in html

    first = site.search("needle")
    assert site.finished(first).status is Status.SUCCEEDED
    second = site.submit("search", {"query": "later", "glob": "pkg/*"}, run_at=FUTURE)
    site.log_in(BOB)
    bob_last = site.submit("search", {"query": "bob again"}, run_at=FUTURE)
    site.log_in(ALICE)
    third = site.search("hay")
    site.finished(third)

    rows, html = site.rows()
    assert ids(rows) == [third, second, first]  # newest first; none of Bob's
    for theirs in (bob_search, bob_waiting, bob_last):
        assert theirs not in html
    assert [(r.title, r.status, r.progress) for r in rows] == [
        ("search “hay” in *.py", "succeeded", "100%"),
        ("search “later” in pkg/*", "queued", ""),
        ("search “needle” in *.py", "succeeded", "100%"),
    ]
    assert 'href="/tasks/' + first + '"' in html
    assert links(html) == (None, None)  # one page
    # The home page's "recent tasks" are the same, newest first.
    home = site.client.get("/").text
    assert [m[0] for m in ROW.findall(home)] == [third, second, first]

    site.log_in(BOB)
    rows, html = site.rows()
    assert ids(rows) == [bob_last, bob_waiting, bob_search]
    assert first not in html and second not in html and third not in html
    # Bob's list filtered by a status Alice has does not show hers either.
    assert ids(site.rows("/tasks?status=succeeded")[0]) == [bob_search]


def test_status_filter(site: Site) -> None:
    site.log_in(BOB)
    bob_done = site.search("hay")
    bob_queued = site.submit("search", {"query": "bob"}, run_at=FUTURE)
    site.log_in(ALICE)
    succeeded = site.search("needle")
    # An export of a search that does not exist fails (a TaskFailed of the task).
    failed = site.submit("export", {"search_id": str(uuid.uuid4())})
    cancelled = site.submit("search", {"query": "never"}, run_at=FUTURE)
    queued = site.submit("search", {"query": "someday"}, run_at=FUTURE)
    r = site.client.post(
        f"/tasks/{cancelled}/cancel", data={"csrf": site.csrf()}, follow_redirects=False
    )
    assert r.status_code == 303
    assert site.finished(succeeded).status is Status.SUCCEEDED
    record = site.finished(failed)
    assert record.status is Status.FAILED and record.error is not None
    assert record.error.message == "There is no such search."
    site.finished(bob_done)

    expected = {
        "queued": [queued],
        "running": [],
        "succeeded": [succeeded],
        "failed": [failed],
        "cancelled": [cancelled],
    }
    assert set(expected) == {s.value for s in Status}
    for status, wanted in expected.items():
        rows, html = site.rows(f"/tasks?status={status}")
        assert ids(rows) == wanted, status
        assert all(row.status == status for row in rows)
        assert bob_done not in html and bob_queued not in html
        # The filter shows what it filters by.
        assert re.search(rf'<option value="{status}" selected>{status}</option>', html)
        assert '<option value="" selected>' in html  # the kind's "all"
        assert status_all_selected(html) is False
        if not wanted:
            assert "No tasks match these filters yet." in html
    everything = [queued, cancelled, failed, succeeded]
    for url in ("/tasks", "/tasks?status=", "/tasks?status=bogus", "/tasks?status=QUEUED"):
        rows, html = site.rows(url)
        assert ids(rows) == everything, url  # an unknown status is no filter
        assert status_all_selected(html) is True
    # The filter form is a GET to the same page: a link one can keep (its script
    # submits it when a filter changes: no inline handler).
    assert re.search(r'<form method="get" action="/tasks" class="filters"', html)
    assert '<select name="status">' in html and "onchange" not in html


def status_all_selected(html: str) -> bool:
    """Whether the status filter is at "all"."""
    select = re.search(r'<select name="status">(.*?)</select>', html, re.S)
    assert select, html
    return '<option value="" selected>all</option>' in select[1]


def test_my_tasks_pages_through_older_tasks(site: Site) -> None:
    assert PAGE_SIZE == 20
    alice, bob = site.owner(ALICE), site.owner(BOB)
    sync = site.demo.errands.sync
    # 45 of Alice's tasks (ids grow in submit order), then newer ones of Bob's, which
    # must not take her pages' places.
    mine = [
        r.id
        for r in sync.submit_many(
            "search", [{"query": f"q{i}"} for i in range(45)], owner=alice, run_at=LATER
        )
    ]
    assert mine == sorted(mine) and len(set(mine)) == 45
    sync.submit_many("search", [{"query": f"b{i}"} for i in range(5)], owner=bob, run_at=LATER)
    newest_first = mine[::-1]
    site.log_in(ALICE)

    rows, html = site.rows()
    assert ids(rows) == newest_first[:20]
    newest, older = links(html)
    assert newest is None and older == f"/tasks?cursor={newest_first[19]}"
    rows, html = site.rows(older)
    assert ids(rows) == newest_first[20:40]
    newest, older = links(html)
    assert newest == "/tasks" and older == f"/tasks?cursor={newest_first[39]}"
    rows, html = site.rows(older)
    assert ids(rows) == newest_first[40:]
    newest, older = links(html)
    assert newest == "/tasks" and older is None  # the last page
    assert ids(site.rows(newest)[0]) == newest_first[:20]  # back to the first page

    # The status filter survives paging: cancel every third task, then page the queued.
    for task_id in mine[::3]:
        sync.cancel(task_id, owner=alice)
    queued = [t for t in newest_first if t not in mine[::3]]
    assert len(queued) == 30
    rows, html = site.rows("/tasks?status=queued")
    assert ids(rows) == queued[:20]
    newest, older = links(html)
    assert newest is None and older == f"/tasks?status=queued&cursor={queued[19]}"
    rows, html = site.rows(older)
    assert ids(rows) == queued[20:]
    assert all(row.status == "queued" for row in rows)
    assert links(html) == ("/tasks?status=queued", None)
    rows, _ = site.rows("/tasks?status=cancelled")
    assert ids(rows) == [t for t in newest_first if t in mine[::3]]

    # A cursor that is not a task id shows the first page rather than an error.
    for junk in ("junk", "' OR 1=1 --", "x" * 300):
        rows, _ = site.rows(f"/tasks?cursor={junk}")
        assert ids(rows) == newest_first[:20], junk
    # Bob's cursor is just a place in time: it never shows him Alice's tasks.
    site.log_in(BOB)
    rows, _ = site.rows(f"/tasks?cursor={newest_first[0]}")
    assert rows == []


# -- live status ---------------------------------------------------------------------------
def sse_events(lines: Iterator[str], deadline: float) -> Iterator[tuple[str, Any]]:
    """(event, data) of a ``text/event-stream``'s lines (comments skipped)."""
    event = "message"
    data: list[str] = []
    for line in lines:
        assert time.monotonic() < deadline, "the event stream went quiet"
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    raise AssertionError("the event stream ended")


def test_page_has_what_its_live_script_needs_and_the_stream_sends_changes(site: Site) -> None:
    site.log_in(ALICE)
    waiting = site.submit("search", {"query": "someday"}, run_at=FUTURE)
    rows, html = site.rows()
    assert [(r.id, r.status) for r in rows] == [(waiting, "queued")]
    # What tasks-page.js looks for: the script, the table, a row per task with its badge.
    assert '<script type="module" src="/static/tasks-page.js"></script>' in html
    assert '<table class="tasks" id="my-tasks">' in html
    script = site.client.get("/static/tasks-page.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    for needed in (
        'getElementById("my-tasks")',
        'new EventSource("/api/events")',
        'addEventListener("task"',
        "tr[data-task-id=",
        ".badge",
    ):
        assert needed in script.text, needed

    # Nobody's stream, or a stream without the session: 401 (and no hanging stream).
    stranger = TestClient(site.client.app)  # no cookies (not started: no second worker)
    assert stranger.get("/api/events").status_code == 401

    hub = hub_for(site.demo.errands.runtime)
    alice = site.owner(ALICE)
    with site.client.stream("GET", "/api/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines) == "retry: 2000"
        eventually(lambda: alice in hub.owners, "the owner's watch")
        deadline = time.monotonic() + 30
        events = sse_events(lines, deadline)

        # The listed task is cancelled (through its page's form): the stream says so.
        r = site.client.post(
            f"/tasks/{waiting}/cancel", data={"csrf": site.csrf()}, follow_redirects=False
        )
        assert r.status_code == 303
        for event, data in events:
            assert event == "task"
            if data["id"] == waiting and data["done"]:
                break
        assert data["status"] == "cancelled" and data["progress"]["percent"] is None
        assert data["links"]["self"] == f"/api/tasks/{waiting}"

        # A new search: its changes arrive up to its end, with the progress percent the
        # script shows in the row (and Bob's task meanwhile does not).
        task_id = site.search()
        seen: list[dict[str, Any]] = []
        for event, data in events:
            assert event == "task" and data["id"] == task_id, data
            seen.append(data)
            if data["done"]:
                break
        site.log_in(BOB)  # (a new cookie jar: the open stream keeps Alice's session)
        bob_task = site.submit("search", {"query": "bob"}, run_at=FUTURE)
        site.log_in(ALICE)
        again = site.search("hay")
        for _, data in events:
            assert data["id"] != bob_task
            if data["id"] == again and data["done"]:
                break
    last = seen[-1]
    assert last["status"] == "succeeded" and last["progress"]["percent"] == 100.0
    versions = [d["version"] for d in seen]
    assert versions == sorted(set(versions))
    assert "owner" not in last  # the user's own view, not the admin's
    assert datetime.fromisoformat(last["created_at"]) <= datetime.now(UTC)
    eventually(lambda: alice not in hub.owners, "the closed stream's watch to go")
    # The page agrees with what the stream said.
    statuses = {r.id: r.status for r in site.rows()[0]}
    assert statuses == {again: "succeeded", task_id: "succeeded", waiting: "cancelled"}


# -- accounts: password hashes and session cookies -------------------------------------------
def test_passwords_are_stored_as_argon2id_with_the_production_hasher(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    cheap = accounts._hasher  # build_demo's, for fast sign-ins
    monkeypatch.undo()  # back to the module's own hasher
    production = accounts._hasher
    assert production is not cheap
    assert production.type is argon2.Type.ID
    # As documented in accounts.py: argon2-cffi's defaults, 64 MiB and 3 passes.
    assert (production.memory_cost, production.time_cost) == (65536, 3)

    def stored(email: str) -> str:
        user = site.demo.errands.db.read(store.user_by_email, email)
        assert user is not None
        return user.password_hash

    # Registering through the form stores an Argon2id hash, never the password.
    site.log_in(None)
    r = site.client.post(
        "/register",
        data={"email": "carol@example.com", "password": PASSWORD, "csrf": site.csrf("/login")},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    carol = stored("carol@example.com")
    assert carol.startswith("$argon2id$v=19$m=65536,t=3,p=")
    assert PASSWORD not in carol
    params = argon2.extract_parameters(carol)
    assert params.type is argon2.Type.ID and params.salt_len >= 16 and params.hash_len >= 32
    site.log_in("carol@example.com")
    assert site.client.get("/tasks", follow_redirects=False).status_code == 200
    assert stored("carol@example.com") == carol  # no rehash needed

    # Alice's hash was made with the cheap test parameters: her next sign-in upgrades it.
    old = stored(ALICE)
    assert argon2.extract_parameters(old).memory_cost == cheap.memory_cost < 65536
    site.log_in(ALICE)
    new = stored(ALICE)
    assert new != old and new.startswith("$argon2id$v=19$m=65536,t=3,p=")
    assert production.verify(new, PASSWORD)
    site.log_in(ALICE)  # and the new hash works
    assert site.client.get("/tasks", follow_redirects=False).status_code == 200


def _session_of(cookie: str) -> dict[str, Any]:
    """The data in a Starlette session cookie (``base64(json).timestamp.signature``)."""
    payload = cookie.split(".")[0]
    data: dict[str, Any] = json.loads(b64decode(payload))
    return data


def _signed(data: dict[str, Any], secret: str) -> str:
    signer = itsdangerous.TimestampSigner(secret)
    return signer.sign(b64encode(json.dumps(data).encode())).decode()


def _changed(text: str) -> str:
    """``text`` with its first character replaced by another (the last character of
    unpadded base64 may carry unused bits: changing it can leave the bytes alone)."""
    return ("A" if text[0] != "A" else "B") + text[1:]


def test_altered_or_forged_session_cookies_are_not_accepted(site: Site) -> None:
    admin = site.demo.accounts.make_admin(ADMIN, PASSWORD)
    site.log_in(ALICE)
    cookie = site.client.cookies[SESSION]
    session = _session_of(cookie)
    alice = site.demo.errands.db.read(store.user_by_email, ALICE)
    assert alice is not None and session["user"] == alice.id and session["csrf"]
    task_id = site.submit("search", {"query": "someday"}, run_at=FUTURE)
    payload, stamp, signature = cookie.split(".")

    def answers(value: str) -> tuple[int, str, int, int, int]:
        """As the holder of this cookie: /tasks (status, where to), /admin, the API."""
        site.client.cookies.clear()
        jar = {"Cookie": f"{SESSION}={value}"}
        tasks = site.client.get("/tasks", headers=jar, follow_redirects=False)
        return (
            tasks.status_code,
            tasks.headers.get("location", ""),
            site.client.get("/admin", headers=jar).status_code,
            site.client.get("/api/tasks", headers=jar).status_code,
            site.client.get(f"/api/tasks/{task_id}", headers=jar).status_code,
        )

    refused = (303, "/login?next=/tasks", 404, 401, 401)
    as_admin = dict(session, user=admin.id)
    secret = site.demo.secret()
    forged = {
        # Alice's own signature on data that names the administrator.
        "another user, old signature": ".".join(
            [b64encode(json.dumps(as_admin).encode()).decode(), stamp, signature]
        ),
        "signed with another secret": _signed(as_admin, "not the site's secret"),
        "signature changed": ".".join([payload, stamp, _changed(signature)]),
        "signature cut off": f"{payload}.{stamp}",
        "timestamp changed": ".".join([payload, _changed(stamp), signature]),
        "data changed": ".".join([_changed(payload[:-4]) + payload[-4:], stamp, signature]),
        "data alone": payload,
        "unsigned JSON": json.dumps(as_admin),
        "empty": "",
    }
    for what, value in forged.items():
        assert answers(value) == refused, what
    # Control: the real cookie works. Even signed with the site's secret (kept out of
    # reach: 0600 in the data directory), Alice's session id does not name the admin,
    # and a made-up session id names nobody.
    assert answers(cookie) == (200, "", 404, 200, 200)
    assert answers(_signed(session, secret)) == (200, "", 404, 200, 200)
    assert answers(_signed(as_admin, secret)) == refused
    assert answers(_signed(dict(as_admin, sid="made-up"), secret)) == refused
    secret_file = site.demo.data_dir / "secret"
    assert secret_file.read_text().strip() == secret and len(secret) >= 32
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    # A forged cookie cannot write either (the CSRF token is in the session it names).
    site.client.cookies.clear()
    r = site.client.post(
        "/search",
        data={"query": "x", "csrf": session["csrf"]},
        headers={"Cookie": f"{SESSION}={forged['another user, old signature']}"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert len(site.demo.errands.sync.list(owner=admin.owner).items) == 0


def test_logging_out_ends_the_session_for_every_copy_of_the_cookie(site: Site) -> None:
    site.log_in(ALICE)
    copy = site.client.cookies[SESSION]
    jar = {"Cookie": f"{SESSION}={copy}"}
    assert site.client.get("/tasks", follow_redirects=False).status_code == 200
    r = site.client.post("/logout", data={"csrf": site.csrf()}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    site.client.cookies.clear()
    r = site.client.get("/tasks", headers=jar, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login?next=/tasks")
    assert site.client.get("/api/tasks", headers=jar).status_code == 401
    # Another sign-in is a new session; the old cookie stays dead.
    site.log_in(ALICE)
    assert site.client.cookies[SESSION] != copy
    assert site.client.get("/tasks", follow_redirects=False).status_code == 200
    site.client.cookies.clear()
    assert site.client.get("/tasks", headers=jar, follow_redirects=False).status_code == 303
