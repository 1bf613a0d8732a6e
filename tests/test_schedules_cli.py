"""``errands schedules ls|pause|resume|rm``, run as real processes (``python -m
errands ...``) on SQLite and on PostgreSQL: every owner's schedules unless ``--owner``
narrows them, text and ``--json`` listings with cursors, and a schedule that is missing
(or another owner's, under ``--owner``) is exit 3 with one clear line."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from errands import ANY_OWNER, Errands, ScheduleNotFound
from errands.ids import new_task_id
from tests.test_cli import APP, Result, run_cli
from tests.test_schedules_http import tick_now

pytestmark = [pytest.mark.slow, pytest.mark.databases("sqlite", "postgresql")]


@pytest.fixture
def cli(db_url: str) -> Callable[..., Result]:
    def run(*args: str) -> Result:
        return run_cli(db_url, args)[0]

    return run


def utc(when: datetime | None) -> str:
    assert when is not None
    return f"{when.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def test_ls_lists_every_owners_schedules(db_url: str, e2e_app: Errands) -> None:
    app = e2e_app
    app.db.ensure_schema()
    weekly = app.sync.schedules.create(
        "slow", {"steps": 1}, owner="u1", cron="0 8 * * 1", timezone="Europe/Berlin"
    )
    time.sleep(0.002)  # ids order by creation to the millisecond
    hourly = app.sync.schedules.create("slow_once", {}, owner="u2", every=3600)
    time.sleep(0.002)
    halves = app.sync.schedules.create("slow_once", {}, owner="u1", every=90.5)
    app.sync.schedules.pause(halves.id, owner="u1")
    tick_now(app, hourly.id)
    hourly = app.sync.schedules.get(hourly.id, owner="u2")
    assert hourly.last_task_id is not None

    listed, mine, page, rest = run_cli(
        db_url,
        ["schedules", "ls"],
        ["schedules", "ls", "--owner", "u1", "--json"],
        ["schedules", "ls", "--limit", "2"],
        ["schedules", "ls", "--cursor", weekly.id, "--json", "--app", APP],
    )
    assert listed.returncode == 0, listed.stderr
    lines = [shlex.split(line) for line in listed.stdout.splitlines()]
    assert lines == [
        [
            weekly.id,
            "u1",
            "slow",
            "0 8 * * 1",
            "Europe/Berlin",
            "active",
            "next",
            utc(weekly.next_run_at),
            "last",
            "-",
        ],
        [
            hourly.id,
            "u2",
            "slow_once",
            "3600s",
            "UTC",
            "active",
            "next",
            utc(hourly.next_run_at),
            "last",
            hourly.last_task_id,
        ],
        [halves.id, "u1", "slow_once", "90.5s", "UTC", "paused", "next", "-", "last", "-"],
    ]
    assert listed.stderr == ""

    data = json.loads(mine.stdout)
    assert [s["id"] for s in data["items"]] == [weekly.id, halves.id]
    first = data["items"][0]
    assert (first["cron"], first["every"], first["timezone"], first["paused"]) == (
        "0 8 * * 1",
        None,
        "Europe/Berlin",
        False,
    )
    assert first["payload"] == weekly.payload and first["owner"] == "u1"
    assert datetime.fromisoformat(first["next_run_at"]) == weekly.next_run_at
    assert data["items"][1]["every"] == 90.5 and data["items"][1]["paused"] is True
    assert data["next_cursor"] is None

    # Pages: the cursor goes to stderr (text) or next_cursor (JSON).
    assert [line.split()[0] for line in page.stdout.splitlines()] == [weekly.id, hourly.id]
    assert page.stderr.strip() == f"-- more: --cursor {hourly.id}"
    assert [s["id"] for s in json.loads(rest.stdout)["items"]] == [hourly.id, halves.id]


def test_pause_resume_and_rm(db_url: str, e2e_app: Errands) -> None:
    app = e2e_app
    app.db.ensure_schema()
    s = app.sync.schedules.create("slow_once", {}, owner="u1", every=600)
    other = app.sync.schedules.create("slow_once", {}, owner="u2", every=600)

    paused, refused = run_cli(
        db_url,
        ["schedules", "pause", s.id],
        ["schedules", "pause", other.id, "--owner", "u1"],  # not u1's: not found
    )
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == f"{s.id}: paused"
    after = app.sync.schedules.get(s.id, owner="u1")
    assert after.paused and after.next_run_at is None
    assert refused.returncode == 3 and refused.stdout == ""
    assert refused.stderr.strip() == "errands: schedule not found"
    assert not app.sync.schedules.get(other.id, owner="u2").paused

    before = time.time()
    resumed = run_cli(db_url, ["schedules", "resume", s.id, "--owner", "u1"])[0]
    assert resumed.returncode == 0, resumed.stderr
    after = app.sync.schedules.get(s.id, owner="u1")
    assert not after.paused and after.next_run_at is not None
    assert before + 600 <= after.next_run_at.timestamp() <= time.time() + 600
    assert resumed.stdout.strip() == f"{s.id}: active, next run {utc(after.next_run_at)}"

    removed, missing, malformed = run_cli(
        db_url,
        ["schedules", "rm", s.id],
        ["schedules", "rm", new_task_id()],
        ["schedules", "resume", "nope"],
    )
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == f"{s.id}: deleted"
    with pytest.raises(ScheduleNotFound):
        app.sync.schedules.get(s.id, owner=ANY_OWNER)
    for result in (missing, malformed):
        assert result.returncode == 3, result.stderr
        assert result.stderr.strip() == "errands: schedule not found"
    assert [x.id for x in app.sync.schedules.list(owner=ANY_OWNER)] == [other.id]


def test_bad_usage_exits_2(cli: Callable[..., Result]) -> None:
    for args in (("schedules",), ("schedules", "pause"), ("schedules", "ls", "--limit", "x")):
        result = cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "usage: errands schedules" in result.stderr
    result = cli("schedules", "ls", "--limit", "0")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == "errands: limit must be between 1 and 500"
