"""Job operations: what the worker and the SQL engine run against ``errands_job``.

A job row exists exactly while its task is ``queued`` (``lease_owner IS NULL``) or
``running`` (``lease_owner`` = the worker holding it, until ``lease_expires_at``).
Claims, completions and retries change the job and the record in one transaction, and
every completion is guarded by the lease: a worker that lost its lease (it was presumed
dead and the task was handed to another) cannot write a result.

Claim order (fair claims). Each job has a *turn*, given when it is queued: one after
the owner's last waiting job of the same task name, and no earlier than that name's
frontier, its lowest waiting turn (0 when none waits). Claims take due jobs by
priority (highest first), then turn, then due time. So owners with
waiting work of a name take turns: an owner who queues 500 jobs holds turns far ahead,
and another owner's next job gets a turn at the frontier, next in line. A retried job
keeps its turn. With ``caps`` (``max_running_per_owner``) a claim also passes over an
owner's jobs of a name while that many of them run.

Attempts and fencing. A claim starts an attempt. When the task ran before (a retry, an
expired lease, a hand-back), the claim raises the record's ``output_floor`` past every
item stored so far and clears its progress: the task's output is the current attempt's
items (``seq > output_floor``); earlier attempts' items stay in ``errands_output``,
hidden, until the record is deleted. The floor is also the attempt's fencing token:
every write of an attempt — progress, items, outcome, hand-back — names the task, the
worker and the floor it was claimed with, and is applied only while the record is
``running`` with that floor and the worker still holds the job. A refused write changes
nothing and fails nothing: it is left out, and the writer learns which were refused.
On PostgreSQL, the guarded UPDATE of the record comes first and the attempt's items are
inserted only for the records it changed: the row lock it holds until commit keeps a
reaper (and so a new claim) from slipping in between. Statements that touch both
tables lock the job row first, as claims and the reaper do.

Times here are Unix seconds (floats); times written to the record are datetimes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    case,
    delete,
    exists,
    func,
    select,
    text,
    true,
    tuple_,
    update,
)

from ..records import CANCELLED_ERROR, Status
from . import postgres_fast, sqlite_fast
from .schema import job_table, output_table, task_table

J = job_table.c
T = task_table.c


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job handed to a worker, with what it needs to run it."""

    task_id: str
    name: str
    owner: str
    payload: Any
    attempt: int
    max_attempts: int
    version: int
    cancel_requested: bool
    #: The attempt's output floor: its items are numbered from ``output_floor + 1``, and
    #: its writes are fenced by it (see the module docstring).
    output_floor: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    """A record that changed: enough to tell subscribers which version to read."""

    task_id: str
    owner: str
    version: int
    status: Status


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


_CHANGES = select(T.id, T.owner, T.version, T.status).where(
    T.id.in_(bindparam("_ids", expanding=True))
)


def changes(conn: Connection, task_ids: Iterable[str]) -> list[Change]:
    ids = list(task_ids)
    if not ids:
        return []
    if conn.dialect.name == "sqlite":
        return [Change(t, o, v, Status(s)) for t, o, v, s in sqlite_fast.changes(conn, ids)]
    rows = conn.execute(_CHANGES, {"_ids": ids})
    return [Change(r.id, r.owner, r.version, Status(r.status)) for r in rows]


# -- claiming -------------------------------------------------------------------------
def _ids(name: str) -> Any:
    return bindparam(name, expanding=True)


# Statements on the hot path are built once; executing them costs no construction.
# What a claim reads back from a started record (the fields of ``Claimed``).
_STARTED = (
    T.id,
    T.name,
    T.owner,
    T.payload,
    T.attempts,
    T.max_attempts,
    T.version,
    T.cancel_requested,
    T.output_floor,
)
_DROP_JOBS = delete(job_table).where(J.task_id.in_(_ids("_ids")))


_CLAIM_ORDER = (J.priority.desc(), J.turn, J.run_at)
# A new attempt's floor: for a task that ran before, past every item stored so far (and
# past the last floor, so each attempt's floor is its own); the first run keeps 0.
_NEXT_FLOOR = case(
    (T.started_at.is_(None), T.output_floor),
    else_=func.greatest(
        T.output_floor,
        func.coalesce(
            select(func.max(output_table.c.seq))
            .where(output_table.c.task_id == T.id)
            .scalar_subquery(),
            0,
        ),
    )
    + 1,
)


def _claim_round_pg(chosen: bool = False) -> Any:
    """PostgreSQL: the whole claim as one statement (one round trip, and in autocommit
    no BEGIN/COMMIT): pick due jobs (SKIP LOCKED) — or, with ``chosen``, the jobs
    ``_chosen`` if still waiting — lease them, start their records, and say when the
    next job not taken becomes due. One row per leased job — ``id`` is NULL for a job
    whose record is no longer queued — or one row of NULLs and ``next_due``."""
    if chosen:
        picked = (
            select(J.task_id)
            .where(
                J.lease_owner.is_(None), J.task_id.in_(_ids("_chosen")), J.name.in_(_ids("_names"))
            )
            # Wait for a row another transaction holds (it may be marking the job sent)
            # and look again: skipped, a job named by its message would not run.
            .with_for_update()
            .cte("picked")
        )
    else:
        picked = (
            select(J.task_id)
            .where(
                J.lease_owner.is_(None), J.run_at <= bindparam("_now"), J.name.in_(_ids("_names"))
            )
            .order_by(*_CLAIM_ORDER)
            .limit(bindparam("_limit"))
            .with_for_update(skip_locked=True)
            .cte("picked")
        )
    leased = (
        update(job_table)
        .where(J.task_id == picked.c.task_id)
        .values(
            lease_owner=bindparam("_worker"),
            lease_expires_at=bindparam("_until"),
            attempt=J.attempt + 1,
        )
        .returning(J.task_id)
        .cte("leased")
    )
    started = (
        update(task_table)
        .where(T.id == leased.c.task_id, T.status == Status.QUEUED.value)
        .values(
            status=Status.RUNNING.value,
            attempts=T.attempts + 1,
            started_at=bindparam("_stamp", type_=task_table.c.started_at.type),
            updated_at=bindparam("_stamp", type_=task_table.c.updated_at.type),
            version=T.version + 1,
            progress_current=None,
            progress_total=None,
            progress_message=None,
            output_floor=_NEXT_FLOOR,
        )
        .returning(*_STARTED)
        .cte("started")
    )
    # Only asked when fewer jobs than the limit were due (PostgreSQL runs a subquery in
    # an untaken CASE branch not at all): then every job due now was leased (or is
    # locked by another worker's claim), so the next one is the earliest in the future.
    earliest = (
        select(func.min(J.run_at))
        .where(J.lease_owner.is_(None), J.name.in_(_ids("_names")), J.run_at > bindparam("_now"))
        .scalar_subquery()
    )
    fewer = select(func.count()).select_from(leased).scalar_subquery() < bindparam("_limit")
    next_due = select(case((fewer, earliest), else_=None).label("next_due")).subquery("due")
    return select(leased.c.task_id.label("leased_id"), *started.c, next_due.c.next_due).select_from(
        next_due.outerjoin(leased, true()).outerjoin(started, started.c.id == leased.c.task_id)
    )


def claim(
    conn: Connection,
    worker_id: str,
    *,
    names: Sequence[str],
    limit: int,
    now: float,
    lease_seconds: float,
    caps: Mapping[str, int] | None = None,
) -> list[Claimed]:
    """Lease up to ``limit`` available jobs in claim order (see the module docstring),
    within ``caps``: task name → how many of one owner's tasks of that name may run."""
    return claim_round(
        conn, worker_id, names=names, limit=limit, now=now, lease_seconds=lease_seconds, caps=caps
    )[0]


_CLAIM_ROUND_PG = _claim_round_pg()
_CLAIM_CHOSEN_PG = _claim_round_pg(chosen=True)


def claim_round(
    conn: Connection,
    worker_id: str,
    *,
    names: Sequence[str],
    limit: int,
    now: float,
    lease_seconds: float,
    caps: Mapping[str, int] | None = None,
) -> tuple[list[Claimed], float | None]:
    """A worker's claim: up to ``limit`` jobs, and — when fewer were available — when
    the earliest job left waiting becomes due (None: none is waiting).

    With ``caps`` for some of ``names`` the claim must run in a transaction: on
    PostgreSQL, claims under caps take turns (an advisory lock held to commit), so two
    workers cannot both start an owner's last allowed task."""
    if limit <= 0 or not names:
        return [], None
    capped = {n: c for n, c in (caps or {}).items() if n in names}
    chosen: list[str] | None = None
    more = False
    if capped:
        chosen, more = _within_caps(conn, names, capped, limit, now)
        if not chosen:
            return [], (now if more else next_run_at(conn, names))
    if conn.dialect.name == "sqlite":
        claimed = [
            Claimed(*row)
            for row in sqlite_fast.claim(conn, worker_id, names, limit, now, lease_seconds, chosen)
        ]
        due = next_run_at(conn, names) if len(claimed) < limit else None
    else:
        claimed, due = _claim_pg(conn, worker_id, names, limit, now, lease_seconds, chosen)
    if len(claimed) >= limit:
        return claimed, None
    return claimed, (now if more else due)


def claim_ids(
    conn: Connection,
    worker_id: str,
    task_ids: Sequence[str],
    *,
    names: Sequence[str],
    now: float,
    lease_seconds: float,
) -> list[Claimed]:
    """Lease these jobs, those still waiting (an engine whose broker says which job to
    run: a job already leased, finished or cancelled is not taken, so a message
    delivered twice runs the job once)."""
    if not task_ids or not names:
        return []
    if conn.dialect.name == "sqlite":
        rows = sqlite_fast.claim(
            conn, worker_id, names, len(task_ids), now, lease_seconds, task_ids
        )
        return [Claimed(*row) for row in rows]
    return _claim_pg(conn, worker_id, names, len(task_ids), now, lease_seconds, list(task_ids))[0]


_UNSENT = (
    select(J.task_id, J.run_at)
    .where(
        J.lease_owner.is_(None),
        J.run_at <= bindparam("_before"),
        (J.sent_at.is_(None)) | (J.sent_at < J.run_at),
    )
    .order_by(J.run_at)
    .limit(bindparam("_limit"))
)


def unsent(conn: Connection, *, before: float, limit: int = 500) -> list[tuple[str, float]]:
    """(task id, run_at) of waiting jobs due before ``before`` that were not published
    since they became due: their hand-off to the broker may have been lost."""
    return [
        (r.task_id, r.run_at) for r in conn.execute(_UNSENT, {"_before": before, "_limit": limit})
    ]


_MARK_SENT = (
    update(job_table)
    .where(J.task_id == bindparam("_id"), J.lease_owner.is_(None))
    .values(sent_at=bindparam("_at"))
)


def mark_sent(conn: Connection, sent: Sequence[tuple[str, float]]) -> None:
    """Record that messages for these waiting jobs went to the broker: (task id, the
    time from which the message stands for the job — when it was sent, or the job's
    later due time)."""
    if sent:
        conn.execute(_MARK_SENT, [{"_id": t, "_at": at} for t, at in sent])


def unmark_sent(conn: Connection, task_ids: Sequence[str]) -> None:
    """Forget the publication of these jobs if they still wait: a message for them was
    consumed without running them, so the relay publishes them again."""
    if task_ids:
        conn.execute(
            update(job_table)
            .where(J.task_id.in_(list(task_ids)), J.lease_owner.is_(None))
            .values(sent_at=None)
        )


# Claims under caps take turns on PostgreSQL (the key is errands' own constant).
_CAPS_LOCK = text("SELECT pg_advisory_xact_lock(7245106329)")
_CANDIDATES = 4  # jobs read per job wanted, when caps may skip some


def _within_caps(
    conn: Connection, names: Sequence[str], caps: Mapping[str, int], limit: int, now: float
) -> tuple[list[str], bool]:
    """The jobs a capped claim takes, in claim order, and whether jobs were passed over
    that a claim right after this one could take (the claim came up short for caps
    alone)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_CAPS_LOCK)
    running: dict[tuple[str, str], int] = {
        (owner, name): n
        for owner, name, n in conn.execute(
            select(J.owner, J.name, func.count())
            .where(J.lease_owner.is_not(None), J.name.in_(list(caps)))
            .group_by(J.owner, J.name)
        )
    }
    full = [pair for pair, n in running.items() if n >= caps[pair[1]]]
    wanted = limit * _CANDIDATES
    query = (
        select(J.task_id, J.owner, J.name)
        .where(J.lease_owner.is_(None), J.run_at <= now, J.name.in_(list(names)))
        .order_by(*_CLAIM_ORDER)
        .limit(wanted)
    )
    if full:
        query = query.where(tuple_(J.owner, J.name).not_in(full))
    rows = conn.execute(query).all()
    chosen: list[str] = []
    skipped = False
    for task_id, owner, name in rows:
        cap = caps.get(name)
        if cap is not None:
            if running.get((owner, name), 0) >= cap:
                skipped = True
                continue
            running[(owner, name)] = running.get((owner, name), 0) + 1
        chosen.append(task_id)
        if len(chosen) == limit:
            break
    return chosen, skipped and len(chosen) < limit and len(rows) == wanted


def _claim_pg(
    conn: Connection,
    worker_id: str,
    names: Sequence[str],
    limit: int,
    now: float,
    lease_seconds: float,
    chosen: list[str] | None = None,
) -> tuple[list[Claimed], float | None]:
    params = {
        "_now": now,
        "_names": list(names),
        "_limit": limit,
        "_worker": worker_id,
        "_until": now + lease_seconds,
        "_stamp": _dt(now),
    }
    if chosen is None:
        rows = conn.execute(_CLAIM_ROUND_PG, params).all()
    else:
        rows = conn.execute(_CLAIM_CHOSEN_PG, params | {"_chosen": chosen}).all()
    due = rows[0].next_due if rows else None
    started = [r for r in rows if r.id is not None]
    orphans = [r.leased_id for r in rows if r.leased_id is not None and r.id is None]
    if orphans:  # a job whose record is no longer queued: drop it
        conn.execute(_DROP_JOBS, {"_ids": orphans})
    claimed = [
        Claimed(
            r.id,
            r.name,
            r.owner,
            r.payload,
            r.attempts,
            r.max_attempts,
            r.version,
            bool(r.cancel_requested),
            r.output_floor,
        )
        for r in started
    ]
    return claimed, due


def next_run_at(conn: Connection, names: Sequence[str]) -> float | None:
    """When the earliest available job becomes due (None: no job is waiting)."""
    if conn.dialect.name == "sqlite":
        return sqlite_fast.next_run_at(conn, names)
    return conn.execute(
        select(func.min(J.run_at)).where(J.lease_owner.is_(None), J.name.in_(list(names)))
    ).scalar()


# -- while running --------------------------------------------------------------------
@dataclass(slots=True)
class Report:
    """What a running attempt reports between outcomes: its newest progress, or None
    when it only emitted items (its record then just gets a new version, so live views
    learn of the items)."""

    task_id: str
    #: The attempt's output floor (its fencing token).
    floor: int
    progress: tuple[float | None, float | None, str | None] | None = None


def flush(
    conn: Connection,
    worker_id: str,
    reports: Sequence[Report],
    outputs: Sequence[dict[str, Any]],
    *,
    now: float,
) -> list[Change]:
    """Write running attempts' progress and emitted items (``task_id``, ``seq``,
    ``data``, and ``ref`` for an item in the blob store).

    Every reported record gets a new version; a task with items must be reported. Only
    attempts that still hold their lease are written (see the module docstring): the
    changes returned name them, and a reported task missing from them lost its lease.
    """
    if not reports:
        return []
    stamp = _dt(now)
    if conn.dialect.name == "sqlite":
        rows = sqlite_fast.report(conn, worker_id, reports, stamp)
    else:
        rows = postgres_fast.report(conn, worker_id, reports, stamp)
    changed = [Change(t, o, v, Status(s)) for t, o, v, s in rows]
    insert_outputs(conn, outputs, {c.task_id for c in changed}, stamp)
    return changed


def insert_outputs(
    conn: Connection, outputs: Sequence[dict[str, Any]], accepted: set[str], stamp: datetime
) -> None:
    """Insert the items of the tasks in ``accepted`` — those whose guarded record write
    in this transaction succeeded (it holds their rows until commit)."""
    items = [o for o in outputs if o["task_id"] in accepted]
    if not items:
        return
    if conn.dialect.name == "sqlite":
        sqlite_fast.insert_outputs(conn, items, stamp)
    else:
        postgres_fast.insert_outputs(conn, items, stamp)


_RENEW = (
    update(job_table)
    .where(J.lease_owner == bindparam("_worker"), J.task_id.in_(_ids("_ids")))
    .values(lease_expires_at=bindparam("_until"))
    .returning(J.task_id)
)
_CANCEL_ASKED = select(T.id).where(T.id.in_(_ids("_ids")), T.cancel_requested.is_(True))


def heartbeat(
    conn: Connection, worker_id: str, task_ids: Sequence[str], *, lease_until: float
) -> tuple[set[str], set[str]]:
    """Extend the leases this worker still holds.

    Returns the ids still leased (a missing id was reaped: its result will be refused)
    and, among them, those whose owner asked to cancel.
    """
    if not task_ids:
        return set(), set()
    held = set(
        conn.execute(
            _RENEW, {"_worker": worker_id, "_ids": list(task_ids), "_until": lease_until}
        ).scalars()
    )
    if not held:
        return held, set()
    cancel = set(conn.execute(_CANCEL_ASKED, {"_ids": list(held)}).scalars())
    return held, cancel


# -- ending an attempt ----------------------------------------------------------------
@dataclass(slots=True)
class Outcome:
    """How one attempt ended, as the worker reports it.

    ``status`` is terminal, or ``queued`` for a retry at ``retry_at`` (Unix seconds).
    ``progress`` is the final (current, total, message), or None to leave it as it is.
    """

    task_id: str
    status: Status
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None
    error_detail: str | None = None
    progress: tuple[float | None, float | None, str | None] | None = None
    expires_at: datetime | None = None
    retry_at: float | None = None
    #: The key of a result kept in the blob store (``result`` is then None), and its
    #: bytes until they are stored there.
    result_ref: str | None = None
    blob: bytes | None = None
    #: The attempt's output floor (its fencing token; 0 for a task's first run).
    floor: int = 0


def _fenced(worker_id: str, floor: Any) -> Any:
    """The guard of an attempt's record writes: still running, with the attempt's
    floor, and the worker still holds the job."""
    return (
        (T.status == Status.RUNNING.value)
        & (T.output_floor == floor)
        & exists().where(J.task_id == T.id, J.lease_owner == worker_id)
    )


def finish(
    conn: Connection,
    worker_id: str,
    outcomes: Sequence[Outcome],
    *,
    now: float,
    outputs: Sequence[dict[str, Any]] = (),
) -> list[Change]:
    """Record how attempts ended, for the attempts that still hold their lease, with
    the items they emitted last (``outputs``, as for ``flush``).

    Terminal outcomes delete the job; retries hand it back for ``retry_at``. An outcome
    of an attempt that lost its lease is left out, and so are its items. Returns the
    records changed.
    """
    stamp = _dt(now)
    terminal = [o for o in outcomes if o.status is not Status.QUEUED]
    changed: list[Change] = []
    if terminal:
        if conn.dialect.name == "sqlite":
            rows = sqlite_fast.finish_terminal(conn, worker_id, terminal, stamp)
        else:
            rows = postgres_fast.finish_terminal(conn, worker_id, terminal, stamp)
        changed += [Change(t, o, v, Status(s)) for t, o, v, s in rows]
    for o in outcomes:
        if o.status is Status.QUEUED:
            change = _retry(conn, worker_id, o, stamp)
            if change is not None:
                changed.append(change)
    insert_outputs(conn, outputs, {c.task_id for c in changed}, stamp)
    return changed


def _retry(conn: Connection, worker_id: str, o: Outcome, stamp: datetime) -> Change | None:
    """A failed attempt that will be retried: the record back to ``queued`` for
    ``retry_at``, the job waiting again (with its turn)."""
    retry_at = o.retry_at if o.retry_at is not None else stamp.timestamp()
    if not _lock_held(conn, worker_id, [o.task_id]):
        return None
    values: dict[str, Any] = {
        "status": Status.QUEUED.value,
        "error_type": o.error_type,
        "error_message": o.error_message,
        "error_detail": o.error_detail,
        "run_at": _dt(retry_at),
        "updated_at": stamp,
        "version": T.version + 1,
    }
    if o.progress is not None:
        values["progress_current"], values["progress_total"], values["progress_message"] = (
            o.progress
        )
    row = conn.execute(
        update(task_table)
        .where(T.id == o.task_id, _fenced(worker_id, o.floor))
        .values(values)
        .returning(T.id, T.owner, T.version, T.status)
    ).first()
    if row is None:
        return None
    conn.execute(
        update(job_table)
        .where(J.task_id == o.task_id)
        .values(lease_owner=None, lease_expires_at=None, run_at=retry_at)
    )
    return Change(row.id, row.owner, row.version, Status(row.status))


def _lock_held(conn: Connection, worker_id: str, task_ids: Sequence[str]) -> list[str]:
    """Lock the jobs among ``task_ids`` this worker holds (the job row first, as claims
    and the reaper lock: no deadlock with them on PostgreSQL); their ids."""
    query = select(J.task_id).where(J.task_id.in_(list(task_ids)), J.lease_owner == worker_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return list(conn.execute(query).scalars())


def release(
    conn: Connection, worker_id: str, attempts: Sequence[tuple[str, int]], *, now: float
) -> list[Change]:
    """Hand back attempts a stopping worker did not finish — (task id, floor) — without
    spending an attempt: their tasks are queued again, to run as if from the start."""
    held = set(_lock_held(conn, worker_id, [task_id for task_id, _ in attempts]))
    stamp = _dt(now)
    changed: list[Change] = []
    for task_id, floor in attempts:
        if task_id not in held:
            continue
        row = conn.execute(
            update(task_table)
            .where(T.id == task_id, _fenced(worker_id, floor))
            .values(
                status=Status.QUEUED.value,
                attempts=T.attempts - 1,
                updated_at=stamp,
                version=T.version + 1,
            )
            .returning(T.id, T.owner, T.version, T.status)
        ).first()
        if row is None:
            continue
        conn.execute(
            update(job_table)
            .where(J.task_id == task_id)
            .values(lease_owner=None, lease_expires_at=None, run_at=now, attempt=J.attempt - 1)
        )
        changed.append(Change(row.id, row.owner, row.version, Status(row.status)))
    return changed


def expire_leases(conn: Connection, worker_ids: Sequence[str]) -> int:
    """End the leases of these workers now (they are known to be dead): the reaper
    takes their jobs at its next pass. How many leases ended."""
    if not worker_ids:
        return 0
    return (
        conn.execute(
            update(job_table)
            .where(J.lease_owner.in_(list(worker_ids)))
            .values(lease_expires_at=0.0)
        ).rowcount
        or 0
    )


# -- the reaper -----------------------------------------------------------------------
WORKER_LOST = ("WorkerLost", "the worker running this task stopped responding")


def reap(
    conn: Connection,
    *,
    now: float,
    expiry_for: Callable[[str], datetime | None],
    limit: int = 100,
) -> list[Change]:
    """Recover jobs whose lease expired (their worker died or hung).

    A task whose owner asked to cancel ends ``cancelled``; one with attempts left goes
    back to ``queued`` at once; one whose attempts are spent ends ``failed``.
    """
    expired = conn.execute(
        select(J.task_id, J.name, J.lease_owner, J.attempt, T.max_attempts, T.cancel_requested)
        .join(task_table, T.id == J.task_id)
        .where(J.lease_owner.is_not(None), J.lease_expires_at < now)
        .limit(limit)
        .with_for_update(of=job_table, skip_locked=True)
    ).all()
    stamp = _dt(now)
    touched: list[str] = []
    for row in expired:
        still_expired = (
            (J.task_id == row.task_id)
            & (J.lease_owner == row.lease_owner)
            & (J.lease_expires_at < now)
        )
        if row.cancel_requested or row.attempt >= row.max_attempts:
            if not conn.execute(delete(job_table).where(still_expired)).rowcount:
                continue
            values: dict[str, Any] = {"finished_at": stamp, "expires_at": expiry_for(row.name)}
            if row.cancel_requested:
                values.update(
                    status=Status.CANCELLED.value,
                    error_type=CANCELLED_ERROR.type,
                    error_message=CANCELLED_ERROR.message,
                )
            else:
                values.update(
                    status=Status.FAILED.value,
                    error_type=WORKER_LOST[0],
                    error_message=WORKER_LOST[1],
                )
        else:
            if not conn.execute(
                update(job_table)
                .where(still_expired)
                .values(lease_owner=None, lease_expires_at=None, run_at=now)
            ).rowcount:
                continue
            values = {"status": Status.QUEUED.value, "run_at": stamp}
        conn.execute(
            update(task_table)
            .where(T.id == row.task_id, T.status == Status.RUNNING.value)
            .values(values | {"updated_at": stamp, "version": T.version + 1})
        )
        touched.append(row.task_id)
    return changes(conn, touched)
