"""The demo application in a real browser: Debian's Chromium driven by Playwright against
the demo served by a real uvicorn server (with its in-process worker) on a SQLite file.

One server, one browser and one signed-in context per user serve the whole module. The
corpus is generated, so every search's hits are known exactly; the form's "slow motion"
(5 ms per file) makes a search over ``big/`` last a few seconds, long enough to watch.
"""

from __future__ import annotations

import csv
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from argon2 import PasswordHasher
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright

from errands import ANY_OWNER, Status
from errands.demo import accounts
from errands.demo.web import Demo, DemoSettings, create_app

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "docs" / "screenshots"
PASSWORD = "correct horse battery staple"
ALICE = "alice@example.com"
BOB = "bob@example.com"
ADMIN = "admin@example.com"
WORD = "zebra"
#: Files per group of the corpus, and every how many files one holds the word.
GROUPS = {"big": (900, 9), "long": (1500, 15), "mid": (300, 10), "small": (36, 3)}
TASK_URL = re.compile(r"/tasks/([0-9a-f-]{36})$")
TIMEOUT_MS = 20_000
FINISHED = ("succeeded", "failed", "cancelled")

if not CHROMIUM.exists():  # `make test` installs it
    pytest.skip("Debian's Chromium (/usr/bin/chromium) is not installed", allow_module_level=True)

expect.set_options(timeout=TIMEOUT_MS)

Hit = tuple[str, int, str]


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
class Server:
    url: str
    demo: Demo
    hits: dict[str, list[Hit]]
    shared: dict[str, Any] = field(default_factory=dict)

    def record(self, task_id: str) -> Any:
        return self.demo.errands.sync.get(task_id, owner=ANY_OWNER)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("demo-browser")
    hits = build_corpus(tmp / "corpus")
    with pytest.MonkeyPatch.context() as mp:
        # Cheap password hashes: the module signs in a few times.
        mp.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
        app = create_app(
            DemoSettings(
                database_url=f"sqlite:///{tmp}/demo.db",
                data_dir=tmp / "data",
                corpus=tmp / "corpus",
                worker=True,
                worker_options={
                    "poll_interval": 0.2,
                    "heartbeat_interval": 0.25,
                    "lease_seconds": 2,
                    "progress_interval": 0.1,
                },
            )
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            ws="websockets-sansio",
            timeout_graceful_shutdown=3,
        )
        uv = uvicorn.Server(config)
        thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 15
            while not uv.started:
                assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.02)
            yield Server(f"http://127.0.0.1:{port}", app.state.demo, hits)
        finally:
            uv.should_exit = True
            thread.join(15)
            sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    # Not named ``browser``: pytest-playwright's fixtures would take over.
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


def new_context(browser: Browser, server: Server, **options: Any) -> BrowserContext:
    context = browser.new_context(
        base_url=server.url, viewport={"width": 1280, "height": 900}, **options
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


def register(context: BrowserContext, email: str) -> None:
    """Create an account through the form; the context is then signed in."""
    page = context.new_page()
    page.goto("/register")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.form button[type=submit]")
    page.wait_for_url("/")
    expect(page.locator(".topbar .who")).to_have_text(email)
    expect(page.locator("form.search-form")).to_be_visible()
    page.close()


def log_in(context: BrowserContext, email: str) -> None:
    page = context.new_page()
    page.goto("/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.form button[type=submit]")
    page.wait_for_url("/")
    expect(page.locator(".topbar .who")).to_have_text(email)
    page.close()


@pytest.fixture(scope="module")
def alice(chromium: Browser, server: Server) -> Iterator[BrowserContext]:
    context = new_context(chromium, server)
    register(context, ALICE)
    yield context
    context.close()


@pytest.fixture(scope="module")
def bob(chromium: Browser, server: Server) -> Iterator[BrowserContext]:
    context = new_context(chromium, server)
    register(context, BOB)
    yield context
    context.close()


@pytest.fixture(scope="module")
def admin(chromium: Browser, server: Server) -> Iterator[BrowserContext]:
    server.demo.accounts.make_admin(ADMIN, PASSWORD)
    context = new_context(chromium, server)
    log_in(context, ADMIN)
    yield context
    context.close()


def search(page: Page, glob: str, *, slow: bool, query: str = WORD) -> str:
    """Submit the search form; the new task's id (the page is on the task page)."""
    page.goto("/")
    page.fill("input[name=query]", query)
    page.fill("input[name=glob]", glob)
    page.set_checked("input[name=slow]", slow)
    page.click("form.search-form button[type=submit]")
    page.wait_for_url(TASK_URL)
    found = TASK_URL.search(page.url)
    assert found, page.url
    return found[1]


def hit_lines(hits: list[Hit]) -> list[str]:
    """The hits as the task page lists them."""
    return [f"{path}:{line} {text}" for path, line, text in hits]


def mark_page(page: Page) -> None:
    """Mark the loaded document, to tell when it is reloaded."""
    page.evaluate("() => { window.__notReloaded = true; }")


def wait_reloaded(page: Page) -> None:
    page.wait_for_function("() => !window.__notReloaded && document.readyState === 'complete'")


def finished_search(server: Server, context: BrowserContext, key: str) -> str:
    """A finished search of ``small/`` by the context's user (one per key, made once)."""
    if key not in server.shared:
        page = context.new_page()
        task_id = search(page, "small/*.py", slow=False)
        expect(page.locator("#export")).to_be_visible()  # done, and the page reloaded
        page.close()
        assert server.record(task_id).status is Status.SUCCEEDED
        server.shared[key] = task_id
    task_id: str = server.shared[key]
    return task_id


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
    result = json.loads(page.locator("#task .et-result").inner_text())
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
    assert download.suggested_filename == f"search-{alice_search[:8]}.csv"
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
    task_id = search(page, "long/*.py", slow=True)
    mark_page(page)
    samples: list[dict[str, Any]] = page.evaluate(SAMPLE_UNTIL_DONE)
    assert blocked and all(f"/api/tasks/{task_id}/events" in url for url in blocked)

    polled = [s for s in samples if s["mode"] == "poll"]
    assert polled, "the element never polled"
    assert samples[-1]["mode"] == "poll" and samples[-1]["status"] == "succeeded"
    # It switched while the task ran, and hits kept coming by polling.
    running = [s["hits"] for s in polled if s["status"] == "running"]
    assert running, "the task finished before the element polled"
    assert running[-1] > running[0] or samples[-1]["hits"] > running[0]
    done = json.loads(page.evaluate("() => sessionStorage.getItem('done')") or "null")
    assert done is not None, "errands:done was not seen"
    assert done["mode"] == "poll" and done["status"] == "succeeded"
    assert done["result"]["hits"] == len(expected)
    assert done["hits"] == hit_lines(expected)  # every output, in order, once

    # The page reloads itself and shows the finished task.
    wait_reloaded(page)
    expect(page.locator("#task .et-status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#export")).to_be_visible()
    expect(page.locator("#hits li")).to_have_count(len(expected))
    page.close()


# -- 7. without JavaScript -------------------------------------------------------------------
def test_task_page_without_javascript_refreshes_itself(server: Server, chromium: Browser) -> None:
    expected = server.hits["mid"]
    context = new_context(chromium, server, java_script_enabled=False)
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
def test_screenshots(alice: BrowserContext, alice_search: str, admin: BrowserContext) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = alice.new_page()
    page.goto(f"/tasks/{alice_search}")
    expect(page.locator("#task .et-status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#hits li").first).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "task-page.png"), full_page=True)
    page.close()
    page = admin.new_page()
    page.goto("/admin")
    expect(page.locator("#tasks tr[data-task-id]").first).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "admin.png"), full_page=True)
    page.close()
    for name in ("task-page.png", "admin.png"):
        data = (SCREENSHOTS / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, name
