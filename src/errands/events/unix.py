"""Cross-process notifications for a SQLite database: Unix datagram sockets.

Every process that wants messages binds a datagram socket in a directory derived from
the database file's path (``$TMPDIR/errands-<uid>/<hash>/w`` for workers, ``…/e`` for
change subscribers). Publishing sends one datagram to each socket in the directory: a
few microseconds, no server, no polling delay. A socket whose process died refuses the
datagram and is removed. Messages are hints; subscribers still poll slowly.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from ..records import Change
from .notifier import (
    CancelCallback,
    ChangesCallback,
    JobsCallback,
    LocalNotifier,
    Subscription,
    decode_changes,
    encode_changes,
)

_log = logging.getLogger("errands.events")
_CHUNK = 200  # changes per datagram, well under the socket buffer size


class UnixSocketNotifier:
    cross_process = True

    @staticmethod
    def supported() -> bool:
        return hasattr(socket, "AF_UNIX") and hasattr(os, "getuid")

    def __init__(self, db_path: Path) -> None:
        digest = hashlib.sha1(str(db_path).encode()).hexdigest()[:16]
        base = Path(tempfile.gettempdir()) / f"errands-{os.getuid()}"
        self.root = base / digest
        for d in (base, self.root, self.root / "w", self.root / "e"):
            d.mkdir(mode=0o700, exist_ok=True)
        self._local = LocalNotifier()
        self._sender: socket.socket | None = None  # opened on the first send
        self._lock = threading.Lock()
        self._listeners: dict[str, _Listener] = {}
        self._peer_cache: dict[str, tuple[int, list[str]]] = {}
        self._closed = False

    # -- publishing ------------------------------------------------------------------
    def publish_jobs(self) -> None:
        self._local.publish_jobs()
        self._send("w", b"J")

    def publish_cancel(self, task_ids: Sequence[str]) -> None:
        if not task_ids:
            return
        self._local.publish_cancel(task_ids)
        self._send("w", b"C" + json.dumps(list(task_ids)).encode())

    def publish_changes(self, changes: Sequence[Change]) -> None:
        if not changes:
            return
        self._local.publish_changes(changes)
        for message in encode_changes(changes, _CHUNK):
            self._send("e", b"V" + message.encode())

    def _peers(self, kind: str) -> list[str]:
        """Socket paths in the folder, re-listed only when the folder changed."""
        folder = str(self.root / kind)
        try:
            mtime = os.stat(folder).st_mtime_ns
        except FileNotFoundError:
            return []
        cached = self._peer_cache.get(kind)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        own = self._listeners.get(kind)
        own_name = own.name if own is not None else None
        paths = [os.path.join(folder, n) for n in os.listdir(folder) if n != own_name]
        self._peer_cache[kind] = (mtime, paths)
        return paths

    def _send(self, kind: str, data: bytes) -> None:
        peers = self._peers(kind)
        if not peers:
            return
        sender = self._sender
        if sender is None:
            with self._lock:
                if self._closed:
                    return
                if self._sender is None:
                    self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sender.setblocking(False)
                sender = self._sender
        for path in peers:
            try:
                sender.sendto(data, path)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # its process is gone
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.EWOULDBLOCK):
                    raise
                # the receiver is behind: drop the hint, its poll catches up

    # -- subscribing -----------------------------------------------------------------
    def listen_worker(self, on_jobs: JobsCallback, on_cancel: CancelCallback) -> Subscription:
        self._ensure_listener("w")
        return self._local.listen_worker(on_jobs, on_cancel)

    def subscribe_changes(self, callback: ChangesCallback) -> Subscription:
        self._ensure_listener("e")
        return self._local.subscribe_changes(callback)

    def batch(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # a datagram costs no round trip

    def _ensure_listener(self, kind: str) -> None:
        with self._lock:
            if kind not in self._listeners and not self._closed:
                self._listeners[kind] = _Listener(self.root / kind, self._dispatch)
                self._peer_cache.pop(kind, None)

    def _dispatch(self, data: bytes) -> None:
        tag, body = data[:1], data[1:]
        if tag == b"J":
            self._local.publish_jobs()
        elif tag == b"C":
            self._local.publish_cancel(json.loads(body))
        elif tag == b"V":
            self._local.publish_changes(decode_changes(body))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            listeners, self._listeners = list(self._listeners.values()), {}
        for listener in listeners:
            listener.close()
        if self._sender is not None:
            self._sender.close()
        self._local.close()


class _Listener:
    def __init__(self, folder: Path, dispatch: object) -> None:
        self.name = f"{os.getpid()}-{os.urandom(4).hex()}"
        self.path = str(folder / self.name)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind(self.path)
        self.sock.settimeout(0.5)
        self._dispatch = dispatch
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="errands-notify", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(1 << 17)
            except TimeoutError:
                continue
            except OSError:
                return
            if data:
                try:
                    self._dispatch(data)  # type: ignore[operator]
                except Exception:
                    _log.exception("errands: a notification could not be handled")

    def close(self) -> None:
        self._stop = True
        waker = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with waker, contextlib.suppress(OSError):
            waker.sendto(b"", self.path)  # wakes the receiving thread at once
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.thread.join(timeout=1.0)
        self.sock.close()
