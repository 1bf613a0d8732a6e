"""Chaos run: real worker processes killed, stopped, paused and restarted while they
work, then every record checked.

    python bench/chaos.py --database sqlite|postgresql [options]

A fresh database (a temporary SQLite file; on PostgreSQL a private server,
``tests.pgserver.PrivatePostgres``, so it can be restarted), N tasks of mixed lengths
across 20 owners (``bench/chaos_tasks.py``), W ``errands worker`` processes, and for
``--chaos-seconds``: a SIGKILL of a random worker every ``--kill-every`` seconds (a
replacement started each time), rolling SIGTERM restarts with a short shutdown timeout,
optionally a PostgreSQL restart and a SIGSTOP longer than the lease. Then W workers run
on until every task has finished, and the checks run (see bench/README.md, "Chaos").
Exit status 0 when no check found a violation, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import Connection, func, select  # noqa: E402

from bench import chaos_tasks  # noqa: E402
from bench.chaos_tasks import Event  # noqa: E402
from errands import Errands, Status, TaskRecord  # noqa: E402
from errands.store.schema import job_table, output_table, task_table  # noqa: E402

WORKER_APP = "bench.chaos_tasks:app"
TASK = "chaos"
OWNERS = 20
FINISHED = ("succeeded", "failed", "cancelled")
#: How many violations of each check are printed (all are counted).
SHOWN = 15

CHECKS = {
    "workers": "worker processes: none died on its own, every SIGTERM ended in a clean exit",
    "1": "no task lost or stuck: every record succeeded, no job row left",
    "2": "every result right: a run that completed, its item count",
    "3": "outputs() holds the result's run only: its items, all of them, in order",
    "4": "sequence numbers unique and gapless: in outputs() and per run in errands_output",
    "5": "no record changed after it finished",
    "6": "no overlapping runs of a task, except after a pause",
}


# -- options --------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="chaos.py", description="Kill, stop and restart errands workers; check every record."
    )
    p.add_argument("--database", choices=("sqlite", "postgresql"), required=True)
    p.add_argument("--tasks", type=int, default=1000, help="tasks submitted (default 1000)")
    p.add_argument("--workers", type=int, default=3, help="worker processes kept up (3)")
    p.add_argument("--concurrency", type=int, default=8, help="attempts per worker (8)")
    p.add_argument("--chaos-seconds", type=float, default=30.0, help="length of the chaos (30)")
    p.add_argument("--lease", type=float, default=3.0, help="workers' lease seconds (3)")
    p.add_argument("--heartbeat", type=float, default=None, help="default: lease / 4")
    p.add_argument("--poll", type=float, default=0.5, help="workers' fallback poll (0.5)")
    p.add_argument(
        "--kill-every", type=float, default=1.0, help="mean seconds between SIGKILLs (1; 0: none)"
    )
    p.add_argument(
        "--term-every",
        type=float,
        default=5.0,
        help="seconds between rolling SIGTERM restarts (5; 0: none)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=0.3,
        help="workers' --shutdown-timeout: running tasks are handed back after it (0.3)",
    )
    p.add_argument(
        "--pg-restart",
        action="store_true",
        help="restart the PostgreSQL server half-way through the chaos",
    )
    p.add_argument(
        "--pause", action="store_true", help="SIGSTOP one worker for longer than the lease"
    )
    p.add_argument(
        "--pause-seconds", type=float, default=None, help="how long (default: 2 × lease + 1)"
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=120.0,
        help="how long to wait after the chaos for every task to finish (120)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where logs (and the SQLite file) go; default: a new temporary directory",
    )
    p.add_argument(
        "--pg-server",
        default=None,
        metavar="URL",
        help="use this PostgreSQL server (its maintenance database URL) instead of a"
        " private one: a database is created there and dropped; no --pg-restart",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the summary here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if args.heartbeat is None:
        args.heartbeat = args.lease / 4
    if args.pause_seconds is None:
        args.pause_seconds = 2 * args.lease + 1
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    if args.pg_restart and args.database != "postgresql":
        p.error("--pg-restart needs --database postgresql")
    if args.pg_restart and args.pg_server:
        p.error("--pg-restart restarts the private server: not with --pg-server")
    if args.tasks < 1 or args.workers < 1 or args.concurrency < 1:
        p.error("--tasks, --workers and --concurrency must be at least 1")
    if args.pause and args.workers < 2:
        p.error("--pause needs at least 2 workers")
    if args.pause and args.pause_seconds <= args.lease:
        p.error("--pause-seconds must be longer than the lease")
    return args


# -- the database ---------------------------------------------------------------------
class Database:
    """The run's database: a SQLite file, a private PostgreSQL server, or a database
    on a given server. ``url`` is set once :meth:`open` returned."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.kind = args.database
        self.workdir = workdir
        self.pg_server_url: str | None = args.pg_server
        self.server: Any = None
        self.dropped: str | None = None
        self.url = ""

    def open(self) -> str:
        if self.kind == "sqlite":
            self.url = f"sqlite:///{self.workdir / 'chaos.db'}"
        elif self.pg_server_url:
            import psycopg
            from sqlalchemy.engine import make_url

            name = f"chaos_{os.getpid()}_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(self.pg_server_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            self.dropped = name
            u = make_url(self.pg_server_url).set(database=name)
            self.url = u.render_as_string(hide_password=False)
        else:
            from tests.pgserver import PrivatePostgres

            # In the system's temporary directory: the server may run as another user
            # (postgres, when we are root), who must be let into its root.
            self.server = PrivatePostgres.temporary()
            self.server.start()
            self.url = self.server.create_database("chaos")
        app = Errands(self.url)
        try:
            app.migrate()
        finally:
            app.close()
        return self.url

    def restart(self) -> None:
        self.server.restart(mode="fast")

    def close(self) -> None:
        if self.server is not None:
            with contextlib.suppress(OSError):  # the server's log, kept with the others
                shutil.copyfile(self.server.logfile, self.workdir / "postgres.log")
            self.server.close()
            self.server = None
        if self.dropped and self.pg_server_url:
            import psycopg

            with psycopg.connect(self.pg_server_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.dropped}" WITH (FORCE)')
            self.dropped = None


# -- tasks ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Submitted:
    id: str
    owner: str
    items: int
    interval: float


def make_payloads(rng: random.Random, n: int, log: Path) -> list[tuple[str, dict[str, Any]]]:
    """(owner, payload) for n tasks: half short (0.05–0.3 s), a third medium (0.3–1 s),
    the rest long (1–2 s); an item every 20–100 ms."""
    out = []
    for k in range(n):
        roll = rng.random()
        if roll < 0.5:
            seconds = rng.uniform(0.05, 0.3)
        elif roll < 0.85:
            seconds = rng.uniform(0.3, 1.0)
        else:
            seconds = rng.uniform(1.0, 2.0)
        interval = rng.uniform(0.02, 0.1)
        items = max(1, round(seconds / interval))
        owner = f"owner-{k % OWNERS:02d}"
        out.append((owner, {"items": items, "interval": round(interval, 4), "log": str(log)}))
    rng.shuffle(out)
    return out


def submit_all(app: Errands, payloads: list[tuple[str, dict[str, Any]]]) -> list[Submitted]:
    by_owner: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for owner, payload in payloads:
        by_owner[owner].append(payload)
    tasks = []
    for owner, items in sorted(by_owner.items()):
        for start in range(0, len(items), 500):
            chunk = items[start : start + 500]
            for rec, payload in zip(
                app.sync.submit_many(TASK, chunk, owner=owner), chunk, strict=True
            ):
                tasks.append(Submitted(rec.id, owner, payload["items"], payload["interval"]))
    return tasks


# -- worker processes -----------------------------------------------------------------
@dataclass(eq=False)
class WorkerProc:
    n: int
    proc: subprocess.Popen[bytes]
    log: Path
    out: IO[bytes]
    started: float
    termed: float | None = None
    killed: float | None = None
    #: When the process was known dead (wall time), and how it ended.
    died: float | None = None
    how: str = ""
    paused: bool = False
    serving: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ready(self) -> bool:
        """Whether the worker logged that it started (it claims work from then on)."""
        if not self.serving:
            with contextlib.suppress(OSError), open(self.log, "rb") as fh:
                self.serving = b" started: " in fh.read(4096)
        return self.serving

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join("    " + line for line in text[-lines:])


@dataclass(frozen=True)
class Signalled:
    kind: str  # SIGKILL, SIGTERM, SIGSTOP, SIGCONT, pg-restart
    pid: int
    at: float
    note: str = ""


@dataclass(frozen=True)
class Pause:
    pid: int
    stopped: float
    resumed: float


class Fleet:
    """The worker processes: started, killed, terminated, paused; every signal logged."""

    def __init__(self, args: argparse.Namespace, url: str, workdir: Path) -> None:
        self.args = args
        self.dir = workdir / "workers"
        self.dir.mkdir(parents=True, exist_ok=True)
        path = [str(ROOT)]
        if os.environ.get("PYTHONPATH"):
            path.append(os.environ["PYTHONPATH"])
        self.env = os.environ | {
            "ERRANDS_DATABASE_URL": url,
            "PYTHONPATH": os.pathsep.join(path),
            "PYTHONUNBUFFERED": "1",
        }
        self.workers: list[WorkerProc] = []
        self.signals: list[Signalled] = []
        self.pauses: list[Pause] = []
        self.problems: list[tuple[str, str]] = []  # (kind, text)
        self.escalated = 0
        self._lock = threading.Lock()
        self._waiters: list[threading.Thread] = []
        self._paused: tuple[WorkerProc, float, float] | None = None
        self._hold_until = 0.0
        #: Database restarts, (began, ended or None while it goes on).
        self.outages: list[tuple[float, float | None]] = []
        #: Workers that exited at start while the database was restarting.
        self.failed_starts: list[str] = []

    def argv(self) -> list[str]:
        a = self.args
        return [
            sys.executable,
            "-m",
            "errands",
            "worker",
            WORKER_APP,
            "-c",
            str(a.concurrency),
            "--lease",
            str(a.lease),
            "--heartbeat",
            str(a.heartbeat),
            "--poll",
            str(a.poll),
            "--shutdown-timeout",
            str(a.shutdown_timeout),
        ]

    def start(self) -> WorkerProc:
        n = len(self.workers) + 1
        log = self.dir / f"worker-{n:03d}.log"
        out = open(log, "wb")  # noqa: SIM115 (closed when the process is gone)
        proc = subprocess.Popen(
            self.argv(),
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a ^C of the tool does not reach it; cleanup does
        )
        w = WorkerProc(n, proc, log, out, time.time())
        final = log.with_name(f"worker-{n:03d}-pid{proc.pid}.log")
        log.rename(final)  # the open file follows the rename
        w.log = final
        with self._lock:
            self.workers.append(w)
        return w

    def up(self) -> list[WorkerProc]:
        """Workers that count as running: alive, not told to stop."""
        with self._lock:
            return [w for w in self.workers if w.died is None and w.termed is None]

    def targets(self) -> list[WorkerProc]:
        """Workers that may be signalled now: up, serving, not paused."""
        return [w for w in self.up() if not w.paused and w.ready()]

    def _record(self, kind: str, pid: int, at: float, note: str = "") -> None:
        with self._lock:
            self.signals.append(Signalled(kind, pid, at, note))

    def kill(self, w: WorkerProc, note: str = "") -> None:
        # The time before the signal: runs it cuts end then at the latest (a run that
        # started later would only seem to overlap less), recovery is measured from it.
        now = time.time()
        os.kill(w.pid, signal.SIGKILL)
        w.proc.wait()
        w.killed = w.died = now
        w.how = "SIGKILL" + (f" ({note})" if note else "")
        w.out.close()
        self._record("SIGKILL", w.pid, now, note)

    def terminate(self, w: WorkerProc, *, during_chaos: bool = True) -> None:
        """SIGTERM; a thread waits for the exit (and SIGKILLs after the shutdown
        timeout plus 15 s: a violation)."""
        now = time.time()
        w.termed = now
        os.kill(w.pid, signal.SIGTERM)
        self._record("SIGTERM", w.pid, now, "" if during_chaos else "end of run")
        t = threading.Thread(target=self._await_exit, args=(w,), daemon=True)
        t.start()
        self._waiters.append(t)

    def _await_exit(self, w: WorkerProc) -> None:
        limit = self.args.shutdown_timeout + 15
        try:
            rc = w.proc.wait(limit)
        except subprocess.TimeoutExpired:
            with self._lock:
                self.escalated += 1
                self.problems.append(
                    (
                        "no exit after SIGTERM",
                        f"worker pid {w.pid} still running {limit:g} s after SIGTERM: killed\n"
                        + w.tail(),
                    )
                )
            self.kill(w, "after SIGTERM")
            return
        w.died = time.time()
        w.how = f"SIGTERM, exit {rc}"
        w.out.close()
        if rc != 0:
            with self._lock:
                self.problems.append(
                    ("unclean exit", f"worker pid {w.pid} exited {rc} after SIGTERM\n" + w.tail())
                )

    def pause(self, w: WorkerProc, seconds: float) -> None:
        os.kill(w.pid, signal.SIGSTOP)
        now = time.time()
        w.paused = True
        self._paused = (w, now, now + seconds)
        self._record("SIGSTOP", w.pid, now, f"for {seconds:g} s")

    def resume_due(self, force: bool = False) -> None:
        if self._paused is None:
            return
        w, stopped, until = self._paused
        if not force and time.time() < until:
            return
        if w.died is None:
            os.kill(w.pid, signal.SIGCONT)
        now = time.time()
        w.paused = False
        self._paused = None
        self.pauses.append(Pause(w.pid, stopped, now))
        self._record("SIGCONT", w.pid, now)

    def tick(self) -> list[WorkerProc]:
        """Notice workers that died on their own, start replacements so that
        ``--workers`` are up, resume a pause that is due. The replacements."""
        self.resume_due()
        now = time.time()
        for w in self.up():
            rc = w.proc.poll()
            if rc is None:
                continue
            w.died = now
            w.how = f"exit {rc}"
            w.out.close()
            self._hold_until = now + 0.5  # no burst of doomed starts while the database is away
            text = f"worker pid {w.pid} died (exit {rc})\n" + w.tail()
            with self._lock:
                if not w.ready() and self.in_outage(w.started, now):
                    # Refusing to start while the database is down is fair; counted only.
                    self.failed_starts.append(text)
                else:
                    self.problems.append(("died on its own", text))
        started = []
        while len(self.up()) < self.args.workers and now >= self._hold_until:
            started.append(self.start())
        return started

    def in_outage(self, begin: float, end: float) -> bool:
        """Whether a database restart overlapped [begin, end] (give or take 1 s)."""
        return any(b - 1 < end and (e is None or e + 1 > begin) for b, e in self.outages)

    def stop_all(self) -> None:
        self.resume_due(force=True)
        for w in self.up():
            self.terminate(w, during_chaos=False)
        for t in self._waiters:
            t.join()

    def kill_all(self) -> None:
        """Last resort (an error in the tool): no worker outlives it."""
        for w in self.workers:
            if w.proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.kill(w.pid, signal.SIGCONT)
                    os.kill(w.pid, signal.SIGKILL)
                w.proc.wait()
            if w.died is None:
                w.died = time.time()
                w.how = w.how or "SIGKILL (cleanup)"
            with contextlib.suppress(OSError):
                w.out.close()

    def death(self, pid: int) -> tuple[float | None, str]:
        for w in self.workers:
            if w.pid == pid:
                return w.died, w.how
        return None, "unknown pid"

    def count(self, kind: str, note: str | None = None) -> int:
        return sum(1 for s in self.signals if s.kind == kind and (note is None or s.note == note))


# -- the monitor ----------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    version: int
    status: str
    result: Any
    at: float


class Monitor(threading.Thread):
    """Polls the finished records every ``interval`` seconds and remembers the first
    (version, status, result) of each; any later difference is a change after finishing."""

    def __init__(self, app: Errands, interval: float = 0.2) -> None:
        super().__init__(name="chaos-monitor", daemon=True)
        self.app = app
        self.interval = interval
        self.first: dict[str, Snapshot] = {}
        self.changes: dict[str, tuple[Snapshot, Snapshot | None]] = {}
        self.polls = 0
        self.failures = 0
        self.last_error = ""
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    @staticmethod
    def _read(conn: Connection) -> list[Any]:
        t = task_table.c
        query = select(t.id, t.version, t.status, t.result).where(t.status.in_(FINISHED))
        return list(conn.execute(query).all())

    def poll(self) -> bool:
        try:
            rows = self.app.db.read(self._read)
        except Exception as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return False
        now = time.time()
        with self._lock:
            self.polls += 1
            seen = set()
            for task_id, version, status, result in rows:
                seen.add(task_id)
                snap = Snapshot(version, status, result, now)
                first = self.first.get(task_id)
                if first is None:
                    self.first[task_id] = snap
                elif task_id not in self.changes and (
                    (first.version, first.status, first.result) != (version, status, result)
                ):
                    self.changes[task_id] = (first, snap)
            for task_id in self.first.keys() - seen:  # no longer finished (or gone)
                if task_id not in self.changes:
                    self.changes[task_id] = (self.first[task_id], None)
        return True

    def finished(self) -> int:
        with self._lock:
            return len(self.first)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        for _ in range(50):  # the last word, after every worker stopped
            if self.poll():
                return
            time.sleep(0.2)


# -- the run --------------------------------------------------------------------------
@dataclass
class Timeline:
    chaos_start: float = 0.0
    chaos_end: float = 0.0
    drain_end: float = 0.0
    drained: bool = False
    restarts: list[tuple[float, float]] = field(default_factory=list)
    restart_errors: list[str] = field(default_factory=list)


def say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, flush=True)


def run_chaos(
    args: argparse.Namespace,
    fleet: Fleet,
    db: Database,
    monitor: Monitor,
    n_tasks: int,
    rng: random.Random,
) -> Timeline:
    tl = Timeline()
    t0 = time.time()
    tl.chaos_start = t0
    fleet.tick()
    end = t0 + args.chaos_seconds

    def jitter(mean: float) -> float:
        return mean * rng.uniform(0.5, 1.5)

    next_kill = t0 + jitter(args.kill_every) if args.kill_every > 0 else float("inf")
    next_term = t0 + args.term_every if args.term_every > 0 else float("inf")
    pause_at = t0 + 0.25 * args.chaos_seconds if args.pause else float("inf")
    restart_at = t0 + 0.5 * args.chaos_seconds if args.pg_restart else float("inf")
    restarter: threading.Thread | None = None
    next_report = t0 + 5

    def restart() -> None:
        began = time.time()
        fleet.outages.append((began, None))
        try:
            db.restart()
        except Exception as exc:
            tl.restart_errors.append(f"{type(exc).__name__}: {exc}")
        ended = time.time()
        fleet.outages[-1] = (began, ended)
        tl.restarts.append((began, ended))

    while True:
        now = time.time()
        if now >= end:
            break
        fleet.tick()
        if now >= next_kill:
            targets = fleet.targets()
            if targets:
                fleet.kill(rng.choice(targets))
                next_kill = now + jitter(args.kill_every)
                fleet.tick()
        if now >= next_term:
            targets = fleet.targets()
            if targets:  # rolling: the oldest first
                fleet.terminate(min(targets, key=lambda w: w.started))
                next_term = now + args.term_every
                fleet.tick()
        if now >= pause_at:
            targets = fleet.targets()
            if targets:
                fleet.pause(rng.choice(targets), args.pause_seconds)
                pause_at = float("inf")
        if now >= restart_at:
            restarter = threading.Thread(target=restart, name="chaos-pg-restart", daemon=True)
            restarter.start()
            restart_at = float("inf")
        if now >= next_report:
            next_report += 5
            say(
                args,
                f"  {now - t0:5.1f} s: {monitor.finished()}/{n_tasks} finished, "
                f"{fleet.count('SIGKILL')} SIGKILL, {fleet.count('SIGTERM')} SIGTERM, "
                f"{len(fleet.workers)} workers started",
            )
        time.sleep(0.02)
    tl.chaos_end = time.time()
    if restarter is not None:
        restarter.join()
    say(args, f"chaos over after {tl.chaos_end - t0:.1f} s; draining")

    # The drain: W workers, no more chaos, until every task finished (bounded).
    deadline = time.time() + args.drain_timeout
    while time.time() < deadline:
        fleet.resume_due()
        fleet.tick()
        if monitor.finished() >= n_tasks:
            tl.drained = True
            break
        if time.time() >= next_report:
            next_report += 5
            say(args, f"  {time.time() - t0:5.1f} s: {monitor.finished()}/{n_tasks} finished")
        time.sleep(0.05)
    tl.drain_end = time.time()
    return tl


# -- the checks -----------------------------------------------------------------------
@dataclass
class Run:
    task_id: str
    run: str
    attempt: int
    pid: int
    start: float
    end: float | None = None  # the "end" line
    abort: float | None = None  # the "abort" line
    #: When the run stopped: its end/abort line, else its process's death.
    stopped: float | None = None
    cut_by: str = ""  # how its process died, for a run that logged neither


@dataclass
class Findings:
    violations: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in CHECKS})
    stats: dict[str, Any] = field(default_factory=dict)
    #: Overlapping runs that a pause explains.
    allowed: list[str] = field(default_factory=list)

    kinds: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, check: str, kind: str, text: str) -> None:
        """One violation of ``check``; ``kind`` groups them in the counts."""
        self.violations[check].append(text)
        self.kinds[check][kind] += 1

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.violations.values())


def build_runs(events: list[Event], fleet: Fleet, f: Findings) -> dict[str, list[Run]]:
    runs: dict[str, Run] = {}
    for e in events:
        if e.event == "start":
            if e.run in runs:
                f.add("6", "bad run log", f"run {e.run} of task {e.task_id} started twice")
                continue
            runs[e.run] = Run(e.task_id, e.run, e.attempt, e.pid, e.at)
            continue
        r = runs.get(e.run)
        if r is None or r.task_id != e.task_id:
            f.add("6", "bad run log", f"{e.event} line of a run that never started: {e}")
            continue
        if r.end is not None or r.abort is not None:
            f.add("6", "bad run log", f"run {e.run} of task {e.task_id} ended twice ({e.event})")
            continue
        if e.event == "end":
            r.end = e.at
        elif e.event == "abort":
            r.abort = e.at
        else:
            f.add("6", "bad run log", f"unknown event in the run log: {e}")
    by_task: dict[str, list[Run]] = defaultdict(list)
    for r in runs.values():
        if r.end is not None:
            r.stopped = r.end
        elif r.abort is not None:
            r.stopped = r.abort
        else:
            died, how = fleet.death(r.pid)
            r.stopped = died
            r.cut_by = how if died is not None else "its process never ended"
        by_task[r.task_id].append(r)
    for task_runs in by_task.values():
        task_runs.sort(key=lambda r: r.start)
    return by_task


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    s = sorted(values)
    return {
        "n": len(s),
        "median": statistics.median(s),
        "p90": s[min(len(s) - 1, int(0.9 * len(s)))],
        "max": s[-1],
    }


def all_records(app: Errands) -> dict[str, TaskRecord]:
    records: dict[str, TaskRecord] = {}
    for k in range(OWNERS):
        owner = f"owner-{k:02d}"
        cursor = None
        while True:
            page = app.sync.list(owner=owner, limit=500, cursor=cursor)
            for rec in page.items:
                records[rec.id] = rec
            cursor = page.next_cursor
            if cursor is None:
                break
    return records


def all_outputs(app: Errands, task_id: str, owner: str) -> list[tuple[int, Any]]:
    items: list[tuple[int, Any]] = []
    after = 0
    while True:
        page = app.sync.outputs(task_id, owner=owner, after=after)
        if not page:
            return items
        items.extend(page)
        after = page[-1][0]


def raw_outputs(app: Errands) -> dict[str, list[tuple[int, Any]]]:
    def read(conn: Connection) -> list[Any]:
        o = output_table.c
        return list(conn.execute(select(o.task_id, o.seq, o.data).order_by(o.task_id, o.seq)))

    rows: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for task_id, seq, data in app.db.read(read):
        rows[task_id].append((seq, data))
    return rows


def count_jobs(app: Errands) -> int:
    def read(conn: Connection) -> int:
        return int(conn.execute(select(func.count()).select_from(job_table)).scalar_one())

    return app.db.read(read)


def consecutive(values: list[int]) -> bool:
    """Unique and without gaps, in this order."""
    return all(b == a + 1 for a, b in itertools.pairwise(values))


def check(
    app: Errands,
    tasks: list[Submitted],
    events: list[Event],
    torn: list[str],
    fleet: Fleet,
    monitor: Monitor,
    tl: Timeline,
) -> Findings:
    f = Findings()
    for kind, text in fleet.problems:
        f.add("workers", kind, text)
    for line in torn:
        f.add("6", "bad run log", f"unreadable run log line: {line!r}")
    runs = build_runs(events, fleet, f)
    records = all_records(app)
    raw = raw_outputs(app)
    check_statuses(f, app, tasks, records)
    for t in tasks:
        rec = records.get(t.id)
        if rec is not None:
            check_task(f, app, t, rec, runs.get(t.id, []), raw.get(t.id, []))
    check_changes(f, tasks, records, monitor)
    allowed, forbidden = check_overlaps(f, runs, fleet, tl)
    f.stats = run_stats(tasks, records, runs, raw)
    f.stats |= {
        "overlaps_allowed": allowed,
        "overlaps_allowed_detail": f.allowed[:SHOWN],
        "overlaps_forbidden": forbidden,
    }
    return f


def check_statuses(
    f: Findings, app: Errands, tasks: list[Submitted], records: dict[str, TaskRecord]
) -> None:
    """1. No task lost or stuck: every record succeeded, no job row left."""
    for t in tasks:
        rec = records.get(t.id)
        if rec is None:
            f.add("1", "missing", f"task {t.id} ({t.owner}) is missing")
        elif rec.status is not Status.SUCCEEDED:
            err = f": {rec.error.type}: {rec.error.message}" if rec.error else ""
            kind = rec.status.value + (f" {rec.error.type}" if rec.error else "")
            text = f"task {t.id} ({t.owner}) {rec.status.value}{err} (attempts {rec.attempts})"
            f.add("1", kind, text)
    extra = set(records) - {t.id for t in tasks}
    if extra:
        f.add("1", "unknown records", f"{len(extra)} records nobody submitted: {sorted(extra)[:5]}")
    jobs = count_jobs(app)
    if jobs:
        f.add("1", "job rows left", f"{jobs} job rows left in errands_job")


def check_task(
    f: Findings,
    app: Errands,
    t: Submitted,
    rec: TaskRecord,
    task_runs: list[Run],
    stored: list[tuple[int, Any]],
) -> None:
    """2–4 for one task: its result, its outputs(), its stored items."""
    by_token = {r.run: r for r in task_runs}
    result = rec.result
    token = result.get("run") if isinstance(result, dict) else None
    # 2. every result right
    if rec.status is Status.SUCCEEDED:
        if not isinstance(result, dict) or not isinstance(token, str):
            f.add("2", "malformed result", f"task {t.id}: malformed result {result!r}")
            token = None
        else:
            winner = by_token.get(token)
            if winner is None:
                f.add(
                    "2", "run never started", f"task {t.id}: the result's run {token} never started"
                )
            elif winner.end is None:
                f.add(
                    "2",
                    "run never completed",
                    f"task {t.id}: the result's run {token} never completed",
                )
            if result.get("items") != t.items:
                f.add(
                    "2",
                    "wrong item count",
                    f"task {t.id}: result has {result.get('items')} items, not {t.items}",
                )
    # 3. outputs() holds the result's run alone, complete and in order
    got = all_outputs(app, t.id, t.owner)
    if token is not None:
        foreign = Counter(
            str(item.get("run")) if isinstance(item, dict) else repr(item)
            for _, item in got
            if not (isinstance(item, dict) and item.get("run") == token)
        )
        if foreign:
            f.add(
                "3",
                "items of earlier runs",
                f"task {t.id}: outputs() has {sum(foreign.values())} items of "
                f"{len(foreign)} other run(s) (earlier attempts) besides the result's",
            )
        mine = [
            item.get("i") for _, item in got if isinstance(item, dict) and item.get("run") == token
        ]
        if mine != list(range(t.items)):
            f.add(
                "3",
                "result's items missing or out of order",
                f"task {t.id}: outputs() has {len(mine)} items of the result's run "
                f"(i = {mine[:12]}), expected i = 0..{t.items - 1}",
            )
    # 4. sequence numbers: outputs() consecutive; each run's rows in errands_output
    seqs = [seq for seq, _ in got]
    if not consecutive(seqs):
        f.add("4", "outputs() seqs", f"task {t.id}: outputs() seqs not consecutive: {seqs[:20]}")
    per_run: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for seq, data in stored:
        per_run[str(data.get("run") if isinstance(data, dict) else None)].append((seq, data))
    for key, rows in per_run.items():
        if key not in by_token:
            f.add(
                "4",
                "items of an unknown run",
                f"task {t.id}: {len(rows)} stored items of an unknown run {key}",
            )
            continue
        run_seqs = [seq for seq, _ in rows]
        if not consecutive(run_seqs):
            f.add(
                "4",
                "a run's seqs",
                f"task {t.id}, run {key}: seqs not consecutive: {run_seqs[:20]}",
            )
        idx = [data.get("i") for _, data in rows]
        if idx != list(range(len(rows))):
            f.add(
                "4",
                "a run's items",
                f"task {t.id}, run {key}: stored items i = {idx[:20]}, not 0..{len(rows) - 1}",
            )


def check_changes(
    f: Findings, tasks: list[Submitted], records: dict[str, TaskRecord], monitor: Monitor
) -> None:
    """5. No record changed after it finished."""
    for task_id, (first, later) in sorted(monitor.changes.items()):
        then = (
            "is no longer finished"
            if later is None
            else f"became v{later.version} {later.status} {later.result!r}"
        )
        f.add(
            "5",
            "changed",
            f"task {task_id}: finished as v{first.version} {first.status} {first.result!r}, "
            f"then {then}",
        )
    for t in tasks:
        rec = records.get(t.id)
        if rec is not None and rec.done and t.id not in monitor.first:
            f.add("5", "unseen", f"task {t.id}: finished, but the monitor never saw it finished")


def check_overlaps(
    f: Findings, runs: dict[str, list[Run]], fleet: Fleet, tl: Timeline
) -> tuple[int, int]:
    """6. No two runs of a task overlap, unless the earlier one's worker was paused
    during it. (allowed, forbidden)."""
    allowed = forbidden = 0
    for task_id, task_runs in runs.items():
        for i, first in enumerate(task_runs):
            first_stop = first.stopped if first.stopped is not None else float("inf")
            for second in task_runs[i + 1 :]:
                if second.start >= first_stop:
                    continue
                text = (
                    f"task {task_id}: run {second.run} (attempt {second.attempt}, pid "
                    f"{second.pid}) started {second.start - first.start:.2f} s after run "
                    f"{first.run} (attempt {first.attempt}, pid {first.pid}), which "
                    + (
                        f"stopped {first_stop - second.start:.2f} s later"
                        if first_stop != float("inf")
                        else "never stopped"
                    )
                )
                paused = [
                    p
                    for p in fleet.pauses
                    if p.pid == first.pid and p.stopped < first_stop and p.resumed > first.start
                ]
                if paused and second.start > paused[0].stopped:
                    allowed += 1
                    f.allowed.append(text + " (its worker was paused)")
                    continue
                forbidden += 1
                cut = [
                    f"PostgreSQL restart {b - tl.chaos_start:.1f}–{e - tl.chaos_start:.1f} s"
                    for b, e in tl.restarts
                    if b < first_stop and e > first.start
                ]
                f.add(
                    "6",
                    "forbidden overlap" + (" (PostgreSQL restart)" if cut else ""),
                    text + (f" (during the {cut[0]})" if cut else ""),
                )
    return allowed, forbidden


def cut_by_sigkill(r: Run) -> bool:
    return r.end is None and r.abort is None and r.cut_by.startswith("SIGKILL")


def run_stats(
    tasks: list[Submitted],
    records: dict[str, TaskRecord],
    runs: dict[str, list[Run]],
    raw: dict[str, list[tuple[int, Any]]],
) -> dict[str, Any]:
    every = [r for task_runs in runs.values() for r in task_runs]
    completions = Counter(r.task_id for r in every if r.end is not None)
    # Recovery: from the SIGKILL that cut a run to the next start of its task.
    recovery = []
    never = 0
    for task_runs in runs.values():
        for r in task_runs:
            if not cut_by_sigkill(r):
                continue
            assert r.stopped is not None
            after = max(r.stopped, r.start)
            starts = [x.start for x in task_runs if x is not r and x.start >= after]
            if starts:
                recovery.append(min(starts) - r.stopped)
            else:
                never += 1
    return {
        "tasks": len(tasks),
        "records": len(records),
        "statuses": dict(Counter(rec.status.value for rec in records.values())),
        "runs_started": len(every),
        "runs_completed": sum(1 for r in every if r.end is not None),
        "runs_aborted": sum(1 for r in every if r.abort is not None),
        "runs_cut_by_sigkill": sum(1 for r in every if cut_by_sigkill(r)),
        "runs_cut_otherwise": sum(
            1 for r in every if r.end is None and r.abort is None and not cut_by_sigkill(r)
        ),
        "duplicate_completions": sum(1 for n in completions.values() if n > 1),
        "attempts_histogram": dict(
            sorted(Counter(rec.attempts for rec in records.values()).items())
        ),
        "stored_items": sum(len(v) for v in raw.values()),
        "recovery_after_sigkill_s": percentiles(recovery),
        "cut_runs_never_restarted": never,
    }


# -- reporting ------------------------------------------------------------------------
def fmt_pct(p: dict[str, float] | None) -> str:
    if p is None:
        return "none"
    return f"n={p['n']}: median {p['median']:.2f} s, p90 {p['p90']:.2f} s, max {p['max']:.2f} s"


def report(
    args: argparse.Namespace,
    f: Findings,
    fleet: Fleet,
    tl: Timeline,
    monitor: Monitor,
    workdir: Path,
    elapsed: float,
) -> dict[str, Any]:
    s = f.stats
    pauses = ", ".join(f"{p.resumed - p.stopped:.1f} s" for p in fleet.pauses) or "none"
    restarts = (", ".join(f"{e - b:.1f} s" for b, e in tl.restarts) if tl.restarts else "none") + (
        f" (errors: {'; '.join(tl.restart_errors)})" if tl.restart_errors else ""
    )
    drain = tl.drain_end - tl.chaos_end
    summary: dict[str, Any] = {
        "database": args.database,
        "seed": args.seed,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        **s,
        "sigkill": fleet.count("SIGKILL"),
        "sigkill_after_sigterm": fleet.count("SIGKILL", "after SIGTERM"),
        "sigterm": fleet.count("SIGTERM") - fleet.count("SIGTERM", "end of run"),
        "sigstop": fleet.count("SIGSTOP"),
        "pg_restarts": len(tl.restarts),
        "pg_restart_errors": tl.restart_errors,
        "workers_started": len(fleet.workers),
        "workers_failed_to_start_in_outage": len(fleet.failed_starts),
        "chaos_s": tl.chaos_end - tl.chaos_start,
        "drain_s": drain,
        "drained": tl.drained,
        "monitor_polls": monitor.polls,
        "monitor_failed_polls": monitor.failures,
        "elapsed_s": elapsed,
        "violations": {k: len(v) for k, v in f.violations.items()},
        "violation_kinds": {k: dict(v) for k, v in f.kinds.items() if v},
        "violation_detail": {k: v[:100] for k, v in f.violations.items() if v},
        "workdir": str(workdir),
        "ok": f.total == 0,
    }
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(s["statuses"].items()))
    hist = ", ".join(f"{k}: {v}" for k, v in s["attempts_histogram"].items())
    lines = [
        "",
        f"== chaos on {args.database}: seed {args.seed}, {elapsed:.1f} s in all ==",
        f"tasks                  {s['tasks']} submitted, {s['records']} records ({statuses})",
        f"runs                   {s['runs_started']} started, {s['runs_completed']} completed, "
        f"{s['runs_aborted']} aborted, {s['runs_cut_by_sigkill']} cut by SIGKILL, "
        f"{s['runs_cut_otherwise']} cut otherwise",
        f"duplicate completions  {s['duplicate_completions']} tasks ran to the end more than once",
        f"attempts (records)     {hist}",
        f"signals                SIGKILL {summary['sigkill']} "
        f"({summary['sigkill_after_sigterm']} after a SIGTERM timed out), "
        f"SIGTERM {summary['sigterm']}, SIGSTOP {summary['sigstop']} ({pauses}); "
        f"{summary['workers_started']} worker processes in all"
        + (
            f" ({len(fleet.failed_starts)} exited at start while the database restarted)"
            if fleet.failed_starts
            else ""
        ),
        f"PostgreSQL restarts    {restarts}",
        f"recovery after SIGKILL {fmt_pct(s['recovery_after_sigkill_s'])}"
        + (
            f"; {s['cut_runs_never_restarted']} cut runs never restarted"
            if s["cut_runs_never_restarted"]
            else ""
        ),
        f"chaos, drain           {summary['chaos_s']:.1f} s of chaos, then "
        + (
            f"every task finished {drain:.1f} s later"
            if tl.drained
            else f"NOT every task finished within {args.drain_timeout:g} s"
        ),
        f"overlapping runs       {s['overlaps_allowed']} allowed (after a pause), "
        f"{s['overlaps_forbidden']} forbidden",
        f"monitor                {monitor.polls} polls ({monitor.failures} failed)",
        f"logs                   {workdir}",
        "",
        "checks:",
    ]
    for key, title in CHECKS.items():
        found = f.violations[key]
        kinds = ", ".join(f"{k} {n}" for k, n in f.kinds[key].most_common())
        verdict = "ok" if not found else f"FAILED ({len(found)}: {kinds})"
        lines.append(f"  [{key}] {title}: {verdict}")
    for key, found in f.violations.items():
        if not found:
            continue
        lines.append("")
        lines.append(f"violations of [{key}] ({len(found)}):")
        lines.extend(f"  - {v}" for v in found[:SHOWN])
        if len(found) > SHOWN:
            lines.append(f"  … and {len(found) - SHOWN} more")
    if s["overlaps_allowed_detail"]:
        lines.append("")
        lines.append("allowed overlaps (first few):")
        lines.extend(f"  - {v}" for v in s["overlaps_allowed_detail"])
    lines.append("")
    lines.append("PASS: no violation" if f.total == 0 else f"FAIL: {f.total} violations")
    print("\n".join(lines), flush=True)
    return summary


def write_signals(path: Path, fleet: Fleet, tl: Timeline) -> None:
    """Every signal and restart, in order: wall time, seconds into the chaos, what, pid;
    then every worker process: pid, started, ended, how."""
    lines = []
    events = [(s.at, s.kind, s.pid, s.note) for s in fleet.signals]
    for began, ended in tl.restarts:
        events.append((began, "pg-restart", 0, f"until +{ended - tl.chaos_start:.3f} s"))
    for at, kind, pid, note in sorted(events):
        lines.append(f"{at:.6f} +{at - tl.chaos_start:8.3f} {kind:10} {pid:7} {note}".rstrip())
    lines.append("")
    for w in fleet.workers:
        died = f"+{w.died - tl.chaos_start:.3f}" if w.died is not None else "-"
        lines.append(
            f"worker {w.n:3} pid {w.pid:7} started +{w.started - tl.chaos_start:.3f} "
            f"ended {died} ({w.how or 'running'})"
        )
    path.write_text("\n".join(lines) + "\n")


# -- main -----------------------------------------------------------------------------
@contextlib.contextmanager
def workdir_for(args: argparse.Namespace) -> Iterator[Path]:
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        yield args.workdir.resolve()
        return
    yield Path(tempfile.mkdtemp(prefix=f"errands-chaos-{args.database}-"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.time()
    rng = random.Random(args.seed)
    with workdir_for(args) as workdir:
        log = workdir / "runs.log"
        log.unlink(missing_ok=True)
        db = Database(args, workdir)
        fleet: Fleet | None = None
        monitor: Monitor | None = None
        app: Errands | None = None
        try:
            url = db.open()
            app = Errands(url)
            for definition in chaos_tasks.app.registry:
                app.registry.add(definition)
            say(
                args,
                f"chaos on {args.database} ({url}), seed {args.seed}: {args.tasks} tasks, "
                f"{args.workers} workers × {args.concurrency}, lease {args.lease:g} s, "
                f"{args.chaos_seconds:g} s of chaos; logs in {workdir}",
            )
            tasks = submit_all(app, make_payloads(rng, args.tasks, log))
            monitor = Monitor(app)
            monitor.start()
            fleet = Fleet(args, url, workdir)
            tl = run_chaos(args, fleet, db, monitor, len(tasks), rng)
            fleet.stop_all()
            monitor.stop()
            events, torn = chaos_tasks.read_log(log)
            write_signals(workdir / "signals.log", fleet, tl)
            findings = check(app, tasks, events, torn, fleet, monitor, tl)
            summary = report(args, findings, fleet, tl, monitor, workdir, time.time() - began)
        finally:
            if fleet is not None:
                fleet.kill_all()
            if monitor is not None and monitor.is_alive():
                monitor.stop()
            if app is not None:
                app.close()
            db.close()
        if args.json is not None:
            args.json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
