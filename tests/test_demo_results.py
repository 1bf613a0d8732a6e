"""What a search reads and what its page says about it, over HTTP, run for real by the
demo's in-process worker over a corpus in ``tmp_path`` (issue 18):

- files that are not text (a NUL byte, or not UTF-8, in the first block) and files over
  ``max_file_bytes`` are skipped, counted in the result and named on the page;
- a file is read line by line: a search through a 40 MB file leaves the peak memory of
  a fresh process (``VmHWM``) below what reading the same file whole then adds;
- a pattern slow on every line stops at the search's matching budget with a clear
  message, shown without the exception's class name;
- a search that stops at ``MAX_HITS`` ends at the whole bar with "5,000+";
- the outcome (final line, summary, JSON) on the page and at ``/tasks/{id}/outcome``;
- an export named after its search, and its CSV downloaded under a slug of it.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from starlette.testclient import TestClient  # its httpx2 warning is ignored in pyproject

from errands import ANY_OWNER, Status, TaskRecord
from errands.demo import accounts, tasks
from errands.demo.web import DemoSettings, create_app
from tests.apps.demo_site import PASSWORD, DemoClient

ALICE = "alice@example.com"
BOB = "bob@example.com"
#: The fixture's size bound (a file over it is skipped) and matching budget.
MAX_BYTES = 512 * 1024
BUDGET = 1.0
#: A line on which ``(.*a){12}`` fails after some 20 ms of backtracking (eleven "a"s,
#: far apart): well under the per-line limit, so only the budget stops the search.
SLOW_LINE = ("a" + "b" * 80) * 11


class Site(DemoClient):
    def run(self, query: str, **fields: str) -> TaskRecord:
        return self.finished(self.search(query, **fields))

    def page(self, path: str) -> str:
        r = self.client.get(path)
        assert r.status_code == 200, r.text
        return html.unescape(r.text)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    corpus = tmp_path / "corpus"
    mixed = corpus / "mixed"
    mixed.mkdir(parents=True)
    # Read: text, with a CRLF line, and a flaw past the first block (read as U+FFFD).
    (mixed / "a_text.txt").write_bytes(b"zebra one\r\nnothing\nzebra two\n")
    (mixed / "b_flawed.txt").write_bytes(b"x\n" * 5000 + b"zebra caf\xe9\n")
    # Skipped: a NUL byte, Latin-1 in the first block, over the size bound.
    (mixed / "c_nul.txt").write_bytes(b"zebra\0binary\n")
    (mixed / "d_latin1.txt").write_bytes(b"zebra caf\xe9\n")
    (mixed / "e_big.txt").write_bytes(b"zebra\n" + b"y" * MAX_BYTES)
    (corpus / "slow").mkdir()
    (corpus / "slow" / "lines.txt").write_text((SLOW_LINE + "\n") * 300)
    (corpus / "many").mkdir()
    (corpus / "many" / "hits.log").write_text("zebra\n" * (tasks.MAX_HITS + 10))
    app = create_app(
        DemoSettings(
            database_url=f"sqlite:///{tmp_path}/d.db",
            data_dir=tmp_path / "data",
            corpus=corpus,
            worker=True,
            worker_options={"poll_interval": 0.2, "heartbeat_interval": 0.25},
            max_file_bytes=MAX_BYTES,
            search_seconds=BUDGET,
        )
    )
    demo = app.state.demo
    demo.accounts.register(ALICE, PASSWORD)
    demo.accounts.register(BOB, PASSWORD)
    with TestClient(app) as client:
        site = Site(client, demo)
        site.log_in(ALICE)
        yield site


def hits(site: Site, task_id: str) -> list[tuple[str, int, str]]:
    items = site.demo.errands.sync.outputs(task_id, owner=ANY_OWNER, limit=1000)
    return [(i["path"], i["line"], i["text"]) for _, i in items]


# -- what a search reads -------------------------------------------------------------------------
def test_binary_and_oversized_files_are_skipped_and_named(site: Site) -> None:
    record = site.run("zebra", glob="mixed/*")
    assert record.status is Status.SUCCEEDED, record.error
    # Line numbers as editors show them (CRLF and all); the flaw is a replacement mark.
    assert hits(site, record.id) == [
        ("mixed/a_text.txt", 1, "zebra one"),
        ("mixed/a_text.txt", 3, "zebra two"),
        ("mixed/b_flawed.txt", 5001, "zebra caf\ufffd"),
    ]
    result = record.result
    assert result["files"] == 2 and result["hits"] == 3 and result["truncated"] is False
    assert result["skipped"] == 3
    assert result["skipped_reasons"] == {"not text": 2, "too large": 1}
    assert result["skipped_files"] == [
        {"path": "mixed/c_nul.txt", "reason": "not text"},
        {"path": "mixed/d_latin1.txt", "reason": "not text"},
        {"path": "mixed/e_big.txt", "reason": "too large"},
    ]
    # Every file counts towards the bar; the last line says what was done.
    assert record.progress.percent == 100.0
    assert record.progress.message == "Done: searched 2 files, skipped 3"

    page = site.page(f"/tasks/{record.id}")
    assert '<p class="final-line" id="final-line" data-outcome="succeeded">' in page
    assert "Done: searched 2 files, skipped 3</p>" in page
    assert "<dt>Hits</dt><dd>3 hits</dd>" in page
    assert "<dt>Files searched</dt><dd>2</dd>" in page
    assert "<dt>Files skipped</dt><dd>3 (2 not a text file, 1 too large)</dd>" in page
    assert "<dt>Complete</dt><dd>yes</dd>" in page
    skipped = re.search(r'<ul class="skipped" id="skipped-files">(.*?)</ul>', page, re.S)
    assert skipped and re.findall(r"<li><code>([^<]+)</code> — ([^<]+)</li>", skipped[1]) == [
        ("mixed/c_nul.txt", "not a text file"),
        ("mixed/d_latin1.txt", "not a text file"),
        ("mixed/e_big.txt", "too large"),
    ]
    # The JSON is still there, under its disclosure.
    shown = re.search(
        r'<details class="as-json" id="as-json"><summary>as JSON</summary>\s*'
        r'<pre class="et-result" data-errands-result>(.*?)</pre></details>',
        page,
        re.S,
    )
    assert shown and json.loads(shown[1]) == result


MEASURE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from errands import Errands
    from errands.demo import tasks

    corpus, db, big = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    app = Errands(f"sqlite:///{db}")
    app.migrate()
    tasks.register(app, corpus=corpus, exports=corpus.parent / "exports", max_file_bytes=10**9)
    record = app.sync.submit("search", {"query": "needle", "glob": "*.log"}, owner="o")
    app.run_worker(burst=True, handle_signals=False, poll_interval=0.05)
    def peak():
        # The process's peak resident size (VmHWM, in kB): whatever the search held at
        # its largest counts. (Not ru_maxrss: Linux carries that over from the forking
        # process, here pytest, across exec.)
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) * 1024
    searched = peak()
    whole = big.read_bytes()  # the control: what reading it whole costs
    done = app.sync.get(record.id, owner="o")
    print(json.dumps({"searched": searched, "whole": peak(), "size": len(whole),
                      "status": done.status.value, "result": done.result}))
    """
)


def test_a_file_is_read_line_by_line_not_whole(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    big = corpus / "big.log"
    line = b"x" * 99 + b"\n"
    with big.open("wb") as fh:
        for _ in range(4):
            fh.write(line * 100_000)  # 40 MB in all
        fh.write(b"a needle at the end\n")
    size = big.stat().st_size
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(corpus), str(tmp_path / "m.db"), str(big)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured["status"] == "succeeded", measured
    assert measured["result"]["hits"] == 1 and measured["result"]["skipped"] == 0
    assert measured["size"] == size
    # The search read all of it (its hit is on the last line), and yet reading the file
    # whole afterwards still raises the peak by nearly its size: the search's own peak
    # held no more than a small part of it. (Had the search read it whole, the memory
    # it freed would have served the control, and the peak would not have moved.)
    assert measured["whole"] - measured["searched"] > 0.9 * size, measured


# -- a pattern slow on every line ----------------------------------------------------------------
def test_a_slow_pattern_stops_at_the_search_budget_with_a_clear_message(site: Site) -> None:
    record = site.run("(.*a){12}", glob="slow/*.txt", regex="on")
    assert record.status is Status.FAILED
    assert record.error is not None
    message = (
        f"This pattern took too long: the search stopped after {BUDGET:g} s of matching. "
        "Try a simpler pattern."
    )
    assert record.error.message == message
    assert record.error.type == "OutOfTime"  # the admin view's
    assert record.attempts == 1  # another attempt would take as long
    # It stopped part-way through the file's lines: no line alone reached the limit.
    assert record.progress.percent != 100.0

    # The owner's page: the message, not the class; the final line says it failed.
    page = site.page(f"/tasks/{record.id}")
    assert f'<p class="et-error error">{message}</p>' in page
    assert "OutOfTime" not in page and "TaskFailed" not in page
    assert '<p class="final-line" id="final-line" data-outcome="failed">Failed</p>' in page
    assert 'id="summary"' not in page and '<details class="as-json" id="as-json" hidden>' in page


# -- a search in several folders ------------------------------------------------------------------
def test_a_search_in_several_folders_sums_up_its_folders(site: Site) -> None:
    group = site.run("zebra", glob="*.txt", folders="mixed, slow")
    assert group.status is Status.SUCCEEDED and group.is_group
    result = group.result
    assert (result["files"], result["hits"], result["skipped"]) == (3, 3, 3)
    assert result["skipped_reasons"] == {"not text": 2, "too large": 1}
    assert [(f["folder"], f["files"], f["skipped"]) for f in result["folders"]] == [
        ("mixed", 2, 3),
        ("slow", 1, 0),
    ]
    # The group's page: the totals (its table of parts has the folders).
    page = site.page(f"/tasks/{group.id}")
    assert "Done: searched 3 files, skipped 3</p>" in page
    assert "<dt>Hits</dt><dd>3 hits</dd><dt>Files searched</dt><dd>3</dd>" in page
    assert 'id="summary-folders"' not in page
    # The merge task's page: the totals and a row per folder.
    merge = site.demo.errands.sync.parts(group.id, owner=ANY_OWNER)[-1]
    page = site.page(f"/tasks/{merge.id}")
    rows = re.search(r'<table class="tasks" id="summary-folders">(.*?)</table>', page, re.S)
    assert rows and re.findall(
        r"<tr><td>(\w+)</td>" + r'<td class="number">(\d+)</td>' * 3, rows[1]
    ) == [
        ("mixed", "2", "3", "3"),
        ("slow", "1", "0", "0"),
    ]


# -- where a search stops ------------------------------------------------------------------------
def test_a_truncated_search_ends_at_the_whole_bar_with_a_plus(site: Site) -> None:
    record = site.run("zebra", glob="many/*.log")
    assert record.status is Status.SUCCEEDED
    assert record.result["truncated"] is True and record.result["hits"] == tasks.MAX_HITS
    assert record.progress.percent == 100.0 and record.progress.message == "Done: searched 1 file"
    page = site.page(f"/tasks/{record.id}")
    assert '<span class="et-percent">100%</span>' in page
    assert '<span class="muted" id="hit-count">5,000+</span>' in page
    assert "<dt>Hits</dt><dd>5,000+ hits, stopped at the limit</dd>" in page
    assert "<dt>Complete</dt><dd>no: the search stopped at 5,000 hits</dd>" in page
    # What the page's script fetches when the task ends: the same outcome, with the
    # hit count it puts in the heading.
    r = site.client.get(f"/tasks/{record.id}/outcome")
    assert r.status_code == 200
    fragment = html.unescape(r.text)
    assert fragment.lstrip().startswith('<div id="outcome"')
    assert 'data-hit-count="5,000+" data-hit-limit="yes"' in fragment
    assert "<dt>Hits</dt><dd>5,000+ hits, stopped at the limit</dd>" in fragment
    assert "<html" not in fragment
    # Another user's task is not found, as its page is.
    site.log_in(BOB)
    assert site.client.get(f"/tasks/{record.id}/outcome").status_code == 404


# -- exports ---------------------------------------------------------------------------------------
def test_an_export_is_named_after_its_search(site: Site) -> None:
    query = 'zebra "one" / ../etc'
    search = site.run(query, glob="mixed/*.txt")
    assert search.status is Status.SUCCEEDED
    r = site.client.post(
        f"/tasks/{search.id}/export", data={"csrf": site.csrf()}, follow_redirects=False
    )
    assert r.status_code == 303
    export_id = r.headers["location"].removeprefix("/tasks/")
    export = site.finished(export_id)
    assert export.status is Status.SUCCEEDED, export.error
    words = f"“{query}” in mixed/*.txt"
    assert export.payload == {"search_id": search.id, "search": words}
    size = (site.demo.exports / f"{export_id}.csv").stat().st_size
    assert export.result == {"rows": 0, "search_id": search.id, "bytes": size}
    # Its title in the lists and on its page; its summary: the link and the size.
    assert f"Export of {words}" in site.page("/tasks")
    page = site.page(f"/tasks/{export_id}")
    assert f"<h1>Export of {words}</h1>" in page
    assert "Done: wrote 0 rows</p>" in page
    assert f"<dt>Size</dt><dd>{size} bytes</dd>" in page
    link = re.search(r'<a class="button" id="download" href="([^"]+)" download>([^<]+)</a>', page)
    assert link and link.groups() == (
        f"/exports/{export_id}.csv",
        f"Download CSV (0 rows, {size} bytes)",
    )
    # The CSV's name: the words' letters and digits, joined by dashes.
    r = site.client.get(f"/exports/{export_id}.csv")
    assert r.status_code == 200
    assert r.headers["content-disposition"].endswith('filename="zebra-one-etc-in-mixed-txt.csv"')
    # An export submitted without the words (through the API) keeps a neutral name.
    other = site.finished(site.submit("export", {"search_id": search.id}))
    assert other.status is Status.SUCCEEDED
    assert f"<h1>Export of search {search.id[:8]}</h1>" in site.page(f"/tasks/{other.id}")
    r = site.client.get(f"/exports/{other.id}.csv")
    assert r.headers["content-disposition"].endswith(f'filename="search-{search.id[:8]}.csv"')
