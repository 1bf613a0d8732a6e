"""Which worker claims a new job: one chosen worker, not every worker at once.

A single submit's new-jobs hint names its job (``Hint``: task name, task id). Every
worker that runs the name hears it; were they all to claim, one would win and the others
would run empty claims that compete with the winner for the same cores and the same
rows (on a 2-core machine that cost the winner 0.3–0.6 ms of a 2.5 ms submit → start).
So the workers agree, without talking, on one of them: each keeps the list of live
workers per task name (read from the worker registry at every heartbeat) and picks the
one whose hash of (worker id, task id) is highest — rendezvous hashing, so two workers
whose lists differ by a worker that just came or went still mostly pick the same one,
and the jobs spread evenly.

Only the chosen worker claims at once; the others note that work may be waiting (their
next round claims it, if they run one). The chosen worker, when it has no free slot or
is stopping, passes the hint on to every worker. A chosen worker that died or is paused
without its peers knowing yet (for up to two heartbeats) leaves the job to the others'
poll: ``poll_interval`` later, never lost. Hints without a job (batches, jobs queued
again, reconnections) still wake every worker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from .events.notifier import Hint


class Peers:
    """The live workers of each task name, as this worker last read them."""

    def __init__(self, me: str) -> None:
        self.me = me
        self._by_name: dict[str, tuple[str, ...]] = {}

    def update(self, workers: Iterable[tuple[str, Sequence[str]]]) -> None:
        """The registry's live workers now: (worker id, the task names it runs)."""
        by_name: dict[str, list[str]] = {}
        for worker_id, names in workers:
            for name in names:
                by_name.setdefault(name, []).append(worker_id)
        self._by_name = {name: tuple(ids) for name, ids in by_name.items()}

    def workers(self, name: str) -> tuple[str, ...]:
        """The live workers that run ``name``, as last read."""
        return self._by_name.get(name, ())

    def chooses_me(self, hint: Hint) -> bool:
        """Does the job ``hint`` names fall to this worker? Yes when this worker does not
        (yet) see itself among the name's workers, or sees no other."""
        name, task_id = hint
        ids = self.workers(name)
        if self.me not in ids or len(ids) == 1:
            return True
        return max(ids, key=lambda worker_id: _score(worker_id, task_id)) == self.me


def _score(worker_id: str, task_id: str) -> int:
    # Stable across processes (unlike hash()) and well mixed (crc32 is not: it chose one
    # of three workers for half the jobs); about 1 µs.
    digest = hashlib.blake2b(f"{worker_id}\x00{task_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
