"""Matching a user's regular expression under two limits.

Users' patterns run on the ``regex`` package, whose ``timeout=`` stops one match, and
whose ``concurrent=True`` releases the GIL while it runs (one bad pattern cannot stall
the web process that hosts the demo's worker). Two limits apply:

- one line may take at most ``MATCH_SECONDS`` (a pattern that backtracks for ever on
  one line, ``(a|aa)+$``, fails at once);
- one search may spend at most ``budget`` seconds matching in all (a pattern slow on
  every line, ``(.*a){12}``, stays under the first limit on each line and would
  otherwise run for minutes). Each match gets the smaller of the two limits as its
  timeout, so the budget is kept to within one line.

The budget counts the time spent in matches (wall-clock, as ``regex``'s timeout does),
not the time spent reading files, pausing or emitting hits: the message can then say
how long the *pattern* took.
"""

from __future__ import annotations

import time
from typing import Any

import regex

from .. import TaskFailed

#: Longest a regular expression may take on one line before the search fails.
MATCH_SECONDS = 0.5
#: The default time one search may spend matching (``register(search_seconds=…)``).
SEARCH_SECONDS = 10.0


class OutOfTime(TaskFailed):
    """A search's pattern used up its matching budget."""


class Matcher:
    """``search(line)``: ``pattern.search`` under the per-line limit and the budget. A
    line over the per-line limit raises ``TimeoutError``; a spent budget raises
    ``OutOfTime`` (a ``TaskFailed`` that no other attempt can help)."""

    def __init__(self, pattern: regex.Pattern[str], budget: float) -> None:
        self.pattern = pattern
        self.budget = budget
        self.spent = 0.0

    def search(self, line: str) -> Any:
        left = self.budget - self.spent
        if left <= 0:
            raise self._out_of_time()
        limit = min(MATCH_SECONDS, left)
        began = time.perf_counter()
        try:
            return self.pattern.search(line, timeout=limit, concurrent=True)
        except TimeoutError:
            if limit < MATCH_SECONDS:
                raise self._out_of_time() from None
            raise
        finally:
            self.spent += time.perf_counter() - began

    def _out_of_time(self) -> OutOfTime:
        return OutOfTime(
            f"This pattern took too long: the search stopped after {self.budget:g} s of "
            "matching. Try a simpler pattern.",
            retry=False,
        )
