"""The demo's tasks: a search over a directory of text files, and a CSV export of a
search's hits.

The corpus is a directory chosen by whoever runs the demo (by default the running
interpreter's standard library: a few thousand ``.py`` files), never by the user: the
payload only says what to look for and in which files (a glob inside the corpus).

Users' regular expressions run on the ``regex`` package, not ``re``: a match that
backtracks for ever (``(a|aa)+$``) stops after ``MATCH_SECONDS`` and fails the search,
and matching releases the GIL, so one bad pattern cannot stall the web process that
hosts the demo's worker. Lines are split on ``\n`` only, so line numbers are the ones
editors and ``grep -n`` show.
"""

from __future__ import annotations

import csv
import fnmatch
import os
import sysconfig
import time
from pathlib import Path
from typing import Any

import regex
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from .. import Errands, TaskContext, TaskFailed, TaskNotFound, TaskRecord

#: Hits a search keeps (its output and its CSV); the summary says when it stopped early.
MAX_HITS = 5000
MAX_LINE = 300
#: Longest a regular expression may take on one line before the search fails.
MATCH_SECONDS = 0.5


#: Not part of the corpus: caches, and the installed third-party packages that live
#: inside the standard library's directory.
_SKIP_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages"})


def default_corpus() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


class SearchIn(BaseModel):
    regex: bool = Field(False, description="Treat the query as a regular expression")
    case_sensitive: bool = False
    glob: str = Field("*.py", min_length=1, max_length=100, description="Which files")
    query: str = Field(min_length=1, max_length=200)
    #: Seconds to linger on each file, so a person can watch the search run.
    pause: float = Field(0.0, ge=0.0, le=0.05)

    @field_validator("query")
    @classmethod
    def _compiles(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("regex"):
            try:
                regex.compile(value)
            except regex.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class ExportIn(BaseModel):
    search_id: str = Field(min_length=36, max_length=36)


def _files(corpus: Path, glob: str) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for root, dirs, names in os.walk(corpus):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
        for name in sorted(names):
            path = Path(root) / name
            rel = path.relative_to(corpus).as_posix()
            if fnmatch.fnmatch(name, glob) or fnmatch.fnmatch(rel, glob):
                found.append((rel, path))
    return found


def register(app: Errands, *, corpus: Path, exports: Path) -> None:
    """Register ``search`` and ``export`` on ``app``."""
    exports.mkdir(parents=True, exist_ok=True)

    @app.task(max_attempts=2, timeout=600, payload=SearchIn)
    def search(ctx: TaskContext, payload: SearchIn) -> dict[str, Any]:
        """Search the corpus; reports progress per file and emits each hit."""
        started = time.monotonic()
        flags = 0 if payload.case_sensitive else regex.IGNORECASE
        query = payload.query if payload.regex else regex.escape(payload.query)
        try:
            pattern = regex.compile(query, flags)
        except regex.error as exc:  # another attempt would fail the same way
            raise TaskFailed(f"Not a valid regular expression: {exc}", retry=False) from None
        # A user's pattern gets a time limit per line and releases the GIL while it
        # matches; escaped plain text cannot backtrack, and skips that cost (4x the time).
        guard: dict[str, Any] = (
            {"timeout": MATCH_SECONDS, "concurrent": True} if payload.regex else {}
        )
        files = _files(corpus, payload.glob)
        total = len(files)
        ctx.progress(0, total, f"{total} files to search")
        hits, scanned, truncated = 0, 0, False
        for rel, path in files:
            ctx.raise_if_cancelled()
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                text = ""
            # Without the newline that ends the file (an empty file has no lines).
            lines = text.removesuffix("\n").split("\n") if text else []
            for number, line in enumerate(lines, start=1):
                ctx.raise_if_cancelled()
                line = line.removesuffix("\r")
                try:
                    found = pattern.search(line, **guard)
                except TimeoutError:
                    raise TaskFailed(
                        f"The regular expression took over {MATCH_SECONDS} s on line "
                        f"{number} of {rel}; try a simpler one.",
                        retry=False,
                    ) from None
                if found:
                    if hits >= MAX_HITS:
                        truncated = True
                        break
                    hits += 1
                    ctx.emit({"path": rel, "line": number, "text": line.strip()[:MAX_LINE]})
            scanned += 1
            ctx.progress(scanned, total, rel)
            if truncated:
                break
            if payload.pause:
                time.sleep(payload.pause)
        return {
            "files": scanned,
            "hits": hits,
            "truncated": truncated,
            "seconds": round(time.monotonic() - started, 3),
        }

    @app.task(max_attempts=2, timeout=600, payload=ExportIn)
    def export(ctx: TaskContext, payload: ExportIn) -> dict[str, Any]:
        """Write a finished search's hits to a CSV file the owner can download."""
        try:
            source = app.sync.get(payload.search_id, owner=ctx.owner)
        except TaskNotFound:
            raise TaskFailed("There is no such search.", retry=False) from None
        if source.name != "search" or source.status.value != "succeeded":
            raise TaskFailed("Only a finished search can be exported.", retry=False)
        target = exports / f"{ctx.task_id}.csv"
        partial = target.with_suffix(".part")
        rows = after = 0
        with partial.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "line", "text"])
            while items := app.sync.outputs(source.id, owner=ctx.owner, after=after, limit=1000):
                for seq, hit in items:
                    writer.writerow([hit["path"], hit["line"], hit["text"]])
                    rows += 1
                    after = seq
                ctx.progress(rows, source.result.get("hits") if source.result else None)
        partial.replace(target)
        return {"rows": rows, "search_id": source.id, "file": target.name}


def task_title(record: TaskRecord) -> str:
    """A one-line description of a task for lists."""
    return title_of(record.name, record.payload)


def title_of(name: str, payload: Any) -> str:
    """A one-line description of a task of ``name`` with ``payload`` (a task's, or the
    one a schedule gives the tasks it creates)."""
    fields = payload if isinstance(payload, dict) else {}
    if name == "search":
        return f"search “{fields.get('query', '')}” in {fields.get('glob', '')}"
    if name == "export":
        return f"export of search {str(fields.get('search_id', ''))[:8]}"
    return name
