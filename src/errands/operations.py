"""The operations behind ``Errands`` and ``app.sync``, each written once.

Every operation is a plain synchronous method: ``app.sync`` calls it in the caller's
thread, and the async facade runs the very same method on the database's threads
(``Database.arun``: the write thread for writes, so SQLite's single writer is never
contended), one thread hop per call.

Every operation an end user's request can reach takes ``owner`` (or ``ANY_OWNER`` from
administrative code) and checks its arguments the same way (``task_scope``): a task of
another owner, or an id no task can have, raises ``TaskNotFound`` exactly as a missing
task does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection

from .errors import IdempotencyConflict, InvalidTransition, TaskNotFound
from .ids import is_task_id
from .owners import ANY_OWNER, owner_filter
from .records import BlobRef, Change, OutputPage, Page, Status, TaskRecord
from .runtime import Publisher, Runtime, hint_of
from .store.callers import on_commit, run_in_caller_sync
from .store.codec import utc
from .store.database import database_errors
from .store.values import Carrier, NewTask, record_of

V = TypeVar("V")

__all__ = ["ANY_OWNER", "Operations", "owner_filter", "task_scope"]


def task_scope(task_id: object, owner: object) -> str | None:
    """The owner filter of an owner-scoped call on ``task_id``; ``TaskNotFound`` for an id
    no task can have (of any type), as for a task that does not exist."""
    who = owner_filter(owner)
    if not isinstance(task_id, str) or not is_task_id(task_id):
        raise TaskNotFound()
    return who


def _found(value: V | None) -> V:
    """``value``, or ``TaskNotFound`` when the store found no such task (for this owner)."""
    if value is None:
        raise TaskNotFound()
    return value


def list_args(
    owner: object,
    status: Status | str | None,
    name: str | None,
    limit: int,
    cursor: str | None,
    is_group: bool | None = None,
) -> dict[str, Any]:
    """Checked keyword arguments of the driver's ``task_list``."""
    if not 1 <= limit <= 500:
        raise ValueError("limit must be between 1 and 500")
    if cursor is not None and not is_task_id(cursor):
        raise ValueError("invalid cursor")
    return count_args(owner, status, name, is_group) | {"limit": limit, "cursor": cursor}


def count_args(
    owner: object, status: Status | str | None, name: str | None, is_group: bool | None = None
) -> dict[str, Any]:
    """Checked keyword arguments of the driver's ``task_count`` (the filters of
    ``task_list``)."""
    if name is not None and "\x00" in name:
        raise ValueError("name must not contain NUL characters")
    if is_group is not None and not isinstance(is_group, bool):
        raise ValueError("is_group must be True, False or None")
    return {
        "owner": owner_filter(owner),
        "status": Status(status) if status is not None else None,
        "name": name,
        "is_group": is_group,
    }


class Operations:
    def __init__(self, runtime: Runtime, engine: Publisher) -> None:
        self.runtime = runtime
        self.db = runtime.db
        self.engine = engine

    # -- submit ----------------------------------------------------------------------
    @database_errors()  # also on a caller's connection (``connection=``)
    def create(
        self, conn: Connection, tasks: Sequence[NewTask], carrier: Carrier | None = None
    ) -> list[TaskRecord | None]:
        """Insert the records and queue their work. Per task: None if it was inserted, or
        the record that already holds its idempotency or unique key."""
        found: list[TaskRecord | None] = []
        held_keys = self.db.driver.task_create(conn, tasks, carrier)
        for task, held in zip(tasks, held_keys, strict=True):
            if held is not None and task.idempotency_key and held[1] != task.request_hash:
                raise IdempotencyConflict()
            found.append(None if held is None else held[0])
        return found

    def submitted(
        self,
        records: Sequence[TaskRecord],
        found: Sequence[TaskRecord | None],
        carried: bool = False,
    ) -> None:
        """Tell the engine and the live views of the records a commit created: those of
        a submit's ``records`` for which no record holding the key was ``found``.
        ``carried``: the insert carried the notifications (see ``Notifier.carrier``)."""
        created = [r for r, f in zip(records, found, strict=True) if f is None]
        self.runtime.announce(created, carried=carried)

    def submit(self, tasks: Sequence[NewTask], connection: Any = None) -> list[TaskRecord]:
        """Write new records (or find the ones holding their keys): per task, its record
        or the one that holds its key. With ``connection``, in the caller's transaction
        (the notifications go when it commits)."""
        records = [record_of(t) for t in tasks]
        # Without keys a submit is one statement on PostgreSQL (no BEGIN/COMMIT), and
        # the insert sends the notifications itself, at its commit (the caller's, too).
        one_statement = not any(t.keyed for t in tasks)
        carrier = None
        if one_statement and self.db.driver.carries:
            carrier = self.runtime.notifier.carrier(
                jobs=self.engine.hinted,
                hint=hint_of(records),
                changes=[Change.of(r) for r in records],
            )
        if connection is None:
            found = self.db.write(self.create, tasks, carrier, autocommit=one_statement)
            records = [f or r for r, f in zip(records, found, strict=True)]
            self.submitted(records, found, carried=carrier is not None)
            return records
        self.db.ensure_schema()
        results: list[TaskRecord | None] = []
        sync_obj = run_in_caller_sync(
            connection,
            lambda c: results.extend(self.create(c, tasks, carrier)),
            one_statement=one_statement,
        )
        records = [f or r for r, f in zip(records, results, strict=True)]
        on_commit(sync_obj, partial(self.submitted, records, results, carrier is not None))
        return records

    def submit_group(
        self, group: NewTask, parts: Sequence[NewTask], then: NewTask | None
    ) -> TaskRecord:
        """Write a group's record, its parts and its ``then`` task in one transaction;
        the group's record."""
        now = group.created_at
        self.db.write(self.db.driver.group_create, group, parts, then, now)
        self.runtime.announce([record_of(p) for p in parts])
        record = self.get(group.id, group.owner)
        self.runtime.notifier.publish_changes([Change.of(record)])
        return record

    def parts(self, group_id: str, owner: object, after: int, limit: int) -> list[TaskRecord]:
        """A group's parts (and its ``then`` task, last) after place ``after``."""
        who = task_scope(group_id, owner)
        if not 1 <= limit <= 500:
            raise ValueError("limit must be between 1 and 500")
        found = self.db.read(self.db.driver.group_parts, group_id, who, after, limit)
        return [self._loaded(r) for r in _found(found)]

    # -- reading -----------------------------------------------------------------------
    def get(self, task_id: str, owner: object) -> TaskRecord:
        who = task_scope(task_id, owner)
        return self._loaded(_found(self.db.read(self.db.driver.task_get, task_id, who)))

    def _loaded(self, record: TaskRecord) -> TaskRecord:
        """The record with its result loaded from the blob store, if it is kept there
        (after the read transaction: it may be megabytes)."""
        return self.runtime.blobs.record(record) if isinstance(record.result, BlobRef) else record

    def get_version(self, task_id: str, owner: object) -> int:
        who = task_scope(task_id, owner)
        return _found(self.db.read(self.db.driver.task_version, task_id, who))

    def get_many(self, task_ids: Sequence[str], owner: object) -> list[TaskRecord]:
        who = owner_filter(owner)
        ids = [t for t in task_ids if isinstance(t, str) and is_task_id(t)]
        if not ids:
            return []
        return [self._loaded(r) for r in self.db.read(self.db.driver.task_get_many, ids, who)]

    def list(self, args: dict[str, Any]) -> Page:
        items, next_cursor = self.db.read(self.db.driver.task_list, **args)
        return Page([self._loaded(r) for r in items], next_cursor)

    def count(self, args: dict[str, Any]) -> int:
        return self.db.read(self.db.driver.task_count, **args)

    def output_page(self, task_id: str, owner: object, after: int, limit: int) -> OutputPage:
        who = task_scope(task_id, owner)
        floor, items = _found(
            self.db.read(self.db.driver.output_page, task_id, who, after=after, limit=limit)
        )
        if any(isinstance(data, BlobRef) for _, data in items):
            items = self.runtime.blobs.items(items)
        return OutputPage(floor, items)

    # -- changing --------------------------------------------------------------------
    def cancel(self, task_id: str, owner: object) -> TaskRecord:
        who = task_scope(task_id, owner)
        now = time.time()
        expiry = partial(self.runtime.expiry, now=now)
        done = self.db.write(self.db.driver.task_cancel, task_id, who, utc(now), expiry)
        record = _found(done.record)
        if done.ended:  # a queued task or a group: no worker will report it
            self.runtime.observers.emit("finished", record.id, record.name, record.status, None)
        if done.asked:
            self.engine.request_cancel(done.asked)
        self.runtime.notifier.publish_changes([Change.of(record), *done.changes])
        return record

    def delete(self, task_id: str, owner: object) -> None:
        who = task_scope(task_id, owner)
        if not self.db.write(self.db.driver.task_delete_finished, task_id, who):
            record = self.get(task_id, owner)
            raise InvalidTransition(
                f"the task is {record.status.value}; cancel it before deleting it"
            )
        self.runtime.blobs.store.delete_tasks([task_id])

    def retryable(self, task_id: str, owner: object) -> TaskRecord:
        """The record of a task to submit again: failed or cancelled."""
        record = self.get(task_id, owner)
        if record.is_group:
            raise InvalidTransition("a group cannot be retried: submit its parts again")
        if record.status not in (Status.FAILED, Status.CANCELLED):
            raise InvalidTransition(
                f"only a failed or cancelled task can be retried; this one is {record.status.value}"
            )
        return record

    def purge(self, batch: int, limit: int | None) -> int:
        return self.runtime.purge(now=time.time(), batch=batch, limit=limit)


def chosen(tasks: Sequence[NewTask], found: Sequence[TaskRecord | None]) -> list[TaskRecord]:
    """Per submitted task, the record the caller gets: the one holding its key, if any."""
    return [f or record_of(t) for t, f in zip(tasks, found, strict=True)]
