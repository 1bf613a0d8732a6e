"""The ``errands`` command line, run as real processes (``python -m errands ...``)
against a worker process where a task has to run."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from errands import ANY_OWNER, Errands, Status
from tests.conftest import ROOT, WorkerProcess, eventually

APP = "tests.apps.e2e:app"
WORKER_ARGS = ("--lease", "2", "--heartbeat", "0.3", "--poll", "0.2")

WAIT = ("--wait", "--timeout", "60")

pytestmark = pytest.mark.slow

#: A progress line in non-TTY mode: ``[####......]  40% running  step 2 of 5``.
PROGRESS = re.compile(r"^\[[#.]+\]\s+(--|\d+)% (queued|running|succeeded|failed|cancelled)\b")


Result = subprocess.CompletedProcess[str]


def run_cli(db_url: str, *commands: Sequence[str], timeout: float = 90) -> list[Result]:
    """Run ``python -m errands ARGS`` for each command, all at once (each start-up
    costs seconds on a busy machine); return their results in order."""
    env = os.environ | {"ERRANDS_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "errands", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    results = []
    try:
        for proc, args in zip(procs, commands, strict=True):
            out, err = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(list(args), proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


@pytest.fixture
def cli(db_url: str) -> Callable[..., Result]:
    """``cli(*args)``: run one ``errands`` command on the test's database."""

    def run(*args: str, timeout: float = 90) -> Result:
        return run_cli(db_url, args, timeout=timeout)[0]

    return run


@pytest.fixture
def worker(spawn_worker: Callable[..., WorkerProcess]) -> Iterator[WorkerProcess]:
    w = spawn_worker(APP, *WORKER_ARGS)
    yield w
    if w.proc.poll() is None:
        w.proc.kill()
        w.proc.wait(10)
    if w.proc.stdout is not None:
        w.proc.stdout.close()


def submitted_id(stderr: str) -> str:
    match = re.search(r"^submitted (\S+)$", stderr, re.MULTILINE)
    assert match, stderr
    return match.group(1)


def first_words(stdout: str, column: int) -> list[str]:
    return [line.split()[column] for line in stdout.splitlines()]


# -- submit --------------------------------------------------------------------------------
def test_submit_wait_prints_progress_then_result(
    cli: Callable[..., Result], e2e_app: Errands, worker: WorkerProcess
) -> None:
    result = cli("submit", APP, "slow", '{"steps": 5, "delay": 0.3}', "--owner", "u1", *WAIT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"steps": 5, "attempt": 1}

    task_id = submitted_id(result.stderr)
    lines = result.stderr.splitlines()
    assert lines[0] == f"submitted {task_id}"
    assert "\r" not in result.stderr and "\x1b" not in result.stderr  # not a terminal
    progress = [PROGRESS.match(line) for line in lines[1:]]
    assert progress and all(progress), lines
    states = [(m.group(1), m.group(2)) for m in progress if m]
    assert states[-1] == ("100", "succeeded")
    assert "step 5 of 5" in lines[-1]
    # One line per change: progress seen while it ran, never the same line twice in a row.
    assert any(status == "running" and pct not in ("--", "100") for pct, status in states)
    assert all(a != b for a, b in pairwise(lines))
    percents = [int(pct) for pct, _ in states if pct != "--"]
    assert percents == sorted(percents)

    record = e2e_app.sync.get(task_id, owner="u1")
    assert record.status is Status.SUCCEEDED and record.result == {"steps": 5, "attempt": 1}


def test_submit_wait_failing_task_exits_1_with_the_safe_message(
    db_url: str, cli: Callable[..., Result], worker: WorkerProcess
) -> None:
    failed, crashed = run_cli(
        db_url,
        ["submit", APP, "fail", '{"reason": "the widget is broken"}', "--owner", "u1", *WAIT],
        ["submit", APP, "crash", '{"secret": "password=hunter2"}', "--owner", "u1", *WAIT],
    )
    assert failed.returncode == 1, failed.stderr
    assert failed.stdout == ""
    assert failed.stderr.splitlines()[-1] == "task failed: TaskFailed: the widget is broken"

    assert crashed.returncode == 1, crashed.stderr
    assert crashed.stdout == ""
    assert crashed.stderr.splitlines()[-1] == (
        "task failed: RuntimeError: the task failed unexpectedly"
    )
    assert "hunter2" not in crashed.stderr

    # ``show`` is for administrators: it includes the traceback. Narrowed to another
    # owner, the task does not exist.
    task_id = submitted_id(crashed.stderr)
    shown, other = run_cli(db_url, ["show", task_id], ["show", task_id, "--owner", "u2"])
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["id"] == task_id and data["status"] == "failed" and data["attempts"] == 1
    assert data["error"] == {"type": "RuntimeError", "message": "the task failed unexpectedly"}
    assert "Traceback" in data["error_detail"]
    assert "RuntimeError: internal detail: password=hunter2" in data["error_detail"]
    assert other.returncode == 3 and other.stdout == ""
    assert "task not found" in other.stderr


def test_submit_bad_input_exits_2_and_writes_nothing(db_url: str, e2e_app: Errands) -> None:
    cases = [
        ("slow", '{"steps": ', "errands: the payload is not valid JSON"),
        ("slow", '{"steps": "many"}', "errands: invalid payload: steps:"),
        ("slow", "[1, 2]", "errands: invalid payload"),
        ("no_such_task", "{}", "errands: no task is registered under the name 'no_such_task'"),
    ]
    results = run_cli(
        db_url,
        *(
            ["submit", APP, name, payload, "--owner", "u1", "--wait", "--timeout", "5"]
            for name, payload, _ in cases
        ),
    )
    for (_, payload, message), result in zip(cases, results, strict=True):
        assert result.returncode == 2, (payload, result.stderr)
        assert result.stderr.startswith(message), (payload, result.stderr)
        assert result.stdout == ""
    assert len(e2e_app.sync.list(owner=ANY_OWNER)) == 0


def test_submit_wait_without_a_worker_says_it_is_queued_and_how_to_start_one(
    db_url: str, e2e_app: Errands
) -> None:
    """No worker runs: the wait says, once the task has stayed queued a few seconds, that
    no worker has claimed it, and how to start one; at the timeout, that it is still
    queued (not "running"), with the same command."""
    (waited,) = run_cli(
        db_url, ["submit", APP, "slow", '{"steps": 1}', "--owner", "u1", "--wait", "--timeout", "7"]
    )
    assert waited.returncode == 4, waited.stderr
    task_id = submitted_id(waited.stderr)
    start = f"errands worker {APP} --database-url "
    assert "waiting: no worker has claimed the task yet; start one with:\n  " + start in (
        waited.stderr
    )
    last = waited.stderr.rstrip().splitlines()
    assert last[-2] == (
        f"errands: task {task_id} is still queued after 7.0 s: no worker has claimed it. "
        "Is a worker running on this database? Start one with:"
    )
    assert last[-1].startswith(f"  {start}sqlite:///") and "still running" not in waited.stderr
    assert e2e_app.sync.get(task_id, owner="u1").status is Status.QUEUED


def test_submit_wait_timing_out_on_a_running_task_says_it_runs(
    cli: Callable[..., Result], e2e_app: Errands, worker: WorkerProcess
) -> None:
    result = cli(
        "submit",
        APP,
        "slow",
        '{"steps": 40, "delay": 0.5}',
        "--owner",
        "u1",
        "--wait",
        "--timeout",
        "4",
    )
    assert result.returncode == 4, result.stderr
    task_id = submitted_id(result.stderr)
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith(f"errands: task {task_id} is still running after 4.0 s (a worker has it")
    assert last.endswith(f"it goes on: see it with errands show {task_id}")
    assert "no worker" not in result.stderr
    e2e_app.sync.cancel(task_id, owner="u1")


def test_database_url_after_the_subcommand(cli: Callable[..., Result], tmp_path: Path) -> None:
    """``--database-url`` before or after the subcommand; after wins; absent after, the
    one before (or ``$ERRANDS_DATABASE_URL``) stays."""
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    made = cli("migrate", "--database-url", f"sqlite:///{first}")
    assert made.returncode == 0 and f"sqlite:///{first}" in made.stdout, made.stderr
    both = cli(
        "--database-url", f"sqlite:///{first}", "migrate", "--database-url", f"sqlite:///{second}"
    )
    assert both.returncode == 0 and f"sqlite:///{second}" in both.stdout, both.stderr
    before = cli("--database-url", f"sqlite:///{first}", "ls")
    assert before.returncode == 0 and before.stdout == "", before.stderr
    submitted = cli(
        "submit", APP, "slow", "{}", "--owner", "u1", "--database-url", f"sqlite:///{second}"
    )
    assert submitted.returncode == 0, submitted.stderr
    task_id = json.loads(submitted.stdout)["id"]
    for args in (
        ("ls", "--database-url", f"sqlite:///{second}"),
        ("show", task_id, "--database-url", f"sqlite:///{second}"),
        ("schedules", "ls", "--database-url", f"sqlite:///{second}"),
        ("schedules", "--database-url", f"sqlite:///{second}", "ls"),
    ):
        result = cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        if args[0] != "schedules":
            assert task_id in result.stdout, args
    assert cli("show", task_id, "--database-url", f"sqlite:///{first}").returncode == 3


# -- ls, show, cancel ----------------------------------------------------------------------
def test_ls_show_and_cancel_queued(
    db_url: str, cli: Callable[..., Result], e2e_app: Errands
) -> None:
    submitted = cli("submit", APP, "slow", '{"steps": 1}', "--owner", "u1")
    assert submitted.returncode == 0, submitted.stderr
    data = json.loads(submitted.stdout)
    assert data["status"] == "queued" and data["owner"] == "u1" and data["name"] == "slow"
    assert data["payload"] == {"steps": 1, "delay": 0.1, "log": None}
    assert "error_detail" not in data  # submit answers as the user would see it
    ids = [data["id"]]
    for owner, steps in (("u2", 2), ("u1", 3)):
        time.sleep(0.005)  # ids order by creation to the millisecond
        ids.append(e2e_app.sync.submit("slow", {"steps": steps}, owner=owner).id)

    listed, mine, page, rest = run_cli(
        db_url,
        ["ls"],
        ["ls", "--owner", "u1", "--json"],
        ["ls", "--limit", "2"],
        ["ls", "--cursor", ids[1], "--json"],
    )
    assert listed.returncode == 0, listed.stderr
    assert first_words(listed.stdout, 0) == ids[::-1]  # newest first
    assert all(line.split()[1:3] == ["queued", "-"] for line in listed.stdout.splitlines())
    assert first_words(listed.stdout, 3) == ["u1", "u2", "u1"]
    assert first_words(listed.stdout, 4) == ["slow"] * 3
    assert [r["id"] for r in json.loads(mine.stdout)["items"]] == [ids[2], ids[0]]
    # Pages: the cursor goes to stderr.
    assert first_words(page.stdout, 0) == [ids[2], ids[1]]
    assert page.stderr.strip() == f"-- more: --cursor {ids[1]}"
    assert [r["id"] for r in json.loads(rest.stdout)["items"]] == [ids[0]]
    assert json.loads(rest.stdout)["next_cursor"] is None

    cancelled, other = run_cli(db_url, ["cancel", ids[1]], ["cancel", ids[0], "--owner", "u2"])
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"{ids[1]}: cancelled"
    # Someone else's task: not found (exit 3), and nothing changes.
    assert other.returncode == 3 and "task not found" in other.stderr

    by_status, shown = run_cli(db_url, ["ls", "--status", "cancelled", "--json"], ["show", ids[1]])
    assert [r["id"] for r in json.loads(by_status.stdout)["items"]] == [ids[1]]
    record = json.loads(shown.stdout)
    assert record["status"] == "cancelled" and record["cancel_requested"] is True
    assert record["finished_at"] is not None and record["attempts"] == 0
    assert [r.status for r in e2e_app.sync.list(owner="u1")] == [Status.QUEUED] * 2


def test_cancel_running_task(
    cli: Callable[..., Result], e2e_app: Errands, worker: WorkerProcess
) -> None:
    record = e2e_app.sync.submit("slow", {"steps": 300, "delay": 0.1}, owner="u1")
    eventually(
        lambda: e2e_app.sync.get(record.id, owner="u1").status is Status.RUNNING,
        "the task to start",
        timeout=30,
    )

    result = cli("cancel", record.id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{record.id}: cancel requested"
    final = e2e_app.sync.wait(record.id, owner="u1", timeout=30, poll=0.2)
    assert final.status is Status.CANCELLED
    # Cancelling a finished task changes nothing.
    again = cli("cancel", record.id)
    assert again.returncode == 0 and again.stdout.strip() == f"{record.id}: cancelled"
    assert e2e_app.sync.get(record.id, owner="u1").version == final.version


# -- migrate, purge ------------------------------------------------------------------------
def test_migrate_fresh_database(cli: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    url = f"sqlite:///{path}"
    for _ in range(2):  # a second run has nothing to do
        result = cli("--database-url", url, "migrate")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("errands schema is up to date")
        with sqlite3.connect(path) as conn:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            versions = conn.execute("SELECT version_num FROM errands_alembic_version").fetchall()
            tasks = conn.execute("SELECT count(*) FROM errands_task").fetchone()
        assert {"errands_task", "errands_job", "errands_output"} <= tables
        assert len(versions) == 1 and tasks == (0,)


def test_purge_deletes_only_expired_records(
    cli: Callable[..., Result],
    e2e_app: Errands,
    spawn_worker: Callable[..., WorkerProcess],
    db_url: str,
    tmp_path: Path,
) -> None:
    log = str(tmp_path / "log")
    expiring = [e2e_app.sync.submit("ephemeral", {"n": n}, owner="u1").id for n in range(3)]
    kept = [e2e_app.sync.submit("quick", {"log": log}, owner="u1").id for _ in range(2)]
    # Not due yet: still queued after the burst worker is done, so never purged.
    later = e2e_app.sync.submit("ephemeral", {"n": 9}, owner="u1", run_at=timedelta(hours=1))
    cancelled = e2e_app.sync.submit("ephemeral", {"n": 8}, owner="u1", run_at=timedelta(hours=1))
    e2e_app.sync.cancel(cancelled.id, owner="u1")
    expiring.append(cancelled.id)

    burst = spawn_worker(APP, *WORKER_ARGS, "--burst")
    try:
        assert burst.proc.wait(60) == 0, burst.output()
    finally:
        assert burst.proc.stdout is not None
        burst.proc.stdout.close()

    records = {r.id: r for r in e2e_app.sync.list(owner=ANY_OWNER, limit=100)}
    assert {records[i].status for i in expiring[:3] + kept} == {Status.SUCCEEDED}
    assert records[later.id].status is Status.QUEUED and records[later.id].expires_at is None
    for i in expiring:
        expires, finished = records[i].expires_at, records[i].finished_at
        assert expires is not None and finished is not None
        assert timedelta(0) < expires - finished <= timedelta(seconds=1)
    for i in kept:
        expires = records[i].expires_at
        assert expires is not None and expires > datetime.now(UTC) + timedelta(days=6)
    db_path = db_url.removeprefix("sqlite:///")
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM errands_output").fetchone() == (3,)

    # Once every expiring record is past its expiry, purge.
    last = max(records[i].expires_at or datetime.max.replace(tzinfo=UTC) for i in expiring)
    eventually(lambda: datetime.now(UTC) > last, "every expiring record to expire", timeout=10)
    purged = cli("purge")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.strip() == "purged 4 expired task record(s)"
    remaining = {r.id for r in e2e_app.sync.list(owner=ANY_OWNER, limit=100)}
    assert remaining == {*kept, later.id}
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM errands_output").fetchone() == (0,)

    again = cli("purge")
    assert again.returncode == 0 and again.stdout.strip() == "purged 0 expired task record(s)"
    assert {r.id for r in e2e_app.sync.list(owner=ANY_OWNER, limit=100)} == remaining


def test_unreachable_database_is_one_clear_line_and_exit_5(tmp_path: Path) -> None:
    for url in ("postgresql://postgres@127.0.0.1:1/nowhere", f"sqlite:///{tmp_path}/no/dir.db"):
        result = run_cli(url, ["ls"], ["worker", APP, "--burst"])
        for r in result:
            assert r.returncode == 5, r.stderr
            assert r.stderr.count("errands: cannot use the database: ") == 1
            assert "Traceback" not in r.stderr
