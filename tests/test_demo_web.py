"""The demo's pages and their security properties, without a browser: CSRF on every
form, login answers that do not tell whether an account exists, the session cookie's
flags, API tokens, the API's CSRF header, who may download an export, and a bad regular
expression refused at submit. The app runs with its in-process worker on a SQLite file
(``TestClient`` as a context manager runs the lifespan)."""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import pytest
from starlette.testclient import TestClient  # its httpx2 warning is ignored in pyproject

from errands import Progress, Status, TaskRecord
from errands.demo import store
from errands.demo.store import User
from errands.demo.web import Demo, _eta
from tests.apps.demo_site import PASSWORD, DemoClient, build_demo, csrf_in

ALICE = "alice@example.com"
BOB = "bob@example.com"
# Due in a week: queued throughout a test (and within the API's 30-day limit).
FUTURE = (datetime.now(UTC) + timedelta(days=7)).isoformat()
#: The hits of a search for "needle" in the corpus below (path, line, text), in the
#: search's order: a directory's files before its subdirectories.
NEEDLES = [
    ("one.py", 2, "NEEDLE = 1"),
    ("two.py", 1, "# a needle in a haystack"),
    ("pkg/three.py", 1, "def needle():"),
    ("pkg/three.py", 2, "return 'needle'"),
]


class Site(DemoClient):
    def user(self, email: str) -> User | None:
        return self.demo.errands.db.read(store.user_by_email, email)

    def tasks(self, email: str) -> list[TaskRecord]:
        return self.demo.errands.sync.list(owner=self.owner(email), limit=500).items

    def export(self, search_id: str) -> str:
        r = self.client.post(
            f"/tasks/{search_id}/export", data={"csrf": self.csrf()}, follow_redirects=False
        )
        assert r.status_code == 303, r.text
        export_id: str = r.headers["location"].removeprefix("/tasks/")
        assert export_id != search_id
        return export_id

    def create_token(self, name: str) -> tuple[str, int]:
        """A new API token of the signed-in user and its id (for revoking): the POST
        redirects to the tokens page, which shows it."""
        r = self.client.post(
            "/tokens", data={"name": name, "csrf": self.csrf("/tokens")}, follow_redirects=False
        )
        assert r.status_code == 303 and r.headers["location"] == "/tokens", r.text
        r = self.client.get("/tokens")
        token = re.search(r'<pre id="new-token">(ert_[^<]+)</pre>', r.text)
        ids = re.findall(r'action="/tokens/(\d+)/revoke"', r.text)
        assert token and ids, r.text
        return token[1], int(ids[-1])


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    app = build_demo(tmp_path, monkeypatch, poll_interval=0.1, lease_seconds=4)
    demo: Demo = app.state.demo
    demo.accounts.register(ALICE, PASSWORD)
    demo.accounts.register(BOB, PASSWORD)
    with TestClient(app) as client:
        yield Site(client, demo)


def refused(r: Any) -> None:
    assert r.status_code == 403, (r.status_code, r.text)
    assert "Form expired" in r.text


def bad_tokens(site: Site) -> list[dict[str, str]]:
    """Form fields without a valid CSRF token: none, empty, made up, another session's."""
    stranger = TestClient(site.client.app)  # another browser (not started: no second worker)
    theirs = csrf_in(stranger.get("/login").text)
    assert theirs != site.csrf("/login")
    return [{}, {"csrf": ""}, {"csrf": "x" * 32}, {"csrf": theirs}]


# -- CSRF --------------------------------------------------------------------------------
def test_forms_without_a_valid_csrf_token_are_refused_and_change_nothing(site: Site) -> None:
    c = site.client

    # Register and log in (an anonymous session: its token came from GET /login).
    site.log_in(None)
    for fields in bad_tokens(site):
        new = {"email": "carol@example.com", "password": PASSWORD}
        refused(c.post("/register", data=new | fields, follow_redirects=False))
        assert site.user("carol@example.com") is None
        login = {"email": ALICE, "password": PASSWORD, "next": "/"}
        refused(c.post("/login", data=login | fields, follow_redirects=False))
        assert c.get("/tasks", follow_redirects=False).status_code == 303  # still nobody

    # As Alice: log out, search, cancel, export, API tokens.
    site.log_in(ALICE)
    finished = site.search()
    site.finished(finished)
    r = c.post(
        "/api/tasks",
        json={"name": "search", "payload": {"query": "later"}, "run_at": FUTURE},
        headers={"X-CSRF-Token": site.csrf()},
    )
    assert r.status_code == 202, r.text
    waiting = r.json()["id"]
    token, token_id = site.create_token("script")
    before = {t.id: t for t in site.tasks(ALICE)}
    for fields in bad_tokens(site):
        refused(c.post("/logout", data=fields, follow_redirects=False))
        assert c.get("/tasks").status_code == 200  # still signed in
        search = {"query": "needle", "glob": "*.py"}
        refused(c.post("/search", data=search | fields, follow_redirects=False))
        refused(c.post(f"/tasks/{waiting}/cancel", data=fields, follow_redirects=False))
        refused(c.post(f"/tasks/{finished}/export", data=fields, follow_redirects=False))
        refused(c.post("/tokens", data={"name": "sneaky"} | fields, follow_redirects=False))
        refused(c.post(f"/tokens/{token_id}/revoke", data=fields, follow_redirects=False))
    after = {t.id: t for t in site.tasks(ALICE)}
    assert after.keys() == before.keys()  # no search, no export
    record = site.record(waiting)
    assert record.status is Status.QUEUED and not record.cancel_requested
    user = site.user(ALICE)
    assert user is not None
    tokens = site.demo.accounts.tokens(user)
    assert [(t.name, t.revoked_at) for t in tokens] == [("script", None)]
    assert site.demo.accounts.user_for_token(token) == user

    # With the right token each of them works.
    site.search()
    assert len(site.tasks(ALICE)) == len(before) + 1
    r = c.post("/logout", data={"csrf": site.csrf()}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert c.get("/tasks", follow_redirects=False).status_code == 303


# -- logging in ----------------------------------------------------------------------------
def test_wrong_password_and_unknown_address_get_the_same_answer(site: Site) -> None:
    answers = []
    for email, password in ((ALICE, "not the password"), ("nobody@example.com", PASSWORD)):
        site.log_in(None)
        csrf = site.csrf("/login")
        r = site.client.post(
            "/login",
            data={"email": email, "password": password, "csrf": csrf, "next": "/"},
            follow_redirects=False,
        )
        answers.append((r.status_code, r.text.replace(email, "EMAIL").replace(csrf, "CSRF")))
        assert site.client.get("/tasks", follow_redirects=False).status_code == 303
    assert answers[0] == answers[1]
    status, html = answers[0]
    assert status == 400
    assert '<p class="error" role="alert">Wrong e-mail address or password.</p>' in html


@pytest.mark.parametrize(
    "target",
    ["//evil.example/", "https://evil.example/", "/\\evil.example/", "/\t/evil.example/", ""],
)
def test_login_redirects_only_within_the_site(site: Site, target: str) -> None:
    site.log_in(None)
    r = site.client.post(
        f"/login?next={quote(target)}",
        data={"email": ALICE, "password": PASSWORD, "csrf": site.csrf("/login"), "next": target},
        follow_redirects=False,
    )
    assert r.status_code == 303
    where = r.headers["location"]
    # Read it as a browser does: a backslash is a slash, tabs and newlines are dropped.
    as_read = re.sub(r"[\t\n\r]", "", where).replace("\\", "/")
    assert urlsplit(urljoin("http://testserver/login", as_read)).netloc == "testserver", where


def test_session_cookie_is_httponly_and_samesite_lax(site: Site) -> None:
    site.log_in(None)
    r = site.client.post(
        "/login",
        data={"email": ALICE, "password": PASSWORD, "csrf": site.csrf("/login")},
        follow_redirects=False,
    )
    assert r.status_code == 303
    cookies = [h for h in r.headers.get_list("set-cookie") if h.startswith("errands_session=")]
    assert len(cookies) == 1
    flags = {part.strip().split("=")[0].lower(): part for part in cookies[0].split(";")[1:]}
    assert "httponly" in flags
    assert flags["samesite"].strip().lower() == "samesite=lax"
    assert flags["path"].strip() == "path=/"


# -- API tokens ----------------------------------------------------------------------------
def test_api_token_submits_and_reads_until_revoked(site: Site) -> None:
    site.log_in(ALICE)
    token, token_id = site.create_token("my script")
    page = site.client.get("/tokens").text
    assert "my script" in page and token not in page  # shown once only
    assert token not in site.client.get("/tokens").text

    # Another client, without cookies: the token alone (not started: one worker is enough).
    script = TestClient(site.client.app)
    auth = {"Authorization": f"Bearer {token}"}
    r = script.post(
        "/api/tasks", json={"name": "search", "payload": {"query": "needle"}}, headers=auth
    )
    assert r.status_code == 202, r.text  # no CSRF header needed with a token
    task_id = r.json()["id"]
    assert site.record(task_id).owner == site.owner(ALICE)
    r = script.get(f"/api/tasks/{task_id}", headers=auth)
    assert r.status_code == 200 and r.json()["id"] == task_id
    assert task_id in [t["id"] for t in script.get("/api/tasks", headers=auth).json()["items"]]
    site.finished(task_id)
    items = script.get(f"/api/tasks/{task_id}/output", headers=auth).json()["items"]
    assert [(i["data"]["path"], i["data"]["line"], i["data"]["text"]) for i in items] == (NEEDLES)
    # Alice's session sees the task the script made.
    assert site.client.get(f"/tasks/{task_id}").status_code == 200

    r = site.client.post(
        f"/tokens/{token_id}/revoke", data={"csrf": site.csrf()}, follow_redirects=False
    )
    assert r.status_code == 303
    assert "revoked" in site.client.get("/tokens").text
    for method, path in (("GET", f"/api/tasks/{task_id}"), ("GET", "/api/tasks")):
        assert script.request(method, path, headers=auth).status_code == 401
    r = script.post("/api/tasks", json={"name": "search", "payload": {"query": "x"}}, headers=auth)
    assert r.status_code == 401
    for bad in ("ert_not-a-token", "not-even-prefixed", ""):
        r = script.get("/api/tasks", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, bad
    assert len(site.tasks(ALICE)) == 1
    # Bob cannot revoke Alice's tokens.
    token, token_id = site.create_token("another")
    site.log_in(BOB)
    site.client.post(f"/tokens/{token_id}/revoke", data={"csrf": site.csrf()})
    assert site.demo.accounts.user_for_token(token) == site.user(ALICE)


def test_api_write_with_the_session_cookie_needs_the_csrf_header(site: Site) -> None:
    site.log_in(ALICE)
    c = site.client
    job = {"name": "search", "payload": {"query": "needle"}, "run_at": FUTURE}
    for headers in (
        {},
        {"X-CSRF-Token": ""},
        {"X-CSRF-Token": "wrong"},
        {"Authorization": "Basic Zm9vOmJhcg=="},  # not a token: the cookie still rules
    ):
        r = c.post("/api/tasks", json=job, headers=headers)
        assert r.status_code == 401, (headers, r.text)
    assert site.tasks(ALICE) == []
    r = c.post("/api/tasks", json=job, headers={"X-CSRF-Token": site.csrf()})
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]
    # Cancel and delete are writes too.
    assert c.post(f"/api/tasks/{task_id}/cancel").status_code == 401
    assert c.delete(f"/api/tasks/{task_id}").status_code == 401
    record = site.record(task_id)
    assert record.status is Status.QUEUED and not record.cancel_requested
    # Reading needs no header.
    assert c.get(f"/api/tasks/{task_id}").status_code == 200
    r = c.post(f"/api/tasks/{task_id}/cancel", headers={"X-CSRF-Token": site.csrf()})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"


# -- exports ------------------------------------------------------------------------------
def test_export_download_is_served_to_its_owner_only(site: Site) -> None:
    site.log_in(ALICE)
    search_id = site.search()
    assert site.finished(search_id).status is Status.SUCCEEDED
    export_id = site.export(search_id)
    record = site.finished(export_id)
    assert record.status is Status.SUCCEEDED, record.error
    # The result names no internal file: the download route finds it by the task's id.
    size = (site.demo.exports / f"{export_id}.csv").stat().st_size
    assert record.result == {"rows": len(NEEDLES), "search_id": search_id, "bytes": size}
    assert record.payload == {"search_id": search_id, "search": "“needle” in *.py"}
    page = site.client.get(f"/tasks/{export_id}").text
    assert "<h1>Export of “needle” in *.py</h1>" in html.unescape(page)
    assert f'href="/exports/{export_id}.csv"' in page
    assert f"Download CSV ({len(NEEDLES)} rows, {size} bytes)" in page

    r = site.client.get(f"/exports/{export_id}.csv")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert 'filename="needle-in-py.csv"' in r.headers["content-disposition"]
    assert "no-store" in r.headers["cache-control"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows == [["path", "line", "text"]] + [[p, str(n), t] for p, n, t in NEEDLES]

    not_found = site.client.get("/exports/01234567-89ab-7def-8123-456789abcdef.csv")
    assert not_found.status_code == 404
    assert site.client.get(f"/exports/{search_id}.csv").status_code == 404  # not an export

    site.log_in(BOB)
    r = site.client.get(f"/exports/{export_id}.csv")
    assert r.status_code == 404
    assert "Not found" in r.text and "needle" not in r.text and export_id not in r.text
    assert site.client.get(f"/tasks/{export_id}").status_code == 404
    # Nor may Bob export Alice's search.
    r = site.client.post(
        f"/tasks/{search_id}/export", data={"csrf": site.csrf()}, follow_redirects=False
    )
    assert r.status_code == 404
    assert site.tasks(BOB) == []

    site.log_in(None)
    r = site.client.get(f"/exports/{export_id}.csv", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


# -- a bad regular expression ------------------------------------------------------------------
def test_bad_regular_expression_is_refused_at_submit(site: Site) -> None:
    site.log_in(ALICE)
    r = site.client.post(
        "/search",
        data={"query": "(<b>unclosed", "regex": "on", "glob": "*.py", "csrf": site.csrf()},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/"  # post/redirect/get
    r = site.client.get("/")
    alert = re.search(r'<div class="error" role="alert">(.*?)</div>', r.text, re.S)
    assert alert, r.text
    assert "This regular expression is not valid: missing ) at position 12." in alert[1]
    assert "<b>" not in r.text and 'value="(&lt;b&gt;unclosed"' in r.text  # kept, escaped
    assert re.search(r'name="regex"\s+checked', r.text)
    assert site.tasks(ALICE) == []
    # The same text as a literal search is fine.
    site.search("(<b>unclosed")
    assert len(site.tasks(ALICE)) == 1


# -- the task page without JavaScript ----------------------------------------------------------
def test_page_without_javascript_shows_the_time_left(site: Site) -> None:
    """The server renders what ``<errands-task>`` would show: status, percent, message and
    the time left, worded as the element words it; nothing once the task is done."""
    site.log_in(ALICE)
    task_id = site.search()
    done = site.finished(task_id)
    now = datetime.now(UTC)
    running = dataclasses.replace(
        done,
        status=Status.RUNNING,
        started_at=now - timedelta(seconds=30),
        finished_at=None,
        progress=Progress(current=3, total=4, message="scanning pkg/three.py"),
    )
    assert _eta(running) == "about 10 s left"
    assert _eta(dataclasses.replace(running, progress=Progress(1, 61))) == "about 30 min left"
    assert _eta(dataclasses.replace(running, progress=Progress(1, None))) == ""
    assert _eta(done) == ""
    html = site.demo.templates.get_template("task.html").render(
        request=None, task=running, hits=[], hits_cap=10, csrf="x", user=None
    )
    assert '<span class="et-eta">about 10 s left</span>' in html
    assert '<span class="et-percent">75%</span>' in html
    assert '<p class="et-message">scanning pkg/three.py</p>' in html
    assert 'http-equiv="refresh"' in html  # without JavaScript it reloads itself
    page = site.client.get(f"/tasks/{task_id}").text
    assert "et-eta" not in page and 'http-equiv="refresh"' not in page
