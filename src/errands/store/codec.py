"""Conversions between Python values and what the drivers store, in one place.

``errands_task`` keeps timezone-aware UTC datetimes (the ``UTCDateTime`` type) and JSON;
``errands_job`` keeps Unix seconds. The SQLAlchemy types convert when statements go
through SQLAlchemy; the drivers' raw statements (SQLite's cursor, PostgreSQL's arrays)
convert here, exactly as those types would — ``tests/test_store.py`` reads every value
back through them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ..records import BlobRef, Progress, Schedule, Status, TaskError, TaskRecord


def utc(ts: float) -> datetime:
    """Unix seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)


def json_text(value: Any, *, strict: bool = False) -> str:
    """JSON as errands stores it, on every path (the SQLAlchemy ``JSON`` type included:
    ``Database`` makes it the engines' serializer): compact. ``strict`` refuses NaN and
    infinities (``ValueError``), which PostgreSQL refuses too."""
    return (_STRICT if strict else _COMPACT)(value)


# Encoders built once: ``json.dumps`` with any option builds a new one per call, which
# was half the cost of encoding a small payload.
_COMPACT = json.JSONEncoder(separators=(",", ":")).encode
_STRICT = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def to_json(value: Any) -> str | None:
    """A JSON column's text (SQL NULL for None)."""
    return None if value is None else json_text(value)


def sqlite_time(value: datetime | None) -> str | None:
    """A timezone-aware datetime as ``UTCDateTime`` stores it on SQLite."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def from_sqlite_time(text: str | datetime | None) -> datetime | None:
    """What ``UTCDateTime`` returns for the text it stored on SQLite (or for the
    datetime a connection that parses declared types gave for it: Django's)."""
    if text is None:
        return None
    value = text if isinstance(text, datetime) else datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC)


def from_sqlite_json(raw: Any) -> Any:
    """A JSON column's value read with the raw cursor (the column has numeric affinity:
    a number comes back as a number)."""
    return json.loads(raw) if isinstance(raw, str | bytes) else raw


def record(m: Mapping[Any, Any]) -> TaskRecord:
    """A record from a row's columns (converted as the SQLAlchemy types convert)."""
    error = None
    if m["error_type"] is not None or m["error_message"] is not None:
        error = TaskError(type=m["error_type"] or "Error", message=m["error_message"] or "")
    return TaskRecord(
        id=m["id"],
        owner=m["owner"],
        name=m["name"],
        payload=m["payload"],
        status=Status(m["status"]),
        progress=Progress(m["progress_current"], m["progress_total"], m["progress_message"]),
        result=BlobRef(m["result_ref"]) if m["result_ref"] else m["result"],
        error=error,
        attempts=m["attempts"],
        max_attempts=m["max_attempts"],
        priority=m["priority"],
        run_at=m["run_at"],
        cancel_requested=bool(m["cancel_requested"]),
        version=m["version"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        expires_at=m["expires_at"],
        error_detail=m["error_detail"],
        output_floor=m["output_floor"],
        schedule_id=m["schedule_id"],
        scheduled_for=m["scheduled_for"],
        parent_id=m["parent_id"],
        group_index=m["group_index"],
        group_size=m["group_size"],
    )


def schedule(m: Mapping[Any, Any]) -> Schedule:
    """A schedule from a row's columns (read through SQLAlchemy)."""
    every = m["every_seconds"]
    next_run_at = m["next_run_at"]
    return Schedule(
        id=m["id"],
        owner=m["owner"],
        name=m["name"],
        payload=m["payload"],
        cron=m["cron"],
        every=None if every is None else timedelta(seconds=every),
        timezone=m["timezone"],
        paused=bool(m["paused"]),
        next_run_at=None if next_run_at is None else utc(next_run_at),
        last_task_id=m["last_task_id"],
        last_run_at=m["last_run_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        code_key=m["code_key"],
    )
