"""Checking a submit and building what it creates: one ``NewTask`` per payload.

Everything a submit can refuse is refused here, before anything is written: an unknown
task name, a payload its model rejects or larger than the app's limit, a bad owner,
``run_at`` or idempotency key. ``record_of`` gives the record the new task will read
as, without a round trip.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from .errors import PayloadTooLarge
from .ids import new_task_id
from .records import Progress, Status, TaskRecord
from .registry import Registry
from .store.codec import utc
from .store.values import NewTask


def owner_of(owner: object) -> str:
    """A submitting owner, checked: a non-empty string of at most 255 characters, without
    NUL characters (the store refuses those)."""
    if not isinstance(owner, str) or not owner:
        raise ValueError("owner must be a non-empty string")
    if "\x00" in owner:
        raise ValueError("owner must not contain NUL characters")
    if len(owner) > 255:
        raise ValueError("owner must be at most 255 characters")
    return owner


def prepare_many(
    registry: Registry,
    max_payload_bytes: int,
    name: str,
    payloads: Iterable[Any],
    *,
    owner: str,
    priority: int | None = None,
    run_at: datetime | timedelta | None = None,
    idempotency_key: str | None = None,
) -> list[NewTask]:
    """One new task per payload, every one checked before anything is written. The
    options are checked once; the tasks of one call are submitted at one instant."""
    if isinstance(payloads, str | bytes | dict):
        raise TypeError("payloads must be a list (or another iterable) of payloads")
    payloads = list(payloads)
    if not payloads:
        return []
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str)
        or not 1 <= len(idempotency_key) <= 255
        or "\x00" in idempotency_key
    ):
        raise ValueError("idempotency_key must be a string of 1 to 255 characters")
    owner_of(owner)
    definition = registry.get(name)
    now = time.time()
    if run_at is None:
        start = now
    elif isinstance(run_at, timedelta):
        start = now + run_at.total_seconds()
    elif isinstance(run_at, datetime):
        if run_at.tzinfo is None:
            raise ValueError("run_at must be timezone-aware")
        start = run_at.timestamp()
    else:
        raise TypeError("run_at must be a datetime or a timedelta")
    rank = definition.priority if priority is None else int(priority)
    tasks = []
    for payload in payloads:
        _, stored, text = definition.parse(payload)
        if len(text) > max_payload_bytes:  # ASCII: json.dumps escapes the rest
            raise PayloadTooLarge(len(text), max_payload_bytes)
        digest = None
        if idempotency_key is not None or definition.unique:
            digest = hashlib.sha256(
                json.dumps([name, stored], sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest()
        tasks.append(
            NewTask(
                id=new_task_id(now),
                owner=owner,
                name=name,
                payload=stored,
                payload_json=text,
                max_attempts=definition.max_attempts,
                priority=rank,
                run_at=start,
                created_at=now,
                idempotency_key=idempotency_key,
                request_hash=digest if idempotency_key is not None else None,
                unique_key=digest if definition.unique else None,
            )
        )
    return tasks


# The tasks of one submit share their times: each is converted once.
_stamp = functools.lru_cache(maxsize=64)(utc)


def record_of(task: NewTask) -> TaskRecord:
    """The record a new task reads as once inserted."""
    stamp = _stamp(task.created_at)
    return TaskRecord(
        id=task.id,
        owner=task.owner,
        name=task.name,
        payload=task.payload,
        status=Status.QUEUED,
        progress=Progress(),
        result=None,
        error=None,
        attempts=0,
        max_attempts=task.max_attempts,
        priority=task.priority,
        run_at=_stamp(task.run_at),
        cancel_requested=False,
        version=1,
        created_at=stamp,
        updated_at=stamp,
        started_at=None,
        finished_at=None,
        expires_at=None,
    )
