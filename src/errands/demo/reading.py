"""Reading the corpus's files for a search: text only, line by line, within a size bound.

A search holds one line of one file at a time, never a whole file: a 45 MB archive
that a glob such as ``*.a`` picks must not grow the process by 45 MB. Files the search
does not read are *skipped*, for a reason the user is told:

- ``too large``: over the search's ``max_file_bytes`` (from its size on disk, before
  reading anything);
- ``not text``: the file's first block (``SNIFF_BYTES``) has a NUL byte, or is not
  UTF-8. Only that block is judged: a multi-byte character cut at its end is allowed,
  and a stray undecodable byte further on is read as U+FFFD (the file is text with a
  flaw; finding that out before the search would read every file twice);
- ``unreadable``: the operating system refused to open or read it (a read that fails
  half-way skips the rest of the file; the hits before it stay).

Lines are split on ``\\n`` only (a ``\\r`` before it is dropped), so line numbers are
the ones editors and ``grep -n`` show; the newline that ends the file starts no line.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: How much of a file is read to tell text from binary.
SNIFF_BYTES = 8192
#: The default for the largest file a search reads (``register(max_file_bytes=…)``).
MAX_FILE_BYTES = 4 * 1024 * 1024

TOO_LARGE = "too large"
NOT_TEXT = "not text"
UNREADABLE = "unreadable"


class Skipped(Exception):
    """A file the search does not read; ``reason`` is one of the module's reasons."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TextFile:
    """A file the search may read: ``lines()`` gives its numbered lines, or raises
    ``Skipped`` before the first one when it is not to be read."""

    path: Path
    max_bytes: int

    def lines(self) -> Iterator[tuple[int, str]]:
        try:
            with self.path.open("rb") as fh:
                if os.fstat(fh.fileno()).st_size > self.max_bytes:
                    raise Skipped(TOO_LARGE)
                head = fh.read(SNIFF_BYTES)
                if not is_text(head, complete=len(head) < SNIFF_BYTES):
                    raise Skipped(NOT_TEXT)
                fh.seek(0)
                for number, raw in enumerate(fh, start=1):
                    yield (
                        number,
                        raw.removesuffix(b"\n")
                        .removesuffix(b"\r")
                        .decode("utf-8", errors="replace"),
                    )
        except OSError:
            raise Skipped(UNREADABLE) from None


def is_text(head: bytes, *, complete: bool) -> bool:
    """Whether ``head``, a file's first bytes (all of them if ``complete``), looks like
    UTF-8 text: no NUL byte, and valid UTF-8 up to a character cut at the end."""
    if b"\0" in head:
        return False
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(head, final=complete)
    except UnicodeDecodeError:
        return False
    return True


#: Skipped files a search's result names (the counts cover them all).
SKIPPED_LISTED = 10


@dataclass(slots=True)
class Skips:
    """The files a search skipped: counts by reason, and the first few by name."""

    by_reason: dict[str, int] = field(default_factory=dict)
    first: list[dict[str, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(self.by_reason.values())

    def add(self, path: str, reason: str) -> None:
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if len(self.first) < SKIPPED_LISTED:
            self.first.append({"path": path, "reason": reason})

    def result(self) -> dict[str, Any]:
        """The search result's keys: ``skipped`` (how many), ``skipped_reasons`` (how
        many for each reason) and ``skipped_files`` (the first few, with their reason)."""
        return {
            "skipped": self.count,
            "skipped_reasons": dict(sorted(self.by_reason.items())),
            "skipped_files": list(self.first),
        }
