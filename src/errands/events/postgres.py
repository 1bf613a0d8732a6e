"""Cross-process notifications for PostgreSQL: LISTEN/NOTIFY.

Two channels per database: ``errands_w`` (new jobs, cancel requests: heard by workers)
and ``errands_e`` (record changes: heard by web processes). Each process keeps

- one *sender* connection, driven by a thread that takes whatever was published since
  its last round trip and sends it with one ``pg_notify`` statement (the publisher
  never waits for the network; repeated "new jobs" hints collapse into one), and
- one *listener* connection per channel it listens on, in a thread that waits for
  notifications and hands them to the process's local subscribers.

A process ignores its own notifications (it already delivered them in-process). Messages
are hints, as with the Unix sockets beside a SQLite file: a payload is at most 8000
bytes, so changes go in chunks; a notification lost while a connection is down costs a
poll interval. Both threads reconnect with exponential backoff (0.1 s doubling to 5 s);
after a listener reconnects, its subscribers are told to look again (workers claim,
web processes re-read what they watch on their next poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..records import Change
from ..store import postgres
from ..store.values import Carrier
from .notifier import CrossProcessNotifier, Hint, jobs_message

_log = logging.getLogger("errands.events")

WORKER_CHANNEL = "errands_w"
CHANGES_CHANNEL = "errands_e"
# The token of messages a statement carries (see ``carrier``): no process skips them, the
# sending one included (it has not delivered them itself).
_CARRIED = "db"
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 5.0
Messages = list[tuple[str, str, bool]]  # (channel, payload, collapse)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Connection:
    """A connection of its own (outside the pool), opened on first use."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self.conn: Any = None

    def get(self) -> Any:
        if self.conn is None:
            import psycopg

            self.conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
        return self.conn

    def drop(self) -> None:
        """Close it, quietly (it may be dead already); the next ``get`` opens another."""
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class PostgresNotifier(CrossProcessNotifier["_Listener", "_Sender"]):
    workers_channel, changes_channel = WORKER_CHANNEL, CHANGES_CHANNEL
    chunk = 60  # changes per notification: ~80 bytes each, under PostgreSQL's 8000-byte cap

    def __init__(self, conninfo: str) -> None:
        super().__init__()
        self._conninfo = conninfo
        # Payloads carry this token so a process can skip its own notifications.
        self._token = f"{os.getpid():x}.{os.urandom(3).hex()}"
        # Threads that are not running an event loop (database threads, sync callers)
        # send on this connection themselves: a round trip they wait for anyway is
        # cheaper than waking the sender thread.
        self._direct = _Connection(conninfo)
        self._direct_lock = threading.Lock()
        self._direct_after = 0.0  # after a failure, not before this (time.monotonic())
        self._batching = threading.local()  # .held: this thread's messages inside batch()

    # -- publishing ------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        held = getattr(self._batching, "held", None)
        if held is not None:  # nested: the outer block sends
            yield
            return
        self._batching.held = held = []
        try:
            yield
        finally:
            self._batching.held = None
            if held:
                self._deliver(held)

    def _send(self, channel: str, message: str) -> None:
        # Repeated "new jobs" hints collapse into one.
        item = (channel, f"{self._token} {message}", message == "J")
        held = getattr(self._batching, "held", None)
        if held is not None:
            held.append(item)
        else:
            self._deliver([item])

    def carrier(
        self,
        *,
        jobs: bool = False,
        hint: Hint | None = None,
        changes: Sequence[Change] = (),
        written: bool = False,
    ) -> Carrier | None:
        if self._closed:
            return None
        messages = [(WORKER_CHANNEL, f"{_CARRIED} {jobs_message(hint)}")] if jobs else []
        messages += [(CHANGES_CHANNEL, f"{_CARRIED} {m}") for m in self._change_messages(changes)]
        return Carrier(
            tuple(messages),
            (CHANGES_CHANNEL, f"{_CARRIED} V") if written else None,
            self.chunk,
        )

    def _open_sender(self) -> _Sender:
        return _Sender(self._conninfo)

    def _deliver(self, messages: Messages) -> None:
        if not _in_event_loop() and self._send_now(messages):
            return
        sender = self._opened_sender()
        if sender is not None:  # else the notifier is closed
            for channel, payload, collapse in messages:
                sender.put(channel, payload, collapse=collapse)

    def _send_now(self, messages: Messages) -> bool:
        """Send from the calling thread (one round trip, no hand-over to the sender
        thread) when no other thread is sending this way; False: queue it instead."""
        if time.monotonic() < self._direct_after or not self._direct_lock.acquire(blocking=False):
            return False
        try:
            if self._closed:
                return True
            postgres.notify(self._direct.get(), [(c, p) for c, p, _ in messages])
            return True
        except Exception:  # the server is away: the sender thread retries, with backoff
            self._direct.drop()
            self._direct_after = time.monotonic() + _BACKOFF_MAX
            return False
        finally:
            self._direct_lock.release()

    # -- subscribing -----------------------------------------------------------------
    def _listen(self, channel: str) -> _Listener:
        # After a reconnection: jobs may have arrived while the connection was down.
        again = self._local.publish_jobs if channel == WORKER_CHANNEL else None
        return _Listener(self._conninfo, channel, self._dispatch, again)

    def _dispatch(self, payload: str) -> None:
        token, _, message = payload.partition(" ")
        if token != self._token:  # else published by this process, which delivered it
            self._heard(message)

    def close(self) -> None:
        listeners = self._stop_listening()
        with self._lock:
            sender, self._sender = self._sender, None
        if listeners:
            sender = sender or _Sender(self._conninfo)
            for listener in listeners:
                listener.stop()
                sender.put(listener.channel, "")  # wakes the listener's wait at once
        if sender is not None:
            sender.close()
        with self._direct_lock:
            self._direct.drop()
        for listener in listeners:
            listener.thread.join(timeout=2.0)
        self._local.close()


class _Sender:
    """Sends queued notifications from a thread: one ``pg_notify`` round trip for
    everything published since the last one."""

    def __init__(self, conninfo: str) -> None:
        self._conn = _Connection(conninfo)
        self._cond = threading.Condition()
        self._queue: list[tuple[str, str]] = []
        self._collapsed: set[tuple[str, str]] = set()
        self._stopping = False
        self.thread = threading.Thread(target=self._run, name="errands-notify-send", daemon=True)
        self.thread.start()

    def put(self, channel: str, payload: str, *, collapse: bool = False) -> None:
        with self._cond:
            if collapse:
                if (channel, payload) in self._collapsed:
                    return
                self._collapsed.add((channel, payload))
            self._queue.append((channel, payload))
            self._cond.notify()

    def _run(self) -> None:
        backoff = _BACKOFF_FIRST
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    break  # stopping, and everything was sent
                batch, self._queue = self._queue, []
                self._collapsed.clear()
            try:
                try:
                    postgres.notify(self._conn.get(), batch)
                except Exception:
                    # A connection that sat idle may have died unseen (server restart):
                    # one more try on a fresh one before the batch is dropped.
                    if self._conn.conn is None:
                        raise
                    self._conn.drop()
                    postgres.notify(self._conn.get(), batch)
                backoff = _BACKOFF_FIRST
            except Exception as exc:  # the server is gone or restarting: hints are dropped
                _log.warning("errands: sending notifications failed (%s); retrying", exc)
                self._conn.drop()
                if self._stopping:
                    break
                time.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
        self._conn.drop()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self.thread.join(timeout=5.0)


class _Listener:
    """A connection that LISTENs on one channel, in a thread, reconnecting as needed
    (then calling ``reconnected``)."""

    def __init__(
        self,
        conninfo: str,
        channel: str,
        dispatch: Callable[[str], None],
        reconnected: Callable[[], None] | None,
    ) -> None:
        self._conn, self.channel = _Connection(conninfo), channel
        self._dispatch, self._reconnected = dispatch, reconnected
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="errands-notify", daemon=True)
        self.thread.start()
        # Subscribers expect to hear what is published after they subscribe: wait
        # (briefly) until LISTEN has run.
        self._ready.wait(timeout=5.0)

    def _run(self) -> None:
        backoff = _BACKOFF_FIRST
        first = True
        while not self._stopping.is_set():
            try:
                conn = self._conn.get()
                postgres.listen(conn, self.channel)
                self._ready.set()
                if not first:
                    _log.info("errands: listening on %s again", self.channel)
                    if self._reconnected is not None:
                        self._reconnected()
                first, backoff = False, _BACKOFF_FIRST
                while not self._stopping.is_set():
                    for note in conn.notifies(timeout=1.0):
                        if self._stopping.is_set():
                            break
                        try:
                            self._dispatch(note.payload)
                        except Exception:
                            _log.exception("errands: a notification could not be handled")
            except Exception as exc:
                if self._stopping.is_set():
                    break
                _log.warning(
                    "errands: listening on %s failed (%s); reconnecting in %.1f s",
                    self.channel,
                    exc,
                    backoff,
                )
                self._ready.set()  # do not hold up a subscriber while the server is down
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            finally:
                self._conn.drop()

    def stop(self) -> None:
        """Ask the thread to stop (it wakes on its next notification or within 1 s)."""
        self._stopping.set()
