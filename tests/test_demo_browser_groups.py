"""A search in several folders in a real browser: Debian's Chromium driven by Playwright
against the demo served by a real uvicorn server (with its in-process worker) on a
SQLite file.

Alice signs up, searches two folders at once through the form (in slow motion: the
searches take a few seconds), watches the group's one progress bar climb to 100 % while
the hits arrive tagged with their folders and the table of parts follows each search,
opens a part's page and comes back to the group through its link; "My tasks" shows the
group with its parts under it. Bob gets the not-found page for the group and its parts.
Cancelling a running group with its page's Cancel button cancels every part.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from errands import ANY_OWNER, Status, TaskRecord
from tests.browser import (
    LIVELY_WORKER,
    DemoServer,
    Hit,
    demo_served,
    hit_lines,
    mark_page,
    new_context,
    register,
    search,
    use_chromium,
    wait_reloaded,
)
from tests.conftest import eventually

pytestmark = pytest.mark.slow

use_chromium()

ALICE = "alice@example.com"
BOB = "bob@example.com"
WORD = "zebra"
#: The corpus's folders: files in each, and every how many files one holds the word. At
#: 5 ms a file (slow motion) "beta" takes about three times as long as "alpha".
FOLDERS = {"alpha": (120, 4), "beta": (360, 12), "gamma": (30, 3)}


def build_corpus(root: Path) -> dict[str, list[Hit]]:
    """Write the corpus; each folder's hits for WORD, in search order."""
    hits: dict[str, list[Hit]] = {}
    for folder, (count, every) in FOLDERS.items():
        (root / folder).mkdir(parents=True)
        found: list[Hit] = []
        for i in range(count):
            rel = f"{folder}/mod_{i:03d}.py"
            lines = [f'"""Module {i} of {folder}."""', "", f"VALUE = {i}"]
            if i % every == 0:
                text = f"NAME = 'the {WORD} of {folder} {i}'"
                lines.append(text)
                found.append((rel, len(lines), text))
            (root / rel).write_text("\n".join(lines) + "\n")
        hits[folder] = found
    return hits


@dataclass
class Server(DemoServer):
    hits: dict[str, list[Hit]]

    def parts(self, group_id: str) -> list[TaskRecord]:
        return self.demo.errands.sync.parts(group_id, owner=ANY_OWNER)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("demo-browser-groups")
    hits = build_corpus(tmp / "corpus")
    with demo_served(tmp, worker=True, worker_options=LIVELY_WORKER) as served:
        yield Server(served.url, served.demo, hits)


def signed_up(browser: Browser, server: Server, email: str) -> BrowserContext:
    """A browser context of a new account, created through the form."""
    context = new_context(browser, server.url)
    register(context, email)
    return context


@pytest.fixture(scope="module")
def alice(chromium: Browser, server: Server) -> Iterator[BrowserContext]:
    context = signed_up(chromium, server, ALICE)
    yield context
    context.close()


def search_folders(page: Page, folders: str) -> str:
    """Search the folders through the home page's form, in slow motion; the task's id
    (the page is on the task page)."""
    return search(page, WORD, folders=folders, slow=True)


#: Samples the group's page every 25 ms until the group is finished: its one bar, the
#: hits and their folders, the parts' badges.
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
      bars: document.querySelectorAll("progress").length,
      folders: Array.from(document.querySelectorAll("#hits li .folder"), (e) => e.textContent),
      parts: Array.from(document.querySelectorAll("#parts tbody .badge"), (e) => e.textContent),
      mode: task.getAttribute("data-mode"),
    };
    samples.push(s);
    if (["succeeded", "failed", "cancelled"].includes(s.status)) resolve(samples);
    else setTimeout(sample, 25);
  };
  sample();
})"""


def test_search_two_folders_and_watch_the_group(
    chromium: Browser, server: Server, alice: BrowserContext
) -> None:
    page = alice.new_page()
    group_id = search_folders(page, "alpha\nbeta")
    group = server.record(group_id)
    assert group.is_group and group.group_size == 2
    parts = server.parts(group_id)
    assert [p.payload["folder"] for p in parts[:2]] == ["alpha", "beta"]
    expect(page.locator("h1")).to_have_text(f"search “{WORD}” in *.py in alpha, beta")
    expect(page.locator("#parts tbody tr td:first-child a")).to_have_text(
        ["alpha", "beta", "all, merged"]
    )

    mark_page(page)
    samples: list[dict[str, Any]] = page.evaluate(SAMPLE_UNTIL_DONE)
    assert samples[-1]["status"] == "succeeded", samples[-1]
    running = [s for s in samples if s["status"] == "running"]
    assert running, "never seen running"
    assert {s["mode"] for s in running} == {"sse"}
    # One progress bar, which climbs (never back) to 100 %.
    assert {s["bars"] for s in samples} == {1}
    values = [s["value"] for s in samples if s["value"] is not None]
    assert values == sorted(values), "the bar went backwards"
    assert len({v for v in values if 0 < v < 100}) >= 2, f"the bar did not move: {values}"
    assert samples[-1]["value"] == 100 and samples[-1]["percent"] == "100%"
    # Hits arrive while the searches run, each tagged with its folder.
    assert any(s["folders"] for s in running), "no hit was shown before the end"
    assert set(samples[-1]["folders"]) == {"alpha", "beta"}
    assert len(samples[-1]["folders"]) == len(server.hits["alpha"]) + len(server.hits["beta"])
    # The table of parts follows them: alpha (the smaller) is seen done while beta runs.
    assert any(s["parts"][:2] == ["succeeded", "running"] for s in running), [
        s["parts"] for s in running
    ]

    # Done: the page reloads and shows the merged hits (by path), the parts, the result.
    wait_reloaded(page)
    expect(page.locator("#task .et-status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#task .et-percent")).to_have_text("100%")
    expect(page.locator("#task .et-cancel")).to_be_hidden()
    merged = sorted(server.hits["alpha"] + server.hits["beta"])
    expect(page.locator("#hits li code")).to_have_text([f"{p}:{n}" for p, n, _ in merged])
    expect(page.locator("#hits li .folder")).to_have_text([p.split("/")[0] for p, _, _ in merged])
    expect(page.locator("#hit-count")).to_have_text(str(len(merged)))
    expect(page.locator("#parts tbody .badge")).to_have_text(["succeeded"] * 3)
    expect(page.locator("#parts tbody td.hits-count")).to_have_text(
        [str(len(server.hits["alpha"])), str(len(server.hits["beta"])), str(len(merged))]
    )
    result = json.loads(page.locator("#task .et-result").text_content() or "")  # "as JSON"
    assert [(f["folder"], f["files"], f["hits"]) for f in result["folders"]] == [
        ("alpha", FOLDERS["alpha"][0], len(server.hits["alpha"])),
        ("beta", FOLDERS["beta"][0], len(server.hits["beta"])),
    ]
    assert result["hits"] == len(merged) and server.record(group_id).result == result

    # A part's page, and back to the group.
    page.click("#parts a:text-is('beta')")
    page.wait_for_url(f"**/tasks/{parts[1].id}")
    expect(page.locator("h1")).to_have_text(f"search “{WORD}” in *.py under beta")
    expect(page.locator("#part-of")).to_have_text("Part 2 of 2 of search in 2 folders.")
    expect(page.locator("#task .et-status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#task .et-percent")).to_have_text("100%")
    expect(page.locator("#hits li")).to_have_text(hit_lines(server.hits["beta"]))
    page.click("#group-link")
    page.wait_for_url(f"**/tasks/{group_id}")
    expect(page.locator("#parts tbody tr")).to_have_count(3)

    # "My tasks": the group once, its parts under it.
    page.goto("/tasks")
    rows = page.locator("#my-tasks tbody tr")
    expect(rows).to_have_count(4)
    expect(rows.nth(0)).to_have_class("group")
    expect(rows.nth(0).locator("td").first).to_have_text(f"search “{WORD}” in 2 folders")
    for n in (1, 2, 3):
        expect(rows.nth(n)).to_have_class("part")
    expect(rows.locator("td:first-child")).to_have_text(
        [
            f"search “{WORD}” in 2 folders",
            f"↳ search “{WORD}” in *.py under alpha",
            f"↳ search “{WORD}” in *.py under beta",
            "↳ merge of the folders' searches",
        ]
    )
    page.close()

    # Bob gets the not-found page for the group and every part.
    bob = signed_up(chromium, server, BOB)
    try:
        other = bob.new_page()
        for task_id in [group_id, *(p.id for p in parts)]:
            response = other.goto(f"/tasks/{task_id}")
            assert response is not None and response.status == 404
            expect(other.locator("h1")).to_have_text("Not found")
        other.close()
    finally:
        bob.close()


def test_cancel_the_group_from_its_page(server: Server, alice: BrowserContext) -> None:
    page = alice.new_page()
    group_id = search_folders(page, "beta, gamma, alpha")
    status = page.locator("#task .et-status")
    expect(status).to_have_attribute("data-status", "running")
    expect(page.locator("#task .et-percent")).to_have_text(re.compile(r"^[1-9]\d*%$"))
    mark_page(page)
    page.click("#task .et-cancel")
    expect(status).to_have_attribute("data-status", "cancelled")
    wait_reloaded(page)
    parts = server.parts(group_id)
    assert server.record(group_id).status is Status.CANCELLED
    # Running parts stop soon after (the page's table follows them till then): beta and
    # alpha were stopped; gamma (30 files) may have finished first.
    eventually(lambda: all(server.record(p.id).done for p in parts), "every part to end")
    ended = {p.payload.get("folder", "merge"): server.record(p.id).status for p in parts}
    assert ended["beta"] is Status.CANCELLED and ended["alpha"] is Status.CANCELLED
    assert ended["merge"] is Status.CANCELLED
    assert ended["gamma"] in (Status.CANCELLED, Status.SUCCEEDED)
    expect(page.locator("#parts tbody .badge")).to_have_text(
        [ended["beta"].value, ended["gamma"].value, "cancelled", "cancelled"]
    )
    expect(page.locator("#task .et-cancel")).to_be_hidden()
    expect(page.locator("#export")).to_have_count(0)
    page.close()
