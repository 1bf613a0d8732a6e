"""Schedules in a real browser: Debian's Chromium, driven by Playwright with its clock in
Europe/Berlin, against the demo served by the real ``errands demo`` command (the web
application and its worker in one process) on a SQLite file.

Alice registers, searches, repeats the search weekly from its page (the form carries
the browser's time zone and local time), finds it on the Schedules page, follows the
task its tick created (the demo's worker fires it), pauses the schedule and deletes it.
The test reads the database the server writes through an ``Errands`` of its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, expect
from sqlalchemy import update

from errands import ANY_OWNER, Errands, Schedule, Status
from errands.store.schema import schedule_table
from tests.browser import new_context, register, search_done, use_chromium
from tests.conftest import eventually

pytestmark = pytest.mark.slow

use_chromium()

ROOT = Path(__file__).resolve().parent.parent
ALICE = "alice@example.com"
BERLIN = "Europe/Berlin"


@dataclass
class Server:
    url: str
    #: The test's own view of the server's database.
    app: Errands

    def schedules(self) -> list[Schedule]:
        return self.app.sync.schedules.list(owner=ANY_OWNER)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("demo-schedules")
    corpus = tmp / "corpus"
    corpus.mkdir()
    (corpus / "one.py").write_text("import os\nNEEDLE = 1\n")
    (corpus / "two.py").write_text("# a needle in a haystack\n")
    database = f"sqlite:///{tmp / 'demo.db'}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp / "server.log"
    env = os.environ | {"ERRANDS_DATABASE_URL": database, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "errands", "demo", "--port", str(port)]
    command += ["--corpus", str(corpus), "--data", str(tmp / "data")]
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    app = Errands(database)
    try:
        eventually(
            lambda: proc.poll() is not None or httpx.get(f"{url}/login", timeout=2).is_success,
            "the demo to serve",
            timeout=30,
            every=0.1,
            tolerate=(httpx.TransportError,),
        )
        assert proc.poll() is None, log.read_text()
        yield Server(url, app)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        app.close()
        print(log.read_text())  # shown when a test failed
    assert code == 0, "the demo did not stop cleanly"


@pytest.fixture(scope="module")
def alice(chromium: Browser, server: Server) -> Iterator[BrowserContext]:
    context = new_context(chromium, server.url, timezone_id=BERLIN)
    register(context, ALICE)
    yield context
    context.close()


def in_berlin(value: datetime | None) -> str:
    """A time as the demo's pages show it in Berlin."""
    assert value is not None
    return value.astimezone(ZoneInfo(BERLIN)).strftime("%a %Y-%m-%d %H:%M %Z")


def make_due(server: Server, schedule_id: str) -> None:
    """Move the schedule's next tick to a second ago, as if its time had come."""
    with server.app.db.engine.begin() as conn:
        tick = float(int(time.time()) - 1)
        conn.execute(
            update(schedule_table)
            .where(schedule_table.c.id == schedule_id)
            .values(next_run_at=tick)
        )


def test_repeat_weekly_in_the_browsers_zone_then_run_pause_and_delete(
    server: Server, alice: BrowserContext
) -> None:
    page = alice.new_page()
    assert page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == BERLIN
    source = search_done(page, "needle")  # finished, and its page reloaded

    # The form comes filled with the browser's zone and its local time of day.
    form = page.locator("form#repeat")
    expect(form.get_by_role("heading", name="Repeat this search")).to_be_visible()
    expect(form.locator("input[name=timezone]")).to_have_value(BERLIN)
    shown = form.locator("input[name=at]").input_value()
    now = datetime.now(ZoneInfo(BERLIN))
    assert shown in {(now - timedelta(minutes=m)).strftime("%H:%M") for m in range(3)}, shown
    form.locator("select[name=repeat]").select_option("wednesday")
    form.locator("input[name=at]").fill("07:45")
    form.get_by_role("button", name="Repeat this search").click()
    page.wait_for_url("/schedules")

    (stored,) = server.schedules()
    assert (stored.cron, stored.timezone, stored.name) == ("45 7 * * 3", BERLIN, "search")
    assert stored.payload == server.app.sync.get(source, owner=ANY_OWNER).payload
    row = page.locator(f"#my-schedules tr[data-schedule-id='{stored.id}']")
    expect(page.locator("#my-schedules tbody tr")).to_have_count(1)
    expect(row.locator("td").first).to_have_text("search “needle” in *.py")
    expect(row.locator(".when")).to_have_text("weekly on Wednesday at 07:45 (Europe/Berlin)")
    expect(row.locator(".next")).to_have_text(in_berlin(stored.next_run_at))
    assert in_berlin(stored.next_run_at).startswith("Wed ")
    expect(row.locator(".last")).to_have_text("never")
    expect(row.locator(".badge")).to_have_text("active")

    # Its time comes: the server's worker creates the search, which the page links.
    make_due(server, stored.id)
    fired = eventually(
        lambda: server.app.sync.schedules.get(stored.id, owner=ANY_OWNER).last_task_id,
        "the demo's worker to fire the tick",
    )
    task = server.app.sync.wait(fired, owner=ANY_OWNER, timeout=20)
    assert task.status is Status.SUCCEEDED and task.schedule_id == stored.id
    page.reload()
    row.locator(".last a").click()
    page.wait_for_url(f"/tasks/{fired}")
    expect(page.locator("#scheduled-by")).to_have_text(
        "Created by schedule weekly on Wednesday at 07:45 (Europe/Berlin) for the tick at "
        f"{in_berlin(task.scheduled_for)}.",
        use_inner_text=True,
    )
    expect(page.locator("#hits li")).to_have_count(2)
    page.locator("#scheduled-by a").click()
    page.wait_for_url(f"/schedules/{stored.id}")
    expect(page.locator("#schedule .when")).to_have_text(
        "weekly on Wednesday at 07:45 (Europe/Berlin)"
    )

    # Pause it (from the list), then delete it.
    page.click(".topbar a[href='/schedules']")
    page.wait_for_url("/schedules")
    row.get_by_role("button", name="Pause").click()
    expect(row.locator(".badge")).to_have_text("paused")
    expect(row.locator(".next")).to_have_text("—")
    expect(row.get_by_role("button", name="Resume")).to_be_visible()
    paused = server.app.sync.schedules.get(stored.id, owner=ANY_OWNER)
    assert paused.paused and paused.next_run_at is None
    row.get_by_role("button", name="Delete").click()
    expect(page.locator("#no-schedules")).to_be_visible()
    assert server.schedules() == []
    # The task it created stays, and says its schedule is gone.
    page.goto(f"/tasks/{fired}")
    expect(page.locator("#scheduled-by")).to_contain_text("(since deleted)")
    page.close()
