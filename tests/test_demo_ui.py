"""The demo's pages as a person reads them, without a browser: the search form's
refusals in plain words, shown after a redirect (post/redirect/get) and only once;
"My tasks" with its count and its filters by kind and status; and times rendered as
``<time datetime>`` for the page's script to show in the reader's time zone."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient  # its httpx2 warning is ignored in pyproject

from errands.demo.web import Demo
from tests.apps.demo_site import DemoClient, build_demo

ALICE = "alice@example.com"
BOB = "bob@example.com"
#: Due in a week: queued throughout a test (the API refuses more than 30 days ahead).
LATER = (datetime.now(UTC) + timedelta(days=7)).isoformat()
ALERT = re.compile(r'<div class="error" role="alert">(.*?)</div>', re.S)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DemoClient]:
    app = build_demo(tmp_path, monkeypatch)
    demo: Demo = app.state.demo
    for email in (ALICE, BOB):
        demo.accounts.register(email, "correct horse battery staple")
    with TestClient(app) as client:
        yield DemoClient(client, demo)


def alerts(page: str) -> list[str]:
    found = ALERT.search(page)
    if not found:
        return []
    return [html.unescape(p) for p in re.findall(r"<p>(.*?)</p>", found[1], re.S)]


def refused(site: DemoClient, **fields: str) -> list[str]:
    """Post the search form with ``fields``; the errors the home page shows after the
    redirect."""
    data = {"query": "needle", "glob": "*.py", "csrf": site.csrf()} | fields
    r = site.client.post("/search", data=data, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    return alerts(site.client.get("/").text)


# -- validation messages ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"query": ""}, "Enter something to search for."),
        ({"query": "x" * 201}, "The search text is too long: at most 200 characters."),
        (
            {"query": "(unclosed", "regex": "on"},
            "This regular expression is not valid: missing ) at position 9.",
        ),
        (
            {"query": "[z-a]", "regex": "on"},
            "This regular expression is not valid: bad character range at position 4.",
        ),
        ({"glob": "x" * 101}, "The file pattern is too long: at most 100 characters."),
        (
            {"folders": "/etc"},
            "“/etc”: a folder is a path inside the searched directory, not an absolute path.",
        ),
    ],
)
def test_refusals_are_written_for_people(
    site: DemoClient, fields: dict[str, str], message: str
) -> None:
    site.log_in(ALICE)
    errors = refused(site, **fields)
    assert errors == [message]
    for error in errors:
        assert "Value error" not in error and "String should" not in error
        assert not re.match(r"\w+(\.\w+)*: ", error)  # no field path in front
    assert site.demo.errands.sync.count(owner=site.owner(ALICE)) == 0


def test_a_refused_search_redirects_and_its_message_shows_once(site: DemoClient) -> None:
    site.log_in(ALICE)
    fields = {
        "query": "(<b>needle",
        "regex": "on",
        "case_sensitive": "on",
        "glob": "*.txt",
        "folders": "pkg",
    }
    data = {"csrf": site.csrf()} | fields
    r = site.client.post("/search", data=data, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"

    page = site.client.get("/")
    assert page.status_code == 200
    assert alerts(page.text) == ["This regular expression is not valid: missing ) at position 10."]
    # The form is filled in as it was sent (escaped).
    assert 'name="query" value="(&lt;b&gt;needle"' in page.text
    assert 'name="glob" value="*.txt"' in page.text
    assert ">pkg</textarea>" in page.text
    assert re.search(r'name="regex"\s+checked', page.text)
    assert re.search(r'name="case_sensitive"\s+checked', page.text)
    assert not re.search(r'name="slow"\s+checked', page.text)

    # A refresh shows the plain form.
    again = site.client.get("/")
    assert alerts(again.text) == []
    assert 'name="query" value=""' in again.text
    assert not re.search(r'name="regex"\s+checked', again.text)


def test_the_kept_form_fits_in_the_session_cookie(site: DemoClient) -> None:
    site.log_in(ALICE)
    huge = "é" * 5000  # six characters each in the session's JSON
    errors = refused(site, query="(" + huge, regex="on", folders=huge)
    assert len(errors) == 1
    assert len(site.client.cookies["errands_session"]) < 4000


def test_another_users_refusal_is_not_shown(site: DemoClient) -> None:
    site.log_in(ALICE)
    data = {"query": "", "glob": "*.py", "csrf": site.csrf()}
    site.client.post("/search", data=data, follow_redirects=False)
    site.log_in(BOB)  # a fresh session
    assert alerts(site.client.get("/").text) == []


# -- my tasks --------------------------------------------------------------------------------
def count_line(page: str) -> str:
    found = re.search(r'<p class="muted" id="task-count"[^>]*>(.*?)</p>', page, re.S)
    assert found, page
    return found[1].strip()


def listed(page: str) -> list[str]:
    return re.findall(r'<tr data-task-id="([0-9a-f-]{36})"', page)


def test_my_tasks_counts_and_filters_by_kind_and_status(site: DemoClient) -> None:
    (site.demo.corpus / "docs").mkdir()
    (site.demo.corpus / "docs" / "four.py").write_text("needle = 4\n")
    site.log_in(BOB)
    for _ in range(3):
        site.finished(site.search())  # Bob's tasks are never counted for Alice
    site.log_in(ALICE)
    # A search in two folders: the group, its two searches and their merge (4 tasks).
    group = site.search("needle", folders="pkg, docs")
    site.finished(group)
    parts = {p.id for p in site.demo.errands.sync.parts(group, owner=site.owner(ALICE))}
    assert len(parts) == 3
    searches = [site.search(q) for q in ("needle", "hay", "import")]
    for task_id in searches:
        site.finished(task_id)
    r = site.client.post(
        f"/tasks/{searches[0]}/export", data={"csrf": site.csrf()}, follow_redirects=False
    )
    export = r.headers["location"].removeprefix("/tasks/")
    site.finished(export)
    r = site.client.post(
        f"/tasks/{searches[1]}/export", data={"csrf": site.csrf()}, follow_redirects=False
    )
    second_export = r.headers["location"].removeprefix("/tasks/")
    site.finished(second_export)
    waiting = site.submit("search", {"query": "later"}, run_at=LATER)
    site.client.post(f"/tasks/{waiting}/cancel", data={"csrf": site.csrf()})
    one_folder = parts - {p for p in parts if site.record(p).name != "search"}
    assert len(one_folder) == 2

    page = site.client.get("/tasks").text
    assert count_line(page) == "10 tasks in all."
    newest = [waiting, second_export, export, *reversed(searches)]
    assert listed(page)[:6] == newest  # newest first
    assert set(listed(page)[6:]) == {group, *parts}

    # Searches: in one folder, or in all of them (the parts of a search in several).
    page = site.client.get("/tasks?kind=search").text
    assert count_line(page) == "6 of your 10 tasks match."
    assert set(listed(page)) == {waiting, *searches, *one_folder}
    assert re.search(r'<option value="search" [^>]*selected>searches</option>', page)

    page = site.client.get("/tasks?kind=folders").text
    assert count_line(page) == "1 of your 10 tasks matches."
    assert listed(page) == [group]

    page = site.client.get("/tasks?kind=export").text
    assert count_line(page) == "2 of your 10 tasks match."
    assert listed(page) == [second_export, export]

    page = site.client.get("/tasks?status=cancelled").text
    assert count_line(page) == "1 of your 10 tasks matches."
    assert listed(page) == [waiting]

    page = site.client.get("/tasks?kind=search&status=succeeded").text
    assert count_line(page) == "5 of your 10 tasks match."
    assert listed(page)[:3] == list(reversed(searches))
    assert set(listed(page)[3:]) == one_folder
    assert '<option value="succeeded" selected>' in page

    page = site.client.get("/tasks?kind=export&status=failed").text
    assert count_line(page) == "0 of your 10 tasks match."
    assert listed(page) == [] and "No tasks match these filters" in page

    # Unknown values are no filter at all.
    page = site.client.get("/tasks?kind=nonsense&status=whatever").text
    assert count_line(page) == "10 tasks in all."


def test_my_tasks_pages_keep_the_filters(site: DemoClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from errands.demo import mytasks

    monkeypatch.setattr(mytasks, "PAGE_SIZE", 2)
    site.log_in(ALICE)
    ids = [site.submit("search", {"query": f"q{i}"}, run_at=LATER) for i in range(5)]
    site.submit("export", {"search_id": ids[0]}, run_at=LATER)
    page = site.client.get("/tasks?kind=search").text
    assert listed(page) == [ids[4], ids[3]]
    older = re.search(r'<a id="older" href="([^"]+)"', page)
    assert older
    link = html.unescape(older[1])
    assert link.startswith("/tasks?kind=search&cursor=")
    page = site.client.get(link).text
    assert listed(page) == [ids[2], ids[1]]
    assert count_line(page) == "5 of your 6 tasks match."


# -- times -----------------------------------------------------------------------------------
def test_times_are_rendered_for_the_readers_time_zone(site: DemoClient) -> None:
    site.log_in(ALICE)
    task_id = site.search()
    record = site.finished(task_id)
    stamp = re.compile(
        r'<time datetime="([^"]+)" data-local>(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)</time>'
    )
    for path in ("/", "/tasks", f"/tasks/{task_id}"):
        page = site.client.get(path).text
        found = stamp.search(page)
        assert found, (path, page)
        when = datetime.fromisoformat(found[1])
        assert when == record.created_at and when.utcoffset() is not None
        assert found[2] == record.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        assert '<script type="module" src="/static/local-times.js"></script>' in page
    script = site.client.get("/static/local-times.js")
    assert script.status_code == 200 and "RelativeTimeFormat" in script.text
