"""A search in several folders in the demo, without a browser: the search form's
"In folders" field submits one search per folder as one errands group (with the
``search_merge`` task as its ``then``), the demo's worker runs it, and the group's page
shows its merged result, its parts and their hits tagged with their folders; a part's
page links back to the group. Bad folders (outside the corpus, hidden, missing, nested,
too many) are refused with a message and nothing is written; another user gets the 404
page on the group and on every part; cancelling the group cancels every part.

The app runs with its in-process worker on a SQLite file (``TestClient`` as a context
manager runs the lifespan), over a small corpus in ``tmp_path``.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient  # its httpx2 warning is ignored in pyproject

from errands import ANY_OWNER, Errands, Status, TaskRecord
from errands.demo import tasks
from errands.demo.web import Demo
from tests.apps.demo_site import PASSWORD, DemoClient, build_demo
from tests.conftest import eventually

ALICE = "alice@example.com"
BOB = "bob@example.com"
MISSING = "01234567-89ab-7def-8123-456789abcdef"
#: Added to build_demo's corpus (one.py, two.py, notes.txt, pkg/three.py).
FILES = {
    "pkg/inner/deep.py": "needle deep\n",
    "docs/a.py": "needle one\nno\nneedle two\n",
    "docs/b.txt": "a needle in a text file\n",
    "lib/plain.py": "nothing here\n",
    "lib/sub/c.py": "a NEEDLE\n",
    ".hidden/h.py": "needle\n",
}
#: What a search for "needle" in *.py finds in each folder: (path, line, text).
FOUND = {
    "pkg": [
        ("pkg/three.py", 1, "def needle():"),
        ("pkg/three.py", 2, "return 'needle'"),
        ("pkg/inner/deep.py", 1, "needle deep"),
    ],
    "docs": [("docs/a.py", 1, "needle one"), ("docs/a.py", 3, "needle two")],
    "lib": [("lib/sub/c.py", 1, "a NEEDLE")],
}
FILES_IN = {"pkg": 2, "docs": 1, "lib": 2}

Hit = tuple[str, int, str]
#: A hit of a group's page: seq, part, folder, "path:line", text.
TAGGED = re.compile(
    r'<li data-seq="(\d+)" data-part="(\d+)"><span class="folder">([^<]*)</span>'
    r'<code>([^<]+)</code> <span class="text">([^<]*)</span></li>'
)
#: A row of a group page's table of parts: id, folder, status, files, hits.
PART_ROW = re.compile(
    r'<tr data-task-id="([0-9a-f-]{36})"(?: data-part="\d+"| class="merge")>\s*'
    r'<td><a href="/tasks/\1">([^<]+)</a></td>\s*'
    r'<td><span class="badge" data-status="(\w+)">\3</span></td>\s*<td>[^<]*</td>\s*'
    r'<td class="number files-count">([^<]*)</td>\s*<td class="number hits-count">([^<]*)</td>'
)
#: A row of a task list: id, its class (group, part or none), its group, its title, status.
LIST_ROW = re.compile(
    r'<tr data-task-id="([0-9a-f-]{36})"(?: class="(group|part)")?'
    r'(?: data-group-id="([0-9a-f-]{36})")?>\s*<td>(.*?)</td>\s*'
    r'<td><span class="badge" data-status="(\w+)">',
    re.S,
)


class Site(DemoClient):
    @property
    def app(self) -> Errands:
        return self.demo.errands

    def parts(self, group_id: str) -> list[TaskRecord]:
        return self.app.sync.parts(group_id, owner=ANY_OWNER)

    def outputs(self, task_id: str) -> list[Any]:
        return [item for _, item in self.app.sync.outputs(task_id, owner=ANY_OWNER)]

    def count(self, email: str) -> int:
        """How many tasks the user has."""
        return len(self.app.sync.list(owner=self.owner(email), limit=500).items)

    def page(self, path: str, status: int = 200) -> str:
        r = self.client.get(path, follow_redirects=False)
        assert r.status_code == status, (path, r.status_code, r.text[:500])
        text: str = r.text
        return text

    def post_search(self, **fields: str) -> httpx.Response:
        data = {"query": "needle", "glob": "*.py", "csrf": self.csrf()} | fields
        r: httpx.Response = self.client.post("/search", data=data, follow_redirects=False)
        return r


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    app = build_demo(tmp_path, monkeypatch, progress_interval=0.02)
    demo: Demo = app.state.demo
    for rel, text in FILES.items():
        (demo.corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        (demo.corpus / rel).write_text(text)
    demo.accounts.register(ALICE, PASSWORD)
    demo.accounts.register(BOB, PASSWORD)
    with TestClient(app) as client:
        site = Site(client, demo)
        site.log_in(ALICE)
        yield site


def list_rows(page: str) -> list[tuple[str, str, str, str, str]]:
    """A task list's rows: id, kind (group, part or ""), group, title, status."""
    return [(i, kind, of, text_of(title), s) for i, kind, of, title, s in LIST_ROW.findall(page)]


def text_of(fragment: str) -> str:
    """The text of some HTML, its white space collapsed."""
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())
    return re.sub(r" ([.,)])", r"\1", text)


def without_csrf(page: str) -> str:
    return re.sub(r'(name="csrf(?:-token)?" (?:value|content)=")[^"]+', r"\1", page)


def make_slow_folders(demo: Demo, names: list[str], files: int = 400) -> None:
    """Folders of many small files: a slow-motion search (5 ms a file) of one takes
    about ``files`` × 5 ms."""
    for name in names:
        folder = demo.corpus / name
        folder.mkdir()
        for i in range(files):
            (folder / f"f{i:03d}.py").write_text(f"# file {i}\nneedle {i}\n")


# -- submitting and running ----------------------------------------------------------------
def test_a_search_in_several_folders_runs_as_one_group(site: Site) -> None:
    # The form says what the field takes, and names some of the corpus's folders.
    home = site.page("/")
    assert '<textarea name="folders"' in home
    hint = re.search(r'<p class="muted hint" id="folders-hint">(.*?)</p>', home, re.S)
    assert hint and "Some of its folders: docs, lib, pkg." in text_of(hint[1])
    assert ".hidden" not in hint[1]

    r = site.post_search(folders="pkg, docs\nlib\n")  # commas and lines, blanks dropped
    assert r.status_code == 303
    group_id = r.headers["location"].removeprefix("/tasks/")
    group = site.record(group_id)
    assert group.is_group and group.group_size == 3 and group.name == "search"
    assert group.owner == site.owner(ALICE)

    parts = site.parts(group_id)
    assert [(p.name, p.parent_id, p.group_index) for p in parts] == [
        ("search", group_id, 0),
        ("search", group_id, 1),
        ("search", group_id, 2),
        (tasks.MERGE, group_id, 3),
    ]
    base = {"query": "needle", "glob": "*.py", "regex": False, "case_sensitive": False}
    for part, folder in zip(parts, ["pkg", "docs", "lib"], strict=False):
        assert part.payload == base | {"pause": 0.0, "folder": folder}

    group = site.finished(group_id)
    assert group.status is Status.SUCCEEDED, group.error
    assert group.progress.percent == 100.0
    # Each search found its own folder's hits; the paths are the corpus's.
    searches, merge = parts[:3], parts[3]
    for part, folder in zip(searches, ["pkg", "docs", "lib"], strict=False):
        done = site.record(part.id)
        assert done.status is Status.SUCCEEDED
        assert [(h["path"], h["line"], h["text"]) for h in site.outputs(part.id)] == FOUND[folder]
        assert done.result["folder"] == folder and done.result["hits"] == len(FOUND[folder])
    # The merged result: each folder's counts in the form's order, and the totals.
    result = dict(group.result)
    assert isinstance(result.pop("seconds"), float)
    assert result == {
        "folders": [
            {
                "folder": f,
                "files": FILES_IN[f],
                "hits": len(FOUND[f]),
                "truncated": False,
                "skipped": 0,
            }
            for f in ("pkg", "docs", "lib")
        ],
        "files": 5,
        "hits": 6,
        "truncated": False,
        "skipped": 0,
        "skipped_reasons": {},
        "skipped_files": [],
    }
    assert site.record(merge.id).result == group.result
    # The group's output: every part's hits, tagged with the part.
    tagged = site.outputs(group_id)
    assert len(tagged) == 6
    for index, part in enumerate(searches):
        mine = [t["item"] for t in tagged if t["part"] == index]
        assert all(t["task_id"] == part.id for t in tagged if t["part"] == index)
        assert mine == site.outputs(part.id)

    # The group's page: one progress bar at 100 %, the merged result, the parts with
    # their counts and links, and the hits sorted by path, each with its folder.
    page = site.page(f"/tasks/{group_id}")
    assert "<h1>search “needle” in *.py in pkg, docs, lib</h1>" in html.unescape(page)
    assert page.count("<errands-task ") == 1 and page.count('class="et-bar"') == 1
    assert f'task-id="{group_id}"' in page
    assert '<span class="et-percent">100%</span>' in page
    shown = re.search(r'<pre class="et-result" data-errands-result>(.*?)</pre>', page, re.S)
    assert shown and json.loads(html.unescape(shown[1])) == group.result
    rows = PART_ROW.findall(page)
    assert rows == [
        (searches[0].id, "pkg", "succeeded", "2", "3"),
        (searches[1].id, "docs", "succeeded", "1", "2"),
        (searches[2].id, "lib", "succeeded", "2", "1"),
        (merge.id, "all, merged", "succeeded", "5", "6"),
    ]
    hits = [(p, folder, at, html.unescape(text)) for _, p, folder, at, text in TAGGED.findall(page)]
    assert hits == [
        ("1", "docs", "docs/a.py:1", "needle one"),
        ("1", "docs", "docs/a.py:3", "needle two"),
        ("2", "lib", "lib/sub/c.py:1", "a NEEDLE"),
        ("0", "pkg", "pkg/inner/deep.py:1", "needle deep"),
        ("0", "pkg", "pkg/three.py:1", "def needle():"),
        ("0", "pkg", "pkg/three.py:2", "return 'needle'"),
    ]
    assert '<span class="muted" id="hit-count">6</span>' in page
    # What the live script needs: the folders by part, the highest seq shown.
    assert """data-folders='["pkg", "docs", "lib"]'""" in page
    assert 'data-last-seq="6"' in page
    # A group is not repeated on a schedule (the form is not there, its POST does nothing).
    assert 'action="/tasks/' + group_id + '/repeat"' not in page
    r = site.client.post(
        f"/tasks/{group_id}/repeat",
        data={"repeat": "daily", "at": "08:00", "timezone": "UTC", "csrf": site.csrf()},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == f"/tasks/{group_id}"
    assert site.app.sync.schedules.list(owner=ANY_OWNER) == []

    # A part's page: its own search, and a link back to its group.
    part_page = site.page(f"/tasks/{searches[1].id}")
    assert "<h1>search “needle” in *.py under docs</h1>" in html.unescape(part_page)
    back = re.search(r'<p class="muted" id="part-of">(.*?)</p>', part_page, re.S)
    assert back and text_of(back[1]) == "Part 2 of 3 of search in 3 folders."
    assert f'<a id="group-link" href="/tasks/{group_id}">' in back[1]
    assert re.findall(r'<li data-seq="\d+"><code>([^<]+)</code>', part_page) == [
        "docs/a.py:1",
        "docs/a.py:3",
    ]
    merge_page = site.page(f"/tasks/{merge.id}")
    back = re.search(r'<p class="muted" id="part-of">(.*?)</p>', merge_page, re.S)
    assert back and text_of(back[1]) == "The last step of search in 3 folders."


def test_my_tasks_show_a_group_once_with_its_parts_under_it(site: Site) -> None:
    alone = site.search("needle")
    site.finished(alone)
    group_id = site.search("needle", folders="docs, lib")
    site.finished(group_id)
    parts = site.parts(group_id)

    # "My tasks" and the home page's recent tasks (the five newest: all of them).
    for path in ("/tasks", "/"):
        assert list_rows(site.page(path)) == [
            (group_id, "group", "", "search “needle” in 2 folders", "succeeded"),
            (parts[0].id, "part", group_id, "↳ search “needle” in *.py under docs", "succeeded"),
            (parts[1].id, "part", group_id, "↳ search “needle” in *.py under lib", "succeeded"),
            (parts[2].id, "part", group_id, "↳ merge of the folders' searches", "succeeded"),
            (alone, "", "", "search “needle” in *.py", "succeeded"),
        ]
    # The status filter keeps the nesting.
    assert [row[1] for row in list_rows(site.page("/tasks?status=succeeded"))] == [
        "group",
        "part",
        "part",
        "part",
        "",
    ]

    # Paging may split a group from its parts (they are created at the same instant): a
    # part whose group is on another page stands alone, with a link to its group.
    first = site.app.sync.list(owner=site.owner(ALICE), limit=2)
    on_first = {t.id for t in first.items}
    rest = [t.id for t in site.app.sync.list(owner=site.owner(ALICE), limit=20).items[2:]]
    later = list_rows(site.page(f"/tasks?cursor={first.next_cursor}"))
    if group_id in rest:  # the group, then its parts that are on this page
        expected = [group_id, *(p.id for p in parts if p.id in rest), alone]
    else:
        expected = rest
    assert [row[0] for row in later] == expected
    for task_id, kind, of, title, _ in later:
        if task_id == alone:
            assert kind == ""
        elif task_id == group_id:
            assert kind == "group"
        elif group_id in on_first:
            assert (kind, of) == ("part", group_id)
            assert title.endswith("(part of a search in several folders)")
        else:
            assert (kind, of) == ("part", group_id) and title.startswith("↳ ")
    page = site.page(f"/tasks?cursor={first.next_cursor}")
    if group_id in on_first:
        assert f'<a class="muted of-group" href="/tasks/{group_id}">' in page


def test_one_folder_is_an_ordinary_search_in_that_folder(site: Site) -> None:
    task_id = site.search("needle", folders=" pkg/ ")
    record = site.finished(task_id)
    assert not record.is_group and record.parent_id is None
    assert record.payload["folder"] == "pkg" and record.status is Status.SUCCEEDED
    assert [(h["path"], h["line"], h["text"]) for h in site.outputs(task_id)] == FOUND["pkg"]
    assert record.result["folder"] == "pkg" and record.result["files"] == 2
    assert record.progress.message == "Done: searched 2 files"
    page = site.page(f"/tasks/{task_id}")
    assert "<h1>search “needle” in *.py under pkg</h1>" in html.unescape(page)
    assert 'id="parts"' not in page and 'id="part-of"' not in page
    # Without folders: the whole corpus, and no folder in the result.
    whole = site.finished(site.search("needle"))
    assert "folder" not in whole.result and whole.payload["folder"] == ""
    assert whole.result["hits"] == 8  # and one.py's and two.py's (not .hidden's)


# -- refusals ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("folders", "message"),
    [
        ("../", "“..”: a folder's path cannot have empty, “.” or “..” parts."),
        ("pkg, ../../etc", "“../../etc”: a folder's path cannot have empty, “.” or “..” parts."),
        ("pkg/../..", "“pkg/../..”: a folder's path cannot have empty, “.” or “..” parts."),
        ("/etc", "“/etc”: a folder is a path inside the searched directory, not an absolute path."),
        ("docs, .hidden", "“.hidden”: hidden folders and installed packages are not searched."),
        ("docs\nmissing", "“missing” is not a folder of the searched directory."),
        ("one.py, docs", "“one.py” is not a folder of the searched directory."),
        ("outside, docs", "“outside” is not a folder of the searched directory."),
        ("pkg, docs, pkg/inner", "“pkg/inner” is inside “pkg”: search “pkg” alone."),
        (",".join("abcdefghi"), f"Search in at most {tasks.MAX_FOLDERS} folders at once."),
    ],
)
def test_bad_folders_are_refused_with_a_message_and_nothing_is_written(
    site: Site, tmp_path: Path, folders: str, message: str
) -> None:
    # A link inside the corpus to a directory outside it.
    (tmp_path / "secret").mkdir(exist_ok=True)
    (tmp_path / "secret" / "key.py").write_text("needle = 'secret'\n")
    link = site.demo.corpus / "outside"
    if not link.exists():
        link.symlink_to(tmp_path / "secret", target_is_directory=True)

    r = site.post_search(folders=folders)
    assert r.status_code == 303 and r.headers["location"] == "/"
    r = site.client.get("/")
    alert = re.search(r'<div class="error" role="alert">(.*?)</div>', r.text, re.S)
    assert alert and text_of(alert[1]) == message
    # The form comes back as it was sent.
    assert f">{html.escape(folders, quote=False)}</textarea>" in r.text.replace("&#39;", "'")
    assert site.count(ALICE) == 0


def test_a_bad_query_in_several_folders_writes_nothing(site: Site) -> None:
    r = site.post_search(query="(unclosed", regex="on", folders="pkg, docs")
    assert r.status_code == 303
    alert = re.search(r'<div class="error" role="alert">(.*?)</div>', site.page("/"), re.S)
    assert alert and alert[1] == (
        "<p>This regular expression is not valid: missing ) at position 9.</p>"
    )
    assert site.count(ALICE) == 0


def test_the_api_refuses_a_folder_outside_and_the_search_checks_again(
    site: Site, tmp_path: Path
) -> None:
    for folder in ("../x", "/etc", "a//b", ".git", "site-packages"):
        r = site.client.post(
            "/api/tasks",
            json={"name": "search", "payload": {"query": "needle", "folder": folder}},
            headers={"X-CSRF-Token": site.csrf()},
        )
        assert r.status_code == 422, (folder, r.text)
    assert site.count(ALICE) == 0
    # A link that leads outside the corpus passes the payload's check, not the search's.
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key.py").write_text("needle = 'secret'\n")
    (site.demo.corpus / "outside").symlink_to(tmp_path / "secret", target_is_directory=True)
    task_id = site.submit("search", {"query": "needle", "folder": "outside"})
    record = site.finished(task_id)
    assert record.status is Status.FAILED and record.error is not None
    assert record.error.message == "There is no folder “outside” to search."
    assert site.outputs(task_id) == []


# -- ownership -----------------------------------------------------------------------------
def test_another_user_gets_404_on_the_group_and_every_part(site: Site) -> None:
    group_id = site.search("needle", folders="docs, lib")
    group = site.finished(group_id)
    ids = [group_id, *(p.id for p in site.parts(group_id))]
    before = {task_id: site.record(task_id).version for task_id in ids}

    site.log_in(BOB)
    missing = without_csrf(site.page(f"/tasks/{MISSING}", 404))
    csrf = site.csrf()
    for task_id in ids:
        assert without_csrf(site.page(f"/tasks/{task_id}", 404)) == missing
        for action in ("cancel", "export", "repeat"):
            r = site.client.post(
                f"/tasks/{task_id}/{action}", data={"csrf": csrf}, follow_redirects=False
            )
            assert r.status_code == 404 and without_csrf(r.text) == missing, action
        for sub in ("", "/output", "/events"):
            r = site.client.get(f"/api/tasks/{task_id}{sub}")
            assert r.status_code == 404, (sub, r.text)
            assert "needle" not in r.text and "docs" not in r.text
        r = site.client.post(f"/api/tasks/{task_id}/cancel", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 404
    # Bob's lists show none of it; nothing of Alice's changed.
    assert LIST_ROW.findall(site.page("/tasks")) == []
    assert site.count(BOB) == 0
    assert {task_id: site.record(task_id).version for task_id in ids} == before
    assert site.record(group_id).result == group.result


# -- cancelling ----------------------------------------------------------------------------
@pytest.mark.parametrize("way", ["form", "api"])
def test_cancelling_the_group_cancels_every_part(site: Site, way: str) -> None:
    make_slow_folders(site.demo, ["big1", "big2", "big3"])
    group_id = site.search("needle", folders="big1, big2, big3", slow="on")
    parts = site.parts(group_id)

    def started() -> bool:
        return any(
            site.record(p.id).status is Status.RUNNING
            and (site.record(p.id).progress.current or 0) > 0
            for p in parts[:3]
        )

    eventually(started, "a part to be searching", timeout=20, every=0.02)
    page = site.page(f"/tasks/{group_id}")
    assert (
        '<noscript><button type="submit" class="button danger">Cancel</button></noscript>' in page
    )
    if way == "form":
        r = site.client.post(
            f"/tasks/{group_id}/cancel", data={"csrf": site.csrf()}, follow_redirects=False
        )
        assert r.status_code == 303 and r.headers["location"] == f"/tasks/{group_id}"
    else:  # what the <errands-task> element's Cancel button sends
        r = site.client.post(f"/api/tasks/{group_id}/cancel", headers={"X-CSRF-Token": site.csrf()})
        assert r.status_code in (200, 202), r.text

    group = site.finished(group_id)
    assert group.status is Status.CANCELLED
    ended = [site.finished(p.id) for p in parts]
    assert [p.status for p in ended] == [Status.CANCELLED] * 4
    for p in ended[:3]:
        assert p.result is None and (p.progress.current or 0) < 400  # stopped on the way
    page = site.page(f"/tasks/{group_id}")
    assert [row[2] for row in PART_ROW.findall(page)] == ["cancelled"] * 4
    assert '<span class="et-status badge" data-status="cancelled" role="status">' in page
    assert 'id="export"' not in page


def test_cancelling_one_part_fails_its_group_and_stops_the_others(site: Site) -> None:
    make_slow_folders(site.demo, ["big1", "big2"])
    group_id = site.search("needle", folders="big1, big2", slow="on")
    parts = site.parts(group_id)
    eventually(lambda: site.record(parts[0].id).status is Status.RUNNING, "the first part to run")
    r = site.client.post(
        f"/tasks/{parts[0].id}/cancel", data={"csrf": site.csrf()}, follow_redirects=False
    )
    assert r.status_code == 303
    group = site.finished(group_id)
    assert group.status is Status.FAILED and group.error is not None
    assert group.error.type == "PartFailed"
    assert [site.finished(p.id).status for p in parts] == [Status.CANCELLED] * 3
    page = site.page(f"/tasks/{group_id}")
    # The owner reads the error's message; its type is for the admin view.
    assert '<p class="et-error error">part 0 was cancelled' in page
    assert "PartFailed" not in page


# -- following it, and what it leaves ------------------------------------------------------
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


def test_the_group_is_followed_and_exported_like_a_search(site: Site) -> None:
    group_id = site.search("needle", folders="pkg, docs")
    group = site.finished(group_id)
    parts = site.parts(group_id)

    # The task page's element reads the group as it reads any task: its resource, its
    # output (tagged items) and its event stream.
    r = site.client.get(f"/api/tasks/{group_id}")
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    assert r.json()["progress"]["percent"] == 100.0 and r.json()["result"] == group.result
    page = site.client.get(f"/api/tasks/{group_id}/output").json()
    for index, folder in enumerate(["pkg", "docs"]):  # the parts run side by side
        mine = [i["data"] for i in page["items"] if i["data"]["part"] == index]
        assert [(d["item"]["path"], d["item"]["line"], d["item"]["text"]) for d in mine] == (
            FOUND[folder]
        )
        assert {d["task_id"] for d in mine} == {parts[index].id}
    assert len(page["items"]) == 5
    with site.client.stream("GET", f"/api/tasks/{group_id}/events") as response:
        assert response.status_code == 200
        seen: list[tuple[str, Any]] = []
        for event, data in sse_events(response.iter_lines(), time.monotonic() + 20):
            seen.append((event, data))
            if event == "done":
                break
    outputs = [data["data"] for event, data in seen if event == "output"]
    assert outputs == [i["data"] for i in page["items"]]
    assert seen[-1][1]["result"] == group.result

    # The export: every folder's hits, sorted by path and line.
    r = site.client.post(
        f"/tasks/{group_id}/export", data={"csrf": site.csrf()}, follow_redirects=False
    )
    assert r.status_code == 303
    export_id = r.headers["location"].removeprefix("/tasks/")
    export = site.finished(export_id)
    assert export.status is Status.SUCCEEDED, export.error
    assert export.result["rows"] == 5
    r = site.client.get(f"/exports/{export_id}.csv")
    assert r.status_code == 200
    rows = list(csv.reader(io.StringIO(r.text)))
    expected = sorted((p, n, t) for f in ("pkg", "docs") for p, n, t in FOUND[f])
    assert rows == [["path", "line", "text"]] + [[p, str(n), t] for p, n, t in expected]
