"""An asyncio event loop on a thread of its own, for synchronous code that must await
errands' coroutines and follow its async streams (a WSGI application's views).

A :class:`LoopThread` starts its loop on first use, on a daemon thread, and starts a
new one in a forked child (a pre-forking server may import the application, and even
use it, before it forks). ``run(coro)`` blocks the calling thread until the coroutine
finishes on the loop; ``iterate(stream)`` turns an async iterator into a blocking one
whose ``close()`` closes the async iterator on the loop. ``close()`` cancels what still
runs on the loop, so no caller waits forever, and stops the thread.

:func:`loop_for` gives the one loop of an errands app's runtime (its live-change hub
belongs to one loop), closed when the app closes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..app import Errands
    from ..runtime import Runtime

T = TypeVar("T")

_END: Any = object()


class LoopThread:
    """One event loop, running on a daemon thread named ``name``."""

    def __init__(self, name: str = "errands-loop") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    @property
    def running(self) -> bool:
        """Whether this process has the loop's thread running."""
        thread = self._thread
        return thread is not None and thread.is_alive() and self._pid == os.getpid()

    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started now if this process has none yet."""
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._start()
            assert self._loop is not None
            return self._loop

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            try:
                loop.run_forever()
            finally:
                try:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.run_until_complete(loop.shutdown_default_executor())
                finally:
                    loop.close()

        thread = threading.Thread(target=main, name=self.name, daemon=True)
        thread.start()
        started.wait()
        self._loop, self._thread, self._pid = loop, thread, os.getpid()

    def run(self, coro: Coroutine[Any, Any, T], on: asyncio.AbstractEventLoop | None = None) -> T:
        """Run ``coro`` on the loop and return its result (or raise its exception).
        ``concurrent.futures.CancelledError`` when the loop closes meanwhile — or, with
        ``on``, when that loop is no longer this one's (it closed: no new one starts)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("LoopThread.run would wait for its own thread")
        if on is not None and on is not self._loop:
            coro.close()
            raise concurrent.futures.CancelledError()
        try:
            loop = self.loop() if on is None else on
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except BaseException:
            coro.close()  # never started: no "never awaited" warning
            raise
        return future.result()

    def iterate(self, stream: AsyncIterator[T]) -> SyncStream[T]:
        """``stream`` as a blocking iterator whose items are awaited on the loop."""
        return SyncStream(self, stream)

    def close(self, timeout: float = 10.0) -> None:
        """Cancel every task on the loop, stop it and wait for its thread (at most
        ``timeout`` seconds for each). A later use starts a new loop."""
        with self._lock:
            loop, thread, pid = self._loop, self._thread, self._pid
            self._loop = self._thread = None
        if loop is None or thread is None or pid != os.getpid() or not thread.is_alive():
            return
        if threading.current_thread() is thread:
            raise RuntimeError("LoopThread.close called on its own thread")
        try:
            asyncio.run_coroutine_threadsafe(_cancel_others(), loop).result(timeout)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            pass
        finally:
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)


async def _cancel_others() -> None:
    """Cancel every task of the running loop but this one and wait until they end."""
    me = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not me]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


async def _next(stream: AsyncIterator[T]) -> T:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return _END  # type: ignore[no-any-return]


class SyncStream(Iterator[T]):
    """An async iterator followed from another thread: each ``next()`` waits (without
    spinning) for the next item on the loop. ``close()`` — which WSGI servers call on a
    response's body when the client leaves, whether or not it was iterated — closes the
    async iterator on the loop (``aclose``), so what it holds is released. The stream
    ends when the iterator does, or when the loop closes."""

    def __init__(self, runner: LoopThread, stream: AsyncIterator[T]) -> None:
        self._runner = runner
        self._stream = stream
        self._loop = runner.loop()  # the stream's; once it closes, the stream has ended
        self._finished = False
        self._closed = False

    def __iter__(self) -> SyncStream[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        try:
            item = self._runner.run(_next(self._stream), on=self._loop)
        except concurrent.futures.CancelledError:  # the loop is closing
            item = _END
        if item is _END:
            self._finished = True
            raise StopIteration
        return item

    def close(self) -> None:
        if self._closed:
            return
        self._closed = self._finished = True
        # A loop that is not running (closed with the app, or never started) holds
        # nothing: closing the loop closed its async generators.
        if hasattr(self._stream, "aclose") and self._runner.running:
            with contextlib.suppress(concurrent.futures.CancelledError):
                self._runner.run(_aclose(self._stream), on=self._loop)


async def _aclose(stream: Any) -> None:
    await stream.aclose()


_LOOPS: weakref.WeakKeyDictionary[Runtime, LoopThread] = weakref.WeakKeyDictionary()
_LOOPS_LOCK = threading.Lock()


def loop_for(app: Errands) -> LoopThread:
    """The loop of ``app`` in this process: made on first use, closed (and forgotten)
    when the app closes."""
    runtime = app.runtime
    with _LOOPS_LOCK:
        runner = _LOOPS.get(runtime)
        if runner is None:
            runner = _LOOPS[runtime] = LoopThread()

            def close() -> None:
                with _LOOPS_LOCK:
                    if _LOOPS.get(runtime) is runner:
                        del _LOOPS[runtime]
                runner.close()

            runtime.on_close(close)
    return runner


__all__ = ["LoopThread", "SyncStream", "loop_for"]
