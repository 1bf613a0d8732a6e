"""The demo application in a real browser: Debian's Chromium driven by Playwright against
the demo served by a real uvicorn server (with its in-process worker) on a SQLite file.

One server, one browser and one signed-in context per user serve the whole module. The
corpus is generated, so every search's hits are known exactly; the form's "slow motion"
(5 ms per file) makes a search over ``big/`` last a few seconds, long enough to watch.
"""

from __future__ import annotations

import csv
import html as htmllib
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Request,
    Response,
    Route,
    expect,
)

from errands import ANY_OWNER, Status
from tests.browser import (
    LIVELY_WORKER,
    PASSWORD,
    TASK_URL,
    TIMEOUT_MS,
    DemoServer,
    Hit,
    demo_served,
    hit_lines,
    log_in,
    mark_page,
    new_context,
    register,
    search_done,
    use_chromium,
    wait_reloaded,
)
from tests.browser import search as form_search

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
#: Where ``test_screenshots`` writes the README's pictures: ``make screenshots`` sets
#: ``$ERRANDS_SCREENSHOTS`` to ``docs/screenshots``; other runs write to a temporary
#: folder, so running the tests leaves the working tree as it was.
SCREENSHOTS = os.environ.get("ERRANDS_SCREENSHOTS")
ELEMENT_DOC = REPO / "docs" / "errands-task.md"
ALICE = "alice@example.com"
BOB = "bob@example.com"
ADMIN = "admin@example.com"
WORD = "zebra"
#: Files per group of the corpus, and every how many files one holds the word.
GROUPS = {"big": (900, 9), "long": (1500, 15), "mid": (300, 10), "small": (36, 3)}
FINISHED = ("succeeded", "failed", "cancelled")

use_chromium()


def build_corpus(root: Path) -> dict[str, list[Hit]]:
    """Write the corpus; the hits of a search for WORD in each group, in search order."""
    hits: dict[str, list[Hit]] = {}
    for group, (count, every) in GROUPS.items():
        (root / group).mkdir(parents=True)
        found: list[Hit] = []
        for i in range(count):
            rel = f"{group}/mod_{i:04d}.py"
            lines = [
                f'"""Module {i} of the {group} group."""',
                "",
                "import os",
                "",
                f"VALUE = {i}",
                "",
                "",
                f"def animal_{i}() -> str:",
                "    # zebr a: not quite the word",
                "    return 'horse'",
            ]
            if i % every == 0:
                number = 5 + i % 4  # a known line, varying from file to file
                text = f"FAVOURITE = 'the {WORD} of module {i}'  # {group}"
                lines.insert(number - 1, text)
                found.append((rel, number, text))
            (root / rel).write_text("\n".join(lines) + "\n")
        hits[group] = found
    # Not a .py file: no search with the default glob sees it.
    (root / "big" / "notes.txt").write_text(f"a {WORD} in a text file\n")
    return hits


@dataclass
class Server(DemoServer):
    hits: dict[str, list[Hit]]
    shared: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("demo-browser")
    hits = build_corpus(tmp / "corpus")
    with demo_served(tmp, worker=True, worker_options=LIVELY_WORKER) as served:
        yield Server(served.url, served.demo, hits)


@pytest.fixture(scope="module")
def alice(chromium: Browser, server: Server) -> Iterator[BrowserContext]:
    context = new_context(chromium, server.url)
    register(context, ALICE)
    yield context
    context.close()


@pytest.fixture(scope="module")
def bob(chromium: Browser, server: Server) -> Iterator[BrowserContext]:
    context = new_context(chromium, server.url)
    register(context, BOB)
    yield context
    context.close()


@pytest.fixture(scope="module")
def admin(chromium: Browser, server: Server) -> Iterator[BrowserContext]:
    server.demo.accounts.make_admin(ADMIN, PASSWORD)
    context = new_context(chromium, server.url)
    log_in(context, ADMIN)
    yield context
    context.close()


def search(page: Page, glob: str, *, slow: bool, query: str = WORD) -> str:
    """Submit the search form; the new task's id (the page is on the task page)."""
    return form_search(page, query, glob=glob, slow=slow)


def finished_search(server: Server, context: BrowserContext, key: str) -> str:
    """A finished search of ``small/`` by the context's user (one per key, made once)."""
    if key not in server.shared:
        page = context.new_page()
        task_id = search_done(page, WORD, glob="small/*.py", slow=False)
        page.close()
        assert server.record(task_id).status is Status.SUCCEEDED
        server.shared[key] = task_id
    found: str = server.shared[key]
    return found


@pytest.fixture(scope="module")
def alice_search(server: Server, alice: BrowserContext) -> str:
    return finished_search(server, alice, "alice")


#: Samples the live view every 25 ms until the task is finished.
SAMPLE_UNTIL_DONE = """() => new Promise((resolve) => {
  const task = document.getElementById("task");
  const samples = [];
  const sample = () => {
    const status = task.querySelector(".et-status");
    const bar = task.querySelector(".et-bar");
    const s = {
      status: status ? status.getAttribute("data-status") : null,
      value: bar && bar.hasAttribute("value") ? bar.value : null,
      percent: (task.querySelector(".et-percent") || {}).textContent || "",
      hits: document.querySelectorAll("#hits li").length,
      mode: task.getAttribute("data-mode"),
    };
    samples.push(s);
    if (["succeeded", "failed", "cancelled"].includes(s.status)) resolve(samples);
    else setTimeout(sample, 25);
  };
  sample();
})"""


# -- 1. register, search, watch ---------------------------------------------------------
def test_search_shows_progress_and_hits_while_running(
    server: Server, alice: BrowserContext
) -> None:
    expected = server.hits["big"]
    page = alice.new_page()
    task_id = search(page, "big/*.py", slow=True)
    expect(page.locator(".topbar .who")).to_have_text(ALICE)  # registered and signed in
    mark_page(page)
    samples: list[dict[str, Any]] = page.evaluate(SAMPLE_UNTIL_DONE)

    assert samples[-1]["status"] == "succeeded", samples[-1]
    running = [s for s in samples if s["status"] == "running"]
    assert running, "never seen running"
    assert {s["mode"] for s in running} == {"sse"}
    values = [s["value"] for s in running if s["value"] is not None]
    moving = sorted({v for v in values if 0 < v < 100})
    assert len(moving) >= 2, f"the bar did not move: {sorted(set(values))}"
    assert values == sorted(values), "the bar went backwards"
    assert any(s["percent"].endswith("%") for s in running)
    # Hits arrive while the search runs, not only at the end.
    assert any(s["hits"] > 0 for s in running), "no hit was shown before the end"
    assert min(s["hits"] for s in running if s["hits"]) < len(expected), "not one by one"

    # Done: the page reloads itself and shows the result and what comes next.
    wait_reloaded(page)
    expect(page.locator("#task .et-status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#export")).to_be_visible()
    expect(page.locator("#task .et-cancel")).to_be_hidden()
    expect(page.locator("#hits li")).to_have_text(hit_lines(expected))
    expect(page.locator("#hit-count")).to_have_text(str(len(expected)))
    result = json.loads(page.locator("#task .et-result").text_content() or "")  # under "as JSON"
    assert result["files"] == GROUPS["big"][0]
    assert result["hits"] == len(expected)
    assert result["truncated"] is False
    assert float(page.locator("#task .et-bar").get_attribute("value") or 0) == 100
    record = server.record(task_id)
    assert record.status is Status.SUCCEEDED and record.result == result
    page.close()


# -- 2. cancel --------------------------------------------------------------------------
def test_cancel_from_the_task_page(server: Server, alice: BrowserContext) -> None:
    page = alice.new_page()
    task_id = search(page, "big/*.py", slow=True)
    status = page.locator("#task .et-status")
    expect(status).to_have_attribute("data-status", "running")
    expect(page.locator("#task .et-percent")).to_have_text(re.compile(r"^[1-9]\d*%$"))
    mark_page(page)
    page.click("#task .et-cancel")
    expect(status).to_have_attribute("data-status", "cancelled")
    expect(status).to_have_text("cancelled")
    # The page reloads itself: the server renders the cancelled task.
    wait_reloaded(page)
    expect(status).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#task .et-cancel")).to_be_hidden()
    expect(page.locator("#export")).to_have_count(0)
    record = server.record(task_id)
    assert record.status is Status.CANCELLED
    total = GROUPS["big"][0]
    assert record.progress.current is not None and record.progress.current < total
    page.close()


# -- 3. another user --------------------------------------------------------------------
def test_another_user_gets_not_found_for_a_task(
    server: Server, alice_search: str, bob: BrowserContext
) -> None:
    page = bob.new_page()
    for path in (f"/tasks/{alice_search}", f"/api/tasks/{alice_search}"):
        response = page.goto(path)
        assert response is not None and response.status == 404, path
        html = page.content()
        assert alice_search not in html
        assert WORD not in html and "small/" not in html
        assert ALICE not in html
    page.goto(f"/tasks/{alice_search}")
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator("errands-task, #hits, #export")).to_have_count(0)
    # Nor through the API, nor in Bob's list.
    for path in (f"/api/tasks/{alice_search}", f"/api/tasks/{alice_search}/output"):
        assert bob.request.get(path).status == 404
    page.goto("/tasks")
    assert alice_search not in page.content()
    page.close()


# -- 4. admin ---------------------------------------------------------------------------
def test_admin_sees_every_users_tasks(
    server: Server,
    alice_search: str,
    bob: BrowserContext,
    admin: BrowserContext,
) -> None:
    bob_search = finished_search(server, bob, "bob")
    page = admin.new_page()
    page.goto("/")
    page.click(".topbar a[href='/admin']")
    page.wait_for_url("/admin")
    for task_id, email in ((alice_search, ALICE), (bob_search, BOB)):
        row = page.locator(f"#tasks tr[data-task-id='{task_id}']")
        expect(row).to_be_visible()
        expect(row).to_contain_text(email)
        expect(row.locator(".badge")).to_have_text("succeeded")
    # An administrator's page, not a user's: the worker is listed too.
    expect(page.locator("#workers tr[data-worker-id]")).to_have_count(1)
    page.close()


def test_admin_pages_follow_a_running_task_and_cancel_it(
    server: Server, alice: BrowserContext, admin: BrowserContext
) -> None:
    """The dashboard's own script and CSRF cookie in a real browser: the overview's row
    and the task's page follow a running search, and Cancel (a form POST with the
    dashboard's token, and the browser's own Origin header) stops it."""
    page = alice.new_page()
    task_id = search(page, "long/*.py", slow=True)
    page.close()
    overview = admin.new_page()
    overview.goto("/admin")
    row = overview.locator(f"#tasks tr[data-task-id='{task_id}']")
    expect(row).to_have_attribute("data-live", "")
    mark_page(overview)

    page = admin.new_page()
    page.goto(f"/admin/tasks/{task_id}")
    status = page.locator("#task-status")
    expect(status).to_have_text("running")  # (a queued page reloads itself once it runs)
    progress = page.locator("#progress")
    before = progress.text_content() or ""
    expect(progress).not_to_have_text(before)  # polled while it runs
    page.click("form[action$='/cancel'] button[type=submit]")
    page.wait_for_url(f"/admin/tasks/{task_id}")
    expect(status).to_have_text("cancelled")
    expect(page.locator("form[action$='/retry']")).to_be_visible()
    assert server.record(task_id).status is Status.CANCELLED
    page.close()

    # The overview's row caught up without a reload.
    expect(row.locator(".badge")).to_have_text("cancelled")
    expect(row).not_to_have_attribute("data-live", "")
    assert overview.evaluate("() => window.__notReloaded === true")
    overview.close()


# -- 5. export --------------------------------------------------------------------------
def test_export_downloads_the_hits_as_csv(
    server: Server, alice: BrowserContext, alice_search: str, bob: BrowserContext
) -> None:
    page = alice.new_page()
    page.goto(f"/tasks/{alice_search}")
    page.click("#export")
    page.wait_for_url(TASK_URL)
    found = TASK_URL.search(page.url)
    assert found and found[1] != alice_search
    export_id = found[1]
    download_link = page.locator("#download")
    expect(download_link).to_be_visible()
    with page.expect_download() as info:
        download_link.click()
    download = info.value
    assert download.suggested_filename == "zebra-in-small-py.csv"  # the search's words
    with open(download.path(), newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", "line", "text"]
    response = alice.request.get(f"/api/tasks/{alice_search}/output")
    assert response.status == 200
    items = response.json()["items"]
    assert rows[1:] == [
        [i["data"]["path"], str(i["data"]["line"]), i["data"]["text"]] for i in items
    ]
    assert rows[1:] == [[p, str(n), t] for p, n, t in server.hits["small"]]
    expect(download_link).to_contain_text(f"{len(rows) - 1} rows")
    # The file is its owner's only.
    assert bob.request.get(f"/exports/{export_id}.csv").status == 404
    page.close()


# -- 6. polling when Server-Sent Events are blocked --------------------------------------
#: Keeps what the element showed when its task finished (the page reloads after that).
RECORD_DONE = """
document.addEventListener("errands:done", (event) => {
  const task = document.getElementById("task");
  if (task.dataset.initiallyDone) return; // the reloaded page: keep the first record
  sessionStorage.setItem("done", JSON.stringify({
    mode: task.getAttribute("data-mode"),
    status: task.querySelector(".et-status").getAttribute("data-status"),
    result: event.detail.result,
    hits: Array.from(document.querySelectorAll("#hits li"), (li) => li.textContent),
  }));
});
"""


def test_falls_back_to_polling_without_event_stream(server: Server, alice: BrowserContext) -> None:
    # Chromium retries a failed EventSource every 3 s, and the element polls after the
    # third failure: the search must outlast that (``long/`` takes about 8 s).
    expected = server.hits["long"]
    page = alice.new_page()
    blocked: list[str] = []

    def refuse(route: Route) -> None:
        blocked.append(route.request.url)
        route.abort()

    page.route(re.compile(r"/events(\?.*)?$"), refuse)
    page.add_init_script(RECORD_DONE)
    exchanges: list[tuple[Request, Response]] = []
    page.on("response", lambda response: exchanges.append((response.request, response)))
    task_id = search(page, "long/*.py", slow=True)
    mark_page(page)
    samples: list[dict[str, Any]] = page.evaluate(SAMPLE_UNTIL_DONE)
    first_page = len(exchanges)  # what the page that ran the task asked (not the reload)
    assert blocked and all(f"/api/tasks/{task_id}/events" in url for url in blocked)

    polled = [s for s in samples if s["mode"] == "poll"]
    assert polled, "the element never polled"
    assert samples[-1]["mode"] == "poll" and samples[-1]["status"] == "succeeded"
    # It switched while the task ran, and hits kept coming by polling.
    running = [s["hits"] for s in polled if s["status"] == "running"]
    assert running, "the task finished before the element polled"
    assert running[-1] > running[0] or samples[-1]["hits"] > running[0]
    # The page reloads itself 300 ms after the end: wait for that before reading what
    # it kept (reading sooner races the reload: "Execution context was destroyed").
    wait_reloaded(page)
    done = json.loads(page.evaluate("() => sessionStorage.getItem('done')") or "null")
    assert done is not None, "errands:done was not seen"
    assert done["mode"] == "poll" and done["status"] == "succeeded"
    assert done["result"]["hits"] == len(expected)
    assert done["hits"] == hit_lines(expected)  # every output, in order, once

    # Polling revalidates: after the first answer, every read of the task sends the
    # ETag it holds (the running task changes between polls, so these answers are 200s;
    # see test_polling_gets_not_modified_answers for 304s).
    url = f"{server.url}/api/tasks/{task_id}"
    reads = [(r, a) for r, a in exchanges[:first_page] if r.url == url]
    assert len(reads) >= 2, reads
    etags = {a.headers.get("etag") for _, a in reads if a.status == 200}
    conditional = [r.headers.get("if-none-match") for r, _ in reads]
    assert conditional[-1] is not None and all(tag in etags for tag in conditional if tag)
    assert all(a.status in (200, 304) for _, a in reads)

    # The reloaded page shows the finished task.
    expect(page.locator("#task .et-status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#export")).to_be_visible()
    expect(page.locator("#hits li")).to_have_count(len(expected))
    page.close()


# -- 7. without JavaScript -------------------------------------------------------------------
def test_task_page_without_javascript_refreshes_itself(server: Server, chromium: Browser) -> None:
    expected = server.hits["mid"]
    context = new_context(chromium, server.url, java_script_enabled=False)
    try:
        log_in(context, ALICE)  # the forms work without scripts
        page = context.new_page()
        search(page, "mid/*.py", slow=True)
        html = page.content()  # one snapshot: the page refreshes itself every 2 s
        shown = re.search(
            r'<span class="et-status[^"]*" data-status="(\w+)"[^>]*>(\w+)</span>', html
        )
        assert shown and shown[1] == shown[2] and shown[1] in ("queued", "running"), shown
        assert re.search(r'<meta http-equiv="refresh" content="2">', html)
        assert re.search(r'<button type="submit" class="button danger">Cancel</button>', html)
        status = page.locator("#task .et-status")
        # The refresh brings the finished task, which refreshes no more.
        expect(status).to_have_text("succeeded")
        assert page.locator('meta[http-equiv="refresh"]').count() == 0
        expect(page.locator("#hits li")).to_have_text(hit_lines(expected))
        expect(page.locator("#export")).to_be_visible()
        page.close()
    finally:
        context.close()


# -- 8. screenshots for the README -------------------------------------------------------------
def test_screenshots(
    alice: BrowserContext, alice_search: str, admin: BrowserContext, tmp_path: Path
) -> None:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page = alice.new_page()
    page.goto(f"/tasks/{alice_search}")
    expect(page.locator("#task .et-status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#hits li").first).to_be_visible()
    page.screenshot(path=str(folder / "task-page.png"), full_page=True)
    page.close()
    page = admin.new_page()
    page.goto("/admin")
    expect(page.locator("#tasks tr[data-task-id]").first).to_be_visible()
    page.screenshot(path=str(folder / "admin.png"), full_page=True)
    page.close()
    for name in ("task-page.png", "admin.png"):
        data = (folder / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, name


# -- helpers for the tests below ---------------------------------------------------------------
def csrf_of(server: Server, context: BrowserContext, email: str) -> str:
    """The CSRF token of the context's session, as the demo's pages carry it."""
    key = f"csrf {email}"
    if key not in server.shared:
        page = context.new_page()
        page.goto("/tasks")
        server.shared[key] = page.locator('meta[name="csrf-token"]').get_attribute("content")
        page.close()
    token: str = server.shared[key]
    assert token
    return token


def submit_search(
    context: BrowserContext, csrf: str, glob: str, *, slow: bool, run_at: datetime | None = None
) -> str:
    """Submit a search through the HTTP API with the context's session; the task's id."""
    body: dict[str, Any] = {
        "name": "search",
        "payload": {"query": WORD, "glob": glob, "pause": 0.005 if slow else 0.0},
    }
    if run_at is not None:
        body["run_at"] = run_at.isoformat()
    response = context.request.post("/api/tasks", data=body, headers={"X-CSRF-Token": csrf})
    assert response.status == 202, response.text()
    task_id: str = response.json()["id"]
    return task_id


def js_round(value: float) -> int:
    """JavaScript's Math.round (halves up), not Python's round (halves to even)."""
    return math.floor(value + 0.5)


def eta_words(seconds: float | None) -> str:
    """What <errands-task> shows for ``progress.eta_seconds`` (its formatEta)."""
    if seconds is None or seconds < 0:
        return ""
    s = max(1, js_round(seconds))
    return f"about {s} s left" if s < 60 else f"about {js_round(s / 60)} min left"


#: Samples an <errands-task> every 25 ms until its task is finished: what it shows, and
#: the resource it shows it from (its ``resource`` property), read in the same instant.
SAMPLE_LIVE = """({task: selector, hits: hitSelector, timeout}) => new Promise((resolve) => {
  const task = document.querySelector(selector);
  const deadline = Date.now() + timeout; // a hung task fails the test instead of hanging it
  const samples = [];
  const text = (sel) => { const n = task.querySelector(sel); return n ? n.textContent : null; };
  const sample = () => {
    const status = task.querySelector(".et-status");
    const bar = task.querySelector(".et-bar");
    const r = task.resource;
    const s = {
      status: status ? status.getAttribute("data-status") : null,
      value: bar && bar.hasAttribute("value") ? bar.value : null,
      percent: text(".et-percent"),
      eta: text(".et-eta"),
      message: text(".et-message"),
      hits: document.querySelectorAll(hitSelector).length,
      mode: task.getAttribute("data-mode"),
      resource: r ? {status: r.status, version: r.version, progress: r.progress} : null,
    };
    samples.push(s);
    if (["succeeded", "failed", "cancelled"].includes(s.status)) resolve(samples);
    else if (Date.now() > deadline) resolve(samples.concat([{status: "gave up", last: s}]));
    else setTimeout(sample, 25);
  };
  sample();
})"""


def sample_live(page: Page, task: str = "#task", hits: str = "#hits li") -> list[dict[str, Any]]:
    args = {"task": task, "hits": hits, "timeout": 3 * TIMEOUT_MS}
    samples: list[dict[str, Any]] = page.evaluate(SAMPLE_LIVE, args)
    return samples


# -- 9. progress message and time left ------------------------------------------------------
def test_task_page_shows_progress_message_and_eta(server: Server, alice: BrowserContext) -> None:
    total = GROUPS["big"][0]
    page = alice.new_page()
    task_id = search(page, "big/*.py", slow=True)
    mark_page(page)
    samples = sample_live(page)
    assert samples[-1]["status"] == "succeeded", (samples[-1], server.record(task_id))

    # What the element shows is what the task reported: after each file, its path.
    shown = [s for s in samples if s["resource"] and s["resource"]["status"] == "running"]
    assert shown, "never seen running"
    files: set[str] = set()
    for s in shown:
        progress = s["resource"]["progress"]
        assert s["message"] == (progress["message"] or ""), s
        if progress["current"] is None:  # running, before its first report
            assert s["message"] == "" and s["percent"] == "" and s["eta"] == "", s
            continue
        assert progress["total"] == total, s
        current = int(progress["current"])
        if current == 0:
            assert s["message"] == f"{total} files to search", s
        elif s["message"] == f"Done: searched {total} files":  # its last words
            assert current == total, s
        else:
            assert s["message"] == f"big/mod_{current - 1:04d}.py", s  # the file just read
            files.add(s["message"])
        assert s["percent"] == f"{js_round(progress['percent'])}%", s
        assert s["eta"] == eta_words(progress["eta_seconds"]), s
    assert len(files) >= 2, f"the message did not follow the search: {files}"
    # The time left is shown once the API can tell it (from the rate so far).
    with_eta = [s for s in shown if s["eta"]]
    assert with_eta, "no time left was ever shown"
    assert all(re.fullmatch(r"about \d+ (s|min) left", s["eta"]) for s in with_eta)

    # Done: the task's last message says so (the page then shows its final line in its
    # place); there is no time left any more.
    last = samples[-1]
    assert last["message"] == f"Done: searched {total} files" and last["eta"] == "", last
    record = server.record(task_id)
    assert record.progress.message == last["message"]
    assert record.eta_seconds(datetime.now(UTC)) is None
    # Close only once the page's own reload is over: Chromium can drop a close that
    # races a navigation's commit, and page.close() then hangs (crbug.com/536385539,
    # microsoft/playwright#42068).
    wait_reloaded(page)
    page.close()


# -- 10. reload while running ------------------------------------------------------------------
def test_reload_while_running_shows_the_record_and_stays_live(
    server: Server, alice: BrowserContext
) -> None:
    expected = server.hits["big"]
    page = alice.new_page()
    page.add_init_script(RECORD_DONE)
    task_id = search(page, "big/*.py", slow=True)
    expect(page.locator("#task .et-status")).to_have_attribute("data-status", "running")
    expect(page.locator("#hits li").nth(1)).to_be_attached()  # a few hits in
    before_value = float(page.locator("#task .et-bar").get_attribute("value") or 0)
    before_hits = page.locator("#hits li").count()
    assert before_value > 0

    response = page.reload()
    assert response is not None and response.status == 200
    # The server renders the record as it is now: running, at least as far along, the
    # hits so far (in order), the time left.
    html = htmllib.unescape(response.text())
    status = re.search(r'<span class="et-status[^"]*" data-status="(\w+)"', html)
    assert status and status[1] == "running", html
    value = re.search(r'<progress class="et-bar" max="100" value="([\d.]+)"', html)
    assert value and float(value[1]) >= before_value, (value, before_value)
    rendered = re.findall(r'<li data-seq="(\d+)"><code>([^<]*)</code> ([^<]*)</li>', html)
    assert len(rendered) >= before_hits
    assert [f"{where} {what}" for _, where, what in rendered] == hit_lines(
        expected[: len(rendered)]
    )
    assert [int(seq) for seq, _, _ in rendered] == list(range(1, len(rendered) + 1))
    assert re.search(r'<span class="et-eta">about \d+ (s|min) left</span>', html)
    assert re.search(r'<p class="et-message">big/mod_\d{4}\.py</p>', html)
    assert float(value[1]) <= (server.record(task_id).progress.percent or 0)

    # The script takes over and the task is live again: the bar moves on from where
    # the server left it, hits keep coming, over the stream.
    mark_page(page)
    samples = sample_live(page)
    assert samples[-1]["status"] == "succeeded", (samples[-1], server.record(task_id))
    running = [s for s in samples if s["status"] == "running"]
    assert running, "the task finished before the reloaded page was live"
    assert {s["mode"] for s in running} == {"sse"}
    values = [s["value"] for s in running if s["value"] is not None]
    assert values and values[0] >= float(value[1]), (values[:3], value[1])
    assert values == sorted(values), "the bar went backwards"
    assert max(values) > values[0], "the bar did not move after the reload"
    assert running[0]["hits"] >= len(rendered)
    assert samples[-1]["hits"] > running[0]["hits"], "no hit came after the reload"

    # Every hit exactly once, in order: the rendered ones and the streamed ones.
    wait_reloaded(page)  # the page's own reload, after the end
    done = json.loads(page.evaluate("() => sessionStorage.getItem('done')") or "null")
    assert done is not None, "errands:done was not seen after the reload"
    assert done["mode"] == "sse" and done["status"] == "succeeded"
    assert done["hits"] == hit_lines(expected)
    expect(page.locator("#hits li")).to_have_text(hit_lines(expected))
    expect(page.locator("#export")).to_be_visible()
    page.close()


# -- 11. polling revalidates: If-None-Match, 304 --------------------------------------------
def test_polling_gets_not_modified_answers(server: Server, alice: BrowserContext) -> None:
    # A task that stays queued (it runs in an hour) does not change between polls, so
    # the element's conditional reads get 304s. The stream answers 204 ("nothing to
    # send"), which EventSource does not retry: the element polls at once.
    csrf = csrf_of(server, alice, ALICE)
    task_id = submit_search(
        alice, csrf, "small/*.py", slow=False, run_at=datetime.now(UTC) + timedelta(hours=1)
    )
    url = f"{server.url}/api/tasks/{task_id}"
    page = alice.new_page()
    page.route(re.compile(r"/events(\?.*)?$"), lambda route: route.fulfill(status=204))
    exchanges: list[tuple[Request, Response]] = []
    page.on("response", lambda response: exchanges.append((response.request, response)))
    page.add_init_script(RECORD_DONE)
    page.goto(f"/tasks/{task_id}")
    mark_page(page)
    task = page.locator("#task")
    expect(task).to_have_attribute("data-mode", "poll")
    expect(task.locator(".et-status")).to_have_attribute("data-status", "queued")
    page.wait_for_event("response", lambda r: r.url == url and r.status == 304)

    reads = [(r, a) for r, a in exchanges if r.url == url]
    first, *later = reads
    assert first[0].headers.get("if-none-match") is None and first[1].status == 200
    etag = first[1].headers.get("etag")
    assert etag, first[1].headers
    assert later and all(r.headers.get("if-none-match") == etag for r, _ in later)
    assert any(a.status == 304 for _, a in later)
    assert all(a.headers.get("etag") == etag for _, a in later)  # the same version
    assert server.record(task_id).status is Status.QUEUED

    # A change (cancelled elsewhere) ends the 304s: the next poll brings the final state.
    server.demo.errands.sync.cancel(task_id, owner=ANY_OWNER)
    expect(task.locator(".et-status")).to_have_attribute("data-status", "cancelled")
    wait_reloaded(page)  # the page's own reload after the end
    done = json.loads(page.evaluate("() => sessionStorage.getItem('done')") or "null")
    assert done is not None and done["mode"] == "poll" and done["status"] == "cancelled"
    expect(page.locator("#task .et-status")).to_have_attribute("data-status", "cancelled")
    # The owner reads the error's message; its type (for administrators) is an attribute.
    expect(page.locator("#task .et-error")).to_have_text("The task was cancelled.")
    expect(page.locator("#task .et-error")).to_have_attribute("data-error-type", "TaskCancelled")
    expect(page.locator("#final-line")).to_have_text("Cancelled")
    expect(page.locator("#task .et-cancel")).to_be_hidden()
    ends = [a for r, a in exchanges if r.url == url and a.status == 200 and a is not first[1]]
    assert ends and ends[0].request.headers.get("if-none-match") == etag
    page.close()


# -- 12. <errands-task> on a plain host page ---------------------------------------------------
def documented_example() -> str:
    """The example page of docs/errands-task.md."""
    doc = ELEMENT_DOC.read_text(encoding="utf-8")
    found = re.search(r"^## Example\n.*?^```html\n(.*?)^```", doc, re.M | re.S)
    assert found, "docs/errands-task.md has no example page"
    return found[1]


def host_page(task_id: str, csrf: str) -> str:
    """The documented example, for one task and the session's CSRF token."""
    html = documented_example()
    for pattern, value in (
        (r'(<meta name="csrf-token" content=")[^"]*(")', csrf),
        (r'(<errands-task id="search" task-id=")[^"]*(")', task_id),
    ):
        html, count = re.subn(pattern, lambda m: f"{m[1]}{value}{m[2]}", html)  # noqa: B023
        assert count == 1, f"the example changed: {pattern}"
    return html


def serve_host_pages(page: Page, server: Server, pages: dict[str, str]) -> None:
    """Serve ``pages`` (path → HTML) on the API's origin, as the host site would."""

    def fulfil(route: Route) -> None:
        path = route.request.url[len(server.url) :]
        route.fulfill(status=200, content_type="text/html; charset=utf-8", body=pages[path])

    page.route(lambda url: url.startswith(server.url) and url[len(server.url) :] in pages, fulfil)


def test_element_on_a_plain_host_page(server: Server, alice: BrowserContext) -> None:
    expected = server.hits["mid"]
    csrf = csrf_of(server, alice, ALICE)
    shown = submit_search(alice, csrf, "mid/*.py", slow=True)
    page = alice.new_page()
    pages = {"/host/search.html": host_page(shown, csrf)}
    serve_host_pages(page, server, pages)

    # A task live to its end, signed in by the session cookie alone.
    page.goto("/host/search.html")
    search = page.locator("#search")
    expect(search).to_have_attribute("data-mode", "sse")
    samples = sample_live(page, "#search", "#search .hits li")
    assert samples[-1]["status"] == "succeeded", (samples[-1], server.record(shown))
    running = [s for s in samples if s["status"] == "running" and s["resource"]]
    assert running, "never seen running"
    values = [s["value"] for s in running if s["value"] is not None]
    assert len({v for v in values if 0 < v < 100}) >= 2, f"the bar did not move: {values}"
    assert values == sorted(values), "the bar went backwards"
    assert any(0 < s["hits"] < len(expected) for s in running), "hits came only at the end"
    # The element replaced the server-rendered markup and kept the page's children.
    expect(search.locator(":scope > p, :scope > progress")).to_have_count(0)
    expect(search.locator(".et-view .et-status")).to_have_text("succeeded")
    expect(search.locator(".et-bar")).to_have_js_property("value", 100)
    expect(search.locator(".et-percent")).to_have_text("100%")
    expect(search.locator(".et-cancel")).to_be_hidden()
    expect(search.locator(".et-error")).to_be_hidden()
    summary = search.locator(":scope > pre.summary[data-errands-result]")
    expect(summary).to_be_visible()
    expect(search.locator(".et-result")).to_have_count(0)  # the slot took its place
    record = server.record(shown)
    assert record.status is Status.SUCCEEDED
    assert json.loads(summary.inner_text()) == record.result
    expect(page).to_have_title(f"{len(expected)} hits")  # the example's errands:done
    items = search.locator(":scope > ul.hits[data-errands-keep] > li")
    expect(items).to_have_count(len(expected))
    assert items.all_text_contents() == [f"{p}:{n}{t}" for p, n, t in expected]
    expect(items.first.locator("span.path")).to_have_text(f"{expected[0][0]}:{expected[0][1]}")

    # Cancel on another task. Without the session's token the API refuses it …
    other = submit_search(alice, csrf, "long/*.py", slow=True)
    pages["/host/other.html"] = host_page(other, csrf)
    pages["/host/bad-token.html"] = host_page(other, "not-the-token")
    # The example's markup says "running" and 42% until the first answer: wait for it.
    has_resource = "() => document.getElementById('search').resource !== null"
    page.goto("/host/bad-token.html")
    page.wait_for_function(has_resource)
    status = search.locator(".et-status")
    expect(status).to_have_attribute("data-status", "running")
    cancel = search.locator(".et-cancel")
    cancel.click()
    expect(search.locator(".et-error")).to_have_text(re.compile(r"^Could not cancel: .*HTTP 401"))
    expect(cancel).to_be_enabled()
    assert server.record(other).cancel_requested is False
    # … and with it (from <meta name="csrf-token">) the task stops.
    page.goto("/host/other.html")
    page.wait_for_function(has_resource)
    expect(status).to_have_attribute("data-status", "running")
    expect(search.locator(".et-percent")).to_have_text(re.compile(r"^[1-9]\d*%$"))
    cancel.click()
    expect(status).to_have_attribute("data-status", "cancelled")
    expect(search.locator(".et-error")).to_have_text("The task was cancelled.")
    expect(search.locator(".et-error")).to_have_attribute("data-error-type", "TaskCancelled")
    expect(cancel).to_be_hidden()
    expect(summary).to_be_hidden()
    expect(page).not_to_have_title(re.compile("hits"))
    record = server.record(other)
    assert record.status is Status.CANCELLED
    assert record.progress.current is not None and record.progress.current < GROUPS["long"][0]
    page.close()


# -- 13. "My tasks" stays live ------------------------------------------------------------------
def test_my_tasks_updates_statuses_and_offers_new_tasks(
    server: Server, bob: BrowserContext
) -> None:
    csrf = csrf_of(server, bob, BOB)
    later = datetime.now(UTC) + timedelta(hours=1)
    waiting = submit_search(bob, csrf, "small/*.py", slow=False, run_at=later)
    page = bob.new_page()
    page.goto("/tasks")
    mark_page(page)
    row = page.locator(f'#my-tasks tr[data-task-id="{waiting}"]')
    expect(row.locator(".badge")).to_have_attribute("data-status", "queued")
    notice = page.locator("#new-tasks")
    expect(notice).to_be_hidden()

    # A change elsewhere reaches the listed row through the stream of Bob's changes.
    server.demo.errands.sync.cancel(waiting, owner=ANY_OWNER)
    expect(row.locator(".badge")).to_have_attribute("data-status", "cancelled")
    expect(row.locator(".badge")).to_have_text("cancelled")
    # A task created since the page was loaded is offered, not slipped into the list.
    fresh = submit_search(bob, csrf, "small/*.py", slow=False)
    expect(notice).to_be_visible()
    expect(notice).to_have_text("1 new task: show it")
    assert page.locator(f'#my-tasks tr[data-task-id="{fresh}"]').count() == 0
    assert page.evaluate("() => window.__notReloaded") is True  # live, not reloaded
    notice.locator("a").click()
    wait_reloaded(page)
    expect(page.locator("#my-tasks tr[data-task-id]").first).to_have_attribute(
        "data-task-id", fresh
    )
    expect(page.locator("#new-tasks")).to_be_hidden()
    page.close()
