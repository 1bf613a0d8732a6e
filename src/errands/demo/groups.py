"""Searches in several folders: one search per folder, run as one errands group.

The search form's "In folders" field names folders inside the corpus (checked by
``tasks.parse_folders``). One folder, or none, is an ordinary search; two or more are
submitted with ``submit_group``: a ``search`` part per folder and the ``search_merge``
task, which adds up their counts, as the group's ``then``. The group's own record is
what its page follows: one progress bar (the library adds the parts' progress up), the
parts' hits as they arrive (the group's output, each item tagged with its part, so with
its folder), and the merged result. Its page lists the parts and their state; a part's
page links back to its group. Every read passes the user's owner id, so another user's
group or part is the demo's 404 page, exactly like a missing one.

Task lists show a group once, with its parts under it (``rows``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import Errands, TaskNotFound, TaskRecord
from .tasks import MERGE, hit_of, hit_order, search_words, task_title

#: The most parts ``Errands.parts`` gives at once (the demo's groups have far fewer).
PARTS_MAX = 500


@dataclass(frozen=True, slots=True)
class FolderSearch:
    """A search in several folders as its page shows it: the group's searches (in the
    folders' order) and its merge task."""

    searches: list[TaskRecord]
    merge: TaskRecord | None

    @property
    def folders(self) -> list[str]:
        return [str(part.payload.get("folder", "")) for part in self.searches]

    @property
    def query(self) -> dict[str, Any]:
        """The payload the searches share (their folder aside)."""
        first = self.searches[0].payload if self.searches else {}
        return {k: v for k, v in first.items() if k != "folder"}

    def title(self, group: TaskRecord) -> str:
        """The group's title on its page: its query and its folders."""
        query = self.query
        if not query:
            return task_title(group)
        return f"search {self.words}"

    @property
    def words(self) -> str:
        """What the searches look for, and where (``tasks.search_words``)."""
        return search_words(self.query, self.folders)


@dataclass(frozen=True, slots=True)
class Row:
    """A row of a task list, and the parts of its group shown under it (when the group
    and they are on the same page)."""

    task: TaskRecord
    parts: list[TaskRecord] = field(default_factory=list)

    @property
    def title(self) -> str:
        """The task's title; a search in several folders names its query when one of its
        searches is on the page too."""
        t = self.task
        searches = [p for p in self.parts if p.name == "search" and p.group_index != t.group_size]
        if not t.is_group or t.name != "search" or not searches:
            return task_title(t)
        return f"search “{searches[0].payload.get('query', '')}” in {t.group_size} folders"


def rows(records: Sequence[TaskRecord]) -> list[Row]:
    """A page of tasks as a list shows them: each group once, with its parts that are on
    the page under it in order; a part whose group is on another page stands alone."""
    groups = {r.id for r in records if r.is_group}
    under: dict[str, list[TaskRecord]] = {}
    for record in records:
        if record.parent_id in groups:
            under.setdefault(record.parent_id, []).append(record)
    return [
        Row(r, sorted(under.get(r.id, []), key=lambda p: p.group_index or 0))
        for r in records
        if r.parent_id not in groups
    ]


async def submit_search(
    app: Errands, payload: dict[str, Any], folders: list[str], owner: str
) -> TaskRecord:
    """Submit the search form's search: one search (in the whole corpus, or in its one
    folder), or a group of one per folder with the merge as its ``then``."""
    if len(folders) < 2:
        where = {"folder": folders[0]} if folders else {}
        return await app.submit("search", payload | where, owner=owner)
    payloads = [payload | {"folder": folder} for folder in folders]
    return await app.submit_group("search", payloads, owner=owner, then=MERGE)


async def folder_search(app: Errands, group: TaskRecord, owner: str) -> FolderSearch:
    """The parts of the owner's search in several folders ``group``."""
    size = group.group_size or 0
    found = await app.parts(group.id, owner=owner, limit=min(size + 1, PARTS_MAX))
    searches = [p for p in found if (p.group_index or 0) < size]
    merge = next((p for p in found if p.group_index == size), None)
    return FolderSearch(searches, merge)


async def parent_of(app: Errands, part: TaskRecord, owner: str) -> TaskRecord | None:
    """The owner's group ``part`` belongs to (None if it has none, or it was deleted)."""
    if part.parent_id is None:
        return None
    try:
        return await app.get(part.parent_id, owner=owner)
    except TaskNotFound:
        return None


def sorted_hits(items: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """A finished group's hits, merged: by path and line (each keeps its tag)."""
    return sorted(items, key=lambda item: hit_order(hit_of(item[1])))
