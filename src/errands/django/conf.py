"""The errands application of a Django project, from its settings.

``settings.ERRANDS`` (optional)::

    ERRANDS = {
        "DATABASE": "default",   # the Django database alias errands uses
        "OPTIONS": {},           # keyword arguments of errands.Errands (not the URL)
        "API": {},               # options of the HTTP API (errands.django.views)
    }

errands reads the connection settings of that alias (``DATABASES``): there is no
second connection string to keep in sync. Its own connections (workers, reads, the
live views) use them; tasks enqueued through Django go on Django's own connection.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy.engine import URL

from ..app import Errands
from ..errors import ConfigurationError

_app: Errands | None = None
_lock = threading.Lock()


def settings() -> dict[str, Any]:
    from django.conf import settings as django_settings

    conf = getattr(django_settings, "ERRANDS", None) or {}
    if not isinstance(conf, dict):
        raise ConfigurationError("settings.ERRANDS must be a dict")
    unknown = set(conf) - {"DATABASE", "OPTIONS", "API"}
    if unknown:
        raise ConfigurationError(f"settings.ERRANDS: unknown keys {sorted(unknown)}")
    return conf


def alias() -> str:
    """The Django database alias errands uses."""
    name = settings().get("DATABASE", "default")
    from django.db import connections

    if name not in connections:
        raise ConfigurationError(f"settings.ERRANDS['DATABASE']: no database {name!r}")
    return str(name)


def database_url(settings_dict: dict[str, Any]) -> URL:
    """The SQLAlchemy URL of a Django database's settings (SQLite or PostgreSQL)."""
    engine = str(settings_dict.get("ENGINE", ""))
    name = settings_dict.get("NAME")
    if engine.endswith("sqlite3"):
        if not name or str(name) == ":memory:" or "mode=memory" in str(name):
            raise ConfigurationError(
                "errands needs an SQLite file (workers are other processes), "
                "not an in-memory database"
            )
        return URL.create("sqlite", database=str(name))
    if engine.endswith("postgresql"):
        options = settings_dict.get("OPTIONS") or {}
        query: dict[str, str] = {}
        for key in ("sslmode", "sslrootcert", "sslcert", "sslkey", "application_name"):
            if key in options:
                query[key] = str(options[key])
        host = settings_dict.get("HOST") or None
        if host and host.startswith("/"):  # a socket directory
            query["host"] = host
            host = None
        port = settings_dict.get("PORT")
        return URL.create(
            "postgresql+psycopg",
            username=settings_dict.get("USER") or None,
            password=settings_dict.get("PASSWORD") or None,
            host=host,
            port=int(port) if port else None,
            database=str(name) if name else None,
            query=query,
        )
    raise ConfigurationError(
        f"errands runs on SQLite and PostgreSQL; the database engine is {engine!r}"
    )


def get_app() -> Errands:
    """The project's errands application, made on first use."""
    global _app
    if _app is None:
        with _lock:
            if _app is None:
                from django.db import connections

                options = dict(settings().get("OPTIONS") or {})
                url = database_url(connections[alias()].settings_dict)
                _app = Errands(url, **options)
    return _app


def upgrade_schema(**kwargs: Any) -> None:
    """``manage.py migrate``: bring errands' tables to the newest version (errands'
    own migrations, the one source of the schema), on the migrated database."""
    migrate(kwargs.get("using", "default"))


def migrate(using: str) -> None:
    """Apply errands' pending migrations when ``using`` is errands' database."""
    from django.db import connections

    if using != alias():
        return

    from ..store.database import Database

    db = Database(database_url(connections[using].settings_dict), pool_size=1)
    try:
        db.migrate()
    finally:
        db.close()
