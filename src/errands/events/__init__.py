"""Publishing record changes and wake-ups between processes.

Two kinds of message travel here: *worker* messages (new work is queued; cancel these
running tasks) and *change* messages (these records now have these versions). They are
hints: every subscriber also polls at a slow interval, so a lost message delays
something, never loses it.
"""

from __future__ import annotations

from ..store.database import Database
from .notifier import LocalNotifier, Notifier, Subscription
from .postgres import PostgresNotifier
from .unix import UnixSocketNotifier


def notifier_for(database: Database) -> Notifier:
    """The best notifier for a database: LISTEN/NOTIFY on PostgreSQL, Unix datagram
    sockets beside a SQLite file, else in-process delivery (an in-memory database)."""
    if database.dialect == "postgresql":
        return PostgresNotifier(database.libpq_conninfo())
    path = database.sqlite_path
    if path is not None and UnixSocketNotifier.supported():
        return UnixSocketNotifier(path)
    return LocalNotifier()


__all__ = ["LocalNotifier", "Notifier", "Subscription", "notifier_for"]
