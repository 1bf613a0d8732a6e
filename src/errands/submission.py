"""Checking a submit and building what it creates: one ``NewTask`` per payload.

Everything a submit can refuse is refused here, before anything is written: an unknown
task name, a payload its model rejects or larger than the app's limit, a bad owner,
``run_at`` or idempotency key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from .errors import PayloadTooLarge
from .ids import new_task_id
from .owners import owner_of
from .registry import Registry
from .store.values import NewTask


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
        tasks.append(
            definition.new_task(
                stored,
                text,
                owner=owner,
                now=now,
                run_at=start,
                priority=rank,
                idempotency_key=idempotency_key,
            )
        )
    return tasks


def prepare_group(
    registry: Registry,
    max_payload_bytes: int,
    name: str,
    payloads: Iterable[Any],
    *,
    owner: str,
    then: str | None = None,
    priority: int | None = None,
) -> tuple[NewTask, list[NewTask], NewTask | None]:
    """A group's record, its parts (one task of ``name`` per payload, checked as a
    submit checks them) and its ``then`` task (its payload is the parts' results, given
    when they have all succeeded)."""
    parts = prepare_many(
        registry, max_payload_bytes, name, payloads, owner=owner, priority=priority
    )
    if not parts:
        raise ValueError("a group needs at least one payload")
    now = parts[0].created_at
    rank = parts[0].priority
    summary = {"parts": len(parts), "then": then}
    group = NewTask(
        id=new_task_id(now),
        owner=owner,
        name=name,
        payload=summary,
        payload_json=json.dumps(summary),
        max_attempts=1,
        priority=rank,
        run_at=now,
        created_at=now,
    )
    if then is None:
        return group, parts, None
    definition = registry.get(then)
    waiting = {"results": None}
    follow = NewTask(
        id=new_task_id(now),
        owner=owner,
        name=then,
        payload=waiting,
        payload_json=json.dumps(waiting),
        max_attempts=definition.max_attempts,
        priority=definition.priority if priority is None else int(priority),
        run_at=now,
        created_at=now,
    )
    return group, parts, follow
