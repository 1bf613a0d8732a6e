"""Settings of the bench project: the tasks backend and the database come from the
environment, so the same project runs every case of ``bench/django_tasks.py``.

- ``BENCH_DJANGO_BACKEND``: ``errands`` (``errands.django.ErrandsBackend``) or
  ``django-tasks-db`` (``django_tasks_db.DatabaseBackend``);
- ``BENCH_DJANGO_DATABASE``: an SQLite file path or a
  ``postgresql://user@host:port/name`` URL;
- ``BENCH_DJANGO_CONN_MAX_AGE``: Django's ``CONN_MAX_AGE`` (default 600, persistent
  connections; with Django's default 0, ``db_worker`` opens a new connection on every
  poll, as it closes old ones around each like a request).

SQLite, for both backends: WAL journal and ``synchronous=FULL`` (set on every Django
connection; errands' own connections set the same), Django's transactions
``BEGIN IMMEDIATE`` (``transaction_mode``, as Django's documentation advises when
several processes write), a 30 s busy timeout (errands' own). PostgreSQL: the server's
defaults.
"""

from __future__ import annotations

import importlib.util
import os
from urllib.parse import urlsplit

SECRET_KEY = "bench-only-not-secret"
DEBUG = False  # DEBUG would keep every query in memory and make db_worker reload
USE_TZ = True
ALLOWED_HOSTS: list[str] = []

BACKENDS = {
    "errands": ("errands.django.ErrandsBackend", "errands.django"),
    "django-tasks-db": ("django_tasks_db.DatabaseBackend", "django_tasks_db"),
}
BENCH_BACKEND = os.environ.get("BENCH_DJANGO_BACKEND", "errands")
if BENCH_BACKEND not in BACKENDS:
    raise RuntimeError(f"BENCH_DJANGO_BACKEND must be one of {sorted(BACKENDS)}")
_backend, _app = BACKENDS[BENCH_BACKEND]


def _database(spec: str) -> dict[str, object]:
    if spec.startswith(("postgresql://", "postgres://")):
        url = urlsplit(spec)
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": url.path.lstrip("/"),
            "USER": url.username or "",
            "PASSWORD": url.password or "",
            "HOST": url.hostname or "",
            "PORT": str(url.port or ""),
        }
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": spec,
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        },
    }


DATABASES = {"default": _database(os.environ.get("BENCH_DJANGO_DATABASE", "bench.sqlite3"))}
DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("BENCH_DJANGO_CONN_MAX_AGE", "600"))

# Django 5.2 runs the tasks framework from the django-tasks backport (an app of its own).
_framework = [] if importlib.util.find_spec("django.tasks") else ["django_tasks"]
INSTALLED_APPS = [*_framework, _app, "bench.django_project"]
TASKS = {"default": {"BACKEND": _backend}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
