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
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from .notifier import CrossProcessNotifier

_log = logging.getLogger("errands.events")


class UnixSocketNotifier(CrossProcessNotifier["_Listener", socket.socket]):
    workers_channel, changes_channel = "w", "e"  # the folders of the sockets
    chunk = 200  # changes per datagram, well under the socket buffer size

    @staticmethod
    def supported() -> bool:
        return hasattr(socket, "AF_UNIX") and hasattr(os, "getuid")

    def __init__(self, db_path: Path) -> None:
        super().__init__()
        digest = hashlib.sha1(str(db_path).encode()).hexdigest()[:16]
        base = Path(tempfile.gettempdir()) / f"errands-{os.getuid()}"
        self.root = base / digest
        for d in (base, self.root, self.root / "w", self.root / "e"):
            d.mkdir(mode=0o700, exist_ok=True)
        self._peer_cache: dict[str, tuple[int, list[str]]] = {}
        self._folders = {kind: str(self.root / kind) for kind in ("w", "e")}

    # -- publishing ------------------------------------------------------------------
    def batch(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # a datagram costs no round trip

    def _peers(self, kind: str) -> list[str]:
        """Socket paths in the folder, re-listed only when the folder changed."""
        folder = self._folders[kind]
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

    def _open_sender(self) -> socket.socket:
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.setblocking(False)
        return sender

    def _send(self, kind: str, message: str) -> None:
        peers = self._peers(kind)
        sender = self._opened_sender() if peers else None
        if sender is None:
            return
        data = message.encode()
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
    def _listen(self, kind: str) -> _Listener:
        self._peer_cache.pop(kind, None)
        return _Listener(self.root / kind, self._heard)

    def close(self) -> None:
        for listener in self._stop_listening():
            listener.close()
        if self._sender is not None:
            self._sender.close()
        self._local.close()


class _Listener:
    def __init__(self, folder: Path, dispatch: Callable[[str], None]) -> None:
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
                    self._dispatch(data.decode())
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
