"""The demo's admin pages (the library's dashboard as ``errands.demo.admin`` mounts it
at ``/admin``): the whole demo app on a real SQLite file, with its in-process worker
running (``TestClient`` as a context manager runs the lifespan)."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient  # its httpx2 warning is ignored in pyproject

from errands import ANY_OWNER, Status, TaskContext, TaskRecord
from errands.demo.web import Demo
from errands.worker import WorkerSettings
from tests.apps.demo_site import PASSWORD, DemoClient, build_demo, csrf_in
from tests.conftest import eventually

SVG = "{http://www.w3.org/2000/svg}"
ADMIN = "boss@example.com"
ALICE = "alice@example.com"
BOB = "bob@example.com"
# A week ahead: no worker runs them during a test (the API takes run_at up to 30 days
# ahead from users).
FUTURE = (datetime.now(UTC) + timedelta(days=7)).isoformat()


class Site(DemoClient):
    def owner_tasks(self, owner: str) -> list[TaskRecord]:
        return self.demo.errands.sync.list(owner=owner, limit=500).items


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    app = build_demo(tmp_path, monkeypatch)
    demo: Demo = app.state.demo

    # A task that fails with a traceback (registered before the worker starts).
    @demo.errands.task(max_attempts=1)
    def explode(ctx: TaskContext, payload: dict[str, Any]) -> None:
        raise RuntimeError("the flux capacitor <broke>")

    demo.accounts.register(ALICE, PASSWORD)
    demo.accounts.register(BOB, PASSWORD)
    demo.accounts.make_admin(ADMIN, PASSWORD)
    with TestClient(app) as client:
        yield Site(client, demo)


def _svg(html: str, figure_id: str) -> ET.Element:
    found = re.search(rf'<figure class="chart" id="{figure_id}">.*?(<svg.*?</svg>)', html, re.S)
    assert found, f"no SVG in #{figure_id}"
    return ET.fromstring(found[1])  # well-formed XML, or this raises


def _class(el: ET.Element, name: str) -> bool:
    return name in (el.get("class") or "").split()


def test_admin_pages_are_hidden_from_users_and_strangers(site: Site) -> None:
    site.log_in(ALICE)
    task_id = site.submit("search", {"query": "needle"})
    targets = ["/admin", f"/admin/tasks/{task_id}", "/admin/tasks/not-an-id"]
    for who in (None, ALICE, BOB):
        site.log_in(who)
        for path in targets:
            r = site.client.get(path)
            assert r.status_code == 404, (who, path)
            assert "Not found" in r.text and "Traceback" not in r.text
            assert 'href="/admin"' not in r.text
        csrf = site.csrf() if who else "x"
        for action in ("retry", "cancel"):
            path = f"/admin/tasks/{task_id}/{action}"
            r = site.client.post(path, data={"csrf": csrf}, follow_redirects=False)
            assert r.status_code == 404, (who, action)
            assert site.client.get(path).status_code == 404  # not 405: nothing is told
        assert site.client.post("/admin", data={"csrf": csrf}).status_code == 404
    site.finished(task_id)
    assert len(site.owner_tasks(site.record(task_id).owner)) == 1  # no retry happened
    site.log_in(ADMIN)
    assert site.client.get(f"/admin/tasks/{task_id}").status_code == 200
    assert site.client.get(f"/admin/tasks/{task_id}/retry").status_code == 405


def test_admin_sees_every_task_counts_charts_and_workers(site: Site) -> None:
    site.log_in(ALICE)
    alice_ok = site.submit("search", {"query": "needle"})
    site.log_in(BOB)
    bob_ok = site.submit("search", {"query": "hay", "glob": "*"})
    bob_bad = site.submit("explode", {})
    for task_id in (alice_ok, bob_ok, bob_bad):
        site.finished(task_id)
    assert site.record(bob_bad).status is Status.FAILED
    site.log_in(ADMIN)

    # The in-process worker heartbeats within a fraction of a second.
    def admin_page() -> str:
        r = site.client.get("/admin")
        assert r.status_code == 200
        return r.text if "data-worker-id" in r.text else ""

    html = eventually(admin_page, "the admin page to list the worker")
    assert ALICE in html and BOB in html
    for task_id in (alice_ok, bob_ok, bob_bad):
        assert f'href="/admin/tasks/{task_id}"' in html
    # Newest first.
    assert html.index(bob_bad) < html.index(bob_ok) < html.index(alice_ok)
    counts = dict(
        re.findall(r'data-status="(\w+)">\s*<a [^>]*><span class="value">(\d+)</span>', html)
    )
    assert counts == {
        "queued": "0",
        "running": "0",
        "succeeded": "2",
        "failed": "1",
        "cancelled": "0",
    }

    workers = re.findall(r'<tr data-worker-id="([^"]+)">(.*?)</tr>', html, re.S)
    assert len(workers) == 1
    row = workers[0][1]
    assert f'<td class="num">{os.getpid()}</td>' in row
    assert "search" in row and "explode" in row

    throughput = _svg(html, "throughput-chart")
    bars = [el for el in throughput.iter(f"{SVG}rect") if _class(el, "bar")]
    kinds = {c for el in bars for c in (el.get("class") or "").split() if c.startswith("bar-")}
    assert kinds == {"bar-succeeded", "bar-failed"}
    assert all(el.find(f"{SVG}title") is not None for el in bars)
    assert all(el.get("fill") for el in bars)
    titles = " ".join(el.findtext(f"{SVG}title") or "" for el in bars)
    assert "succeeded" in titles and "failed" in titles

    latency = _svg(html, "latency-chart")
    paths = {el.get("class") for el in latency.iter(f"{SVG}path")}
    assert paths == {"line-p50", "line-p95", "line-wait"}
    points = list(latency.iter(f"{SVG}circle"))
    assert points and all(el.find(f"{SVG}title") is not None for el in points)

    # Filters: by owner (e-mail or owner id), status and task name.
    alice = site.record(alice_ok).owner
    for owner in (ALICE, alice, alice.removeprefix("user:")):
        page = site.client.get("/admin", params={"owner": owner}).text
        assert alice_ok in page and bob_ok not in page and bob_bad not in page, owner
    page = site.client.get("/admin", params={"status": "failed"}).text
    assert bob_bad in page and bob_ok not in page and alice_ok not in page
    page = site.client.get("/admin", params={"name": "search", "owner": BOB}).text
    assert bob_ok in page and bob_bad not in page and alice_ok not in page
    page = site.client.get("/admin", params={"owner": "nobody@example.com"}).text
    assert "No user has the e-mail address nobody@example.com." in page
    assert alice_ok not in page
    # A bad cursor or status is ignored, not an error.
    assert site.client.get("/admin", params={"cursor": "junk", "status": "x"}).status_code == 200


def test_admin_list_pages_through_twenty_at_a_time(site: Site) -> None:
    site.log_in(ALICE)
    ids = [site.submit("search", {"query": f"q{i}"}, run_at=FUTURE) for i in range(23)]
    site.log_in(ADMIN)
    first = site.client.get("/admin").text
    shown = [i for i in ids if f'data-task-id="{i}"' in first]
    assert shown == ids[-20:]
    older = re.search(r'<a href="([^"]+)" rel="next">', first)
    assert older
    second = site.client.get(older[1].replace("&amp;", "&")).text
    assert [i for i in ids if f'data-task-id="{i}"' in second] == ids[:3]
    assert 'rel="next"' not in second
    assert re.search(r'<span class="value">23</span>\s*<span class="label">in the queue', first)
    # Filters survive paging.
    filtered = site.client.get("/admin", params={"owner": ALICE, "status": "queued"}).text
    older = re.search(r'<a href="([^"]+)" rel="next">', filtered)
    assert older and "owner=alice%40example.com" in older[1] and "status=queued" in older[1]


def test_failed_task_page_shows_the_traceback_and_retry_makes_a_new_task(site: Site) -> None:
    site.log_in(BOB)
    bad = site.submit("explode", {"n": 1})
    ok = site.submit("search", {"query": "needle"})
    site.finished(bad)
    site.finished(ok)
    bob = site.record(bad).owner
    site.log_in(ADMIN)

    r = site.client.get(f"/admin/tasks/{bad}")
    assert r.status_code == 200
    html = r.text
    assert BOB in html and bob in html
    traceback = re.search(r'<pre class="traceback" id="traceback">(.*?)</pre>', html, re.S)
    assert traceback
    assert "Traceback (most recent call last)" in traceback[1]
    assert "RuntimeError: the flux capacitor &lt;broke&gt;" in traceback[1]  # escaped
    assert "<strong>RuntimeError</strong>" in html
    assert "&#34;n&#34;: 1" in html  # the payload, as JSON
    assert f'action="/admin/tasks/{bad}/retry"' in html
    assert f'action="/admin/tasks/{bad}/cancel"' not in html
    csrf = csrf_in(html)

    r = site.client.post(f"/admin/tasks/{bad}/retry", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    new_id = r.headers["location"].removeprefix("/admin/tasks/")
    assert new_id != bad
    new = site.record(new_id)
    assert new.owner == bob and new.name == "explode" and new.payload == {"n": 1}
    assert new.status in (Status.QUEUED, Status.RUNNING, Status.FAILED)
    assert site.client.get(f"/admin/tasks/{new_id}").status_code == 200
    assert site.finished(new_id).status is Status.FAILED

    # A succeeded task has neither button, and cannot be retried.
    html = site.client.get(f"/admin/tasks/{ok}").text
    assert "/retry" not in html and "/cancel" not in html and 'id="traceback"' not in html
    assert "&#34;hits&#34;: 4" in html  # the result, as JSON
    before = len(site.owner_tasks(bob))
    r = site.client.post(f"/admin/tasks/{ok}/retry", data={"csrf": csrf})
    assert r.status_code == 409 and "only a failed or cancelled task can be retried" in r.text
    assert len(site.owner_tasks(bob)) == before


def test_cancel_and_the_csrf_token_is_required(site: Site) -> None:
    site.log_in(ALICE)
    waiting = site.submit("search", {"query": "later"}, run_at=FUTURE)
    failed = site.submit("explode", {})
    site.finished(failed)
    alice = site.record(waiting).owner
    site.log_in(ADMIN)

    html = site.client.get(f"/admin/tasks/{waiting}").text
    assert f'action="/admin/tasks/{waiting}/cancel"' in html
    assert f'action="/admin/tasks/{waiting}/retry"' not in html
    before = len(site.owner_tasks(alice))
    for data in ({}, {"csrf": "forged"}):
        for action, task_id in (("cancel", waiting), ("retry", failed)):
            r = site.client.post(f"/admin/tasks/{task_id}/{action}", data=data)
            assert r.status_code == 403, (action, data)
            assert "Form expired" in r.text
    assert site.record(waiting).status is Status.QUEUED
    assert len(site.owner_tasks(alice)) == before

    csrf = csrf_in(html)
    r = site.client.post(
        f"/admin/tasks/{waiting}/cancel", data={"csrf": csrf}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == f"/admin/tasks/{waiting}"
    assert site.record(waiting).status is Status.CANCELLED
    html = site.client.get(f"/admin/tasks/{waiting}").text
    assert "/cancel" not in html and f'action="/admin/tasks/{waiting}/retry"' in html
    # Unknown tasks are 404s for the admin too.
    zero = "00000000-0000-0000-0000-000000000000"
    assert site.client.post(f"/admin/tasks/{zero}/cancel", data={"csrf": csrf}).status_code == 404


# -- running tasks ------------------------------------------------------------------------
SLOW_FILES = 200


def submit_slow_search(site: Site) -> str:
    """A search that takes ~10 s (50 ms per file) as the signed-in user; its id once
    the worker runs it."""
    slow = site.demo.corpus / "slow"
    if not slow.exists():
        slow.mkdir()
        for i in range(SLOW_FILES):
            (slow / f"f{i:03d}.txt").write_text(f"needle {i}\n")
    task_id = site.submit("search", {"query": "needle", "glob": "slow/*", "pause": 0.05})
    eventually(lambda: site.record(task_id).status is Status.RUNNING, f"{task_id} to run")
    return task_id


def test_admin_cancels_a_running_task(site: Site) -> None:
    site.log_in(ALICE)
    task_id = submit_slow_search(site)
    site.log_in(ADMIN)

    html = site.client.get(f"/admin/tasks/{task_id}").text
    assert re.search(r'id="task-status"\s+data-task-id="[^"]+" data-live>running</span>', html)
    assert f'action="/admin/tasks/{task_id}/cancel"' in html
    assert f'action="/admin/tasks/{task_id}/retry"' not in html
    csrf = csrf_in(html)
    r = site.client.post(
        f"/admin/tasks/{task_id}/cancel", data={"csrf": csrf}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == f"/admin/tasks/{task_id}"

    record = site.finished(task_id, timeout=8)  # well before the search could end
    assert record.status is Status.CANCELLED
    assert record.result is None and record.finished_at is not None
    assert record.progress.current is not None and record.progress.current < SLOW_FILES
    assert record.attempts == 1  # stopped, not retried
    html = site.client.get(f"/admin/tasks/{task_id}").text
    assert re.search(r'id="task-status"\s+data-task-id="[^"]+">cancelled</span>', html)
    assert "/cancel" not in html and f'action="/admin/tasks/{task_id}/retry"' in html
    # Its owner sees it cancelled too.
    site.log_in(ALICE)
    page = site.client.get(f"/tasks/{task_id}").text
    assert 'data-status="cancelled"' in page


def test_workers_table_lists_the_tasks_a_live_worker_runs(site: Site) -> None:
    site.log_in(ALICE)
    alices = submit_slow_search(site)
    site.log_in(BOB)
    bobs = submit_slow_search(site)
    site.log_in(ADMIN)
    concurrency = WorkerSettings().concurrency  # the demo's worker keeps the default

    def worker_cells() -> list[str]:
        """The cells of the one worker's row: Worker … Busy (4), …, Running (7)."""
        html = site.client.get("/admin").text
        rows = re.findall(r'<tr data-worker-id="([^"]+)">(.*?)</tr>', html, re.S)
        assert len(rows) <= 1, rows
        if not rows:
            return []
        cells: list[str] = [c.strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", rows[0][1], re.S)]
        assert len(cells) == 8 and rows[0][0] in cells[0], cells
        assert cells[2] == str(os.getpid())
        return cells

    def busy() -> list[str] | None:
        cells = worker_cells()
        return cells if cells and "<li>" in cells[7] else None

    cells = eventually(busy, "the worker's row to list its tasks")
    assert cells[4] == f"2 / {concurrency}"
    running = re.findall(
        r'<li><a href="/admin/tasks/([^"]+)" title="\1">(\w+)\s*<code class="id">…(\w{8})</code>'
        r"</a> · ([^<]+)</li>",
        cells[7],
    )
    assert sorted(running) == sorted(
        [(alices, "search", alices[-8:], ALICE), (bobs, "search", bobs[-8:], BOB)]
    )
    # Once they end, the worker is idle again.
    for task_id in (alices, bobs):
        site.demo.errands.sync.cancel(task_id, owner=ANY_OWNER)
        assert site.finished(task_id, timeout=8).status is Status.CANCELLED
    cells = worker_cells()
    assert cells[4] == f"0 / {concurrency}"
    assert cells[7] == '<span class="muted">idle</span>'
