"""Shared fixtures: every test gets its own real SQLite file in a temporary directory.

``app`` is an :class:`errands.Errands` on that file with no tasks registered; tests
register what they need. ``run_worker`` runs an in-process worker in the background of
the test's event loop. Worker *processes* are started with ``spawn_worker`` (tests that
use them are marked ``slow``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from errands import Errands, Worker

ROOT = Path(__file__).resolve().parent.parent

# Fast timings for workers in tests (the defaults are tuned for production).
FAST = {
    "lease_seconds": 1.5,
    "heartbeat_interval": 0.25,
    "poll_interval": 0.2,
    "progress_interval": 0.05,
    "cancel_grace": 0.3,
    "shutdown_timeout": 5.0,
    "handle_signals": False,
}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'errands.db'}"


@pytest.fixture
def app(db_url: str) -> Iterator[Errands]:
    errands_app = Errands(db_url)
    yield errands_app
    errands_app.close()


@asynccontextmanager
async def running_worker(app: Errands, **settings: Any) -> AsyncIterator[Worker]:
    """Run a worker on this loop for the duration of the block, then stop it."""
    worker = app.worker(**(FAST | settings))
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0)
    try:
        yield worker
    finally:
        worker.stop()
        worker.stop()  # a second stop: do not wait for running attempts
        await asyncio.wait_for(task, 30)


@pytest.fixture
def run_worker() -> Callable[..., Any]:
    return running_worker


class WorkerProcess:
    """``errands worker MODULE:ATTR`` as a real child process."""

    def __init__(self, app_path: str, db_url: str, *args: str, env: dict[str, str] | None = None):
        full_env = os.environ | {"ERRANDS_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}
        full_env |= env or {}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "errands", "worker", app_path, *args],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def output(self) -> str:
        if self.proc.poll() is None:
            self.terminate()
        assert self.proc.stdout is not None
        return self.proc.stdout.read()


@pytest.fixture
def spawn_worker(db_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def spawn(app_path: str, *args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        w = WorkerProcess(app_path, db_url, *args, env=env)
        started.append(w)
        return w

    yield spawn
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(10)
        if w.proc.stdout is not None:
            w.proc.stdout.close()
