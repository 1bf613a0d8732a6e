"""The example Django project in a real browser: Debian's Chromium driven by Playwright
against the example served by uvicorn (``SiteServer``) with a worker of its own
(``SiteWorker``, ``manage.py errands_worker``), on an SQLite file.

Alice signs in, starts a count in slow motion (a few seconds) and watches it on its
task page: the ``<errands-task>`` element's bar moves, each file's most common word is
listed as the task emits it (over Server-Sent Events), and the result shows at the end;
she cancels another count from its page. Bob, signed in in another browser context,
finds nothing at Alice's task's addresses: the page and the API are 404 to him.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from errands import ANY_OWNER, Errands, Status
from tests.browser import new_context, task_id_at, use_chromium
from tests.django_site import SiteServer, SiteWorker, manage

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
TASK_PAGE = re.compile(r"/count/([0-9a-f-]{36})$")

use_chromium()


@dataclass
class Site:
    url: str
    db: str
    server: SiteServer
    worker: SiteWorker

    def record(self, task_id: str) -> Any:
        app = Errands(f"sqlite:///{self.db}")
        try:
            return app.sync.get(task_id, owner=ANY_OWNER)
        finally:
            app.close()

    def logs(self) -> str:
        return f"server:\n{self.server.output()}\nworker:\n{self.worker.output()}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    db = str(tmp_path_factory.mktemp("django-browser") / "site.sqlite3")
    manage(db, "migrate", "--no-input")
    manage(db, "demo_users", "--password", PASSWORD)
    # Not in debug mode: a missing page is the site's own 404 page.
    server = SiteServer(db, SITE_DEBUG="0")
    worker = SiteWorker(db)
    try:
        yield Site(server.url, db, server, worker)
    finally:
        worker.close()
        server.close()


def signed_in(browser: Browser, site: Site, name: str) -> BrowserContext:
    """A new browser context, signed in as ``name`` through the login form."""
    context = new_context(browser, site.url, viewport=None)
    page = context.new_page()
    page.goto("/")
    page.wait_for_url("**/accounts/login/?next=/")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login-form button[type=submit]")
    page.wait_for_url(site.url + "/")
    expect(page.locator(".topbar .who")).to_have_text(name)
    page.close()
    return context


@pytest.fixture(scope="module")
def alice(chromium: Browser, site: Site) -> Iterator[BrowserContext]:
    context = signed_in(chromium, site, "alice")
    yield context
    context.close()


@pytest.fixture(scope="module")
def bob(chromium: Browser, site: Site) -> Iterator[BrowserContext]:
    context = signed_in(chromium, site, "bob")
    yield context
    context.close()


def start_count(page: Page) -> str:
    """Start a count in slow motion from the start page; the task's id (the page is
    then on the task's page)."""
    page.goto("/")
    page.set_checked("input[name=slow]", True)
    page.click("form.start-form button[type=submit]")
    return task_id_at(page, TASK_PAGE)


#: Samples the task page every 25 ms until the task is finished, the element gives up
#: (its error shows), or 60 s have passed.
SAMPLE_UNTIL_DONE = """() => new Promise((resolve) => {
  const task = document.getElementById("task");
  const samples = [];
  const deadline = Date.now() + 60000;
  const sample = () => {
    const status = task.querySelector(".et-status");
    const bar = task.querySelector(".et-bar");
    const error = task.querySelector(".et-error");
    const s = {
      status: status ? status.getAttribute("data-status") : null,
      value: bar && bar.hasAttribute("value") ? bar.value : null,
      words: document.querySelectorAll("#words li").length,
      mode: task.getAttribute("data-mode"),
      error: error && !error.hidden ? error.textContent : "",
    };
    samples.push(s);
    const over = ["succeeded", "failed", "cancelled"].includes(s.status);
    if (over || s.error || Date.now() > deadline) resolve(samples);
    else setTimeout(sample, 25);
  };
  sample();
})"""


@pytest.fixture(scope="module")
def alices_task(site: Site, alice: BrowserContext) -> Iterator[tuple[str, list[Any], Page]]:
    page = alice.new_page()
    task_id = start_count(page)
    samples: list[dict[str, Any]] = page.evaluate(SAMPLE_UNTIL_DONE)
    yield task_id, samples, page
    page.close()


def test_the_task_page_shows_progress_items_and_the_result(
    site: Site, alices_task: tuple[str, list[Any], Page]
) -> None:
    task_id, samples, page = alices_task
    assert samples[-1]["status"] == "succeeded", (samples[-1], site.logs())
    running = [s for s in samples if s["status"] == "running"]
    assert running, "never seen running"
    # Followed over Server-Sent Events (the site runs under ASGI), not by polling.
    assert {s["mode"] for s in running} == {"sse"}, site.logs()
    values = [s["value"] for s in running if s["value"] is not None]
    moving = sorted({v for v in values if 0 < v < 100})
    assert len(moving) >= 2, f"the bar did not move: {sorted(set(values))}"
    assert values == sorted(values), "the bar went backwards"

    record = site.record(task_id)
    assert record.status is Status.SUCCEEDED
    assert record.name == "wordcount.tasks.count_words"
    files = record.result["files"]
    # The words arrive one by one while the task runs, not all at the end.
    listed = [s["words"] for s in running if s["words"] > 0]
    assert listed, "no word was listed before the end"
    assert min(listed) < files, "the words did not arrive one by one"
    result = json.loads(page.locator("#task .et-result").inner_text())
    assert result == record.result
    expect(page.locator("#task .et-status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#task .et-cancel")).to_be_hidden()
    assert float(page.locator("#task .et-bar").get_attribute("value") or 0) == 100
    words = page.locator("#words li")
    expect(words).to_have_count(files)  # every module of the standard library has words
    expect(page.locator("#word-count")).to_have_text(str(files))
    expect(page.locator("#top-words li")).to_have_text(
        [f"{word} ×{times}" for word, times in record.result["top"]]
    )


def test_my_tasks_lists_the_finished_task(
    alice: BrowserContext, alices_task: tuple[str, list[Any], Page]
) -> None:
    task_id = alices_task[0]
    page = alice.new_page()
    page.goto("/mine")
    row = page.locator(f'tr[data-task-id="{task_id}"]')
    expect(row.locator(".status")).to_have_text("succeeded")
    row.locator("a").click()
    page.wait_for_url(f"**/count/{task_id}")
    expect(page.locator("#task .et-status")).to_have_attribute("data-status", "succeeded")
    page.close()


def test_another_user_finds_nothing(
    site: Site, bob: BrowserContext, alices_task: tuple[str, list[Any], Page]
) -> None:
    task_id = alices_task[0]
    page = bob.new_page()
    response = page.goto(f"/count/{task_id}")
    assert response is not None
    assert response.status == 404
    expect(page.locator("#not-found")).to_have_text("Not found")
    expect(page.locator("errands-task")).to_have_count(0)
    # Nor does errands' HTTP API tell him anything of it.
    for path in (f"/tasks/{task_id}", f"/tasks/{task_id}/output"):
        assert bob.request.get(site.url + path).status == 404, path
    page.goto("/mine")
    expect(page.locator(f'tr[data-task-id="{task_id}"]')).to_have_count(0)
    page.close()


def test_cancel_from_the_task_page(site: Site, alice: BrowserContext) -> None:
    """The element's Cancel request carries the page's CSRF token (its ``csrf``
    attribute, from the tag) and the session: the running count stops."""
    page = alice.new_page()
    task_id = start_count(page)
    status = page.locator("#task .et-status")
    expect(status).to_have_attribute("data-status", "running")
    expect(page.locator("#task .et-percent")).to_have_text(re.compile(r"^\d+%$"))
    page.click("#task .et-cancel")
    expect(status).to_have_attribute("data-status", "cancelled")
    error = page.locator("#task .et-error")
    expect(error).to_have_text("The task was cancelled.")  # the message, for the owner
    expect(error).to_have_attribute("data-error-type", "TaskCancelled")
    record = site.record(task_id)
    assert record.status is Status.CANCELLED
    assert record.progress.percent is not None
    assert record.progress.percent < 100  # stopped before the end
    page.close()
