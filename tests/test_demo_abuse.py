"""The demo against abuse, over HTTP: the per-user submit rate of the search form and
the export button (one limiter with the API's), login and registration throttled per
e-mail address and per client address, registration and login answering alike, and
the password-hashing lane that keeps a flood of logins from holding up other pages.

Each test builds the demo on its own SQLite file with the settings it studies. Most use
Starlette's ``TestClient`` and cheap password hashes; the flood tests run a real uvicorn
server, 50 parallel clients and ``argon2-cffi``'s default (costly) hashes.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from starlette.testclient import TestClient  # its httpx2 warning is ignored in pyproject

from errands.demo import accounts
from errands.demo.accounts import WRONG
from errands.demo.signin import BUSY
from errands.demo.throttle import Rules, Throttle
from errands.demo.web import Demo, DemoSettings, create_app
from tests.apps.demo_server import served
from tests.apps.demo_site import PASSWORD, DemoClient, csrf_in
from tests.conftest import eventually

ALICE = "alice@example.com"
BOB = "bob@example.com"
ERROR = re.compile(r'<p class="error" role="alert">([^<]*)</p>')
MESSAGE = re.compile(r'<h1>([^<]*)</h1>\s*<p class="error">([^<]*)</p>')
FLOOD = 50


def build(tmp_path: Path, *, big: int = 0, **settings: Any) -> FastAPI:
    """The demo on a SQLite file in ``tmp_path`` searching a two-file corpus (and
    ``big`` more files in ``big/``), with Alice and Bob registered."""
    corpus = tmp_path / "corpus"
    (corpus / "big").mkdir(parents=True)
    (corpus / "one.py").write_text("NEEDLE = 1\n")
    (corpus / "two.py").write_text("# a needle\n")
    for n in range(big):
        (corpus / "big" / f"mod_{n:04d}.py").write_text(f"VALUE = {n}  # needle\n")
    app = create_app(
        DemoSettings(
            database_url=f"sqlite:///{tmp_path}/d.db",
            data_dir=tmp_path / "data",
            corpus=corpus,
            worker_options={"poll_interval": 0.1, "heartbeat_interval": 0.25},
            **settings,
        )
    )
    demo: Demo = app.state.demo
    demo.accounts.register(ALICE, PASSWORD)
    demo.accounts.register(BOB, PASSWORD)
    return app


@contextmanager
def site(tmp_path: Path, **settings: Any) -> Iterator[DemoClient]:
    app = build(tmp_path, **settings)
    with TestClient(app) as client:
        yield DemoClient(client, app.state.demo)


@pytest.fixture
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap password hashes (these tests sign in many times)."""
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))


@dataclass(frozen=True)
class Answer:
    """A POST's answer, with the address typed and the CSRF token taken out of the
    page (so answers to different addresses and sessions can be compared)."""

    status: int
    page: str
    retry_after: str | None
    location: str | None

    @property
    def error(self) -> str | None:
        found = ERROR.search(self.page)
        return found[1] if found else None


def attempt(client: TestClient, path: str, email: str, password: str) -> Answer:
    """Post the login or register form (``path``) from a new session."""
    client.cookies.clear()
    csrf = csrf_in(client.get(path).text)
    data = {"email": email, "password": password, "csrf": csrf}
    r = client.post(path, data=data, follow_redirects=False)
    page = r.text.replace(email, "EMAIL").replace(csrf, "CSRF")
    return Answer(r.status_code, page, r.headers.get("retry-after"), r.headers.get("location"))


def signed_in_as(client: TestClient) -> str | None:
    r = client.get("/", follow_redirects=False)
    found = re.search(r'class="who">([^<]+)<', r.text)
    return found[1] if found else None


def too_fast(r: httpx.Response, what: str) -> int:
    """Check the "too fast" page; the seconds it names."""
    assert r.status_code == 429, (r.status_code, r.text)
    seconds = int(r.headers["retry-after"])
    assert 1 <= seconds <= 50
    found = MESSAGE.search(r.text)
    assert found, r.text
    assert found.groups() == (
        "Too fast",
        f"You are starting {what} too fast; try again in {seconds} s.",
    )
    return seconds


# -- the submit rate ------------------------------------------------------------------------
def test_search_form_export_and_api_share_one_rate_a_burst_then_429(
    tmp_path: Path, cheap_hashes: None
) -> None:
    # A burst of 4, then one every 50 s.
    with site(tmp_path, submit_burst=4, submit_rate=0.02) as s:
        s.log_in(ALICE)
        first = s.search()
        assert s.finished(first).status.value == "succeeded"
        s.search()
        s.submit("search", {"query": "needle"})
        s.submit("search", {"query": "needle"})  # the burst is spent

        for _ in range(3):
            data = {"query": "needle", "glob": "*.py", "csrf": s.csrf()}
            too_fast(s.client.post("/search", data=data, follow_redirects=False), "searches")
        r = s.client.post(f"/tasks/{first}/export", data={"csrf": s.csrf()}, follow_redirects=False)
        too_fast(r, "exports")
        r = s.client.post(
            "/api/tasks",
            json={"name": "search", "payload": {"query": "needle"}},
            headers={"X-CSRF-Token": s.csrf()},
        )
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 50, r.text

        # Nothing was submitted beyond the burst.
        mine = s.demo.errands.sync.list(owner=s.owner(ALICE), limit=100).items
        assert [t.name for t in mine] == ["search"] * 4
        # Each user has a burst of their own.
        s.log_in(BOB)
        s.search()


# -- the per-user running cap ---------------------------------------------------------------
def test_a_search_held_back_by_the_users_own_running_searches_says_so(
    tmp_path: Path, cheap_hashes: None
) -> None:
    # 1500 files at 5 ms each ("slow"): a search runs for about 8 s.
    with site(tmp_path, big=1500) as s:
        s.log_in(ALICE)
        slow = [s.search(folders="big", slow="on") for _ in range(3)]

        def running() -> list[str]:
            return [s.record(t).status.value for t in slow]

        eventually(lambda: running() == ["running", "running", "queued"], "two of three to run")
        note = "Waiting: you already have 2 searches running."
        page = s.client.get(f"/tasks/{slow[2]}").text
        assert f'data-src="/tasks/{slow[2]}/waiting">{note}</p>' in page
        assert s.client.get(f"/tasks/{slow[2]}/waiting").json() == {
            "status": "queued",
            "waiting": note,
        }
        # The worker has slots to spare: another user's search does not wait.
        s.log_in(BOB)
        assert s.finished(s.search()).status.value == "succeeded"
        assert running()[2] == "queued"

        s.demo.errands.sync.cancel(slow[0], owner=s.owner(ALICE))
        eventually(lambda: running()[2] == "running", "the third to start")
        s.log_in(ALICE)
        assert s.client.get(f"/tasks/{slow[2]}/waiting").json() == {
            "status": "running",
            "waiting": None,
        }
        page = s.client.get(f"/tasks/{slow[2]}").text
        assert re.search(r'<p id="waiting"[^>]* hidden></p>', page), page  # an empty note
        for task_id in slow[1:]:
            s.demo.errands.sync.cancel(task_id, owner=s.owner(ALICE))


# -- login throttling -----------------------------------------------------------------------
def test_login_is_throttled_per_account_the_right_password_too(
    tmp_path: Path, cheap_hashes: None
) -> None:
    with site(tmp_path) as s:  # the defaults: 5 attempts, then 30 s
        c = s.client
        for _ in range(5):
            wrong = attempt(c, "/login", ALICE, "not the password")
            assert (wrong.status, wrong.error) == (400, WRONG)

        right = attempt(c, "/login", ALICE, PASSWORD)
        assert right.status == 429 and right.retry_after == "30"
        assert right.error == "Too many attempts; try again in 30 s."
        assert signed_in_as(c) is None
        # The register form is throttled alike.
        again = attempt(c, "/register", ALICE, PASSWORD)
        assert again.status == 429 and again.retry_after in ("29", "30")
        assert again.error == f"Too many attempts; try again in {again.retry_after} s."
        assert signed_in_as(c) is None
        # Another account, from the same address, is not locked out.
        bob = attempt(c, "/login", BOB, PASSWORD)
        assert (bob.status, bob.location) == (303, "/")
        assert signed_in_as(c) == BOB


def test_login_is_throttled_per_client_address(tmp_path: Path, cheap_hashes: None) -> None:
    with site(tmp_path) as s:  # the defaults: 20 attempts per address
        c = s.client
        for n in range(20):
            wrong = attempt(c, "/login", f"guess{n}@example.com", PASSWORD)
            assert (wrong.status, wrong.error) == (400, WRONG)
        bob = attempt(c, "/login", BOB, PASSWORD)
        assert bob.status == 429 and bob.retry_after == "30"
        assert bob.error == "Too many attempts; try again in 30 s."
        assert signed_in_as(c) is None

        elsewhere = TestClient(c.app, client=("203.0.113.7", 40000))  # another address
        bob = attempt(elsewhere, "/login", BOB, PASSWORD)
        assert (bob.status, bob.location) == (303, "/")
        assert signed_in_as(elsewhere) == BOB


def test_lock_outs_grow_and_are_forgotten() -> None:
    now = [1000.0]
    throttle = Throttle(
        Rules(attempts=2, window=60, delay=10, max_delay=25, forget=100), clock=lambda: now[0]
    )
    waits = []
    for step in (0, 1, 1, 1):  # two attempts, then refused at once
        now[0] += step
        waits.append(throttle.attempt("k"))
    assert waits == [0, 0, 10, 9]
    now[0] += 9  # the lock-out is over: two more, then twice as long
    assert [throttle.attempt("k") for _ in range(3)] == [0, 0, 20]
    now[0] += 20
    assert [throttle.attempt("k") for _ in range(3)] == [0, 0, 25]  # at most max_delay
    now[0] += 25
    assert throttle.attempt("k") == 0
    throttle.give_back("k")  # that one was right: it does not count
    assert [throttle.attempt("k") for _ in range(3)] == [0, 0, 25]
    now[0] += 25 + 101  # quiet for longer than forget: a new start
    assert [throttle.attempt("k") for _ in range(3)] == [0, 0, 10]
    throttle.forgive("k")
    assert throttle.wait("k") == 0 and throttle.attempt("k") == 0
    # An attempt does not slide out of the window early.
    now[0] += 59.9
    assert throttle.attempt("k") == 0 and throttle.attempt("k") == 10


# -- registration reveals nothing login does not --------------------------------------------
def test_register_and_login_answer_alike_for_existing_and_unknown_addresses(
    tmp_path: Path, cheap_hashes: None
) -> None:
    with site(tmp_path) as s:
        c = s.client
        login_wrong = attempt(c, "/login", ALICE, "not the password")
        login_unknown = attempt(c, "/login", "nobody@example.com", PASSWORD)
        register_wrong = attempt(c, "/register", ALICE, "not the password")
        # Byte for byte (the address typed and the CSRF token aside): a wrong password
        # and an unknown address at login; a taken address with another password at the
        # register form and a wrong password at login.
        assert login_wrong == login_unknown
        assert register_wrong == login_wrong
        assert (login_wrong.status, login_wrong.error) == (400, WRONG)
        assert "An account with this e-mail address exists" not in register_wrong.page

        # The right password at the register form: signed in, as a new registration is.
        taken = attempt(c, "/register", ALICE, PASSWORD)
        assert signed_in_as(c) == ALICE
        new = attempt(c, "/register", "carol@example.com", PASSWORD)
        assert signed_in_as(c) == "carol@example.com"
        assert (taken.status, taken.location, taken.page) == (new.status, new.location, new.page)
        assert (new.status, new.location) == (303, "/")

        # Locked out: the same answer for an account and for an unknown address.
        for email in (ALICE, "nobody@example.com"):
            for _ in range(5 - (email != ALICE)):  # nobody@ already had one attempt
                attempt(c, "/login", email, "another wrong one")
        locked = [
            attempt(c, path, email, "x" * 8)
            for path in ("/login", "/register")
            for email in (ALICE, "nobody@example.com")
        ]
        assert locked[0] == locked[1] and locked[2] == locked[3]
        assert {a.status for a in locked} == {429}


# -- the hashing lane -----------------------------------------------------------------------
@dataclass
class Flood:
    url: str
    demo: Demo


@pytest.fixture(scope="module")
def flood_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flood]:
    """The demo behind a real server, with the default (costly) hashes, one hashing
    thread with room for 8 waiting, and the per-address throttle opened wide (all the
    flood's clients share 127.0.0.1)."""
    app = build(
        tmp_path_factory.mktemp("flood"),
        address_throttle=Rules(attempts=10_000),
        hash_threads=1,
        hash_queue=8,
    )
    with served(app) as url:
        yield Flood(url, app.state.demo)


def flood(url: str, emails: list[str], go: threading.Barrier) -> Callable[[], list[dict[str, Any]]]:
    """Start one thread per address, each posting a wrong password to the login form
    once ``go`` lets it; returns a function that waits for them and gives each answer
    (status, error, Retry-After, when it came)."""
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one(email: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            csrf = csrf_in(client.get("/login").text)
            data = {"email": email, "password": "a wrong password", "csrf": csrf}
            go.wait()
            r = client.post("/login", data=data)
            found = ERROR.search(r.text)
            answer = {
                "status": r.status_code,
                "error": found[1] if found else None,
                "retry_after": r.headers.get("retry-after"),
                "at": time.monotonic(),
            }
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=one, args=(e,), daemon=True) for e in emails]
    for t in threads:
        t.start()

    def finished() -> list[dict[str, Any]]:
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        assert len(answers) == len(emails)
        return answers

    return finished


def test_a_parallel_flood_on_one_account_is_refused_before_hashing(flood_site: Flood) -> None:
    go = threading.Barrier(FLOOD + 1)
    finished = flood(flood_site.url, [ALICE] * FLOOD, go)
    go.wait()
    answers = finished()
    statuses = sorted(a["status"] for a in answers)
    # Five were counted and checked (a hash each); every other was refused at the door.
    assert statuses == [400] * 5 + [429] * (FLOOD - 5)
    for a in answers:
        if a["status"] == 429:
            assert a["error"] == f"Too many attempts; try again in {a['retry_after']} s."


def test_a_flood_of_wrong_logins_does_not_hold_up_another_users_page(
    flood_site: Flood, record_property: Callable[[str, object], None]
) -> None:
    lane = flood_site.demo.accounts.lane
    with httpx.Client(base_url=flood_site.url, timeout=60, follow_redirects=True) as bob:
        csrf = csrf_in(bob.get("/login").text)
        r = bob.post("/login", data={"email": BOB, "password": PASSWORD, "csrf": csrf})
        assert r.status_code == 200 and 'class="who">bob@example.com<' in r.text

        def page() -> float:
            start = time.monotonic()
            r = bob.get("/tasks")
            assert r.status_code == 200 and "bob@example.com" in r.text
            return time.monotonic() - start

        quiet = statistics.median(page() for _ in range(5))
        go = threading.Barrier(FLOOD + 1)
        finished = flood(flood_site.url, [f"flood{n}@example.com" for n in range(FLOOD)], go)
        go.wait()
        eventually(lambda: lane.inside >= lane.capacity, "the hashing lane to fill", timeout=30)
        during = page()
        answered = time.monotonic()
        hashes_left = lane.inside
        answers = finished()

    drained = max(a["at"] for a in answers)
    print(
        f"\nanother user's page: {quiet * 1000:.1f} ms quiet (median of 5), "
        f"{during * 1000:.1f} ms during a flood of {FLOOD} wrong logins "
        f"({hashes_left} hashes still in the lane when it was answered; the flood drained "
        f"{drained - answered:.2f} s later)"
    )
    record_property("page_ms_quiet", round(quiet * 1000, 1))
    record_property("page_ms_during_flood", round(during * 1000, 1))
    # The page was answered while the flood's hashes were still being worked through.
    assert hashes_left > 0
    assert answered < drained
    checked = [a for a in answers if a["status"] == 400]
    busy = [a for a in answers if a["status"] == 503]
    assert len(checked) + len(busy) == FLOOD
    assert all(a["error"] == WRONG for a in checked)
    assert busy, "the lane never refused: it would have queued without bound"
    assert all((a["error"], a["retry_after"]) == (BUSY, "1") for a in busy)
