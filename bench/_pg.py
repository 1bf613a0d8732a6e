"""PostgreSQL databases for the benchmarks: create, migrate, drop.

Every benchmark run on PostgreSQL gets a database of its own, created on the server of
an admin URL (its maintenance database, by default
``postgresql://postgres@127.0.0.1:5432/postgres``), migrated with ``errands migrate``
(the measured commit's migrations, through the ``PYTHONPATH`` of the given environment)
and dropped ``WITH (FORCE)`` afterwards, whatever happens.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._peers import REPO

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SETTINGS = (
    "shared_buffers",
    "synchronous_commit",
    "fsync",
    "wal_sync_method",
    "autovacuum",
    "max_connections",
)


def libpq(url: str) -> str:
    """A URL as libpq reads it (no SQLAlchemy ``+driver``)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def database_url(admin_url: str, database: str) -> str:
    """The URL of ``database`` on the server of ``admin_url``."""
    from sqlalchemy.engine import make_url

    u = make_url(admin_url).set(drivername="postgresql", database=database)
    return u.render_as_string(hide_password=False)


def admin(admin_url: str, sql: str, attempts: int = 10) -> None:
    """One statement on the maintenance database, outside a transaction; retried while
    the server is unreachable (other engineers' tests restart it now and then)."""
    import psycopg

    for attempt in range(attempts):
        try:
            with psycopg.connect(libpq(admin_url), autocommit=True, connect_timeout=10) as conn:
                conn.execute(sql)  # type: ignore[arg-type]
            return
        except psycopg.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0 + attempt)


def create(admin_url: str, database: str) -> str:
    """A new, empty database (an old one of that name is dropped first); its URL."""
    drop(admin_url, database)
    admin(admin_url, f'CREATE DATABASE "{database}"')
    return database_url(admin_url, database)


def drop(admin_url: str, database: str) -> None:
    admin(admin_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def migrate(url: str, env: dict[str, str], logfile: Path) -> None:
    """``errands migrate`` in a subprocess with ``env`` (whose PYTHONPATH picks the source)."""
    with open(logfile, "a") as fh:
        rc = subprocess.run(
            [sys.executable, "-m", "errands", "--database-url", url, "migrate"],
            cwd=REPO,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=120,
        ).returncode
    if rc != 0:
        raise RuntimeError(f"errands migrate failed (exit {rc}); see {logfile}")


@contextlib.contextmanager
def fresh_database(
    admin_url: str,
    database: str,
    env: dict[str, str],
    logfile: Path,
    settings: dict[str, str] | None = None,
) -> Iterator[str]:
    """A new migrated database for the ``with`` block, dropped afterwards; its URL.

    ``settings`` (diagnostics only, e.g. ``{"synchronous_commit": "off"}``) become the
    database's defaults (``ALTER DATABASE … SET``) for every session opened on it.
    """
    url = create(admin_url, database)
    try:
        for name, value in (settings or {}).items():
            admin(admin_url, f'ALTER DATABASE "{database}" SET {name} = {value}')
        migrate(url, env, logfile)
        yield url
    finally:
        drop(admin_url, database)


def info(admin_url: str) -> dict[str, Any]:
    """The server's version and the settings that matter for the numbers."""
    import psycopg

    with psycopg.connect(libpq(admin_url), autocommit=True, connect_timeout=10) as conn:
        out: dict[str, Any] = {"version": conn.execute("SHOW server_version").fetchone()[0]}  # type: ignore[index]
        for name in SETTINGS:
            out[name] = conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
    return out


def parse_settings(values: list[str] | None) -> dict[str, str]:
    """``["name=value", ...]`` (a ``--pg-set`` option) as a dict, names checked."""
    out: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name.replace("_", "").isalnum():
            raise SystemExit(f"--pg-set expects NAME=VALUE, got {item!r}")
        out[name] = value
    return out
