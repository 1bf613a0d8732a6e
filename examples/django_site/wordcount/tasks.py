"""The example's tasks: one through Django's ``@task``, one through errands' own."""

from __future__ import annotations

import re
import sysconfig
import time
from collections import Counter
from pathlib import Path
from typing import Any

from errands.django import ErrandsTaskContext, app
from errands.django.tasks_compat import task

WORD = re.compile(r"[A-Za-z_]{3,}")


@task(takes_context=True)
def count_words(
    context: ErrandsTaskContext, limit: int = 200, pause: float = 0.0
) -> dict[str, Any]:
    """Count the words of the standard library's modules, reporting progress and
    emitting each file's most common word; ``pause`` seconds after each file (slow
    motion, to watch it: the whole count takes a fraction of a second)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py"))[:limit]
    counts: Counter[str] = Counter()
    for n, path in enumerate(files, 1):
        context.raise_if_cancelled()
        words = WORD.findall(path.read_text(errors="replace"))
        counts.update(words)
        if words:
            word, times = Counter(words).most_common(1)[0]
            context.emit({"file": path.name, "word": word, "times": times})
        context.progress(n, len(files), path.name)
        if pause:
            time.sleep(pause)
    return {"files": len(files), "top": counts.most_common(10)}


@task()
def add(a: int, b: int) -> int:
    return a + b


@app.task
def shout(ctx: Any, payload: dict[str, Any]) -> str:
    """A task of errands' own decorator, beside Django's."""
    return str(payload.get("text", "")).upper()
