"""Schedules in the demo, without a browser: "Repeat this search" on a search's page
(daily and weekly, in the time zone sent with the form), the Schedules page with pause,
resume and delete, another user's schedules answering the 404 page on every URL, the
form's messages (a bad time zone, the per-user limit) with nothing written, a tick run
by the demo's worker and the pages that tell of it, and the admin's list of every
schedule. The app runs with its in-process worker on a SQLite file (``TestClient`` as a
context manager runs the lifespan)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import update
from starlette.testclient import TestClient  # its httpx2 warning is ignored in pyproject

from errands import ANY_OWNER, Schedule, ScheduleNotFound, Status
from errands.demo.schedules import PAGE_SIZE
from errands.demo.web import Demo
from errands.store.schema import schedule_table
from tests.apps.demo_site import PASSWORD, DemoClient, build_demo
from tests.conftest import eventually

ALICE = "alice@example.com"
BOB = "bob@example.com"
ADMIN = "boss@example.com"
BERLIN = "Europe/Berlin"
MISSING = "01234567-89ab-7def-8123-456789abcdef"
#: The default limit of schedules per account (``DemoSettings.max_schedules_per_user``).
LIMIT = 20


class Site(DemoClient):
    def schedules(self, email: str) -> list[Schedule]:
        return self.demo.errands.sync.schedules.list(owner=self.owner(email), limit=500)

    def all_schedules(self) -> list[Schedule]:
        return self.demo.errands.sync.schedules.list(owner=ANY_OWNER, limit=500)

    def schedule(self, schedule_id: str) -> Schedule:
        return self.demo.errands.sync.schedules.get(schedule_id, owner=ANY_OWNER)

    def repeat_form(self, task_id: str, **fields: str) -> httpx.Response:
        """Post the "Repeat this search" form of the task's page (with the session's
        CSRF token unless ``fields`` gives one)."""
        data = {"repeat": "daily", "at": "08:30", "timezone": BERLIN} | fields
        data.setdefault("csrf", self.csrf(f"/tasks/{task_id}"))
        r: httpx.Response = self.client.post(
            f"/tasks/{task_id}/repeat", data=data, follow_redirects=False
        )
        return r

    def repeat(self, task_id: str, **fields: str) -> Schedule:
        """Repeat the search through the form; the schedule it made."""
        before = {s.id for s in self.all_schedules()}
        r = self.repeat_form(task_id, **fields)
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/schedules"
        (made,) = [s for s in self.all_schedules() if s.id not in before]
        return made

    def post(self, path: str, **fields: str) -> httpx.Response:
        data = {"csrf": self.csrf("/schedules")} | fields
        r: httpx.Response = self.client.post(path, data=data, follow_redirects=False)
        return r

    def rows(self, path: str = "/schedules") -> dict[str, str]:
        """The schedules a list page shows: id → the row's text, tags dropped."""
        r = self.client.get(path)
        assert r.status_code == 200, r.text
        return {
            m[1]: text_of(m[2])
            for m in re.finditer(r'<tr data-schedule-id="([^"]+)"[^>]*>(.*?)</tr>', r.text, re.S)
        }


def text_of(fragment: str) -> str:
    """The text of some HTML, its white space collapsed."""
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())
    return re.sub(r" ([.,)])", r"\1", text)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    app = build_demo(tmp_path, monkeypatch, poll_interval=0.1)
    demo: Demo = app.state.demo
    # A schedule declared in code (the worker writes it when it starts): only the
    # admin's list shows it.
    demo.errands.schedule("search", {"query": "nightly"}, cron="0 3 * * *", key="nightly")
    demo.accounts.register(ALICE, PASSWORD)
    demo.accounts.register(BOB, PASSWORD)
    demo.accounts.make_admin(ADMIN, PASSWORD)
    with TestClient(app) as client:
        yield Site(client, demo)


def finished_search(site: Site, query: str = "needle") -> str:
    task_id = site.search(query)
    assert site.finished(task_id).status is Status.SUCCEEDED
    return task_id


def wall(value: datetime | None, zone: str) -> tuple[int, int, int]:
    """A time's weekday (Monday 0), hour and minute in ``zone``."""
    assert value is not None
    local = value.astimezone(ZoneInfo(zone))
    return local.weekday(), local.hour, local.minute


# -- creating ------------------------------------------------------------------------------
def test_repeat_this_search_daily_and_weekly_in_the_zone_sent(site: Site) -> None:
    site.log_in(ALICE)
    task_id = finished_search(site)
    record = site.record(task_id)
    page = site.client.get(f"/tasks/{task_id}").text
    # A fresh form: the browser's script fills in its zone and time (UTC without it).
    form = re.search(r'<form method="post" action="/tasks/[^"]+/repeat".*?</form>', page, re.S)
    assert form, page
    assert 'data-fill="browser"' in form[0] and 'name="timezone" value="UTC"' in form[0]
    assert "/static/repeat-form.js" in page

    daily = site.repeat(task_id, repeat="daily", at="08:30", timezone=BERLIN)
    assert (daily.owner, daily.name, daily.payload) == (site.owner(ALICE), "search", record.payload)
    assert (daily.cron, daily.every, daily.timezone) == ("30 8 * * *", None, BERLIN)
    assert not daily.paused and daily.last_task_id is None and daily.code_key is None
    assert wall(daily.next_run_at, BERLIN)[1:] == (8, 30)

    weekly = site.repeat(task_id, repeat="wednesday", at="18:05", timezone="America/New_York")
    assert (weekly.cron, weekly.timezone) == ("5 18 * * 3", "America/New_York")
    assert wall(weekly.next_run_at, "America/New_York") == (2, 18, 5)
    sunday = site.repeat(task_id, repeat="sunday", at="00:00:00", timezone="UTC")
    assert (sunday.cron, sunday.timezone) == ("0 0 * * 0", "UTC")

    rows = site.rows()
    assert list(rows) == [daily.id, weekly.id, sunday.id]  # oldest first
    assert rows[daily.id].startswith("search “needle” in *.py daily at 08:30 (Europe/Berlin)")
    assert "weekly on Wednesday at 18:05 (America/New_York)" in rows[weekly.id]
    assert "weekly on Sunday at 00:00 (UTC)" in rows[sunday.id]
    assert daily.next_run_at is not None
    shown = daily.next_run_at.astimezone(ZoneInfo(BERLIN)).strftime("%a %Y-%m-%d 08:30 %Z")
    assert shown in rows[daily.id]
    for text in rows.values():
        assert "never active Pause Delete" in text  # no run yet, not paused
    assert site.schedules(BOB) == []
    # The navigation leads there.
    assert '<a href="/schedules">Schedules</a>' in site.client.get("/").text


def test_only_a_finished_search_offers_repeat_and_only_a_search_is_repeated(site: Site) -> None:
    site.log_in(ALICE)
    later = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    waiting = site.submit("search", {"query": "later"}, run_at=later)
    page = site.client.get(f"/tasks/{waiting}").text
    assert 'id="repeat"' not in page and "Repeat this search" not in page
    search_id = finished_search(site)
    r = site.client.post(
        f"/tasks/{search_id}/export", data={"csrf": site.csrf()}, follow_redirects=False
    )
    export_id = r.headers["location"].removeprefix("/tasks/")
    site.finished(export_id)
    assert "Repeat this search" not in site.client.get(f"/tasks/{export_id}").text
    r = site.repeat_form(export_id)
    assert r.status_code == 303 and r.headers["location"] == f"/tasks/{export_id}"
    assert site.schedules(ALICE) == []


# -- pause, resume, delete -----------------------------------------------------------------
def test_pause_resume_and_delete(site: Site) -> None:
    site.log_in(ALICE)
    task_id = finished_search(site)
    s = site.repeat(task_id, repeat="friday", at="07:15")
    next_run = s.next_run_at

    r = site.post(f"/schedules/{s.id}/pause")
    assert r.status_code == 303 and r.headers["location"] == "/schedules"
    paused = site.schedule(s.id)
    assert paused.paused and paused.next_run_at is None
    row = site.rows()[s.id]
    assert "— never paused Resume Delete" in row
    assert f'action="/schedules/{s.id}/resume"' in site.client.get("/schedules").text

    r = site.post(f"/schedules/{s.id}/resume")
    assert r.status_code == 303 and r.headers["location"] == "/schedules"
    resumed = site.schedule(s.id)
    assert not resumed.paused and resumed.next_run_at == next_run  # the same Friday 07:15
    assert "active Pause Delete" in site.rows()[s.id]

    # The schedule's own page, whose forms come back to it.
    page = site.client.get(f"/schedules/{s.id}")
    assert page.status_code == 200
    text = text_of(page.text)
    assert "search “needle” in *.py" in text and "weekly on Friday at 07:15 (Europe/Berlin)" in text
    r = site.post(f"/schedules/{s.id}/pause", back="schedule")
    assert r.status_code == 303 and r.headers["location"] == f"/schedules/{s.id}"
    assert "paused" in text_of(site.client.get(f"/schedules/{s.id}").text)
    # Pausing twice changes nothing.
    assert site.post(f"/schedules/{s.id}/pause").status_code == 303
    assert site.schedule(s.id).paused

    r = site.post(f"/schedules/{s.id}/delete")
    assert r.status_code == 303 and r.headers["location"] == "/schedules"
    with pytest.raises(ScheduleNotFound):
        site.schedule(s.id)
    assert site.rows() == {}
    assert "No schedules yet." in site.client.get("/schedules").text
    assert site.client.get(f"/schedules/{s.id}").status_code == 404
    assert site.post(f"/schedules/{s.id}/delete").status_code == 404


def test_schedule_forms_need_the_csrf_token(site: Site) -> None:
    site.log_in(ALICE)
    task_id = finished_search(site)
    s = site.repeat(task_id)
    stranger = TestClient(site.client.app)  # another browser (not started)
    theirs = re.search(r'name="csrf" value="([^"]+)"', stranger.get("/login").text)
    assert theirs
    for csrf in ({}, {"csrf": ""}, {"csrf": "x" * 32}, {"csrf": theirs[1]}):
        for action in ("pause", "resume", "delete"):
            r = site.client.post(f"/schedules/{s.id}/{action}", data=csrf, follow_redirects=False)
            assert r.status_code == 403 and "Form expired" in r.text, action
        fields = {"repeat": "daily", "at": "09:00", "timezone": BERLIN} | csrf
        r = site.client.post(f"/tasks/{task_id}/repeat", data=fields, follow_redirects=False)
        assert r.status_code == 403
    assert site.schedules(ALICE) == [s]
    # Signed out: the login page, for the pages and the forms alike.
    site.log_in(None)
    for path in ("/schedules", f"/schedules/{s.id}"):
        r = site.client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/login?next={path}"
    r = site.client.post(f"/schedules/{s.id}/delete", data={}, follow_redirects=False)
    assert r.status_code == 303
    assert site.schedules(ALICE) == [s]


# -- ownership -----------------------------------------------------------------------------
def test_another_users_schedule_is_a_missing_page_on_every_url(site: Site) -> None:
    site.log_in(ALICE)
    task_id = finished_search(site)
    s = site.repeat(task_id)
    site.log_in(BOB)
    bob_task = finished_search(site, "hay")
    bob_schedule = site.repeat(bob_task, repeat="monday")
    assert site.rows() == {bob_schedule.id: site.rows()[bob_schedule.id]}  # his own only

    missing = site.client.get(f"/schedules/{MISSING}")
    assert missing.status_code == 404 and "Not found" in missing.text
    for other in (s.id, "not-an-id"):
        r = site.client.get(f"/schedules/{other}")
        assert (r.status_code, r.text) == (404, missing.text)
    for action in ("pause", "resume", "delete"):
        answers = {site.post(f"/schedules/{x}/{action}").text for x in (s.id, MISSING)}
        for x in (s.id, MISSING):
            assert site.post(f"/schedules/{x}/{action}").status_code == 404
        assert answers == {missing.text}, action
    # Nor can Bob repeat Alice's search.
    r = site.repeat_form(task_id, csrf=site.csrf())
    assert r.status_code == 404
    after = site.schedule(s.id)
    assert after == s  # not paused, resumed nor deleted
    assert site.schedules(ALICE) == [s] and site.schedules(BOB) == [bob_schedule]


# -- the form's messages -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"timezone": "Mars/Olympus_Mons"},
            "“Mars/Olympus_Mons” is not a time zone this site knows. Use a name such as "
            "Europe/Berlin.",
        ),
        (
            {"timezone": "../../../etc/passwd"},
            "“../../../etc/passwd” is not a time zone this site knows.",
        ),
        ({"timezone": "  "}, "Enter a time zone, such as Europe/Berlin."),
        ({"at": "25:00"}, "Enter a time of day such as 08:30."),
        ({"at": "8.30"}, "Enter a time of day such as 08:30."),
        ({"repeat": "hourly"}, "Choose how often: every day, or one day a week."),
    ],
)
def test_a_bad_form_shows_it_again_with_a_message_and_writes_nothing(
    site: Site, fields: dict[str, str], message: str
) -> None:
    site.log_in(ALICE)
    task_id = finished_search(site)
    r = site.repeat_form(task_id, **fields)
    assert r.status_code == 422, r.text
    error = re.search(r'<p class="error" role="alert" id="repeat-error">(.*?)</p>', r.text)
    assert error and message in html.unescape(error[1]), r.text
    # The form again, with what was sent (the script leaves it as it is).
    form = re.search(r'<form [^>]*id="repeat"[^>]*>', r.text)
    assert form and "data-fill" not in form[0]
    sent = {"repeat": "daily", "at": "08:30", "timezone": BERLIN} | fields
    if sent["repeat"] in ("daily",):
        assert '<option value="daily" selected>' in r.text
    assert f'name="at" value="{html.escape(sent["at"])}"' in r.text
    assert f'name="timezone" value="{html.escape(sent["timezone"])}"' in r.text
    # Still the task's page: its hits are there.
    assert 'id="hits"' in r.text and "needle" in r.text
    assert site.schedules(ALICE) == []


def test_the_limit_of_schedules_per_user_has_a_clear_message(site: Site) -> None:
    site.log_in(ALICE)
    task_id = finished_search(site)
    payload = site.record(task_id).payload
    for i in range(LIMIT - 1):
        site.demo.errands.sync.schedules.create(
            "search", payload, owner=site.owner(ALICE), cron=f"{i} 6 * * *"
        )
    site.repeat(task_id)  # the twentieth
    r = site.repeat_form(task_id, at="10:00")
    assert r.status_code == 409, r.text
    assert (
        f"You already have {LIMIT} schedules, the most one account may have. Delete one on "
        "the Schedules page to repeat this search." in html.unescape(r.text)
    )
    assert len(site.schedules(ALICE)) == LIMIT
    # The Schedules page shows them all; deleting one makes room.
    rows = site.rows()
    assert len(rows) == LIMIT and LIMIT < PAGE_SIZE
    assert site.post(f"/schedules/{next(iter(rows))}/delete").status_code == 303
    site.repeat(task_id, at="10:00")
    # The limit is per user.
    site.log_in(BOB)
    site.repeat(finished_search(site, "hay"))


# -- a tick --------------------------------------------------------------------------------
def make_due(site: Site, schedule_id: str) -> float:
    """Move the schedule's next tick to a second ago (as if its time had come); the
    tick."""
    tick = float(int(time.time()) - 1)
    with site.demo.errands.db.engine.begin() as conn:
        conn.execute(
            update(schedule_table)
            .where(schedule_table.c.id == schedule_id)
            .values(next_run_at=tick)
        )
    return tick


def test_a_tick_runs_the_search_and_the_pages_tell_of_it(site: Site) -> None:
    site.log_in(ALICE)
    source = finished_search(site)
    s = site.repeat(source, repeat="daily", at="06:45", timezone=BERLIN)
    tick = make_due(site, s.id)

    def fired() -> Schedule | None:
        found = site.schedule(s.id)
        return found if found.last_task_id else None

    after = eventually(fired, "the worker to fire the tick")
    assert after.last_run_at == datetime.fromtimestamp(tick, UTC)
    assert wall(after.next_run_at, BERLIN)[1:] == (6, 45)
    task = site.finished(str(after.last_task_id))
    assert task.status is Status.SUCCEEDED
    assert (task.owner, task.name, task.payload) == (site.owner(ALICE), "search", s.payload)
    assert (task.schedule_id, task.scheduled_for) == (s.id, after.last_run_at)
    assert task.result == site.record(source).result | {"seconds": task.result["seconds"]}

    # The task's page says where it came from (the tick as the schedule's zone reads it).
    page = site.client.get(f"/tasks/{task.id}").text
    said = re.search(r'<p class="muted" id="scheduled-by">(.*?)</p>', page, re.S)
    assert said, page
    local = datetime.fromtimestamp(tick, ZoneInfo(BERLIN)).strftime("%a %Y-%m-%d %H:%M %Z")
    assert text_of(said[1]) == (
        f"Created by schedule daily at 06:45 (Europe/Berlin) for the tick at {local}."
    )
    assert f'<a href="/schedules/{s.id}">' in said[1]
    # The Schedules page links the last run to its task.
    listed = site.client.get("/schedules").text
    assert f'<a href="/tasks/{task.id}">' in listed
    assert local in site.rows()[s.id]
    assert "scheduled-by" not in site.client.get(f"/tasks/{source}").text
    # A task outlives its schedule; its page says the schedule is gone.
    assert site.post(f"/schedules/{s.id}/delete").status_code == 303
    page = site.client.get(f"/tasks/{task.id}").text
    said = re.search(r'<p class="muted" id="scheduled-by">(.*?)</p>', page, re.S)
    assert said
    utc = datetime.fromtimestamp(tick, UTC).strftime("%a %Y-%m-%d %H:%M UTC")
    assert text_of(said[1]) == (
        f"Created by schedule {s.id[:8]} (since deleted) for the tick at {utc}."
    )


# -- the admin's list ----------------------------------------------------------------------
def test_admin_sees_every_schedule_and_others_get_the_404_page(site: Site) -> None:
    site.log_in(ALICE)
    alice_schedule = site.repeat(finished_search(site), at="08:00")
    site.log_in(BOB)
    bob_schedule = site.repeat(finished_search(site, "hay"), repeat="tuesday", at="19:30")
    assert site.post(f"/schedules/{bob_schedule.id}/pause").status_code == 303
    tick = make_due(site, alice_schedule.id)
    fired = eventually(
        lambda: site.schedule(alice_schedule.id).last_task_id, "the worker to fire the tick"
    )
    code = eventually(
        lambda: [s for s in site.all_schedules() if s.code_key == "nightly"],
        "the worker to write the schedule declared in code",
    )[0]

    site.log_in(ADMIN)
    page = site.client.get("/admin/schedules")
    assert page.status_code == 200
    rows = site.rows("/admin/schedules")
    assert list(rows) == sorted([alice_schedule.id, bob_schedule.id, code.id])
    local = datetime.fromtimestamp(tick, ZoneInfo(BERLIN)).strftime("%a %Y-%m-%d %H:%M %Z")
    assert rows[alice_schedule.id].startswith(
        f"{ALICE} search “needle” in *.py daily at 08:00 (Europe/Berlin) active"
    )
    assert rows[alice_schedule.id].endswith(local)
    assert f'<a href="/admin/tasks/{fired}">' in page.text
    assert rows[bob_schedule.id] == (
        f"{BOB} search “hay” in *.py weekly on Tuesday at 19:30 (Europe/Berlin) paused — never"
    )
    assert rows[code.id].startswith(
        "system search “nightly” in *.py (in code: nightly) daily at 03:00 (UTC) active"
    )
    assert site.client.get(f"/admin/tasks/{fired}").status_code == 200  # the dashboard's page
    assert '<a href="/admin/schedules">All schedules</a>' in site.client.get("/").text
    assert site.client.post("/admin/schedules", data={"csrf": site.csrf()}).status_code == 405

    # Everyone else: the demo's 404 page, as on the dashboard's paths, whatever the method.
    for who in (None, ALICE, BOB):
        site.log_in(who)
        dashboard = site.client.get("/admin")
        assert dashboard.status_code == 404
        for path in ("/admin/schedules", "/admin/schedules?after=" + alice_schedule.id):
            r = site.client.get(path)
            assert (r.status_code, r.text) == (404, dashboard.text), (who, path)
        csrf = site.csrf() if who else "x"
        r = site.client.post("/admin/schedules", data={"csrf": csrf}, follow_redirects=False)
        assert (r.status_code, r.text) == (404, dashboard.text)
        assert site.client.delete("/admin/schedules").status_code == 404
        assert "/admin/schedules" not in site.client.get("/login" if who is None else "/").text


def test_admin_list_pages_through_many_schedules(site: Site) -> None:
    owners = [f"user:{900 + i}" for i in range(PAGE_SIZE // 10 + 1)]
    made: list[Any] = []
    for owner in owners:
        for i in range(10):
            s = site.demo.errands.sync.schedules.create(
                "search", {"query": f"q{i}"}, owner=owner, cron=f"{i} 5 * * *"
            )
            made.append(s.id)
    code = eventually(
        lambda: [s.id for s in site.all_schedules() if s.code_key], "the code schedule"
    )
    everything = sorted(made + code)
    site.log_in(ADMIN)
    first = site.client.get("/admin/schedules").text
    assert len(site.rows("/admin/schedules")) == PAGE_SIZE
    more = re.search(r'<a id="more" href="(/admin/schedules\?after=[^"]+)">', first)
    assert more
    rest = site.rows(html.unescape(more[1]))
    assert list(site.rows("/admin/schedules")) + list(rest) == everything
    assert 'id="more"' not in site.client.get(html.unescape(more[1])).text
    # A bad cursor: from the start.
    assert list(site.rows("/admin/schedules?after=nonsense")) == everything[:PAGE_SIZE]
