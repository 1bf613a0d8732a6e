"""Django ``@task`` functions for the tests of ``errands.django`` (imported after
``tests.django_site.setup_in_process()``: the decorator registers them with the
example project's errands app)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from errands.django import ErrandsTaskContext, current_owner
from errands.django.tasks_compat import task


@task()
def echo(value: Any) -> Any:
    return value


@task()
def fail(message: str) -> None:
    raise ValueError(message)


@task()
def wait_for(path: str) -> str:
    """Run until the file ``path`` exists."""
    while not Path(path).exists():
        time.sleep(0.02)
    return "released"


@task(takes_context=True)
def report(context: ErrandsTaskContext, steps: int) -> int:
    """Report ``steps`` progress values and emit one item per step."""
    for n in range(1, steps + 1):
        context.emit({"step": n})
        context.progress(n, steps, f"step {n}")
    return int(context.attempt)


@task()
def whose() -> str:
    """The owner a task's own enqueues get: the task's owner."""
    return current_owner()


@task()
async def async_double(value: int) -> int:
    return value * 2
