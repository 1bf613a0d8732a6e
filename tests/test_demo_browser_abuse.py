"""The demo's abuse limits as a person sees them, in Debian's Chromium driven by
Playwright against the demo served by a real uvicorn server (its in-process worker:
4 slots, at most 2 of one user's searches at once) on a SQLite file.

- The login form, after 5 wrong passwords, refuses the right one with "Too many
  attempts; try again in N s."
- A search held back by the user's own running searches says so on its page, and the
  note comes and goes live: it appears when the task falls due while two others run,
  and goes once it starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from errands import ANY_OWNER, Status
from tests.browser import PASSWORD, DemoServer, demo_served, new_context, sign_in, use_chromium
from tests.conftest import eventually

pytestmark = pytest.mark.slow

ALICE = "alice@example.com"
CAROL = "carol@example.com"
#: Files of the corpus; with the form's slow motion (5 ms a file) a search of them
#: runs for about 10 s, longer than the test needs them.
FILES = 2000

use_chromium()


@dataclass
class Server(DemoServer):
    def slow_search(self, email: str, run_at: timedelta | None = None) -> str:
        payload = {"query": "zebra", "glob": "*.py", "pause": 0.005}
        record = self.demo.errands.sync.submit(
            "search", payload, owner=self.owner(email), run_at=run_at
        )
        return record.id

    def status(self, task_id: str) -> Status:
        return self.record(task_id).status


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("demo-abuse")
    corpus = tmp / "corpus"
    corpus.mkdir()
    for i in range(FILES):
        (corpus / f"mod_{i:04d}.py").write_text(f"VALUE = {i}  # zebra\n")
    worker = {"poll_interval": 0.2, "heartbeat_interval": 0.25}
    with demo_served(tmp, worker_options=worker) as served:
        assert served.demo.settings.max_running_per_user == 2  # the default
        for email in (ALICE, CAROL):
            served.demo.accounts.register(email, PASSWORD)
        yield Server(served.url, served.demo)


@pytest.fixture
def context(chromium: Browser, server: Server) -> Iterator[BrowserContext]:
    context = new_context(chromium, server.url)
    yield context
    context.close()


def test_login_after_too_many_wrong_passwords_says_when_to_try_again(
    context: BrowserContext,
) -> None:
    page = context.new_page()
    page.goto("/login")
    error = page.locator("p.error[role=alert]")
    for password in ["not it"] * 5 + [PASSWORD]:  # the last one is right
        page.fill("input[name=email]", CAROL)
        page.fill("input[name=password]", password)
        with page.expect_navigation():
            page.click("form.form button[type=submit]")
    expect(error).to_have_text("Too many attempts; try again in 30 s.")
    expect(page.locator("main h1")).to_have_text("Log in")
    expect(page.locator(".topbar .who")).to_have_count(0)  # not signed in
    expect(page.locator("input[name=email]")).to_have_value(CAROL)


def test_a_search_held_back_by_the_users_running_searches_says_so_until_it_starts(
    server: Server, context: BrowserContext
) -> None:
    page = context.new_page()
    sign_in(page, "/login", ALICE)

    first, second = server.slow_search(ALICE), server.slow_search(ALICE)
    eventually(
        lambda: server.status(first) is Status.RUNNING and server.status(second) is Status.RUNNING,
        "two searches running",
    )
    # A third, due in a few seconds: queued for its time at first, then for Alice's
    # two running searches (the worker has slots to spare).
    third = server.slow_search(ALICE, run_at=timedelta(seconds=3))
    page.goto(f"/tasks/{third}")
    note = page.locator("#waiting")
    status = page.locator("#task .et-status")
    expect(status).to_have_attribute("data-status", "queued")
    expect(note).to_be_hidden()  # not due yet: not held back by anything
    expect(note).to_have_text("Waiting: you already have 2 searches running.")
    expect(note).to_be_visible()
    assert server.status(third) is Status.QUEUED

    server.demo.errands.sync.cancel(first, owner=ANY_OWNER)  # a share comes free
    expect(status).to_have_attribute("data-status", "running")
    expect(note).to_be_hidden()
    for task_id in (second, third):
        server.demo.errands.sync.cancel(task_id, owner=ANY_OWNER)
    eventually(
        lambda: all(server.status(t).value == "cancelled" for t in (first, second, third)),
        "the searches to stop",
    )
