"""PostgreSQL statements of the hot path, run straight on the psycopg cursor.

Submitting is the one statement where SQLAlchemy's per-row work (building and type-
processing a parameter dict for every row) costs more than the database's: a batch of
5,000 records spent most of its time there. Here new records and their jobs are sent as
one array per column and inserted with ``unnest``: one statement, one round trip,
whatever the number of rows. Values are converted exactly as the SQLAlchemy types
convert them (``JSON`` as ``json.dumps`` text, ``UTCDateTime`` as an aware UTC
datetime); ``tests/test_store.py`` reads them back through those types.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from sqlalchemy import Connection

_TASK_COLUMNS = (
    ("id", "varchar"),
    ("owner", "varchar"),
    ("name", "varchar"),
    ("payload", "json"),
    ("status", "varchar"),
    ("attempts", "int"),
    ("max_attempts", "int"),
    ("priority", "int"),
    ("run_at", "timestamptz"),
    ("cancel_requested", "bool"),
    ("version", "int"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)
_JOB_COLUMNS = (
    ("task_id", "varchar"),
    ("name", "varchar"),
    ("owner", "varchar"),
    ("priority", "int"),
    ("run_at", "float8"),
)


def _unnest(columns: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"%s::{kind}[]" for _, kind in columns)


_INSERT = (
    "WITH new_records AS ("
    f"INSERT INTO errands_task ({', '.join(c for c, _ in _TASK_COLUMNS)}) "
    f"SELECT * FROM unnest({_unnest(_TASK_COLUMNS)})) "
    f"INSERT INTO errands_job ({', '.join(c for c, _ in _JOB_COLUMNS)}) "
    f"SELECT * FROM unnest({_unnest(_JOB_COLUMNS)})"
)


def insert_tasks_and_jobs(
    conn: Connection, rows: Sequence[dict[str, Any]], jobs: Sequence[dict[str, Any]]
) -> None:
    """New records and their jobs, in one statement."""
    params: list[list[Any]] = []
    for column, _ in _TASK_COLUMNS:
        if column == "payload":
            params.append([json.dumps(r[column]) for r in rows])
        elif column in ("run_at", "created_at", "updated_at"):
            params.append([r[column].astimezone(UTC) for r in rows])
        else:
            params.append([r[column] for r in rows])
    for column, _ in _JOB_COLUMNS:
        params.append([j[column] for j in jobs])
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(_INSERT, params)
