"""The scaffolding of the browser tests (``test_demo_browser*.py``, and the Flask and
Django examples' ``test_*_browser.py``): Chromium set up for Playwright, browser contexts,
registering and logging in through the demo's forms, searching through its home page,
and the demo itself served for a module with cheap password hashes.

Why a module of its own rather than more of ``tests/apps/demo_server.py``: that module
serves an app with uvicorn and nothing else, and ``test_demo_abuse`` (HTTP clients, no
browser) uses it as it is; what is here is Playwright's side, which the Flask, Django
and schedules modules use without serving the demo in-process. The demo is served here
through its ``served``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, expect

from errands import ANY_OWNER, TaskRecord
from errands.demo import accounts, store
from errands.demo.web import Demo, DemoSettings, create_app
from tests.apps.demo_server import served
from tests.conftest import eventually, require_chromium

#: How long Playwright waits for a page, an element or an ``expect``.
TIMEOUT_MS = 20_000
#: Every test account's password.
PASSWORD = "correct horse battery staple"
#: The browser window of the demo's tests.
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
#: A task's page, with its id.
TASK_URL = re.compile(r"/tasks/([0-9a-f-]{36})$")
#: A worker that polls, beats and reports progress often and takes a stalled task back
#: soon: what the modules that watch tasks live give the demo.
LIVELY_WORKER: dict[str, Any] = {
    "poll_interval": 0.2,
    "heartbeat_interval": 0.25,
    "lease_seconds": 4,
    "progress_interval": 0.1,
}

#: A search hit: the file, the line's number, the line.
Hit = tuple[str, int, str]


def use_chromium() -> None:
    """For a module of browser tests, at its import: skip it without Debian's Chromium,
    and let Playwright's ``expect`` wait up to ``TIMEOUT_MS``."""
    require_chromium()
    expect.set_options(timeout=TIMEOUT_MS)


# -- the demo, served ---------------------------------------------------------------------
@contextmanager
def cheap_hashes() -> Iterator[None]:
    """Cheap password hashes while it lasts (the modules sign in a few times). The demo's
    accounts hash on a lane's threads, which read ``accounts._hasher`` at each call."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
        yield


@dataclass
class DemoServer:
    """The demo served for a module: its base URL and the demo behind it."""

    url: str
    demo: Demo

    def record(self, task_id: str) -> TaskRecord:
        return self.demo.errands.sync.get(task_id, owner=ANY_OWNER)

    def owner(self, email: str) -> str:
        """The owner of the account's tasks."""
        user = self.demo.errands.db.read(store.user_by_email, email)
        assert user is not None
        return user.owner

    def finished(self, task_id: str) -> TaskRecord:
        """The task's record once it is done."""

        def done() -> TaskRecord | None:
            record = self.record(task_id)
            return record if record.done else None

        return eventually(done, "the search to finish")


@contextmanager
def demo_served(folder: Path, **settings: Any) -> Iterator[DemoServer]:
    """The demo on the SQLite file ``folder/demo.db`` (its files in ``folder/data``)
    searching ``folder/corpus`` (the module writes it), with ``settings`` (the module's
    other ``DemoSettings``), behind a real uvicorn server with its in-process worker, and
    with cheap password hashes while it runs."""
    with cheap_hashes():
        app = create_app(
            DemoSettings(
                database_url=f"sqlite:///{folder}/demo.db",
                data_dir=folder / "data",
                corpus=folder / "corpus",
                **settings,
            )
        )
        with served(app) as url:
            yield DemoServer(url, app.state.demo)


# -- browsers and accounts ----------------------------------------------------------------
def new_context(
    browser: Browser, base_url: str, *, viewport: ViewportSize | None = DESKTOP, **options: Any
) -> BrowserContext:
    """A browser context on ``base_url`` with the tests' timeout (``viewport=None``:
    Playwright's default window)."""
    context = browser.new_context(base_url=base_url, viewport=viewport, **options)
    context.set_default_timeout(TIMEOUT_MS)
    return context


def sign_in(page: Page, path: str, email: str) -> None:
    """Register (``path="/register"``) or log in (``"/login"``) through the demo's form;
    the page is then on the home page, signed in."""
    page.goto(path)
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.form button[type=submit]")
    page.wait_for_url("/")
    expect(page.locator(".topbar .who")).to_have_text(email)


def register(context: BrowserContext, email: str) -> None:
    """Create an account through the form; the context is then signed in."""
    page = context.new_page()
    sign_in(page, "/register", email)
    expect(page.locator("form.search-form")).to_be_visible()
    page.close()


def log_in(context: BrowserContext, email: str) -> None:
    """Log in through the form; the context is then signed in."""
    page = context.new_page()
    sign_in(page, "/login", email)
    page.close()


# -- searching ----------------------------------------------------------------------------
def search(
    page: Page,
    query: str,
    *,
    glob: str | None = None,
    folders: str | None = None,
    regex: bool | None = None,
    slow: bool | None = None,
) -> str:
    """Search through the home page's form (a field left None keeps the form's default);
    the new task's id (the page is on the task's page)."""
    page.goto("/")
    page.fill("input[name=query]", query)
    for field, text in (("input[name=glob]", glob), ("textarea[name=folders]", folders)):
        if text is not None:
            page.fill(field, text)
    for box, checked in (("input[name=regex]", regex), ("input[name=slow]", slow)):
        if checked is not None:
            page.set_checked(box, checked)
    page.click("form.search-form button[type=submit]")
    return task_id_at(page)


def task_id_at(page: Page, pattern: re.Pattern[str] = TASK_URL) -> str:
    """Wait until the page is at a task's address (``pattern``, the id its first group);
    the task's id."""
    page.wait_for_url(pattern)
    found = pattern.search(page.url)
    assert found, page.url
    return found[1]


def search_done(page: Page, query: str, **fields: Any) -> str:
    """:func:`search`, then wait until its page shows it succeeded (the export button
    shows on the page it reloads to); the task's id."""
    task_id = search(page, query, **fields)
    expect(page.locator("#export")).to_be_visible()
    return task_id


def hit_lines(hits: list[Hit]) -> list[str]:
    """The hits as the task page lists them."""
    return [f"{path}:{line} {text}" for path, line, text in hits]


def mark_page(page: Page) -> None:
    """Mark the loaded document, to tell when it is reloaded."""
    page.evaluate("() => { window.__notReloaded = true; }")


def wait_reloaded(page: Page) -> None:
    """Wait until the marked document (:func:`mark_page`) has been replaced."""
    page.wait_for_function("() => !window.__notReloaded && document.readyState === 'complete'")
