"""What a finished task's page says about its outcome, in words for people.

A task's result is JSON, fine for the API and for scripts, not for the person who
asked for a search. The task page shows instead (``_outcome.html``):

- a *final line* in place of the last progress message, which named the last file
  read: ``Done: searched 1,234 files``, ``Failed``, ``Cancelled``;
- a *summary* of the result: for a search, its hits (``5,000+ hits, stopped at the
  limit`` when it reached ``MAX_HITS``), the files searched and skipped (the first few
  by name, with the reason), the time taken and whether it is complete; for a search in
  several folders (and its merge task), the totals and a row per folder; for an export,
  the link to its CSV and the file's size;
- the result as JSON, under an "as JSON" disclosure.

The page renders it when it loads, and its script fetches the same fragment
(``GET /tasks/{id}/outcome``) when the task ends, so the words live in one place. The
error of a failed task is its message only (the exception's type is in the admin
view): a ``TaskFailed`` carries a message meant for the owner; other exceptions carry
none, and are shown as "The task failed."
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import Status, TaskRecord
from .tasks import MAX_HITS, MERGE, done_line

#: What a skipped file's reason (``reading.py``) says on the page.
REASONS = {
    "not text": "not a text file",
    "too large": "too large",
    "unreadable": "could not be read",
}
#: The error line of a failed task whose error has no message.
NO_MESSAGE = "The task failed."


@dataclass(frozen=True, slots=True)
class FolderRow:
    folder: str
    files: int
    hits: int
    skipped: int
    truncated: bool


@dataclass(frozen=True, slots=True)
class Summary:
    """A result in words: ``facts`` (label, value) in order, a search's skipped files
    (path, reason) and how many more there are, a search in several folders' rows, an
    export's download link."""

    facts: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    skipped_more: int = 0
    folders: list[FolderRow] = field(default_factory=list)
    download: str | None = None
    download_label: str = ""


def count(n: int, one: str, many: str | None = None) -> str:
    """``1 file``, ``1,234 files``."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def size_words(size: int) -> str:
    """A file's size: ``512 bytes``, ``12.3 KB``, ``4.0 MB`` (powers of 1,024)."""
    if size < 1024:
        return count(size, "byte")
    value = float(size)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            return f"{value:,.1f} {unit}"
    raise AssertionError("unreachable")


def seconds_words(seconds: float) -> str:
    """``0.42 s``, ``12 s``, ``3 min 5 s``."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def hits_words(hits: int, truncated: bool) -> str:
    """A search's hits: ``12 hits``, or ``5,000+ hits, stopped at the limit``."""
    if truncated:
        return f"{hits:,}+ hits, stopped at the limit"
    return count(hits, "hit")


def hit_count(record: TaskRecord, shown: int, cap: int) -> tuple[str, bool]:
    """The task page's hit count, and whether the search stopped at its limit: the
    result's count once the search has succeeded (``5,000+`` when it stopped there),
    else the hits on the page (``500+`` when the page shows only the first ones)."""
    result = record.result if isinstance(record.result, dict) else None
    if record.status is Status.SUCCEEDED and result is not None and "hits" in result:
        truncated = bool(result.get("truncated"))
        return f"{int(result['hits']):,}{'+' if truncated else ''}", truncated
    return f"{shown:,}{'+' if shown >= cap else ''}", False


def final_line(record: TaskRecord) -> str:
    """The line that replaces a finished task's last progress message ("" while it
    runs: then the progress message is current)."""
    if record.status is Status.FAILED:
        return "Failed"
    if record.status is Status.CANCELLED:
        return "Cancelled"
    if record.status is not Status.SUCCEEDED:
        return ""
    result = record.result if isinstance(record.result, dict) else {}
    if record.name == "export":
        return f"Done: wrote {count(int(result.get('rows', 0)), 'row')}"
    if record.name in ("search", MERGE) and "files" in result:
        return done_line(result)
    return "Done"


def error_text(record: TaskRecord) -> str:
    """A failed or cancelled task's error as its owner sees it: the message alone."""
    if record.error is None:
        return ""
    return record.error.message or NO_MESSAGE


def summarize(record: TaskRecord) -> Summary | None:
    """The summary of a succeeded task's result (None for any other task)."""
    result = record.result
    if record.status is not Status.SUCCEEDED or not isinstance(result, dict):
        return None
    if record.name == "export":
        return _export(record, result)
    if record.name in ("search", MERGE) and "hits" in result:
        return _search(result)
    return None


def _search(result: dict[str, Any]) -> Summary:
    hits, truncated = int(result.get("hits", 0)), bool(result.get("truncated"))
    skipped = int(result.get("skipped", 0))
    reasons = dict(result.get("skipped_reasons", {}))
    why = ", ".join(f"{n:,} {REASONS.get(r, r)}" for r, n in reasons.items())
    listed = [
        (str(f.get("path", "")), REASONS.get(str(f.get("reason")), str(f.get("reason"))))
        for f in result.get("skipped_files", [])
        if isinstance(f, dict)
    ]
    facts = [
        ("Hits", hits_words(hits, truncated)),
        ("Files searched", f"{int(result.get('files', 0)):,}"),
        ("Files skipped", f"{skipped:,} ({why})" if skipped and why else f"{skipped:,}"),
        ("Time taken", seconds_words(float(result.get("seconds", 0.0)))),
        (
            "Complete",
            f"no: the search stopped at {MAX_HITS:,} hits" if truncated else "yes",
        ),
    ]
    folders = [
        FolderRow(
            folder=str(f.get("folder", "")),
            files=int(f.get("files", 0)),
            hits=int(f.get("hits", 0)),
            skipped=int(f.get("skipped", 0)),
            truncated=bool(f.get("truncated")),
        )
        for f in result.get("folders", [])
        if isinstance(f, dict)
    ]
    return Summary(
        facts=facts,
        skipped=listed,
        skipped_more=max(0, skipped - len(listed)),
        folders=folders,
    )


def _export(record: TaskRecord, result: dict[str, Any]) -> Summary:
    rows = int(result.get("rows", 0))
    size = result.get("bytes")
    facts = [("Rows", f"{rows:,}")]
    label = f"Download CSV ({count(rows, 'row')}"
    if isinstance(size, int):
        facts.append(("Size", size_words(size)))
        label += f", {size_words(size)}"
    return Summary(facts=facts, download=f"/exports/{record.id}.csv", download_label=label + ")")
