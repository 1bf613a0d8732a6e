"""A finished task's outcome in a real browser: Debian's Chromium driven by Playwright
against the demo served by a real uvicorn server (with its in-process worker) on a
SQLite file (issue 18).

Alice searches a folder whose last file holds more hits than a search keeps (in slow
motion, so she watches it run). When it ends, the page shows at once, before its own
reload, 100 %, "5,000+" in the hit count and the summary, and the final line in place of
the last file's name; the reloaded page says the same, with the skipped files named and
the JSON under "as JSON". Her export of it is named after the search, with a download
link and its size. A pattern that uses up the search's matching budget ends "Failed",
with the message and without the exception's class.

What the page showed live is read when it unloads for its own reload (kept in
``sessionStorage``), so one page load per task shows both the live and the reloaded page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from errands import Status
from errands.demo import tasks
from tests.browser import (
    LIVELY_WORKER,
    TASK_URL,
    DemoServer,
    demo_served,
    new_context,
    register,
    use_chromium,
)
from tests.browser import search as form_search

pytestmark = pytest.mark.slow

use_chromium()

ALICE = "alice@example.com"
WORD = "zebra"
#: Files without the word before the one with too many: at 5 ms a file (slow motion)
#: the search runs for a few seconds before it reaches the limit.
QUIET_FILES = 400
MAX_BYTES = 64 * 1024
BUDGET = 1.0
#: ``(.*a){12}`` fails on it after some 20 ms: only the search's budget stops it.
SLOW_LINE = ("a" + "b" * 80) * 11

#: Keeps what the task page showed when it unloads for its own reload (a page that
#: loaded with its task finished does not reload; it keeps nothing).
KEEP_LIVE_VIEW = """
addEventListener("errands:update", (event) => {
  if (event.detail && event.detail.status === "running") window.__sawRunning = true;
});
addEventListener("beforeunload", () => {
  const task = document.getElementById("task");
  if (!task || task.dataset.initiallyDone) return;
  const one = (selector) => document.querySelector(selector);
  const text = (selector) => (one(selector) ? one(selector).textContent.trim() : null);
  const message = one("#task .et-message");
  const limit = one("#hit-limit");
  sessionStorage.setItem(`live-${task.getAttribute("task-id")}`, JSON.stringify({
    sawRunning: Boolean(window.__sawRunning),
    status: text("#task .et-status"),
    percent: text("#task .et-percent"),
    bar: one("#task progress.et-bar") ? one("#task progress.et-bar").value : null,
    count: text("#hit-count"),
    limitShown: Boolean(limit && !limit.hidden),
    finalLine: text("#final-line"),
    messageShown: Boolean(message && !message.hidden && message.textContent),
    error: text("#task .et-error"),
    facts: Array.from(document.querySelectorAll("#summary .facts dd"), (dd) => dd.textContent),
  }));
});
"""


def build_corpus(root: Path) -> None:
    many = root / "many"
    many.mkdir(parents=True)
    (many / "0_binary.log").write_bytes(f"{WORD}\0\n".encode())
    (many / "0_huge.log").write_bytes(f"{WORD}\n".encode() + b"y" * MAX_BYTES)
    for i in range(QUIET_FILES):
        (many / f"a_{i:03d}.log").write_text(f"quiet file {i}\n")
    (many / "z_hits.log").write_text(f"{WORD}\n" * (tasks.MAX_HITS + 100))
    (root / "slow").mkdir()
    (root / "slow" / "lines.txt").write_text((SLOW_LINE + "\n") * 60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    tmp = tmp_path_factory.mktemp("demo-browser-results")
    build_corpus(tmp / "corpus")
    with demo_served(
        tmp,
        worker=True,
        worker_options=LIVELY_WORKER,
        max_file_bytes=MAX_BYTES,
        search_seconds=BUDGET,
    ) as served:
        yield served


@pytest.fixture(scope="module")
def alice(chromium: Browser, server: DemoServer) -> Iterator[BrowserContext]:
    context = new_context(chromium, server.url)
    context.add_init_script(KEEP_LIVE_VIEW)
    register(context, ALICE)
    yield context
    context.close()


def search(page: Page, glob: str, *, query: str = WORD, regex: bool = False) -> str:
    """Search through the home page's form in slow motion; the task's id."""
    return form_search(page, query, glob=glob, regex=regex, slow=True)


def live_view(page: Page, task_id: str) -> dict[str, Any] | None:
    """What the page showed as it unloaded for its own reload, once reloaded; None for a
    page that loaded with its task finished (it does not reload)."""
    if page.locator("#task").get_attribute("data-initially-done"):
        return None
    key = json.dumps(f"live-{task_id}")
    # True in the reloaded document only: its task was done when it loaded.
    page.wait_for_function(
        f"() => sessionStorage.getItem({key}) !== null"
        " && document.readyState === 'complete'"
        " && document.getElementById('task').dataset.initiallyDone === 'yes'"
    )
    kept: dict[str, Any] = json.loads(page.evaluate(f"() => sessionStorage.getItem({key})"))
    return kept


def test_a_truncated_search_ends_at_100_percent_with_its_summary(
    server: DemoServer, alice: BrowserContext
) -> None:
    page = alice.new_page()
    task_id = search(page, "many/*.log")
    files = QUIET_FILES + 1
    done_line = f"Done: searched {files} files, skipped 2"
    stopped = "5,000+ hits, stopped at the limit"

    # Live, when the task ended (before the page's own reload).
    live = live_view(page, task_id)
    assert live is not None and live["sawRunning"], "the page did not see the search run"
    assert live["status"] == "succeeded"
    assert live["percent"] == "100%" and live["bar"] == 100
    assert live["count"] == "5,000+" and live["limitShown"] is True
    assert live["finalLine"] == done_line and live["messageShown"] is False
    assert live["facts"][0] == stopped

    # Reloaded: the server renders the same, and the skipped files and the JSON.
    task = page.locator("#task")
    expect(task.locator(".et-status")).to_have_attribute("data-status", "succeeded")
    expect(task.locator(".et-percent")).to_have_text("100%")
    expect(page.locator("#hit-count")).to_have_text("5,000+")
    expect(page.locator("#hit-limit")).to_be_visible()
    # The reloaded page lists its first 500 hits and its element brings the rest: the
    # count stays the search's, and the note about the first 500 goes.
    expect(page.locator("#hits li")).to_have_count(tasks.MAX_HITS)
    expect(page.locator("#hit-count")).to_have_text("5,000+")
    expect(page.locator("#hits-shown")).to_be_hidden()
    expect(page.locator("#final-line")).to_have_text(done_line)
    expect(task.locator(".et-message")).to_be_hidden()
    facts = page.locator("#summary .facts")
    expect(facts.locator("dt")).to_have_text(
        ["Hits", "Files searched", "Files skipped", "Time taken", "Complete"]
    )
    expect(facts.locator("dd").nth(0)).to_have_text(stopped)
    expect(facts.locator("dd").nth(1)).to_have_text(str(files))
    expect(facts.locator("dd").nth(2)).to_have_text("2 (1 not a text file, 1 too large)")
    expect(facts.locator("dd").nth(4)).to_have_text("no: the search stopped at 5,000 hits")
    expect(page.locator("#skipped-files li")).to_have_text(
        ["many/0_binary.log — not a text file", "many/0_huge.log — too large"]
    )
    # The JSON is behind its disclosure until asked for.
    raw = page.locator("#as-json pre")
    expect(raw).to_be_hidden()
    page.click("#as-json > summary")
    expect(raw).to_be_visible()
    record = server.record(task_id)
    assert json.loads(raw.inner_text()) == record.result
    assert record.result["truncated"] is True and record.progress.percent == 100.0

    # Its export: named after the search, a link to the CSV and its size.
    page.click("#export")
    page.wait_for_url(lambda url: TASK_URL.search(url) is not None and task_id not in url)
    found = TASK_URL.search(page.url)
    assert found
    live_view(page, found[1])  # (its reload, if it loaded while the export ran)
    expect(page.locator("h1")).to_have_text(f"Export of “{WORD}” in many/*.log")
    download = page.locator("#download")
    expect(download).to_have_text(re.compile(r"^Download CSV \(5,000 rows, \d+\.\d KB\)$"))
    expect(page.locator("#final-line")).to_have_text("Done: wrote 5,000 rows")
    with page.expect_download() as info:
        download.click()
    assert info.value.suggested_filename == "zebra-in-many-log.csv"
    page.close()


def test_a_pattern_out_of_time_fails_with_its_message(
    server: DemoServer, alice: BrowserContext
) -> None:
    page = alice.new_page()
    task_id = search(page, "slow/*.txt", query="(.*a){12}", regex=True)
    message = (
        f"This pattern took too long: the search stopped after {BUDGET:g} s of matching. "
        "Try a simpler pattern."
    )
    live = live_view(page, task_id)
    if live is not None:  # the page saw it end (it runs for the budget, a second)
        assert live["status"] == "failed" and live["error"] == message
        assert live["finalLine"] == "Failed" and live["messageShown"] is False
    task = page.locator("#task")
    expect(task.locator(".et-status")).to_have_attribute("data-status", "failed")
    expect(task.locator(".et-error")).to_have_text(message)
    expect(page.locator("#final-line")).to_have_text("Failed")
    expect(task.locator(".et-message")).to_be_hidden()
    expect(page.locator("#summary")).to_have_count(0)
    # The class name is for administrators: only in an attribute, never in the text.
    assert "OutOfTime" not in page.locator("body").inner_text()
    expect(task.locator(".et-error")).to_have_attribute("data-error-type", "OutOfTime")
    record = server.record(task_id)
    assert record.status is Status.FAILED and record.error is not None
    assert record.error.type == "OutOfTime" and record.error.message == message
    page.close()
