"""Shared fixtures: every test gets its own real SQLite file in a temporary directory.

``app`` is an :class:`errands.Errands` on that file with no tasks registered; tests
register what they need. ``run_worker`` runs an in-process worker in the background of
the test's event loop. Worker *processes* are started with ``spawn_worker`` (tests that
use them are marked ``slow``).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, overload

import pytest

from errands import Errands, Worker
from tests.engines import make_engine, new_queue
from tests.pgserver import PostgresUnavailable, PrivatePostgres

ROOT = Path(__file__).resolve().parent.parent


T = TypeVar("T")

# -- waiting ------------------------------------------------------------------------------
# Tests wait for something to happen with ``eventually`` (it polls a check until it is
# truthy) and prove that something does *not* happen with ``stays`` (it polls a check for
# a whole window and fails as soon as it turns false), never with a bare sleep. The
# ``_async`` twins are for tests on an event loop; their checks may be sync or async.


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def _broke(what: str, elapsed: float, last: object) -> AssertionError:
    return AssertionError(f"{what} stopped holding after {elapsed:.2f} s (last: {last!r})")


def _sync(value: T | None) -> T | None:
    if inspect.isawaitable(value):  # always truthy: it would pass without being checked
        if inspect.iscoroutine(value):
            value.close()
        raise TypeError("an async check: use the _async helper")
    return value


def eventually(
    check: Callable[[], T | None],
    what: str,
    *,
    timeout: float = 20.0,
    every: float = 0.05,
    tolerate: tuple[type[Exception], ...] = (),
) -> T:
    """Poll ``check`` until it returns something truthy, and return that; fail after
    ``timeout`` seconds naming ``what`` and the last value seen. A check raising one of
    ``tolerate`` counts as false (e.g. reading a dict another thread is changing)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = _sync(check())
            last = value
        except tolerate as exc:
            last = exc
        else:
            if value:
                return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, last)
        time.sleep(every)


async def _call(check: Callable[[], Any]) -> Any:
    value = check()
    if inspect.isawaitable(value):
        return await value
    return value


@overload
async def eventually_async(
    check: Callable[[], Awaitable[T | None]],
    what: str,
    *,
    timeout: float = ...,
    every: float = ...,
) -> T: ...
@overload
async def eventually_async(
    check: Callable[[], T | None], what: str, *, timeout: float = ..., every: float = ...
) -> T: ...
async def eventually_async(
    check: Callable[[], Any], what: str, *, timeout: float = 20.0, every: float = 0.05
) -> Any:
    """:func:`eventually` on the event loop: it sleeps with ``asyncio.sleep``, and
    ``check`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        value = last = await _call(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, last)
        await asyncio.sleep(every)


def stays(
    check: Callable[[], object], what: str, for_seconds: float, *, every: float = 0.05
) -> None:
    """Poll ``check`` for ``for_seconds`` (at least twice: at the start and at the end);
    fail as soon as it returns something false, naming ``what`` and that value."""
    started = time.monotonic()
    while True:
        value = _sync(check())
        elapsed = time.monotonic() - started
        if not value:
            raise _broke(what, elapsed, value)
        if elapsed >= for_seconds:
            return
        time.sleep(min(every, max(0.0, for_seconds - elapsed)))


async def stays_async(
    check: Callable[[], Awaitable[object]] | Callable[[], object],
    what: str,
    for_seconds: float,
    *,
    every: float = 0.05,
) -> None:
    """:func:`stays` on the event loop; ``check`` may be a coroutine function."""
    started = time.monotonic()
    while True:
        value = await _call(check)
        elapsed = time.monotonic() - started
        if not value:
            raise _broke(what, elapsed, value)
        if elapsed >= for_seconds:
            return
        await asyncio.sleep(min(every, max(0.0, for_seconds - elapsed)))


# Fast timings for workers in tests (the defaults are tuned for production). The lease
# stays a few seconds: a worker stops attempts it could not renew for two thirds of it
# (docs/design.md, "Attempts and fencing"), and a loaded test machine can stall that long.
FAST = {
    "lease_seconds": 4.0,
    "heartbeat_interval": 0.25,
    "poll_interval": 0.2,
    "progress_interval": 0.05,
    "cancel_grace": 0.3,
    "shutdown_timeout": 5.0,
    "handle_signals": False,
}


# -- databases ------------------------------------------------------------------------
# Tests run on SQLite by default. A module that sets
# ``pytestmark = pytest.mark.databases("sqlite", "postgresql")`` runs each test once per
# database (the conformance suite). PostgreSQL tests get a fresh database cloned from a
# template migrated once per session, dropped afterwards.
PG_SERVER = os.environ.get("ERRANDS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "databases(*names): run the test on each database")
    config.addinivalue_line(
        "markers",
        "celery: also run the test's ``app`` on the Celery engine (see CELERY_RUNS)",
    )
    config.addinivalue_line(
        "markers", "engine_runs(*pairs): run the test on these (database, engine) pairs"
    )
    config.addinivalue_line(
        "markers",
        "sql_engine_only(reason): what the test checks is the SQL engine's alone (the "
        "Celery engine cannot honour it, for this reason)",
    )


# -- engines ----------------------------------------------------------------------------
# Modules marked ``celery`` run every test that uses ``app`` on the SQL engine (on each
# of their databases) and on the Celery engine, with each broker on one database —
# Redis with SQLite, RabbitMQ with PostgreSQL; tests/test_celery.py runs all four
# pairs. A test marked ``sql_engine_only(reason)`` is not run on Celery.
CELERY_RUNS = (("sqlite", "redis"), ("postgresql", "rabbitmq"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_url" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("databases")
    names = list(marker.args) if marker else ["sqlite"]
    runs = [(name, "sql") for name in names]
    only = metafunc.definition.get_closest_marker("engine_runs")
    if only is not None:  # explicit (database, engine) pairs
        runs = list(only.args)
        names = []
    elif (
        metafunc.definition.get_closest_marker("celery")
        and "app" in metafunc.fixturenames
        and not metafunc.definition.get_closest_marker("sql_engine_only")
    ):
        runs += [(db, f"celery-{broker}") for db, broker in CELERY_RUNS if db in names]

    # Runs on PostgreSQL or Celery (a server, a broker, a database cloned per test) are
    # slow: `pytest -m "not slow"` runs the SQL engine on SQLite alone.
    def param(*values: str, db: str, engine: str) -> Any:
        slow = db != "sqlite" or engine != "sql"
        return pytest.param(*values, marks=pytest.mark.slow if slow else ())

    if len(runs) == len(names):
        metafunc.parametrize(
            "database",
            [param(name, db=name, engine="sql") for name in names],
            indirect=True,
            ids=names,
        )
        return
    metafunc.parametrize(
        ("database", "engine_name"),
        [param(db, engine, db=db, engine=engine) for db, engine in runs],
        indirect=True,
        ids=[db if engine == "sql" else f"{db}-{engine}" for db, engine in runs],
    )


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine_name(request: pytest.FixtureRequest) -> str:
    """``sql``, ``celery-redis`` or ``celery-rabbitmq``."""
    return str(getattr(request, "param", "sql"))


def drop_celery_queue(app: Errands) -> None:
    """Delete a test's Celery queue (and whatever is left in it)."""
    engine = app.engine
    if engine.name != "celery":
        return
    with engine.celery.connection_for_write() as conn:  # type: ignore[attr-defined]
        conn.default_channel.queue_delete(engine.queue)  # type: ignore[attr-defined]
    engine.celery.close()  # type: ignore[attr-defined]


class PostgresDatabases:
    """Clones of one migrated template database, one per test."""

    def __init__(self) -> None:
        import uuid

        self.prefix = f"errands_t{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.template = f"{self.prefix}_tpl"
        self.count = 0
        self._admin(f'CREATE DATABASE "{self.template}"')
        migrating = Errands(f"{PG_SERVER}/{self.template}")
        try:
            migrating.migrate()
        finally:
            migrating.close()

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create(self) -> tuple[str, str]:
        self.count += 1
        name = f"{self.prefix}_{self.count}"
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name, f"{PG_SERVER}/{name}"

    def drop(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    dbs = PostgresDatabases()
    yield dbs
    dbs.drop(dbs.template)


@pytest.fixture
def db_url(database: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if database == "sqlite":
        yield f"sqlite:///{tmp_path / 'errands.db'}"
        return
    dbs: PostgresDatabases = request.getfixturevalue("postgres_databases")
    name, url = dbs.create()
    yield url
    dbs.drop(name)


# -- the browser ----------------------------------------------------------------------------
# The browser tests drive Debian's Chromium (Playwright's own downloads fail here). A
# browser test module calls ``require_chromium()`` at import (it is skipped where Chromium
# is not installed; ``make test`` installs it) and takes the module-scoped ``chromium``.
CHROMIUM = Path("/usr/bin/chromium")


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian's Chromium (/usr/bin/chromium) is not installed", allow_module_level=True
        )


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    # Not named ``browser``: pytest-playwright's fixtures would take over.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


# -- a private PostgreSQL server ----------------------------------------------------------
# A test that stops, restarts, kills or pauses PostgreSQL must not do it to the shared
# server (other tests, possibly in another pytest process, use it at the same moment):
# it gets a cluster of its own (tests/pgserver.py; initdb and start: 0.5-0.8 s here).
@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started :class:`PrivatePostgres` of the test's own, closed afterwards (no
    process left, its directory deleted); the tail of its log is printed first (pytest
    shows it when the test failed)."""
    server = PrivatePostgres.temporary()
    try:
        server.start()
    except PostgresUnavailable as exc:
        server.close()
        pytest.skip(f"needs a private PostgreSQL server: {exc}")
    except BaseException:
        server.close()
        raise
    try:
        yield server
    finally:
        print(f"--- {server.logfile} (tail):\n{server.log_tail()}")
        server.close()


def errands_database(server: PrivatePostgres, name: str = "errands") -> str:
    """A new database on ``server`` with errands' schema (``Errands(url).migrate()``);
    its URL."""
    url = server.create_database(name)
    migrating = Errands(url)
    try:
        migrating.migrate()
    finally:
        migrating.close()
    return url


@pytest.fixture
def app(db_url: str, engine_name: str) -> Iterator[Errands]:
    errands_app = Errands(db_url, engine=make_engine(engine_name, new_queue()))
    yield errands_app
    errands_app.close()
    drop_celery_queue(errands_app)


@asynccontextmanager
async def running_worker(app: Errands, **settings: Any) -> AsyncIterator[Worker]:
    """Run a worker on this loop for the duration of the block, then stop it."""
    worker = app.worker(**(FAST | settings))
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0)
    try:
        yield worker
    finally:
        worker.stop()
        worker.stop()  # a second stop: do not wait for running attempts
        await asyncio.wait_for(task, 30)


@pytest.fixture
def run_worker() -> Callable[..., Any]:
    return running_worker


class WorkerProcess:
    """``errands worker MODULE:ATTR`` as a real child process."""

    def __init__(self, app_path: str, db_url: str, *args: str, env: dict[str, str] | None = None):
        full_env = os.environ | {"ERRANDS_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}
        full_env |= env or {}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "errands", "worker", app_path, *args],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def output(self) -> str:
        if self.proc.poll() is None:
            self.terminate()
        assert self.proc.stdout is not None
        return self.proc.stdout.read()

    def close(self) -> None:
        """Kill the process if it still runs, and close its output pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def spawn_worker(
    db_url: str, engine_name: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., WorkerProcess]]:
    """``spawn(app_path, *args)`` starts ``errands worker``; on a Celery run the test
    apps (``tests/apps``) use the test's engine and queue (``tests/engines.py``)."""
    started: list[WorkerProcess] = []
    engine_env: dict[str, str] = {}
    if engine_name != "sql":
        test_app: Errands = request.getfixturevalue("app")
        engine_env = {
            "ERRANDS_TEST_ENGINE": engine_name,
            "ERRANDS_TEST_QUEUE": test_app.engine.queue,  # type: ignore[attr-defined]
        }

    def spawn(app_path: str, *args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        w = WorkerProcess(app_path, db_url, *args, env=engine_env | (env or {}))
        started.append(w)
        return w

    yield spawn
    for w in started:
        w.close()


@pytest.fixture
def e2e_app(app: Errands) -> Errands:
    """The test's app with the tasks of ``tests.apps.e2e`` registered (the tasks that
    ``errands worker tests.apps.e2e:app`` processes run)."""
    from tests.apps import e2e

    return e2e.install(app)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """A file the e2e tasks append their executions to (``tests.apps.e2e.log_line``)."""
    return tmp_path / "executions.log"


class LiveServer:
    """A real uvicorn server in a background thread, serving ``tests.apps.web``'s
    HTTP app for the test's ``app`` (so worker processes and the server share tasks)."""

    def __init__(self, target: Errands, **options: Any) -> None:
        import socket
        import threading

        import uvicorn

        from errands.web.hub import hub_for
        from tests.apps.web import install, make_api

        if "steps" not in target.registry:
            install(target)
        self.app = target
        self.api = make_api(target, **options)
        self.router = self.api.state.router
        self.hub = hub_for(target.runtime)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        #: The API's base URL, e.g. ``http://127.0.0.1:PORT/api``.
        self.url = f"http://127.0.0.1:{port}/api"
        self.root = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/api"
        config = uvicorn.Config(
            self.api, log_level="warning", lifespan="off", ws="websockets-sansio"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        eventually(
            lambda: self.server.started or not self.thread.is_alive(),
            "the test server to start",
            timeout=10,
            every=0.01,
        )
        if not self.server.started:
            raise RuntimeError("the test server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def serve(app: Errands) -> Iterator[Callable[..., LiveServer]]:
    """``serve(**task_api options)`` starts the HTTP API for ``app`` on a free port."""
    servers: list[LiveServer] = []

    def start(**options: Any) -> LiveServer:
        options.setdefault("poll_interval", 0.2)
        options.setdefault("submit_rate", None)
        server = LiveServer(app, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
