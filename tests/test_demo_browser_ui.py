"""Times in Chromium, in the reader's time zone (the context's ``timezone_id``): a task's
time shows as local time with how long ago, renewed as time passes, the UTC time as its
tooltip; the admin dashboard keeps UTC on the page, one line per time, with the local
time as the tooltip. The browser's clock is Playwright's (``page.clock``), so "2 minutes
ago" is known in advance. One demo server (real uvicorn, its in-process worker) for the
module, and few page loads."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import uvicorn
from argon2 import PasswordHasher
from playwright.sync_api import Browser, BrowserContext, expect

from errands import ANY_OWNER, TaskRecord
from errands.demo import accounts
from errands.demo.web import Demo, DemoSettings, create_app
from tests.conftest import eventually, require_chromium

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
EMAIL = "tokyo@example.com"
ZONE = "Asia/Tokyo"
TIMEOUT_MS = 20_000

require_chromium()
expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class Server:
    url: str
    demo: Demo


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("demo-ui")
    (tmp / "corpus").mkdir()
    (tmp / "corpus" / "a.py").write_text("needle = 1\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
        app = create_app(
            DemoSettings(
                database_url=f"sqlite:///{tmp}/demo.db",
                data_dir=tmp / "data",
                corpus=tmp / "corpus",
                worker_options={"poll_interval": 0.2, "heartbeat_interval": 0.25},
            )
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3)
        uv = uvicorn.Server(config)
        thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            eventually(lambda: uv.started or not thread.is_alive(), "uvicorn to start")
            assert uv.started
            yield Server(f"http://127.0.0.1:{sock.getsockname()[1]}", app.state.demo)
        finally:
            uv.should_exit = True
            thread.join(15)
            sock.close()


@pytest.fixture(scope="module")
def tokyo(chromium: Browser, server: Server) -> Iterator[BrowserContext]:
    """A signed-in administrator's browser in Tokyo (UTC+9, no summer time)."""
    server.demo.accounts.make_admin(EMAIL, PASSWORD)
    context = chromium.new_context(base_url=server.url, timezone_id=ZONE, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto("/login")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.form button[type=submit]")
    page.wait_for_url("/")
    page.close()
    yield context
    context.close()


def finished_search(server: Server, context: BrowserContext) -> TaskRecord:
    page = context.new_page()
    page.goto("/")
    page.fill("input[name=query]", "needle")
    page.click("form.search-form button[type=submit]")
    page.wait_for_url(re.compile(r"/tasks/[0-9a-f-]{36}$"))
    task_id = page.url.rsplit("/", 1)[1]
    page.close()

    def done() -> TaskRecord | None:
        record = server.demo.errands.sync.get(task_id, owner=ANY_OWNER)
        return record if record.done else None

    return eventually(done, "the search to finish")


def test_times_show_in_the_readers_zone_with_how_long_ago(
    server: Server, tokyo: BrowserContext
) -> None:
    record = finished_search(server, tokyo)
    created = record.created_at
    local = created.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M:%S")
    utc = created.strftime("%Y-%m-%d %H:%M:%S UTC")

    page = tokyo.new_page()
    page.clock.install(time=created + timedelta(minutes=2, seconds=10))
    page.goto("/tasks")
    stamp = page.locator(f'#my-tasks tr[data-task-id="{record.id}"] time[data-local]')
    expect(stamp).to_have_text(f"{local} GMT+9 · 2 minutes ago")
    expect(stamp).to_have_attribute("title", utc)
    expect(stamp).to_have_attribute("datetime", created.isoformat())
    # The phrase follows the clock (renewed every 30 s).
    page.clock.run_for(60_000)
    expect(stamp).to_have_text(f"{local} GMT+9 · 3 minutes ago")

    # A filter applies as soon as it is chosen (tasks-page.js submits the form).
    page.locator("select[name=kind]").select_option("export")
    page.wait_for_url(re.compile(r"/tasks\?kind=export$"))
    expect(page.locator("#task-count")).to_have_text("0 of your 1 task match.")

    # The task's own page says the same.
    page.goto(f"/tasks/{record.id}")
    expect(page.locator("main p.muted time[data-local]")).to_have_text(
        f"{local} GMT+9 · 3 minutes ago"
    )

    # The admin dashboard keeps UTC on the page, on one line; local time in the tooltip.
    page.goto("/admin")
    cell = page.locator(f'#tasks tr[data-task-id="{record.id}"] time').first
    expect(cell).to_have_text(utc)
    expect(cell).to_have_attribute("title", re.compile(r"GMT\+9 · 3 minutes ago$"))
    assert cell.evaluate("el => el.getClientRects().length") == 1  # not wrapped
    page.set_viewport_size({"width": 700, "height": 900})  # narrow: still one line
    assert cell.evaluate("el => el.getClientRects().length") == 1
    page.close()
