"""The demo under its Content-Security-Policy in a real browser: Debian's Chromium driven
by Playwright against the demo served by uvicorn (with its in-process worker) on a SQLite
file. One walk through the pages — register, search and watch it live, my tasks and its
filter, a repeated search, the tokens page and its copy button, the admin dashboard —
records every CSP violation (the ``securitypolicyviolation`` event, reported from each
page by an init script) and every console error, and finds none; the pages still work.
Then ``/api/docs`` in a browser that cannot reach anything but the demo.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Route, expect

from errands import Status
from tests.browser import (
    PASSWORD,
    TASK_URL,
    DemoServer,
    demo_served,
    new_context,
    sign_in,
    use_chromium,
)

pytestmark = pytest.mark.slow

ALICE = "alice@example.com"
ADMIN = "admin@example.com"
WORD = "zebra"
#: Files in the corpus (every tenth holds the word): at 5 ms a file in slow motion, a
#: search lasts about 2 s, long enough to watch it live.
FILES = 400

use_chromium()

#: Reports each CSP violation of every page to the test (``window.reportViolation`` is
#: the context's exposed binding).
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  const seen = {
    page: document.location.href,
    directive: event.effectiveDirective,
    blocked: event.blockedURI,
    sample: event.sample,
  };
  (window.__violations = window.__violations || []).push(seen);
  if (window.reportViolation) window.reportViolation(seen);
});
"""


@dataclass
class Watched:
    """A browser context whose pages' CSP violations and console errors are kept."""

    context: BrowserContext
    violations: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Pages answered with an error status on purpose: their "Failed to load resource"
    #: console line is expected.
    expected_failures: set[str] = field(default_factory=set)

    def page(self) -> Page:
        page = self.context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        return page

    def violation(self, seen: dict[str, Any]) -> None:
        self.violations.append(seen)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        if message.text.startswith("Failed to load resource") and url in self.expected_failures:
            return
        self.errors.append(f"{url}: {message.text}")

    def assert_clean(self, page: Page) -> None:
        """No violation and no console error so far. (Sync Playwright hands the page's
        reports over while the test waits on it: wait a moment first.)"""
        page.wait_for_timeout(300)
        assert self.violations == [], self.violations
        assert self.errors == [], self.errors


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    tmp = tmp_path_factory.mktemp("demo-browser-security")
    (tmp / "corpus" / "pkg").mkdir(parents=True)
    for i in range(FILES):
        text = f"NAME = 'the {WORD} {i}'\n" if i % 10 == 0 else f"VALUE = {i}\n"
        (tmp / "corpus" / "pkg" / f"mod_{i:03d}.py").write_text(text)
    worker = {"poll_interval": 0.2, "progress_interval": 0.1}
    with demo_served(tmp, worker=True, worker_options=worker) as served:
        yield served


def watched(browser: Browser, server: DemoServer, **options: Any) -> Watched:
    context = new_context(browser, server.url, **options)
    seen = Watched(context)
    context.expose_function("reportViolation", seen.violation)
    context.add_init_script(REPORT_VIOLATIONS)
    return seen


def test_the_pages_work_under_the_policy(chromium: Browser, server: DemoServer) -> None:
    alice = watched(
        chromium, server, permissions=["clipboard-read", "clipboard-write"]
    )  # the copy button's
    page = alice.page()

    # The welcome page, then register: the home page names the corpus, not its path.
    page.goto("/")
    expect(page.locator("h1")).to_have_text("errands demo")
    sign_in(page, "/register", ALICE)
    expect(page.locator("#corpus")).to_have_text("Searches the files of corpus.")

    # A search in slow motion: its progress arrives live on the task page (EventSource).
    page.fill("input[name=query]", WORD)
    page.set_checked("input[name=slow]", True)
    page.click("form.search-form button[type=submit]")
    page.wait_for_url(TASK_URL)
    found = TASK_URL.search(page.url)
    assert found
    task_id = found[1]
    expect(page.locator("#task")).to_have_attribute("data-mode", "sse")
    expect(page.locator("#task .et-percent")).to_have_text(re.compile(r"^([1-9]|[1-9]\d)%$"))
    expect(page.locator("#hits li").first).to_be_visible()  # a hit, streamed
    expect(page.locator("#export")).to_be_visible()  # done: the page reloaded itself
    assert server.record(task_id).status is Status.SUCCEEDED
    expect(page.locator("#hits li")).to_have_count(FILES // 10)

    # A WebSocket to the same origin: 'self' in connect-src lets it through.
    ws_status = page.evaluate(
        """(url) => new Promise((resolve) => {
            const ws = new WebSocket(url);
            ws.onmessage = () => { ws.close(); resolve("message"); };
            ws.onerror = () => resolve("error");
            setTimeout(() => resolve("timeout"), 5000);
        })""",
        f"{server.url.replace('http', 'ws', 1)}/api/tasks/{task_id}/ws",
    )
    assert ws_status == "message"

    # Repeat it every day: the schedules page.
    page.click("#repeat button[type=submit]")
    page.wait_for_url("/schedules")
    expect(page.locator("#my-schedules tbody tr")).to_have_count(1)

    # My tasks, and its status filter submitting itself (no inline onchange).
    page.goto("/tasks")
    expect(page.locator("#my-tasks tbody tr")).to_have_count(1)
    page.select_option("select[name=status]", "failed")
    page.wait_for_url(re.compile(r"/tasks\?status=failed$"))
    expect(page.locator("#my-tasks")).to_have_count(0)

    # API tokens: shown once after the redirect, copied by its button.
    page.goto("/tokens")
    page.fill("input[name=name]", "my script")
    page.click("form.inline-form button[type=submit]")
    page.wait_for_url("/tokens")
    token = page.locator("#new-token").inner_text().strip()
    assert token.startswith("ert_")
    page.click("#copy-token")
    expect(page.locator("#copy-status")).to_have_text("Copied.")
    assert page.evaluate("() => navigator.clipboard.readText()") == token
    page.reload()
    expect(page.locator("#new-token")).to_have_count(0)
    expect(page.locator("table.tasks tbody tr")).to_have_count(1)  # the reload made none

    # A page that is not there, and the API's docs.
    missing = f"{server.url}/tasks/00000000-0000-0000-0000-000000000000"
    alice.expected_failures.add(missing)
    page.goto(missing)
    expect(page.locator("h1")).to_have_text("Not found")
    alice.assert_clean(page)
    alice.context.close()

    # The administrator: the dashboard with its charts and live updates, a task's page,
    # every schedule, the metrics.
    server.demo.accounts.make_admin(ADMIN, PASSWORD)
    admin = watched(chromium, server)
    page = admin.page()
    sign_in(page, "/login", ADMIN)
    page.goto("/admin")
    expect(page.locator("#throughput-chart svg rect.bar-succeeded").first).to_be_visible()
    fill = page.locator("#throughput-chart svg rect.bar").first.evaluate(
        "(el) => getComputedStyle(el).fill"
    )
    assert fill == "rgb(47, 158, 68)"  # the stylesheet's colour, no style attribute needed
    expect(page.locator(f'#tasks tr[data-task-id="{task_id}"]')).to_be_visible()
    page.goto(f"/admin/tasks/{task_id}")
    expect(page.locator("#task-status")).to_have_text("succeeded")
    page.goto("/admin/schedules")
    expect(page.locator("#all-schedules tbody tr")).to_have_count(1)
    response = page.goto("/metrics")
    assert response is not None and response.status == 200
    assert "errands_queue_depth" in page.content()
    admin.assert_clean(page)
    admin.context.close()


def test_api_docs_render_offline(chromium: Browser, server: DemoServer) -> None:
    """Swagger UI from the demo itself: everything else is unreachable."""
    seen = watched(chromium, server)
    elsewhere: list[str] = []

    def only_the_demo(route: Route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    seen.context.route("**/*", only_the_demo)
    page = seen.page()
    page.goto("/api/docs")
    operations = page.locator(".opblock-summary-path")
    expect(operations.filter(has_text=re.compile(r"^/api/tasks$")).first).to_be_visible()
    assert operations.count() >= 5
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("errands demo")
    assert elsewhere == []
    seen.assert_clean(page)
    seen.context.close()


def test_favicon_and_the_watch_itself(chromium: Browser, server: DemoServer) -> None:
    """The icon loads as an image; and the watch above does see a violation: an inline
    style and an inline handler, added to a page, are refused and reported."""
    seen = watched(chromium, server)
    page = seen.page()
    page.goto("/login")
    size = page.evaluate(
        """() => new Promise((resolve) => {
            const img = new Image();
            img.onload = () => resolve([img.naturalWidth, img.naturalHeight]);
            img.onerror = () => resolve(null);
            img.src = "/favicon.ico";
        })"""
    )
    assert size in ([16, 16], [32, 32])
    seen.assert_clean(page)

    page.evaluate(
        """() => document.body.insertAdjacentHTML("beforeend",
            '<p style="color: red">x</p><img src="/favicon.ico" onload="window.ran = 1">')"""
    )
    page.wait_for_function("() => (window.__violations || []).length >= 2")
    page.wait_for_timeout(300)
    assert {v["directive"] for v in seen.violations} == {"style-src-attr", "script-src-attr"}
    assert page.evaluate("() => window.ran") is None  # the handler did not run
    seen.context.close()
