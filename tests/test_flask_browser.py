"""The Flask example (examples/flask_app.py) in a real browser: Debian's Chromium driven
by Playwright against ``flask --app examples/flask_app.py run`` and ``errands worker
examples.flask_app:errands_app``, both real processes on one SQLite file, started as
the example's docstring says.

A user signs in, starts a task from the page and watches ``<errands-task>`` follow it
over Server-Sent Events through several progress values to its result; another user
opening that task's page, or its API resource, gets not-found.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from errands.ids import new_task_id
from tests.browser import new_context, use_chromium
from tests.conftest import ROOT, WorkerProcess, eventually

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent  # the virtual environment's, with `flask` and `errands`
PASSWORDS = {"alice": "wonderland", "bob": "builder"}
TASK_URL = re.compile(r"/tasks/([0-9a-f-]{36})$")

use_chromium()


@dataclass
class Site:
    url: str
    log: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The example as its docstring runs it: the Flask development server (on a free
    port) and a worker, on one SQLite file."""
    tmp = tmp_path_factory.mktemp("flask-example")
    db_url = f"sqlite:///{tmp / 'errands.db'}"
    env = os.environ | {"ERRANDS_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}
    log = tmp / "flask.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(BIN / "flask"), "--app", "examples/flask_app.py", "run", "--port", "0"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess("examples.flask_app:errands_app", db_url, "--poll", "0.2")
    try:
        found = eventually(
            lambda: (
                re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text())
                or server.poll() is not None
            ),
            "the Flask server to start",
        )
        assert isinstance(found, re.Match), log.read_text()
        yield Site(found[1], log)
    finally:
        server.terminate()
        server.wait(10)
        worker.close()


def signed_in(browser: Browser, site: Site, user: str) -> BrowserContext:
    """A new browser context, signed in as ``user`` through the login form."""
    context = new_context(browser, site.url, viewport=None)
    page = context.new_page()
    page.goto("/")
    page.wait_for_url("**/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORDS[user])
    page.click("form.login button[type=submit]")
    page.wait_for_url(f"{site.url}/")
    expect(page.locator("header .who")).to_have_text(user)
    page.close()
    return context


def test_a_user_watches_a_task_and_another_user_cannot_see_it(
    chromium: Browser, site: Site
) -> None:
    alice = signed_in(chromium, site, "alice")
    bob = signed_in(chromium, site, "bob")
    try:
        page = alice.new_page()
        page.goto("/")
        # Every version of the task the element shows, in order.
        page.evaluate(
            """() => {
                window.seen = [];
                document.addEventListener("errands:update", (event) => {
                    window.seen.push(event.detail.progress.percent);
                });
            }"""
        )
        page.fill("#start input[name=to]", "12")  # 12 steps of 0.25 s
        page.click("#start button[type=submit]")
        element = page.locator("errands-task")
        expect(element.locator(".et-status")).to_have_attribute("data-status", "succeeded")
        expect(element.locator(".et-result")).to_contain_text('"counted": 12')
        expect(element.locator(".et-percent")).to_have_text("100%")
        assert element.get_attribute("data-mode") == "sse"
        percents = page.evaluate("window.seen")
        running = {p for p in percents if p is not None and 0 < p < 100}
        assert len(running) >= 2, percents  # progress seen live, before the result
        task_id = element.get_attribute("task-id")
        assert task_id is not None

        # The task's own page shows it to its owner.
        page.click("#permalink")
        page.wait_for_url(TASK_URL)
        expect(page.locator("h1")).to_have_text("count")
        expect(page.locator("errands-task .et-status")).to_have_attribute(
            "data-status", "succeeded"
        )

        # Bob gets not-found: the page, and from the API the bytes of a missing task.
        other = bob.new_page()
        answer = other.goto(f"/tasks/{task_id}")
        assert answer is not None and answer.status == 404
        expect(other.locator("h1")).to_have_text("No such task.")
        theirs = other.request.get(f"/api/tasks/{task_id}")
        missing = other.request.get(f"/api/tasks/{new_task_id()}")
        assert theirs.status == missing.status == 404
        assert theirs.headers["content-type"] == "application/problem+json"
        assert theirs.body() == missing.body()
        assert other.request.get(f"/api/tasks/{task_id}/events").body() == missing.body()
        # Alice still reads it.
        assert page.request.get(f"/api/tasks/{task_id}").json()["status"] == "succeeded"
    finally:
        alice.close()
        bob.close()


def test_sign_in_and_the_api_refuse_strangers(chromium: Browser, site: Site) -> None:
    context = new_context(chromium, site.url, viewport=None)
    try:
        page = context.new_page()
        page.goto("/login")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", "not her password")
        page.click("form.login button[type=submit]")
        expect(page.locator("p.error")).to_have_text("Wrong name or password.")
        assert page.url == f"{site.url}/login"
        # Not signed in: the API answers 401.
        refused = page.request.post("/api/tasks", data={"name": "count", "payload": {"to": 1}})
        assert refused.status == 401
        assert refused.json()["detail"] == "Sign in to use this API."
    finally:
        context.close()
    # Signed in, a change without the page's CSRF token is refused too.
    alice = signed_in(chromium, site, "alice")
    try:
        page = alice.new_page()
        page.goto("/")
        forged = page.request.post("/api/tasks", data={"name": "count", "payload": {"to": 1}})
        assert forged.status == 401
        token = page.locator('meta[name="csrf-token"]').get_attribute("content")
        assert token
        made = page.request.post(
            "/api/tasks",
            data={"name": "count", "payload": {"to": 1, "delay": 0}},
            headers={"X-CSRF-Token": token},
        )
        assert made.status == 202, made.text()
        assert made.headers["location"] == f"/api/tasks/{made.json()['id']}"
    finally:
        alice.close()
