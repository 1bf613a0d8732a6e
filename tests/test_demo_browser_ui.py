"""Times in Chromium, in the reader's time zone (the context's ``timezone_id``): a task's
time shows as local time with how long ago, renewed as time passes, the UTC time as its
tooltip; the admin dashboard keeps UTC on the page, one line per time, with the local
time as the tooltip. The browser's clock is Playwright's (``page.clock``), so "2 minutes
ago" is known in advance. One demo server (real uvicorn, its in-process worker) for the
module, and few page loads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from errands import TaskRecord
from tests.browser import (
    PASSWORD,
    DemoServer,
    demo_served,
    log_in,
    new_context,
    search,
    use_chromium,
)

pytestmark = pytest.mark.slow

EMAIL = "tokyo@example.com"
ZONE = "Asia/Tokyo"

use_chromium()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    tmp = tmp_path_factory.mktemp("demo-ui")
    (tmp / "corpus").mkdir()
    (tmp / "corpus" / "a.py").write_text("needle = 1\n")
    worker = {"poll_interval": 0.2, "heartbeat_interval": 0.25}
    with demo_served(tmp, worker_options=worker) as served:
        yield served


@pytest.fixture(scope="module")
def tokyo(chromium: Browser, server: DemoServer) -> Iterator[BrowserContext]:
    """A signed-in administrator's browser in Tokyo (UTC+9, no summer time)."""
    server.demo.accounts.make_admin(EMAIL, PASSWORD)
    context = new_context(chromium, server.url, viewport=None, timezone_id=ZONE, locale="en-US")
    log_in(context, EMAIL)
    yield context
    context.close()


def finished_search(server: DemoServer, context: BrowserContext) -> TaskRecord:
    page = context.new_page()
    task_id = search(page, "needle")
    page.close()
    return server.finished(task_id)


def test_times_show_in_the_readers_zone_with_how_long_ago(
    server: DemoServer, tokyo: BrowserContext
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
