"""A lane for expensive blocking work: its own few threads and a bounded queue.

The demo hashes passwords with Argon2id (about 64 MiB and a quarter of a second of one
core each). Run on the thread pool every page shares (Starlette's ``run_in_threadpool``,
which also looks up the signed-in user of every page), a flood of logins would fill that
pool with hashes and every other page would wait behind them. So password hashing runs
in a :class:`Lane`: ``threads`` threads of its own, and at most ``queue`` more calls
waiting for them. A call that finds the lane full is refused at once (:class:`LaneFull`:
the demo answers "busy, try again in a moment") instead of queueing without bound; the
pages' pool never sees a hash.

A lane is used from the event loop (``await lane.run(fn, ...)``), but its count is
guarded by a lock and released when the work ends, not when its caller stops waiting:
a client that leaves does not make room while its hash still runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class LaneFull(RuntimeError):
    """The lane's threads are busy and its queue is full: try again in a moment."""


class Lane:
    def __init__(self, name: str, *, threads: int = 1, queue: int = 8) -> None:
        if threads < 1 or queue < 0:
            raise ValueError("a lane needs at least one thread and a queue of 0 or more")
        self.threads = threads
        self.capacity = threads + queue
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._inside = 0
        self._lock = threading.Lock()

    @property
    def inside(self) -> int:
        """Calls running or waiting in the lane."""
        return self._inside

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on the lane's threads; :class:`LaneFull` at once when
        ``threads + queue`` calls are already in it."""
        with self._lock:
            if self._inside >= self.capacity:
                raise LaneFull(LaneFull.__doc__)
            self._inside += 1
        try:
            future = self._executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._leave()
            raise
        future.add_done_callback(self._left)
        return await asyncio.wrap_future(future)

    def _left(self, _: Future[T]) -> None:
        self._leave()

    def _leave(self) -> None:
        with self._lock:
            self._inside -= 1

    def close(self) -> None:
        """Stop taking work; calls still waiting are dropped, running ones finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)
