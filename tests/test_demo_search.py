"""The demo's search task (``errands.demo.tasks``), run for real by the demo's
in-process worker over a small corpus in ``tmp_path``: case sensitivity, regular
expressions and literal text, the file glob, progress per file, the hits it emits, its
summary, where it stops (``MAX_HITS``), a bad regular expression refused at submit, and
the default corpus (this interpreter's standard library).

Searches are submitted through the home page's form (as a person does) or the HTTP API
(for what the form does not offer: a longer pause per file).
"""

from __future__ import annotations

import json
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from starlette.testclient import TestClient  # its httpx2 warning is ignored in pyproject

from errands import ANY_OWNER, InvalidPayload, Status, TaskRecord
from errands.demo import accounts, matching, tasks
from errands.demo.web import Demo, DemoSettings, create_app
from tests.apps.demo_site import PASSWORD, DemoClient, build_demo
from tests.conftest import eventually

ALICE = "alice@example.com"
#: Added to build_demo's corpus (one.py, two.py, notes.txt, pkg/three.py: no zebras).
ZOO = {
    "zoo/stripes.py": [
        "Zebra crossing ahead",
        "zebra = 'striped'",
        "ZEBRA_COUNT = 3",
        "price = 1.50",
        "price = 1x50",
    ],
    "zoo/herd/more.py": ["def zebras(): return ['zebra', 'Zebra']"],
    "zoo/readme.md": ["A zebra in a Markdown file"],
    "zoo/data.txt": ["zebra,1.50"],
}
#: The files a search with the default glob reads, in its order: a directory's files
#: (sorted), then its subdirectories (sorted).
PY_FILES = ["one.py", "two.py", "pkg/three.py", "zoo/stripes.py", "zoo/herd/more.py"]
#: Files of the slow search (glob ``*.dat``), one hit each.
STEPS = 30

Hit = tuple[str, int, str]


class Site(DemoClient):
    def submit_search(self, payload: dict[str, Any]) -> str:
        """Submit a search through the HTTP API; the new task's id."""
        return self.submit("search", payload)

    def succeeded(self, task_id: str) -> TaskRecord:
        record = self.finished(task_id)
        assert record.status is Status.SUCCEEDED, (record.status, record.error)
        return record

    def hits(self, task_id: str) -> list[Hit]:
        """Everything the task emitted, as (path, line, text)."""
        items = self.demo.errands.sync.outputs(task_id, owner=ANY_OWNER, limit=1000)
        assert all(set(item) == {"path", "line", "text"} for _, item in items), items
        assert [seq for seq, _ in items] == list(range(1, len(items) + 1))
        return [(item["path"], item["line"], item["text"]) for _, item in items]

    def run(self, query: str, **fields: str) -> tuple[TaskRecord, list[Hit]]:
        """Search through the form and wait for the end: the record and its hits."""
        task_id = self.search(query, **fields)
        return self.succeeded(task_id), self.hits(task_id)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    app = build_demo(tmp_path, monkeypatch, progress_interval=0.02)
    demo: Demo = app.state.demo
    for rel, lines in ZOO.items():
        (demo.corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        (demo.corpus / rel).write_text("\n".join(lines) + "\n")
    (demo.corpus / "lab").mkdir()
    for i in range(STEPS):
        (demo.corpus / "lab" / f"step_{i:02d}.dat").write_text(f"# step {i}\nzebra step {i}\n")
    demo.accounts.register(ALICE, PASSWORD)
    with TestClient(app) as client:
        site = Site(client, demo)
        site.log_in(ALICE)
        yield site


def summary(record: TaskRecord) -> dict[str, Any]:
    """The search's result, with its time checked and set aside, and its skipped files
    checked to be none (this corpus is all small text files)."""
    assert record.result is not None
    result = dict(record.result)
    seconds = result.pop("seconds")
    assert isinstance(seconds, float) and 0 <= seconds < 30, seconds
    skipped = {k: result.pop(k) for k in ("skipped", "skipped_reasons", "skipped_files")}
    assert skipped == {"skipped": 0, "skipped_reasons": {}, "skipped_files": []}, skipped
    return result


# -- what matches ------------------------------------------------------------------------------
def test_case_sensitive_and_insensitive_searches_find_different_lines(site: Site) -> None:
    record, hits = site.run("zebra")  # the default: any case
    assert record.payload["case_sensitive"] is False
    assert hits == [
        ("zoo/stripes.py", 1, "Zebra crossing ahead"),
        ("zoo/stripes.py", 2, "zebra = 'striped'"),
        ("zoo/stripes.py", 3, "ZEBRA_COUNT = 3"),
        ("zoo/herd/more.py", 1, "def zebras(): return ['zebra', 'Zebra']"),
    ]
    assert summary(record) == {"files": 5, "hits": 4, "truncated": False}

    record, hits = site.run("zebra", case_sensitive="on")
    assert record.payload["case_sensitive"] is True
    assert [(p, n) for p, n, _ in hits] == [("zoo/stripes.py", 2), ("zoo/herd/more.py", 1)]
    assert summary(record) == {"files": 5, "hits": 2, "truncated": False}
    record, hits = site.run("ZEBRA", case_sensitive="on")
    assert [(p, n) for p, n, _ in hits] == [("zoo/stripes.py", 3)]
    assert record.result is not None and record.result["hits"] == 1


def test_regular_expressions_and_literal_text(site: Site) -> None:
    # A regular expression that matches (anchors, a class, a repeat).
    pattern = r"^[A-Z]+_COUNT = \d+$"
    record, hits = site.run(pattern, regex="on", case_sensitive="on")
    assert record.payload["regex"] is True
    assert hits == [("zoo/stripes.py", 3, "ZEBRA_COUNT = 3")]
    assert summary(record) == {"files": 5, "hits": 1, "truncated": False}
    record, hits = site.run("crossing|striped", regex="on")
    assert [(p, n) for p, n, _ in hits] == [("zoo/stripes.py", 1), ("zoo/stripes.py", 2)]

    # The same texts as plain text: metacharacters are only characters.
    record, hits = site.run(pattern, case_sensitive="on")
    assert record.payload["regex"] is False
    assert hits == [] and summary(record) == {"files": 5, "hits": 0, "truncated": False}
    assert site.run("crossing|striped")[1] == []
    # "." is any character in a regular expression, a dot in plain text.
    assert [n for _, n, _ in site.run("1.50", regex="on")[1]] == [4, 5]
    assert site.run("1.50")[1] == [("zoo/stripes.py", 4, "price = 1.50")]
    # Not a valid regular expression, but fine as text.
    assert site.run("['zebra'")[1] == [
        ("zoo/herd/more.py", 1, "def zebras(): return ['zebra', 'Zebra']")
    ]


def test_the_glob_chooses_the_files_by_name_or_path(site: Site) -> None:
    stripes = [("zoo/stripes.py", n, ZOO["zoo/stripes.py"][n - 1]) for n in (1, 2, 3)]
    more = ("zoo/herd/more.py", 1, ZOO["zoo/herd/more.py"][0])
    readme = ("zoo/readme.md", 1, "A zebra in a Markdown file")
    data = ("zoo/data.txt", 1, "zebra,1.50")
    cases: list[tuple[str, list[str], list[Hit]]] = [
        ("*.md", ["zoo/readme.md"], [readme]),
        ("*.txt", ["notes.txt", "zoo/data.txt"], [data]),
        ("readme.*", ["zoo/readme.md"], [readme]),
        # A path pattern: "*" also crosses "/", as fnmatch's does.
        (
            "zoo/*",
            ["zoo/data.txt", "zoo/readme.md", "zoo/stripes.py", "zoo/herd/more.py"],
            [data, readme, *stripes, more],
        ),
        ("zoo/herd/*", ["zoo/herd/more.py"], [more]),
        ("*.rs", [], []),
    ]
    for glob, files, expected in cases:
        record, hits = site.run("zebra", glob=glob)
        assert record.payload["glob"] == glob
        assert hits == expected, glob
        assert summary(record) == {"files": len(files), "hits": len(expected), "truncated": False}
        # The last progress message says the search is done, and how many files it read.
        progress = record.progress
        assert (progress.current, progress.total) == (len(files), len(files)), glob
        plural = "" if len(files) == 1 else "s"
        assert progress.message == f"Done: searched {len(files)} file{plural}", glob
    # The glob is the payload's; the form's empty field means the default, *.py.
    record, _ = site.run("zebra", glob="")
    assert record.payload["glob"] == "*.py" and summary(record)["files"] == len(PY_FILES)
    assert record.progress.message == f"Done: searched {len(PY_FILES)} files"


# -- while it runs, and what it leaves ---------------------------------------------------------
def test_progress_per_file_hits_and_summary(site: Site) -> None:
    order = [f"lab/step_{i:02d}.dat" for i in range(STEPS)]
    task_id = site.submit_search({"query": "ZEBRA", "glob": "*.dat", "pause": 0.03})

    # Watch the record while the worker runs it: one progress step per file, and the
    # message names the file just read.
    seen: list[tuple[float, float, str | None]] = []

    def done() -> TaskRecord | None:  # noting each progress step it sees on the way
        record = site.record(task_id)
        p = record.progress
        if record.status is Status.RUNNING and p.current is not None and p.total is not None:
            step = (p.current, p.total, p.message)
            if not seen or seen[-1] != step:
                seen.append(step)
        return record if record.done else None

    record = eventually(done, "the search to finish", timeout=30, every=0.01)
    assert record.status is Status.SUCCEEDED, record.error
    assert len(seen) >= 5, seen  # ~1 s of reading, a write at most every 20 ms
    currents = [current for current, _, _ in seen]
    assert currents == sorted(set(currents)), seen  # only forward
    for current, total, message in seen:
        assert total == STEPS
        assert 0 <= current <= STEPS
        if current == 0:
            assert message == f"{STEPS} files to search"
        elif message == f"Done: searched {STEPS} files":
            assert current == STEPS
        else:
            assert message == order[int(current) - 1], (current, message)
    assert any(0 < c < STEPS for c in currents), seen

    # At the end: every file read, and words that say it is over (not the last file's
    # name); a hit per file, in file order.
    assert (record.progress.current, record.progress.total) == (STEPS, STEPS)
    assert record.progress.message == f"Done: searched {STEPS} files"
    assert record.progress.percent == 100.0
    hits = site.hits(task_id)
    assert hits == [(path, 2, f"zebra step {i}") for i, path in enumerate(order)]
    result = record.result
    assert result is not None and set(result) == {
        "files",
        "hits",
        "truncated",
        "seconds",
        "skipped",
        "skipped_reasons",
        "skipped_files",
    }
    assert result["files"] == STEPS and result["hits"] == STEPS and result["truncated"] is False
    assert isinstance(result["seconds"], float)
    assert 0.03 * STEPS <= result["seconds"] < 30  # it paused after every file

    # The task page shows the same: status, 100%, the final line (not the last file),
    # the summary, the result as JSON, the hits.
    page = site.client.get(f"/tasks/{task_id}").text
    assert '<span class="et-status badge" data-status="succeeded" role="status">' in page
    assert '<span class="et-percent">100%</span>' in page
    assert "et-message" not in page and order[-1] not in page.split('id="hits"')[0]
    assert f'data-outcome="succeeded">Done: searched {STEPS} files</p>' in page
    assert f"<dt>Files searched</dt><dd>{STEPS}</dd>" in page
    result_shown = re.search(r'<pre class="et-result" data-errands-result>(.*?)</pre>', page, re.S)
    assert result_shown and json.loads(result_shown[1]) == result
    assert f'<h2>Hits <span class="muted" id="hit-count">{STEPS}</span> ' in page
    assert '<span class="muted" id="hit-limit" hidden>stopped at the limit</span>' in page
    items = re.findall(r'<li data-seq="(\d+)"><code>([^<]+)</code> ([^<]*)</li>', page)
    assert items == [(str(i + 1), f"{path}:2", f"zebra step {i}") for i, path in enumerate(order)]
    # And the API's output endpoint, to its owner.
    r = site.client.get(f"/api/tasks/{task_id}/output")
    assert r.status_code == 200
    data = r.json()
    assert data["last_seq"] == STEPS
    assert [i["data"] for i in data["items"]][:2] == [
        {"path": order[0], "line": 2, "text": "zebra step 0"},
        {"path": order[1], "line": 2, "text": "zebra step 1"},
    ]


def test_a_search_stops_at_max_hits_and_says_so(site: Site) -> None:
    lines = 2 * tasks.MAX_HITS
    (site.demo.corpus / "zoo" / "many.log").write_text(
        "".join(f"zebra {i}\n" for i in range(1, lines + 1))
    )
    (site.demo.corpus / "zoo" / "more.log").write_text("zebra after the stop\n")
    task_id = site.search("zebra", glob="*.log")
    record = site.succeeded(task_id)
    assert summary(record) == {"files": 1, "hits": tasks.MAX_HITS, "truncated": True}
    # It ends at the whole bar, though more.log was not read: the search is over.
    assert record.progress.message == "Done: searched 1 file"
    assert (record.progress.current, record.progress.total) == (2, 2)
    assert record.progress.percent == 100.0
    sync = site.demo.errands.sync
    tail = sync.outputs(task_id, owner=ANY_OWNER, after=tasks.MAX_HITS - 1, limit=10)
    assert tail == [(tasks.MAX_HITS, {"path": "zoo/many.log", "line": 5000, "text": "zebra 5000"})]
    # The page shows its first 500 hits, the count of all, and that it stopped there.
    page = site.client.get(f"/tasks/{task_id}").text
    assert '<span class="muted" id="hit-count">5,000+</span>' in page
    assert '<span class="muted" id="hit-limit">stopped at the limit</span>' in page
    assert "<dt>Hits</dt><dd>5,000+ hits, stopped at the limit</dd>" in page
    assert 'id="hits-shown" data-total="5000">The first 500 are listed here' in page
    assert page.count("<li data-seq=") == 500


# -- refused at submit ---------------------------------------------------------------------------
def test_a_bad_regular_expression_is_refused_by_the_api_and_writes_nothing(site: Site) -> None:
    sync = site.demo.errands.sync
    r = site.client.post(
        "/api/tasks",
        json={"name": "search", "payload": {"query": "zebra(", "regex": True}},
        headers={"X-CSRF-Token": site.csrf()},
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    [error] = problem["errors"]
    assert error["field"] == "payload.query"
    message = error["message"]
    assert "not a valid regular expression: missing ) at position" in message
    assert "not a valid regular expression" in problem["detail"]
    # From Python too, before anything is stored.
    with pytest.raises(InvalidPayload) as raised:
        sync.submit("search", {"query": "[z-a]", "regex": True}, owner="user:1")
    expected = "not a valid regular expression: bad character range at position 4"
    assert expected in str(raised.value.errors)
    assert sync.list(owner=ANY_OWNER).items == []
    # The same text as plain text is a search like any other.
    task_id = site.submit_search({"query": "zebra(", "regex": False})
    assert summary(site.succeeded(task_id)) == {"files": 5, "hits": 0, "truncated": False}
    assert [t.id for t in sync.list(owner=ANY_OWNER).items] == [task_id]


# -- a regular expression that never ends ------------------------------------------------------
def test_a_runaway_regular_expression_fails_the_search_and_the_site_keeps_answering(
    site: Site,
) -> None:
    """``(a|aa)+$`` against a long run of a's backtracks for longer than anyone waits.
    The search fails with a message saying where, and while it matches, the web process
    (which hosts the demo's worker) keeps serving pages."""
    (site.demo.corpus / "lab" / "aaa.txt").write_text("ok\n" + "a" * 60 + "b\n")
    task_id = site.submit_search({"query": "(a|aa)+$", "regex": True, "glob": "lab/aaa.txt"})
    served = 0
    while not site.record(task_id).done:
        assert site.client.get("/tasks").status_code == 200
        served += 1
    record = site.record(task_id)
    assert record.status is Status.FAILED
    assert record.error is not None and record.error.type == "TaskFailed"
    assert record.error.message == (
        f"The regular expression took over {matching.MATCH_SECONDS} s on line 2 of "
        "lab/aaa.txt; try a simpler one."
    )
    assert served >= 2  # pages were served while the pattern ran (at least once per attempt)


def test_line_numbers_count_newlines_only(site: Site) -> None:
    """Form feeds, vertical tabs and Unicode line separators are characters of a line,
    as editors and ``grep -n`` count; a Windows line's ``\\r`` is not part of its text."""
    (site.demo.corpus / "lab" / "odd.txt").write_text(
        "first\x0cstill first\r\nsecond \u2028 line\r\nzebra third\r\n", newline=""
    )
    assert site.run("zebra", glob="lab/odd.txt")[1] == [("lab/odd.txt", 3, "zebra third")]
    hits = site.run(r"first$", glob="lab/odd.txt", regex="on")[1]
    assert hits == [("lab/odd.txt", 1, "first\x0cstill first")]


# -- the default corpus -------------------------------------------------------------------------
def test_the_default_corpus_is_the_standard_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ERRANDS_DATABASE_URL", raising=False)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    assert tasks.default_corpus() == stdlib
    assert tasks.SearchIn.model_fields["glob"].default == "*.py"  # and its modules
    app = create_app(
        DemoSettings(database_url=f"sqlite:///{tmp_path}/d.db", data_dir=tmp_path, worker=False)
    )
    demo: Demo = app.state.demo
    assert demo.corpus == stdlib.resolve()
    # What a default search would read (listed, not searched): well over 1000 modules,
    # none from site-packages or caches.
    files = [rel for rel, _ in tasks._files(demo.corpus, "*.py")]
    assert len(files) > 1000
    assert {"os.py", "json/__init__.py", "email/message.py"} <= set(files)
    assert not any(
        part in ("site-packages", "dist-packages", "__pycache__")
        for rel in files
        for part in rel.split("/")
    )
    # The home page names it.
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    demo.accounts.register(ALICE, PASSWORD)
    with TestClient(app) as client:
        site = Site(client, demo)
        site.log_in(ALICE)
        home = client.get("/").text
    assert "Searches the files of the Python standard library." in home
    assert str(demo.corpus) not in home
