"""Live events against a real server: one task's SSE and WebSocket streams (order, ids,
the end, resuming), the caller's ``/events`` stream, nothing left behind on disconnect,
the change poll without notifications (and notifications without the poll), one poll
query per interval whatever the number of clients, keep-alives on both streams and
cancelling while streaming.

The server is real uvicorn (``serve``); tasks run in real worker processes
(``spawn_worker``) on the test's database. Part of the conformance suite: every test
runs on SQLite (where other processes' events arrive as datagrams on Unix sockets) and
on PostgreSQL (LISTEN/NOTIFY). Every wait has a deadline; nothing asserts on timing.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from errands import Errands
from errands.engines.sql import SqlEngine
from errands.events import LocalNotifier
from tests.conftest import LiveServer, WorkerProcess, eventually

# The conformance suite: every test runs on SQLite and on PostgreSQL.
pytestmark = [pytest.mark.databases("sqlite", "postgresql"), pytest.mark.slow]

WORKER_APP = "tests.apps.web:app"
#: The longest any one wait may take before the test fails (never reached when all is well).
DEADLINE = 20.0  # also eventually()'s default timeout

Serve = Callable[..., LiveServer]
Spawn = Callable[..., WorkerProcess]


# -- clients ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    event: str
    id: str
    data: Any

    @property
    def key(self) -> tuple[int, int]:
        """The id ``"<version>-<seq>"`` as a pair, for ordering."""
        version, sep, seq = self.id.partition("-")
        assert sep and version.isdigit() and seq.isdigit(), f"malformed event id {self.id!r}"
        return int(version), int(seq)


def iter_sse(response: httpx.Response, *, comments: bool = False) -> Iterator[Event | str]:
    """Parse a ``text/event-stream``: ``id:``, ``event:`` and ``data:`` fields; a blank
    line ends an event; a line starting with ``:`` is a comment (yielded as its text
    when ``comments``). Ends when the server ends the response."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in response.iter_lines():
        if not line:
            if data:
                text = "\n".join(data)
                yield Event(fields.get("event", "message"), fields.get("id", ""), json.loads(text))
            fields, data = {}, []
            continue
        if line.startswith(":"):
            if comments:
                yield line
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name in ("id", "event", "retry"):
            fields[name] = value


def events_of(response: httpx.Response) -> Iterator[Event]:
    for item in iter_sse(response):
        assert isinstance(item, Event)
        yield item


def client(server: LiveServer, user: str = "alice") -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        headers={"X-User": user},
        timeout=httpx.Timeout(DEADLINE),
        trust_env=False,
    )


def submit(http: httpx.Client, name: str, payload: dict[str, Any]) -> str:
    response = http.post("/tasks", json={"name": name, "payload": payload})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def ws_connect(
    server: LiveServer, task_id: str, user: str = "alice", last_event_id: str | None = None
) -> ClientConnection:
    url = f"{server.ws_url}/tasks/{task_id}/ws"
    if last_event_id is not None:
        url += f"?last_event_id={last_event_id}"
    return connect(
        url,
        additional_headers={"X-User": user},
        proxy=None,
        open_timeout=DEADLINE,
        close_timeout=5,
    )


def ws_events_raw(ws: ClientConnection) -> Iterator[Any]:
    """The JSON messages of a WebSocket, until the server closes it."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            text = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        except ConnectionClosed:
            return
        yield json.loads(text)


def ws_events(ws: ClientConnection) -> Iterator[Event]:
    """The events of a task's WebSocket, until the server closes it."""
    for doc in ws_events_raw(ws):
        assert set(doc) == {"event", "id", "data"}, doc
        yield Event(doc["event"], doc["id"], doc["data"])


def wait_running(http: httpx.Client, task_id: str) -> None:
    eventually(
        lambda: http.get(f"/tasks/{task_id}").json()["status"] == "running",
        f"task {task_id} to start",
        tolerate=(RuntimeError,),
    )


def check_run(events: list[Event], steps: int, *, first_seq: int = 1) -> Event:
    """The events of a ``steps`` task from output ``first_seq`` on, ending in ``done``:
    ids strictly increase; every output once, in order; record events carry the
    version of their id. Returns the ``done`` event."""
    keys = [e.key for e in events]
    assert keys == sorted(set(keys)), keys  # strictly increasing
    kinds = [e.event for e in events]
    assert set(kinds) <= {"output", "status", "progress", "done"}, kinds
    outputs = [e for e in events if e.event == "output"]
    assert [e.data["seq"] for e in outputs] == list(range(first_seq, steps + 1))
    for e in outputs:
        assert e.key[1] == e.data["seq"]
        assert e.data["data"] == {"step": e.data["seq"]}
    progress = []
    for e in events:
        if e.event in ("status", "progress", "done"):
            assert e.data["version"] == e.key[0], e
            assert e.data["name"] == "steps"
            progress.append(e.data["progress"]["current"] or 0)
        if e.event in ("status", "progress"):
            assert e.data["done"] is False
    assert progress == sorted(progress)
    assert kinds.count("done") == 1 and kinds[-1] == "done", kinds
    done = events[-1]
    assert done.data["done"] is True and done.data["status"] == "succeeded"
    assert done.data["result"] == {"steps": steps}
    assert done.key[1] == steps
    return done


# -- one task's event stream ------------------------------------------------------------
@pytest.mark.slow
def test_sse_runs_to_done_and_ends(serve: Serve, spawn_worker: Spawn) -> None:
    server = serve(keepalive=1.0)
    steps = 20
    with client(server) as http:
        task_id = submit(http, "steps", {"steps": steps, "delay": 0.05})
        with http.stream("GET", f"/tasks/{task_id}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            stream = events_of(response)
            events = [next(stream)]
            assert events[0].event == "status" and events[0].data["status"] == "queued"
            assert events[0].id == "1-0"
            spawn_worker(WORKER_APP, "--concurrency", "4", "--poll", "0.2")
            events += stream  # returns only when the server ends the stream
    done = check_run(events, steps)
    assert done.data["id"] == task_id and done.data["progress"]["current"] == steps


@pytest.mark.slow
@pytest.mark.celery  # the live streams on the Celery engine too
def test_sse_resumes_from_last_event_id(serve: Serve, spawn_worker: Spawn) -> None:
    server = serve(keepalive=1.0)
    spawn_worker(WORKER_APP, "--concurrency", "4", "--poll", "0.2")
    steps = 60
    url_of = "/tasks/{}/events".format
    parts: list[list[Event]] = []
    with client(server) as http:
        task_id = submit(http, "steps", {"steps": steps, "delay": 0.05})
        url = url_of(task_id)

        def read(headers: dict[str, str], params: dict[str, str], outputs: int) -> None:
            """Read until ``outputs`` more outputs arrived (or the end), then hang up."""
            part: list[Event] = []
            with http.stream("GET", url, headers=headers, params=params) as response:
                assert response.status_code == 200
                for event in events_of(response):
                    part.append(event)
                    if sum(e.event == "output" for e in part) >= outputs:
                        break
            parts.append(part)

        read({}, {}, 5)
        read({"Last-Event-ID": parts[-1][-1].id}, {}, 5)
        read({}, {"last_event_id": parts[-1][-1].id}, steps + 1)
        check_run([e for part in parts for e in part], steps)
        assert all(part for part in parts)
        assert parts[0][-1].event == parts[1][-1].event == "output"  # hung up mid-task
        done = parts[-1][-1]

        # The finished task, from an id of the first connection: the rest, once.
        with http.stream("GET", url, headers={"Last-Event-ID": parts[0][-1].id}) as response:
            rest = list(events_of(response))
        check_run(rest, steps, first_seq=parts[0][-1].key[1] + 1)
        assert rest[-1] == done

        # With the done event's id there is nothing left to send.
        assert http.get(url, headers={"Last-Event-ID": done.id}).status_code == 204
        assert http.get(url, params={"last_event_id": done.id}).status_code == 204
        bad = http.get(url, headers={"Last-Event-ID": "x-1"})
        assert bad.status_code == 422
    with client(server, "bob") as bob:
        assert bob.get(url).status_code == 404  # someone else's task


@pytest.mark.slow
@pytest.mark.celery  # the live streams on the Celery engine too
def test_a_new_attempt_starts_the_output_over(
    serve: Serve, spawn_worker: Spawn, tmp_path: Path
) -> None:
    """A retried task: a client connected through the retry gets the first attempt's
    items, then ``attempt``, then only the second attempt's; a client resuming from the
    first attempt (SSE or WebSocket) gets ``attempt`` first; the output resource holds
    only the second attempt's items, with the floor that tells a poller to drop its own."""
    server = serve(keepalive=1.0)
    spawn_worker(WORKER_APP, "--concurrency", "2", "--poll", "0.2")
    gate = tmp_path / "gate"
    second = [{"attempt": 2, "i": i} for i in range(4)]
    with client(server) as http:
        task_id = submit(http, "two_tries", {"first": 3, "second": 4, "gate": str(gate)})
        url = f"/tasks/{task_id}/events"
        live: list[Event] = []
        with http.stream("GET", url) as response:
            stream = events_of(response)
            for event in stream:
                live.append(event)
                if sum(e.event == "output" for e in live) == 3:
                    break
            early = live[-1]
            assert early.event == "output" and early.key[1] == 3
            gate.touch()  # the first attempt fails now, and is retried
            live += stream
        keys = [e.key for e in live]
        assert keys == sorted(set(keys)), keys  # ids strictly increase, across attempts
        kinds = [e.event for e in live]
        turn = kinds.index("attempt")
        assert [e.data["data"] for e in live[:turn] if e.event == "output"] == [
            {"attempt": 1, "i": i} for i in range(3)
        ]
        assert live[turn].data == {"attempt": 2, "output_floor": 4}
        after = live[turn + 1 :]
        assert [e.data["data"] for e in after if e.event == "output"] == second
        assert [e.data["seq"] for e in after if e.event == "output"] == [5, 6, 7, 8]
        assert kinds[-1] == "done" and live[-1].data["result"] == {"attempt": 2, "items": 4}
        assert live[-1].data["output_floor"] == 4

        # Resuming from the first attempt: told to start over, then the second's items.
        with ws_connect(server, task_id, last_event_id=early.id) as ws:
            over_ws = list(ws_events(ws))
        for resumed in (list(events_of_url(http, url, {"Last-Event-ID": early.id})), over_ws):
            assert resumed[0].event == "attempt", resumed
            assert resumed[0].data == {"attempt": 2, "output_floor": 4}
            assert [e.data["data"] for e in resumed if e.event == "output"] == second
            assert resumed[-1].event == "done"

        # Polling: the current attempt's items, and the floor past the poller's own.
        page = http.get(f"/tasks/{task_id}/output", params={"after": 2}).json()
        assert page["output_floor"] == 4 and page["last_seq"] == 8
        assert [i["data"] for i in page["items"]] == second
        assert http.get(f"/tasks/{task_id}").json()["output_floor"] == 4


def events_of_url(http: httpx.Client, url: str, headers: dict[str, str]) -> Iterator[Event]:
    with http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        yield from events_of(response)


@pytest.mark.slow
@pytest.mark.celery  # the live streams on the Celery engine too
def test_websocket_runs_to_done_and_resumes(serve: Serve, spawn_worker: Spawn) -> None:
    server = serve(keepalive=1.0)
    spawn_worker(WORKER_APP, "--concurrency", "4", "--poll", "0.2")
    steps = 40
    with client(server) as http:
        whole = submit(http, "steps", {"steps": steps, "delay": 0.02})
        with ws_connect(server, whole) as ws:
            events = list(ws_events(ws))
            assert ws.close_code == 1000
        done = check_run(events, steps)
        assert done.data["id"] == whole

        resumed = submit(http, "steps", {"steps": steps, "delay": 0.05})
    first: list[Event] = []
    with ws_connect(server, resumed) as ws:
        for event in ws_events(ws):
            first.append(event)
            if sum(e.event == "output" for e in first) >= 5:
                break
    assert first[-1].event == "output"
    with ws_connect(server, resumed, last_event_id=first[-1].id) as ws:
        rest = list(ws_events(ws))
        assert ws.close_code == 1000
    done = check_run(first + rest, steps)

    # Reconnecting with the done event's id: closed at once, nothing sent.
    with ws_connect(server, resumed, last_event_id=done.id) as ws:
        assert list(ws_events(ws)) == []
        assert ws.close_code == 1000

    # Someone else's task: an error message, then closed.
    with ws_connect(server, resumed, user="bob") as ws:
        [error] = list(ws_events_raw(ws))
        assert error["event"] == "error" and error["data"]["status"] == 404
        assert ws.close_code == 4404


@pytest.mark.slow
def test_many_clients_hanging_up_at_random_each_get_every_output_once(
    serve: Serve, spawn_worker: Spawn
) -> None:
    # Clients come and go while the tasks run, so the server keeps creating, sharing
    # and dropping the feeds of the same tasks; every client must still see each
    # output once and end with ``done``.
    server = serve(keepalive=1.0)
    spawn_worker(WORKER_APP, "--concurrency", "4", "--poll", "0.2")
    steps = 150
    with client(server) as http:
        task_ids = [submit(http, "steps", {"steps": steps, "delay": 0.01}) for _ in range(3)]
    failures: list[str] = []

    def watch(n: int) -> None:
        rng = random.Random(n)
        got: list[Event] = []
        deadline = time.monotonic() + 3 * DEADLINE  # only against looping for ever
        try:
            time.sleep(rng.random() * 1.5)
            with client(server) as h:
                while not (got and got[-1].event == "done"):
                    assert time.monotonic() < deadline, "no done event in time"
                    headers = {"Last-Event-ID": got[-1].id} if got else {}
                    url = f"/tasks/{task_ids[n % 3]}/events"
                    with h.stream("GET", url, headers=headers) as response:
                        hang_up = rng.randint(1, 5) if n % 3 else None
                        for i, event in enumerate(events_of(response), 1):
                            got.append(event)
                            if i == hang_up:
                                break
            check_run(got, steps)
        except Exception as exc:  # reported by the test's thread
            ids = " ".join(f"{e.event}:{e.id}" for e in got)
            failures.append(f"client {n}: {exc!r}: {ids}")

    threads = [threading.Thread(target=watch, args=(n,)) for n in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(4 * DEADLINE)
    assert not any(t.is_alive() for t in threads)
    assert not failures, "\n".join(failures)
    eventually(
        lambda: hub_state(server) == (0, 0, 0),
        "the hub to forget every watch",
        tolerate=(RuntimeError,),
    )


# -- the caller's tasks ---------------------------------------------------------------------
def read_until(events: Iterator[Event], finished: Callable[[list[Event]], bool]) -> list[Event]:
    seen: list[Event] = []
    for event in events:
        seen.append(event)
        if finished(seen):
            return seen
    raise AssertionError(f"the stream ended early: {seen}")


def all_done(task_ids: set[str]) -> Callable[[list[Event]], bool]:
    return lambda seen: task_ids <= {e.data["id"] for e in seen if e.data["done"]}


@pytest.mark.slow
def test_owner_stream_sees_only_the_callers_tasks(serve: Serve, spawn_worker: Spawn) -> None:
    server = serve(keepalive=1.0)
    spawn_worker(WORKER_APP, "--concurrency", "4", "--poll", "0.2")
    with (
        client(server, "alice") as alice,
        client(server, "bob") as bob,
        alice.stream("GET", "/events") as a_response,
        bob.stream("GET", "/events") as b_response,
    ):
        assert a_response.status_code == b_response.status_code == 200
        eventually(
            lambda: {"alice", "bob"} <= set(server.hub.owners),
            "both owner watches",
            tolerate=(RuntimeError,),
        )
        b1 = submit(bob, "steps", {"steps": 2, "delay": 0.02})
        a1 = submit(alice, "steps", {"steps": 2, "delay": 0.02})
        a2 = submit(alice, "steps", {"steps": 3, "delay": 0.02})
        a_events, b_events = events_of(a_response), events_of(b_response)

        seen_a = read_until(a_events, all_done({a1, a2}))
        seen_b = read_until(b_events, all_done({b1}))
        # bob's task has finished; one more of alice's tasks marks a point after it.
        a3 = submit(alice, "steps", {"steps": 0})
        seen_a += read_until(a_events, all_done({a3}))

    assert {e.event for e in seen_a + seen_b} == {"task"}
    assert {e.data["id"] for e in seen_a} == {a1, a2, a3}
    assert {e.data["id"] for e in seen_b} == {b1}
    for seen in (seen_a, seen_b):
        for task_id in {e.data["id"] for e in seen}:
            mine = [e.data for e in seen if e.data["id"] == task_id]
            versions = [d["version"] for d in mine]
            assert versions == sorted(set(versions))  # each version at most once, in order
            assert mine[-1]["done"] and mine[-1]["status"] == "succeeded"
            assert [d["done"] for d in mine].count(True) == 1
            assert "owner" not in mine[-1]


# -- nothing left behind --------------------------------------------------------------------
def hub_state(server: LiveServer) -> tuple[int, int, int]:
    hub = server.hub
    return hub.watchers, len(hub.feeds), len(hub.owners)


@pytest.mark.slow
def test_disconnects_release_every_watch(serve: Serve, spawn_worker: Spawn) -> None:
    server = serve(keepalive=1.0)
    spawn_worker(WORKER_APP, "--poll", "0.2")
    with client(server) as http:
        task_id = submit(http, "sleepy", {"seconds": 60})
        wait_running(http, task_id)
        url = f"/tasks/{task_id}/events"

        with ExitStack() as streams:
            # (An abandoned, half-read httpx iterator closes its connection: keep them.)
            readers = [events_of(streams.enter_context(http.stream("GET", url))) for _ in "abc"]
            for reader in readers:
                first = next(reader)
                assert first.event == "status" and first.data["status"] == "running"
            ws = streams.enter_context(ws_connect(server, task_id))
            assert next(ws_events(ws)).data["status"] == "running"
            for _ in range(2):
                response = streams.enter_context(http.stream("GET", "/events"))
                assert response.status_code == 200
            eventually(
                lambda: hub_state(server) == (6, 1, 1),
                "every stream to be watching",
                tolerate=(RuntimeError,),
            )
            assert server.hub.feeds[task_id].refs == 4
        # All closed by the client, the task still running.
        eventually(
            lambda: hub_state(server) == (0, 0, 0),
            "the hub to forget every watch",
            tolerate=(RuntimeError,),
        )
        assert server.hub.feeds == {} and server.hub.owners == {}

        # Again with "my tasks" streams only.
        with ExitStack() as streams:
            for _ in range(3):
                streams.enter_context(http.stream("GET", "/events"))
            eventually(
                lambda: hub_state(server) == (3, 0, 1),
                "the owner streams to be watching",
                tolerate=(RuntimeError,),
            )
        eventually(
            lambda: hub_state(server) == (0, 0, 0),
            "the hub to forget the owner streams",
            tolerate=(RuntimeError,),
        )
        assert server.hub.owners == {}

        # The hub still works afterwards.
        with http.stream("GET", url) as response:
            stream = events_of(response)
            assert next(stream).data["status"] == "running"
            assert http.post(f"/tasks/{task_id}/cancel").status_code == 202
            last = list(stream)[-1]
        assert last.event == "done" and last.data["status"] == "cancelled"
        eventually(
            lambda: hub_state(server) == (0, 0, 0),
            "the last stream's watch to go",
            tolerate=(RuntimeError,),
        )


# -- the poll, keep-alives, cancelling --------------------------------------------------------
@pytest.mark.slow
def test_poll_delivers_changes_without_notifications(
    app: Errands, serve: Serve, spawn_worker: Spawn
) -> None:
    # This process hears only itself: the worker process's change hints (datagrams on
    # SQLite, NOTIFY on PostgreSQL) reach nobody here, so the server learns of progress
    # from its poll.
    cross_process = app.notifier
    app.runtime.notifier = LocalNotifier()
    app.engine = app.runtime.publisher = SqlEngine()
    app.engine.attach(app.runtime)
    cross_process.close()
    server = serve(poll_interval=0.2, keepalive=1.0)
    steps = 5
    with client(server) as http:
        task_id = submit(http, "steps", {"steps": steps, "delay": 0.4})
        with http.stream("GET", f"/tasks/{task_id}/events") as response:
            stream = events_of(response)
            events = [next(stream)]
            assert events[0].data["status"] == "queued"
            polls = server.hub.polls
            # Everything from here on comes from a worker this process never hears.
            spawn_worker(WORKER_APP, "--poll", "0.2")
            events += stream
    check_run(events, steps)
    assert any(e.data["status"] == "running" for e in events if e.event != "output")
    assert server.hub.polls > polls
    assert not app.notifier.cross_process


def test_one_poll_per_interval_serves_every_client(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hub's poll is one query per interval naming every watched task and owner:
    # with 30 clients it runs no more often than with one (never once per client).
    interval = 0.1
    server = serve(poll_interval=interval, keepalive=1.0)
    queries: list[tuple[frozenset[str], frozenset[str]]] = []
    driver = server.app.db.driver
    real_changes_since = driver.task_changes_since

    def changes_since(conn: Any, since: Any, ids: list[str], owners: list[str]) -> Any:
        queries.append((frozenset(ids), frozenset(owners)))
        return real_changes_since(conn, since, ids, owners)

    monkeypatch.setattr(driver, "task_changes_since", changes_since)

    def polls_over(rounds: int) -> tuple[list[tuple[frozenset[str], frozenset[str]]], float]:
        """At least ``rounds`` queries of the poll, and the time they all ran within.
        (Not the next one: it may have read the watches before the newest came.)"""
        skip = len(queries) + 1
        eventually(lambda: len(queries) >= skip, "a poll", tolerate=(RuntimeError,))
        began = time.monotonic()
        first = len(queries)
        eventually(
            lambda: len(queries) >= first + rounds, f"{rounds} polls", tolerate=(RuntimeError,)
        )
        last = len(queries)
        return queries[first:last], time.monotonic() - began

    users = ("alice", "bob", "carol")
    with ExitStack() as streams:
        http = {user: streams.enter_context(client(server, user)) for user in users}
        task_ids = [submit(http["alice"], "sleepy", {"seconds": 60}) for _ in range(3)]

        def watch(user: str, url: str) -> None:
            response = streams.enter_context(http[user].stream("GET", url))
            assert response.status_code == 200

        # One client.
        watch("alice", f"/tasks/{task_ids[0]}/events")
        eventually(
            lambda: hub_state(server) == (1, 1, 0),
            "the stream to be watching",
            tolerate=(RuntimeError,),
        )
        alone, elapsed_alone = polls_over(5)
        assert set(alone) == {(frozenset(task_ids[:1]), frozenset())}
        # The poll sleeps an interval before each query: n queries take n - 1 intervals
        # at least (thirty clients with a query each would run thirty per interval).
        assert len(alone) <= elapsed_alone / interval + 1

        # Thirty: nine on each task, and every user's "my tasks".
        for n in range(1, 27):
            watch("alice", f"/tasks/{task_ids[n % 3]}/events")
        for user in users:
            watch(user, "/events")
        eventually(
            lambda: hub_state(server) == (30, 3, 3),
            "every stream to be watching",
            tolerate=(RuntimeError,),
        )
        assert [server.hub.feeds[t].refs for t in task_ids] == [9, 9, 9]
        crowd, elapsed_crowd = polls_over(5)
        assert set(crowd) == {(frozenset(task_ids), frozenset(users))}
        assert len(crowd) <= elapsed_crowd / interval + 1
    eventually(
        lambda: hub_state(server) == (0, 0, 0),
        "the hub to forget every watch",
        tolerate=(RuntimeError,),
    )


@pytest.mark.slow
def test_notifications_deliver_changes_without_the_poll(serve: Serve, spawn_worker: Spawn) -> None:
    # The converse: the poll never runs (its first round is an hour away), so whatever
    # the server learns of the worker process's progress comes from the cross-process
    # notifier (the Unix sockets beside the SQLite file, LISTEN/NOTIFY on PostgreSQL).
    server = serve(poll_interval=3600, keepalive=1.0)
    steps = 5
    with client(server) as http:
        task_id = submit(http, "steps", {"steps": steps, "delay": 0.1})
        with http.stream("GET", f"/tasks/{task_id}/events") as response:
            stream = events_of(response)
            events = [next(stream)]
            assert events[0].data["status"] == "queued"
            spawn_worker(WORKER_APP, "--poll", "0.2")
            events += stream
    check_run(events, steps)
    assert any(e.data["status"] == "running" for e in events if e.event != "output")
    assert server.hub.polls == 0


def test_keepalive_comments_while_nothing_changes(serve: Serve) -> None:
    server = serve(keepalive=0.2)
    with client(server) as http:
        task_id = submit(http, "sleepy", {"seconds": 60})  # no worker: it stays queued
        items: list[Event | str] = []
        with http.stream("GET", f"/tasks/{task_id}/events") as response:
            stream = iter_sse(response, comments=True)
            for item in stream:
                items.append(item)
                if items.count(": keep-alive") >= 3:
                    break
            assert http.post(f"/tasks/{task_id}/cancel").status_code == 200  # queued: at once
            items += list(stream)
    events = [i for i in items if isinstance(i, Event)]
    comments = [i for i in items if isinstance(i, str)]
    assert set(comments) == {": keep-alive"} and len(comments) >= 3
    assert [e.event for e in events] == ["status", "done"]
    assert events[0].data["status"] == "queued"
    assert items.index(events[1]) > items.index(": keep-alive")
    assert events[1].data["status"] == "cancelled" and events[1].key > events[0].key


def test_owner_stream_keepalive_comments_while_nothing_changes(serve: Serve) -> None:
    server = serve(keepalive=0.2)
    with client(server) as http:
        items: list[Event | str] = []
        with http.stream("GET", "/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            stream = iter_sse(response, comments=True)
            for item in stream:  # alice has no tasks: nothing but keep-alives
                items.append(item)
                if items.count(": keep-alive") >= 3:
                    break
            task_id = submit(http, "sleepy", {"seconds": 60})  # no worker: it stays queued
            for item in stream:
                items.append(item)
                if isinstance(item, Event):
                    break
            for item in stream:  # and the keep-alives go on after it
                items.append(item)
                if item == ": keep-alive":
                    break
            assert server.hub.owners.keys() == {"alice"}
    events = [i for i in items if isinstance(i, Event)]
    comments = [i for i in items if isinstance(i, str)]
    assert set(comments) == {": keep-alive"} and len(comments) >= 4
    [event] = events
    assert event.event == "task" and event.data["id"] == task_id
    assert event.data["status"] == "queued" and event.data["done"] is False
    assert items.index(event) >= 3 and items[-1] == ": keep-alive"
    eventually(
        lambda: hub_state(server) == (0, 0, 0),
        "the hub to forget the owner stream",
        tolerate=(RuntimeError,),
    )


@pytest.mark.slow
def test_cancel_while_streaming_ends_with_done(serve: Serve, spawn_worker: Spawn) -> None:
    server = serve(keepalive=1.0)
    spawn_worker(WORKER_APP, "--poll", "0.2")
    with client(server) as http:
        task_id = submit(http, "sleepy", {"seconds": 60})
        seen: list[Event] = []
        with http.stream("GET", f"/tasks/{task_id}/events") as response:
            stream = events_of(response)
            for event in stream:
                seen.append(event)
                if event.data["status"] == "running":
                    break
            cancel = http.post(f"/tasks/{task_id}/cancel")
            assert cancel.status_code == 202, cancel.text
            assert cancel.json()["cancel_requested"] is True
            seen += list(stream)
    keys = [e.key for e in seen]
    assert keys == sorted(set(keys))
    done = seen[-1]
    assert [e.event for e in seen].count("done") == 1 and done.event == "done"
    assert done.data["done"] is True and done.data["status"] == "cancelled"
    assert done.data["error"]["type"]
    assert "result" not in done.data
