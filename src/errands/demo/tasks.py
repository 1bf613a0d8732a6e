"""The demo's tasks: a search over a directory of text files, the merge of a search in
several folders, and a CSV export of a search's hits.

The corpus is a directory chosen by whoever runs the demo (by default the running
interpreter's standard library: a few thousand ``.py`` files), never by the user: the
payload only says what to look for, in which files (a glob) and, if not the whole
corpus, in which folder inside it. A folder is a relative path without ``..`` or hidden
parts, checked again when the search runs: one that leads outside the corpus (through a
symbolic link) fails the search. A search in several folders is a group of searches, one
per folder, whose ``search_merge`` task adds up their counts (``groups.py``).

Users' regular expressions run on the ``regex`` package, not ``re``, under a limit per
line and a budget per search (``matching.py``). Files are read line by line, text only
and up to a size (``reading.py``); the result counts the files skipped and names the
first few. A search that reaches ``MAX_HITS`` ends at the whole bar (its result says
``truncated``), as does every search that ends: its last progress message says it is
done, not which file it read last.

An export is named after the search it exports: the export form puts the search's
words (``search_words``) in its payload, and its CSV is downloaded as a slug of them.
"""

from __future__ import annotations

import csv
import fnmatch
import os
import re
import sysconfig
import time
from pathlib import Path, PurePosixPath
from typing import Any

import regex
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from .. import Errands, TaskContext, TaskFailed, TaskNotFound, TaskRecord
from .matching import MATCH_SECONDS, SEARCH_SECONDS, Matcher
from .reading import MAX_FILE_BYTES, SKIPPED_LISTED, Skipped, Skips, TextFile

#: Hits a search keeps (its output and its CSV); the summary says when it stopped early.
MAX_HITS = 5000
MAX_LINE = 300
#: Folders one search may look in at once (one search each, run as one group).
MAX_FOLDERS = 8
MAX_FOLDER_LENGTH = 200
#: The task that merges the searches of a search in several folders.
MERGE = "search_merge"


#: Not part of the corpus: caches, and the installed third-party packages that live
#: inside the standard library's directory.
_SKIP_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages"})


def default_corpus() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


class FolderError(ValueError):
    """A message for the person at the search form."""


def folder_problem(folder: str) -> str | None:
    """Why ``folder`` cannot name a folder inside the corpus, or None when it can: a
    relative path with ``/`` between its parts, none of them empty, ``.``, ``..``,
    hidden or one the search skips."""
    if len(folder) > MAX_FOLDER_LENGTH:
        return f"a folder's name has at most {MAX_FOLDER_LENGTH} characters"
    if folder.startswith("/") or "\\" in folder or re.match(r"[A-Za-z]:", folder):
        return "a folder is a path inside the searched directory, not an absolute path"
    parts = folder.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "a folder's path cannot have empty, “.” or “..” parts"
    if any(part.startswith(".") or part in _SKIP_DIRS for part in parts):
        return "hidden folders and installed packages are not searched"
    if any(ord(c) < 32 for c in folder):
        return "a folder's name cannot have control characters"
    return None


def folder_path(corpus: Path, folder: str) -> Path | None:
    """The directory ``folder`` names inside ``corpus`` (resolved), or None when there
    is none there: a bad name, a missing folder, or a link that leads outside."""
    if folder_problem(folder) is not None:
        return None
    base = corpus.resolve()
    path = (base / folder).resolve()
    return path if path.is_relative_to(base) and path.is_dir() else None


def parse_folders(text: str, corpus: Path) -> list[str]:
    """The folders the search form's field names (separated by commas or lines), each
    checked to be a folder inside ``corpus``; none for an empty field (the whole
    corpus). ``FolderError`` says what is wrong."""
    folders: list[str] = []
    for raw in re.split(r"[,\n]", text):
        folder = raw.strip().removesuffix("/")
        if folder and folder not in folders:
            folders.append(folder)
    if len(folders) > MAX_FOLDERS:
        raise FolderError(f"Search in at most {MAX_FOLDERS} folders at once.")
    for folder in folders:
        problem = folder_problem(folder)
        if problem is not None:
            raise FolderError(f"“{folder[:MAX_FOLDER_LENGTH]}”: {problem}.")
        if folder_path(corpus, folder) is None:
            raise FolderError(f"“{folder}” is not a folder of the searched directory.")
    for folder in folders:
        for other in folders:
            if other != folder and PurePosixPath(folder).is_relative_to(other):
                raise FolderError(f"“{folder}” is inside “{other}”: search “{other}” alone.")
    return folders


def top_folders(corpus: Path, limit: int = 12) -> list[str]:
    """The first folders at the top of the corpus, by name, for the search form's hint."""
    try:
        names = sorted(
            entry.name
            for entry in os.scandir(corpus)
            if entry.is_dir(follow_symlinks=False) and folder_problem(entry.name) is None
        )
    except OSError:
        return []
    return names[:limit]


class SearchIn(BaseModel):
    regex: bool = Field(False, description="Treat the query as a regular expression")
    case_sensitive: bool = False
    glob: str = Field("*.py", min_length=1, max_length=100, description="Which files")
    query: str = Field(min_length=1, max_length=200)
    #: Seconds to linger on each file, so a person can watch the search run.
    pause: float = Field(0.0, ge=0.0, le=0.05)
    folder: str = Field(
        "",
        max_length=MAX_FOLDER_LENGTH,
        description="A folder inside the corpus (empty: all of it)",
    )

    @field_validator("folder")
    @classmethod
    def _inside(cls, value: str) -> str:
        if value:
            problem = folder_problem(value)
            if problem is not None:
                raise ValueError(problem)
        return value

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
    #: The search's words (``search_words``), for the export's title and file name.
    search: str = Field("", max_length=2 * MAX_FOLDERS * MAX_FOLDER_LENGTH)


class MergeIn(BaseModel):
    """What a group gives its ``then`` task: its parts' results, in order."""

    results: list[dict[str, Any] | None] = Field(max_length=MAX_FOLDERS)


def merged(results: list[dict[str, Any] | None]) -> dict[str, Any]:
    """One result for a search in several folders: each folder's counts, in order, and
    the totals (``seconds``: the slowest folder's, as they run side by side)."""
    folders = [
        {
            "folder": r.get("folder", ""),
            "files": int(r.get("files", 0)),
            "hits": int(r.get("hits", 0)),
            "truncated": bool(r.get("truncated", False)),
            "skipped": int(r.get("skipped", 0)),
        }
        for r in (r or {} for r in results)
    ]
    skips = Skips()
    for r in (r or {} for r in results):
        for reason, count in dict(r.get("skipped_reasons", {})).items():
            skips.by_reason[reason] = skips.by_reason.get(reason, 0) + int(count)
        listed = list(r.get("skipped_files", []))
        skips.first.extend(listed[: SKIPPED_LISTED - len(skips.first)])
    return {
        "folders": folders,
        "files": sum(f["files"] for f in folders),
        "hits": sum(f["hits"] for f in folders),
        "truncated": any(f["truncated"] for f in folders),
        "seconds": max((float((r or {}).get("seconds", 0.0)) for r in results), default=0.0),
    } | skips.result()


def done_line(result: dict[str, Any]) -> str:
    """The last progress message of a search (or of a search in several folders)."""
    files = int(result.get("files", 0))
    line = f"Done: searched {files:,} file{'' if files == 1 else 's'}"
    skipped = int(result.get("skipped", 0))
    return line + (f", skipped {skipped:,}" if skipped else "")


def hit_of(item: Any) -> dict[str, Any]:
    """A search's hit from an output item: its own, or a group's ``{"part", "task_id",
    "item"}`` copy of a part's."""
    if isinstance(item, dict) and "item" in item and "part" in item:
        return dict(item["item"])
    return dict(item)


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


def register(
    app: Errands,
    *,
    corpus: Path,
    exports: Path,
    max_file_bytes: int = MAX_FILE_BYTES,
    search_seconds: float = SEARCH_SECONDS,
) -> None:
    """Register ``search``, ``search_merge`` and ``export`` on ``app``. A search skips
    files over ``max_file_bytes``; one with a regular expression may spend
    ``search_seconds`` matching."""
    exports.mkdir(parents=True, exist_ok=True)
    corpus = corpus.resolve()

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
        # A user's pattern is matched under a Matcher's limits, releasing the GIL;
        # escaped plain text cannot backtrack, and skips that cost (4x the time).
        match = Matcher(pattern, search_seconds).search if payload.regex else pattern.search
        root = folder_path(corpus, payload.folder) if payload.folder else corpus
        if root is None:
            raise TaskFailed(f"There is no folder “{payload.folder}” to search.", retry=False)
        prefix = f"{payload.folder}/" if payload.folder else ""
        files = [(prefix + rel, path) for rel, path in _files(root, payload.glob)]
        total = len(files)
        ctx.progress(0, total, f"{total:,} files to search")
        hits, scanned, truncated = 0, 0, False
        skipped = Skips()
        for rel, path in files:
            ctx.raise_if_cancelled()
            try:
                for number, line in TextFile(path, max_file_bytes).lines():
                    ctx.raise_if_cancelled()
                    try:
                        found = match(line)
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
            except Skipped as exc:
                skipped.add(rel, exc.reason)
            else:
                scanned += 1
            ctx.progress(scanned + skipped.count, total, rel)
            if truncated:
                break
            if payload.pause:
                time.sleep(payload.pause)
        named = {"folder": payload.folder} if payload.folder else {}
        result = (
            named
            | {
                "files": scanned,
                "hits": hits,
                "truncated": truncated,
                "seconds": round(time.monotonic() - started, 3),
            }
            | skipped.result()
        )
        # Finished, at its limit or not: the whole bar, and words that say it is over.
        ctx.progress(total, total, done_line(result))
        return result

    @app.task(name=MERGE, max_attempts=2, timeout=60, payload=MergeIn)
    def search_merge(ctx: TaskContext, payload: MergeIn) -> dict[str, Any]:
        """The result of a search in several folders, from its searches' results."""
        result = merged(payload.results)
        ctx.progress(1, 1, done_line(result))
        return result

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
        total = source.result.get("hits") if isinstance(source.result, dict) else None
        rows = after = 0
        with partial.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "line", "text"])
            # A search in several folders: every folder's hits, sorted by path and line.
            gathered: list[dict[str, Any]] = []
            while items := app.sync.outputs(source.id, owner=ctx.owner, after=after, limit=1000):
                for seq, item in items:
                    after = seq
                    if source.is_group:
                        gathered.append(hit_of(item))
                        continue
                    writer.writerow([item["path"], item["line"], item["text"]])
                    rows += 1
                ctx.progress(len(gathered) if source.is_group else rows, total)
            for hit in sorted(gathered, key=hit_order):
                writer.writerow([hit["path"], hit["line"], hit["text"]])
                rows += 1
        partial.replace(target)
        size = target.stat().st_size
        ctx.progress(1, 1, f"Done: wrote {rows:,} row{'' if rows == 1 else 's'}")
        # The file's name is the task's id: the download route finds it without help.
        return {"rows": rows, "search_id": source.id, "bytes": size}


def hit_order(hit: dict[str, Any]) -> tuple[str, int]:
    return (str(hit.get("path", "")), int(hit.get("line", 0)))


def search_words(payload: Any, folders: list[str] | None = None) -> str:
    """What a search looks for, in words: ``“def” in *.py`` (``under pkg``, or ``in a,
    b`` for a search in several folders)."""
    fields = payload if isinstance(payload, dict) else {}
    words = f"“{fields.get('query', '')}” in {fields.get('glob', '')}"
    if folders:
        return f"{words} in {', '.join(folders)}"
    return words + (f" under {fields['folder']}" if fields.get("folder") else "")


def slug(words: str, limit: int = 60) -> str:
    """``words`` as a file name's stem: lower-case ASCII letters, digits and single
    dashes (``“def” in *.py`` → ``def-in-py``); empty when nothing is left."""
    return re.sub(r"[^a-z0-9]+", "-", words.lower()).strip("-")[:limit].rstrip("-")


def export_file_name(payload: Any) -> str:
    """The name an export's CSV is downloaded as: a slug of its search's words."""
    fields = payload if isinstance(payload, dict) else {}
    stem = slug(str(fields.get("search", "")))
    return f"{stem or 'search-' + str(fields.get('search_id', ''))[:8]}.csv"


def task_title(record: TaskRecord) -> str:
    """A one-line description of a task for lists."""
    if record.is_group:
        if record.name == "search":
            return f"search in {record.group_size} folders"
        return f"group of {record.group_size} {record.name} tasks"
    return title_of(record.name, record.payload)


def title_of(name: str, payload: Any) -> str:
    """A one-line description of a task of ``name`` with ``payload`` (a task's, or the
    one a schedule gives the tasks it creates)."""
    fields = payload if isinstance(payload, dict) else {}
    if name == "search":
        return f"search {search_words(fields)}"
    if name == "export":
        if fields.get("search"):
            return f"Export of {fields['search']}"
        return f"Export of search {str(fields.get('search_id', ''))[:8]}"
    if name == MERGE:
        return "merge of the folders' searches"
    return name
