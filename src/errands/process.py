"""Child processes for ``executor="process"`` tasks (CPU-bound work).

Each child runs one attempt at a time. The parent sends the task's import path and
payload over a pipe; the child imports the task definition, runs it with a real
``TaskContext`` and sends back coalesced progress, emitted items and the outcome. A
timeout or a cancel kills the child (a plain function cannot be interrupted any other
way) and the pool starts a fresh one when needed. Children use the ``spawn`` start
method: the worker's threads and sockets are never copied.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import multiprocessing
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Literal

from pydantic_core import to_jsonable_python

from .context import TaskContext
from .errors import ErrandsError, Retry, TaskCancelled, TaskFailed

_FLUSH_SECONDS = 0.05
#: What a child needs to make the attempt's ``TaskContext`` (its keyword arguments).
_CONTEXT_INFO = ("task_id", "owner", "name", "attempt", "max_attempts")


class ChildDied(ErrandsError):
    """The process running the task stopped unexpectedly."""


class RemoteError(Exception):
    """An exception raised in a child process, rebuilt in the worker."""

    def __init__(
        self,
        kind: RemoteKind,
        type_name: str,
        message: str,
        detail: str,
        *,
        retry_delay: float | None = None,
        safe: bool = False,
        retry: bool = True,
    ) -> None:
        super().__init__(message)
        #: "cancelled" (``TaskCancelled``), "retry" (``Retry``) or "error" (the rest).
        self.kind = kind
        self.type_name, self.message, self.detail = type_name, message, detail
        #: The delay ``Retry`` asked for; whether the message is fit for the task's owner
        #: (an errands error); False when another attempt cannot help
        #: (``TaskFailed(retry=False)``).
        self.retry_delay, self.safe, self.retry = retry_delay, safe, retry


RemoteKind = Literal["cancelled", "retry", "error"]


def _remote(exc: BaseException) -> dict[str, Any]:
    """What the worker needs to rebuild ``exc`` as a ``RemoteError``."""
    kind: RemoteKind = "error"
    if isinstance(exc, TaskCancelled):
        kind = "cancelled"
    elif isinstance(exc, Retry):
        kind = "retry"
    safe = isinstance(exc, ErrandsError)
    return {
        "kind": kind,
        "type_name": type(exc).__name__,
        "message": exc.message if safe else str(exc),  # type: ignore[attr-defined]
        "detail": "".join(traceback.format_exception(exc)),
        "retry_delay": exc.delay if isinstance(exc, Retry) else None,
        "safe": safe,
        "retry": not (isinstance(exc, TaskFailed) and not exc.retry),
    }


class _Child:
    def __init__(self, ctx: Any) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_child_main, args=(child_conn,), daemon=True)
        self.process.start()
        child_conn.close()
        #: The attempt it runs (its context, its task id the key in ``ProcessPool._busy``).
        self.ctx: TaskContext | None = None
        self.future: asyncio.Future[Any] | None = None


class ProcessPool:
    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._loop = loop
        self._size = size
        self._mp = multiprocessing.get_context("spawn")
        self._idle: list[_Child] = []
        self._busy: dict[str, _Child] = {}

    def run(
        self, fn: Callable[..., Any], ctx: TaskContext, stored_payload: Any
    ) -> asyncio.Future[Any]:
        """Run ``fn`` (importable at module level) for the attempt of ``ctx`` in a child;
        its progress and items reach ``ctx``, its result or error the future."""
        child = self._idle.pop() if self._idle else _Child(self._mp)
        future: asyncio.Future[Any] = self._loop.create_future()
        child.ctx, child.future = ctx, future
        self._busy[ctx.task_id] = child
        info = {key: getattr(ctx, key) for key in _CONTEXT_INFO}
        child.conn.send(("run", fn.__module__, fn.__qualname__, stored_payload, info))
        self._loop.add_reader(child.conn.fileno(), self._readable, child)
        return future

    def _readable(self, child: _Child) -> None:
        try:
            while child.conn.poll():
                self._handle(child, child.conn.recv())
                if child.ctx is None:
                    return
        except (EOFError, OSError):
            self._discard(child, ChildDied())

    def _handle(self, child: _Child, message: tuple[Any, ...]) -> None:
        ctx, future = child.ctx, child.future
        assert ctx is not None and future is not None
        kind = message[0]
        if kind == "progress":
            ctx.progress(*message[1])
        elif kind == "emit":
            for item in message[1]:
                ctx.emit(item)
        elif kind in ("ok", "error"):
            self._release(child)
            if len(self._idle) < self._size:
                self._idle.append(child)
            else:
                self._terminate(child)
            if future.done():
                return
            if kind == "ok":
                future.set_result(message[1])
            else:
                future.set_exception(RemoteError(**message[1]))

    def kill(self, key: str) -> None:
        """Kill the child running the attempt of task ``key``."""
        child = self._busy.get(key)
        if child is not None:
            self._discard(child, None)

    def _release(self, child: _Child) -> asyncio.Future[Any] | None:
        """Detach the child from its attempt; the attempt's future."""
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(child.conn.fileno())
        if child.ctx is not None:
            self._busy.pop(child.ctx.task_id, None)
        future = child.future
        child.ctx = child.future = None
        return future

    def _discard(self, child: _Child, error: BaseException | None) -> None:
        future = self._release(child)
        self._terminate(child)
        if future is not None and not future.done():
            if error is None:
                future.cancel()
            else:
                future.set_exception(error)

    @staticmethod
    def _terminate(child: _Child) -> None:
        with contextlib.suppress(Exception):
            child.process.kill()
            child.process.join(timeout=5)
        with contextlib.suppress(Exception):
            child.conn.close()

    def close(self) -> None:
        for child in list(self._busy.values()):
            self._discard(child, None)
        for child in self._idle:
            with contextlib.suppress(Exception):
                child.conn.send(("exit",))
            self._terminate(child)
        self._idle.clear()


# -- the child side ---------------------------------------------------------------------
def _child_main(conn: Connection) -> None:
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with lock:
            conn.send(message)

    while True:
        try:
            message = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message[0] != "run":
            return
        _, module_name, qualname, stored, info = message
        ctx = TaskContext(**info)
        stop = threading.Event()
        pump = threading.Thread(target=_pump, args=(ctx, send, stop), daemon=True)
        pump.start()
        try:
            definition = _resolve(module_name, qualname)
            result = definition.fn(ctx, definition.load(stored))
            reply: tuple[Any, ...] = ("ok", to_jsonable_python(result))
        except BaseException as exc:
            reply = ("error", _remote(exc))
        stop.set()
        pump.join()
        _send_pending(ctx, send)
        send(reply)


def _resolve(module_name: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not hasattr(obj, "load"):
        raise ErrandsError("the process task is not reachable at module level")
    return obj


def _pump(ctx: TaskContext, send: Any, stop: threading.Event) -> None:
    while not stop.wait(_FLUSH_SECONDS):
        _send_pending(ctx, send)


def _send_pending(ctx: TaskContext, send: Any) -> None:
    progress = ctx._take_progress()
    if progress is not None:
        send(("progress", progress))
    items = ctx._take_outputs()
    if items:
        send(("emit", items))
