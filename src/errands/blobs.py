"""Large results and output items, kept out of the database rows.

A task's result or an emitted item whose JSON is larger than the app's
``blob_threshold`` (64 KiB by default) is written to a :class:`BlobStore` before the
outcome is recorded; the row keeps only its key (``errands_task.result_ref``,
``errands_output.ref``). Reads through the app (``get``, ``list``, ``outputs``, live
events) load it back, so callers see the same value either way. Every blob of a task
lives under the task's id, and is removed with the record (``delete``, ``purge``).

The default store is a local directory (:class:`LocalBlobStore`): beside a SQLite
database file (``<file>-blobs``), else ``$ERRANDS_BLOB_DIR`` or ``./errands-blobs``.
Workers and web processes must see the same directory (one machine, or a shared
volume); another store (an object store, say) implements the three methods of
:class:`BlobStore`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from .errors import ErrandsError, StorageFull
from .records import BlobRef, TaskRecord

DEFAULT_THRESHOLD = 64 * 1024


class BlobMissing(ErrandsError):
    """A large value of this task is missing from the blob store."""


class BlobStore(Protocol):
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (``<task id>/<name>``), durably, replacing any."""

    def get(self, key: str) -> bytes:
        """The data stored under ``key``; ``KeyError`` if there is none."""

    def delete_tasks(self, task_ids: Iterable[str]) -> None:
        """Remove every blob of these tasks (missing ones are no error)."""


class LocalBlobStore:
    """Blobs as files: ``<root>/<last 2 characters of the task id>/<task id>/<name>``.
    A file is written to a temporary name, synced and renamed, so a reader never sees
    half of one."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _task_dir(self, task_id: str) -> Path:
        if not task_id or "/" in task_id or task_id.startswith("."):
            raise ValueError(f"not a task id: {task_id!r}")
        return self.root / task_id[-2:] / task_id

    def _path(self, key: str) -> Path:
        task_id, _, name = key.partition("/")
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"not a blob key: {key!r}")
        return self._task_dir(task_id) / name

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def delete_tasks(self, task_ids: Iterable[str]) -> None:
        for task_id in task_ids:
            shutil.rmtree(self._task_dir(task_id), ignore_errors=True)


def default_store(sqlite_file: Path | None) -> LocalBlobStore:
    if sqlite_file is not None:
        return LocalBlobStore(sqlite_file.with_name(sqlite_file.name + "-blobs"))
    return LocalBlobStore(os.environ.get("ERRANDS_BLOB_DIR") or "errands-blobs")


class Blobs:
    """The app's side of the blob store: what goes out of the rows, and loading it back."""

    def __init__(self, store: BlobStore, threshold: int) -> None:
        self.store = store
        self.threshold = threshold

    def encode(self, value: Any) -> bytes | None:
        """``value``'s JSON if it is too large for a row, else None."""
        if value is None or isinstance(value, bool | int | float):
            return None  # never large: no need to serialize it here (hot path)
        if isinstance(value, str) and 6 * len(value) + 2 <= self.threshold:
            return None  # at most 6 bytes of JSON per character
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        return data if len(data) > self.threshold else None

    def put_all(self, blobs: Sequence[tuple[str, bytes]]) -> None:
        """Store these blobs; a full disk is ``StorageFull`` (the writer tries again
        later, as for a full database)."""
        try:
            for key, data in blobs:
                self.store.put(key, data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull("the blob store has no space left") from exc
            raise

    def load(self, value: Any) -> Any:
        """The value a row's reference stands for (other values as they are)."""
        if not isinstance(value, BlobRef):
            return value
        try:
            return json.loads(self.store.get(value.key))
        except KeyError:
            raise BlobMissing() from None

    def record(self, record: TaskRecord) -> TaskRecord:
        """``record`` with its result loaded, if it is kept in the blob store."""
        if isinstance(record.result, BlobRef):
            return replace(record, result=self.load(record.result))
        return record

    def items(self, items: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
        """Output items with those kept in the blob store loaded."""
        return [(seq, self.load(data)) for seq, data in items]
