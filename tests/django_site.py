"""The example Django project (``examples/django_site``) as the tests run it.

- In this process: :func:`setup_in_process` configures Django once per pytest process
  on an SQLite file of its own and migrates it (Django's settings can be set only once
  per process), for Django's test client.
- As real processes, on SQLite or PostgreSQL: ``manage.py`` commands (:func:`manage`),
  the ASGI server (:class:`SiteServer`, uvicorn) and workers (:class:`SiteWorker`,
  ``manage.py errands_worker``). The ``site_db`` fixture gives a fresh database spec
  (an SQLite path or a PostgreSQL URL) that ``manage.py migrate`` has set up;
  :func:`empty_database` one that nothing has set up, and :func:`errands_url` its URL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PG_SERVER, ROOT, eventually

SITE = ROOT / "examples" / "django_site"


def site_env(db: str, **extra: str) -> dict[str, str]:
    """The environment of a process of the example project on database ``db``."""
    path = os.pathsep.join([str(SITE), str(ROOT / "src"), str(ROOT)])
    return os.environ | {
        "DJANGO_SETTINGS_MODULE": "site_config.settings",
        "PYTHONPATH": path,
        "SITE_DATABASE": db,
        **extra,
    }


def manage(
    db: str, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python manage.py *args`` of the example on ``db``; its output as text."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=SITE,
        env=site_env(db),
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SiteProcess:
    def __init__(self, args: list[str], db: str, **env: str) -> None:
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by close())
        self.proc = subprocess.Popen(
            args,
            cwd=SITE,
            env=site_env(db, **env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        self.log.close()


class SiteServer(SiteProcess):
    """The example's ASGI application under uvicorn, on a free port."""

    def __init__(self, db: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "uvicorn", "site_config.asgi:application"]
        args += ["--port", str(self.port), "--log-level", "warning", "--lifespan", "off"]
        super().__init__(args, db, **env)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the site server exited: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False

        eventually(up, "the site server to listen", timeout=30, every=0.1)


class SiteWorker(SiteProcess):
    """``manage.py errands_worker`` of the example."""

    def __init__(self, db: str, *args: str, **env: str) -> None:
        super().__init__([sys.executable, "manage.py", "errands_worker", *args], db, **env)


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@contextlib.contextmanager
def empty_database(kind: str, folder: Path) -> Iterator[str]:
    """A new, empty database spec for the example: an SQLite file in ``folder``
    (``kind`` "sqlite") or a PostgreSQL database's URL ("postgresql"; dropped after)."""
    if kind == "sqlite":
        yield str(folder / "site.sqlite3")
        return
    name = f"errands_site_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def errands_url(db: str) -> str:
    """The SQLAlchemy URL of a database spec of the example (for errands or an engine)."""
    if db.startswith("postgresql://"):
        return db.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"sqlite:///{db}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def site_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database of the example project, migrated by ``manage.py migrate``."""
    with empty_database(request.param, tmp_path) as db:
        manage(db, "migrate", "--no-input")
        yield db


_in_process: str | None = None


def setup_in_process() -> str:
    """Configure Django in this process for the example project, on an SQLite file of
    this process, migrated; returns that file's path. Later calls do nothing more."""
    global _in_process
    if _in_process is not None:
        return _in_process
    import django
    from django.core.management import call_command

    folder = Path(tempfile.mkdtemp(prefix="errands-django-"))
    db = str(folder / "site.sqlite3")
    # Only for as long as Django reads them: left in the environment, they would reach
    # other tests' processes (Celery, for one, turns on its Django mode when it sees
    # DJANGO_SETTINGS_MODULE).
    env = {
        k: v for k, v in site_env(db).items() if k in ("DJANGO_SETTINGS_MODULE", "SITE_DATABASE")
    }
    os.environ.update(env)
    if str(SITE) not in sys.path:
        sys.path.insert(0, str(SITE))
    try:
        django.setup()
        call_command("migrate", "--no-input", verbosity=0)
    finally:
        for key in env:
            os.environ.pop(key, None)
    _in_process = db
    return db
