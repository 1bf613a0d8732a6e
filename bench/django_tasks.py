"""errands' Django backend against django-tasks-db, on the same database.

    .venv/bin/python bench/django_tasks.py                        # SQLite and PostgreSQL, 3 rounds
    .venv/bin/python bench/django_tasks.py --quick                # smoke run, under a minute
    .venv/bin/python bench/django_tasks.py --database postgresql --repeats 5

Both are Django Tasks backends of the bench project ``bench/django_project``: the same
``@task`` functions (``tasks.py``), enqueued with ``task.enqueue()`` through Django's
own connection, run by two worker processes. errands: ``errands.django.ErrandsBackend``,
workers ``manage.py errands_worker --concurrency 16`` (the library default).
django-tasks-db: ``django_tasks_db.DatabaseBackend``, workers ``manage.py db_worker
--interval 0.01 --no-startup-delay`` (one task at a time; when it finds no task it
sleeps ``--interval``, 1 s by default: 10 ms here, ``--db-worker-interval``; on SQLite
its claim is a ``BEGIN EXCLUSIVE`` transaction, under WAL a write lock). Django's
connections are persistent (``CONN_MAX_AGE = 600``, ``--conn-max-age``): with Django's
default 0, ``db_worker`` would open a new connection on every poll.

Every case (a backend on a database, in a round) is a process of its own on a **fresh
database**: a new SQLite file (WAL, ``synchronous=FULL``, Django's transactions
``BEGIN IMMEDIATE``; see ``django_project/settings.py``) or a new PostgreSQL database on
the ``--pg-url`` server (the server's defaults), set up by ``manage.py migrate`` and
dropped afterwards. Rounds alternate which backend goes first. The case measures, in
this order:

1. **enqueue/s**: ``--enqueue`` (5,000) ``noop.enqueue()`` one at a time in autocommit
   (each its own transaction), then as many inside one ``transaction.atomic()``;
2. **tasks/s through two workers**: the 2 × 5,000 ``noop`` tasks of step 1 are queued
   (PostgreSQL: then an untimed ``ANALYZE``), two workers are launched, and the rate is
   the count ÷ (the moment the driver sees every task finished − the earliest start
   time among the first 20 tasks). Tasks return ``time.time()`` taken as they start;
   the driver polls the count of finished tasks every 10 ms; a failed task fails the run;
3. **submit → start latency**, the same two workers idle and waiting: 5 warm-up tasks,
   1 s of quiet, then ``--latency`` (200) times: a random pause of 0–20 ms (so
   submissions do not keep step with a poller), the time, ``noop.enqueue()``, then
   ``get_result`` every 1 ms until it has finished. Start: the task's start time − the
   time before ``enqueue()``; done: when the driver saw it finished (1 ms polls);
4. **a task reporting progress**: workers stopped, ``--progress`` (1,000)
   ``report_progress`` tasks queued in one transaction, workers launched; time per task
   = (all seen finished − first start) ÷ count, as in step 2. Each task makes 20
   reports: errands ``context.progress(k, 20)`` (``ErrandsTaskContext``; errands keeps
   the latest and writes it at most every 0.25 s and with the outcome: a task this short
   stores it with its outcome); django-tasks-db has no progress API, so each report is
   one upsert of the task's row in a ``Progress`` model, in autocommit (what its users
   write for a progress bar). Both runs check the last report (20 of 20) was stored.
   Also the time the 20 reports take inside the task (median). Step 2 is the same
   drain with no reports at all: the lower bound for either backend.

The table gives medians over ``--repeats`` rounds and **errands ×**: how many times
better errands is (errands ÷ django-tasks-db for rates, django-tasks-db ÷ errands for
times; above 1 errands is ahead; none for the time inside the task, which errands
spends in memory). ``--quick``: 200 enqueues per mode, 20 latency samples, 50 progress
tasks, one round (a smoke run, not a measurement). The library measured is a git commit (``--ref``,
default HEAD) unpacked under ``bench/results/snapshots/``, first on the path of every
process (as in ``bench/run.py``). Output: the table on stdout and in
``bench/results/NAME.md``, every case in ``bench/results/NAME.json``, logs of each case
and its workers in ``bench/results/NAME-logs/`` (``NAME``: ``--name``, default
``django_tasks``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Run as a script, this file's directory comes first on the path, where this module's
# name would hide the django_tasks package (the Django Tasks backport).
if sys.path and Path(sys.path[0] or ".").resolve() == HERE:
    del sys.path[0]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PROJECT = HERE / "django_project"
RESULTS = HERE / "results"
BACKENDS = ("errands", "django-tasks-db")
NOOP = "bench.django_project.tasks.noop"
PROGRESS = "bench.django_project.tasks.report_progress"
WORKERS = 2
FIRST = 20  # the first tasks whose start times give a drain's first start
DONE_POLL_S = 0.01
RESULT_POLL_S = 0.001
PHASE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Sizes:
    enqueue: int = 5000  # per enqueue mode; step 2 drains twice as many
    latency: int = 200
    progress: int = 1000
    reports: int = 20


QUICK = Sizes(enqueue=200, latency=20, progress=50)


def log(msg: str) -> None:
    print(msg, flush=True)


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (p99 of 200 samples: the third largest; of 20: the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# ======================================================================================
# one case: a backend on a fresh database (this process, Django set up)
# ======================================================================================
class Case:
    """The backend under test, its workers and what the driver reads back."""

    def __init__(self, args: argparse.Namespace) -> None:
        from django.db import connection

        from bench.django_project.tasks import noop

        self.args = args
        self.backend_name: str = args.child
        self.sizes = sizes_of(args)
        self.backend = noop.get_backend()
        self.connection = connection
        self.logs = Path(args.logs)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.launches = 0

    # -- workers ----------------------------------------------------------------------
    def worker_command(self) -> list[str]:
        manage = [sys.executable, str(PROJECT / "manage.py")]
        if self.backend_name == "django-tasks-db":
            interval = str(self.args.db_worker_interval)
            options = ["--interval", interval, "--no-startup-delay", "--no-reload", "-v", "0"]
            return [*manage, "db_worker", *options]
        concurrency = str(self.args.concurrency)
        return [*manage, "errands_worker", "--concurrency", concurrency, "-v", "0"]

    def start_workers(self) -> None:
        self.launches += 1
        for i in range(WORKERS):
            logfile = self.logs / f"{self.args.case}-worker{self.launches}-{i}.log"
            with open(logfile, "ab") as out:
                self.workers.append(
                    subprocess.Popen(
                        self.worker_command(), stdout=out, stderr=subprocess.STDOUT, cwd=REPO
                    )
                )

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.workers:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.workers = []

    # -- reading back -----------------------------------------------------------------
    def counts(self, name: str) -> tuple[int, int]:
        """(finished, failed) tasks of ``name``."""
        from django.db.models import Count

        if self.backend_name == "errands":
            from errands.django.models import Task

            rows = Task.objects.filter(name=name).values_list("status").annotate(Count("id"))
            by = dict(rows)
            failed = by.get("failed", 0) + by.get("cancelled", 0)
            return by.get("succeeded", 0) + failed, failed
        from django_tasks_db.models import DBTaskResult

        rows = (
            DBTaskResult.objects.filter(task_path=name).values_list("status").annotate(Count("id"))
        )
        by = dict(rows)
        return by.get("SUCCESSFUL", 0) + by.get("FAILED", 0), by.get("FAILED", 0)

    def wait_done(self, name: str, n: int) -> float:
        """When the driver sees all ``n`` tasks of ``name`` finished (``time.time()``)."""
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while True:
            done, failed = self.counts(name)
            if failed:
                raise RuntimeError(f"{failed} tasks of {name} failed (see the worker logs)")
            if done >= n:
                return time.time()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: {done} of {n} finished after {PHASE_TIMEOUT_S} s")
            if any(p.poll() is not None for p in self.workers):
                raise RuntimeError("a worker exited (see the worker logs)")
            time.sleep(DONE_POLL_S)

    def return_value(self, result_id: str) -> Any:
        result = self.backend.get_result(result_id)
        if result.status != "SUCCESSFUL":
            raise RuntimeError(f"task {result_id} is {result.status}")
        return result.return_value

    def analyze(self) -> None:
        """PostgreSQL: fresh statistics of the queued rows (this server may run with
        autovacuum off), untimed, for both backends."""
        if self.connection.vendor == "postgresql":
            with self.connection.cursor() as cur:
                cur.execute("ANALYZE")

    def database_settings(self) -> dict[str, Any]:
        """The settings in effect on Django's connection."""
        with self.connection.cursor() as cur:
            if self.connection.vendor == "sqlite":
                cur.execute("PRAGMA journal_mode")
                journal = cur.fetchone()[0]
                cur.execute("PRAGMA synchronous")
                sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[cur.fetchone()[0]]
                mode = self.connection.settings_dict["OPTIONS"].get("transaction_mode")
                return {"journal_mode": journal, "synchronous": sync, "transaction_mode": mode}
            out = {}
            for name in ("synchronous_commit", "fsync", "autovacuum", "server_version"):
                cur.execute(f"SHOW {name}")
                out[name] = cur.fetchone()[0]
            return out


# -- the four measurements ---------------------------------------------------------------
def measure_enqueue(case: Case) -> tuple[dict[str, float], list[str]]:
    """Step 1: enqueue/s one at a time in autocommit, and inside one transaction; the
    ids of the first tasks (for step 2's first start)."""
    from django.db import transaction

    from bench.django_project.tasks import noop

    n = case.sizes.enqueue
    t0 = time.perf_counter()
    first = [noop.enqueue().id for _ in range(n)][:FIRST]
    single_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with transaction.atomic():
        for _ in range(n):
            noop.enqueue()
    atomic_s = time.perf_counter() - t0
    return {"n": n, "single_per_s": n / single_s, "atomic_per_s": n / atomic_s}, first


def measure_throughput(case: Case, first_ids: list[str]) -> dict[str, float]:
    """Step 2: the queued ``noop`` tasks through two fresh workers."""
    n = 2 * case.sizes.enqueue
    case.analyze()
    launched = time.time()
    case.start_workers()
    done = case.wait_done(NOOP, n)
    first = min(case.return_value(i) for i in first_ids)
    return {
        "n": n,
        "per_s": n / (done - first),
        "boot_s": first - launched,
        "per_s_from_launch": n / (done - launched),
    }


def measure_latency(case: Case) -> dict[str, float]:
    """Step 3: submit → start and submit → done, one task at a time, workers idle."""
    from bench.django_project.tasks import noop

    def one() -> tuple[float, float]:
        submitted = time.time()
        result = noop.enqueue()
        deadline = time.monotonic() + 30
        while True:
            current = case.backend.get_result(result.id)
            if current.is_finished:
                seen = time.time()
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"latency task {result.id} not finished after 30 s")
            time.sleep(RESULT_POLL_S)
        if current.status != "SUCCESSFUL":
            raise RuntimeError(f"latency task {result.id} is {current.status}")
        return current.return_value - submitted, seen - submitted

    for _ in range(5):
        one()
    time.sleep(1.0)
    starts, dones = [], []
    for _ in range(case.sizes.latency):
        time.sleep(random.uniform(0.0, 0.02))
        start, done = one()
        starts.append(start * 1000)
        dones.append(done * 1000)
    return {
        "n": case.sizes.latency,
        "start_p50_ms": statistics.median(starts),
        "start_p99_ms": quantile(starts, 0.99),
        "done_p50_ms": statistics.median(dones),
        "done_p99_ms": quantile(dones, 0.99),
    }


def measure_progress(case: Case) -> dict[str, float]:
    """Step 4: tasks making 20 progress reports each, through two fresh workers."""
    from django.db import transaction

    from bench.django_project.models import Progress
    from bench.django_project.tasks import report_progress

    n, reports = case.sizes.progress, case.sizes.reports
    with transaction.atomic():
        ids = [report_progress.enqueue(reports).id for _ in range(n)]
    case.analyze()
    launched = time.time()
    case.start_workers()
    done = case.wait_done(PROGRESS, n)
    values = [case.return_value(i) for i in ids]
    first = min(start for start, _ in values)
    # the last report is stored, on both
    if case.backend_name == "errands":
        from errands import ANY_OWNER
        from errands.django import get_app

        stored = sum(
            get_app().sync.get(i, owner=ANY_OWNER).progress.current == reports for i in ids
        )
    else:
        stored = Progress.objects.filter(task_id__in=ids, current=reports).count()
    if stored != n:
        raise RuntimeError(f"progress: {stored} of {n} tasks stored their last report")
    return {
        "n": n,
        "reports": reports,
        "ms_per_task": (done - first) * 1000 / n,
        "per_s": n / (done - first),
        "in_task_p50_ms": statistics.median(seconds for _, seconds in values) * 1000,
        "per_s_from_launch": n / (done - launched),
    }


def run_case(args: argparse.Namespace) -> int:
    """The child process: migrate the fresh database, measure, write ``--out``."""
    began = time.monotonic()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django_project.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
    case = Case(args)
    out: dict[str, Any] = {
        "backend": case.backend_name,
        "database": case.database_settings(),
        "worker": " ".join(Path(a).name if "/" in a else a for a in case.worker_command()),
        "sizes": asdict(case.sizes),
        "seconds": {"setup": time.monotonic() - began},
    }
    try:
        for step in ("enqueue", "throughput", "latency", "progress"):
            t0 = time.monotonic()
            if step == "enqueue":
                out[step], first = measure_enqueue(case)
            elif step == "throughput":
                out[step] = measure_throughput(case, first)
            elif step == "latency":
                out[step] = measure_latency(case)
                case.stop_workers()
            else:
                out[step] = measure_progress(case)
                case.stop_workers()
            out["seconds"][step] = time.monotonic() - t0
            log(f"    {step} ({out['seconds'][step]:.1f} s): {out[step]}")
    finally:
        case.stop_workers()
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


# ======================================================================================
# the driver: every case in a process of its own, on a fresh database
# ======================================================================================
ROWS = (  # (step, key, label, higher is better (None: no ratio), digits)
    ("enqueue", "single_per_s", "enqueue/s, one at a time (autocommit)", True, 0),
    ("enqueue", "atomic_per_s", "enqueue/s, all in one transaction.atomic()", True, 0),
    ("throughput", "per_s", "noop tasks/s through 2 workers", True, 0),
    ("latency", "start_p50_ms", "submit → start p50, ms (workers idle)", False, 1),
    ("latency", "start_p99_ms", "submit → start p99, ms", False, 1),
    ("latency", "done_p50_ms", "submit → done seen p50, ms (1 ms polls)", False, 1),
    ("latency", "done_p99_ms", "submit → done seen p99, ms", False, 1),
    ("progress", "ms_per_task", "20 progress reports: ms per task, 2 workers", False, 2),
    ("progress", "in_task_p50_ms", "20 progress reports: inside the task p50, ms", None, 3),
)


def sizes_of(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else Sizes()
    return Sizes(
        enqueue=args.enqueue or base.enqueue,
        latency=args.latency or base.latency,
        progress=args.progress or base.progress,
        reports=base.reports,
    )


@contextlib.contextmanager
def fresh_database(args: argparse.Namespace, database: str, name: str, tmp: Path) -> Iterator[str]:
    """A new database for one case (an SQLite path or a PostgreSQL URL), removed after."""
    if database == "sqlite":
        path = tmp / f"{name}.sqlite3"
        try:
            yield str(path)
        finally:
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
        return
    from bench import _pg

    url = _pg.create(args.pg_url, name)
    try:
        yield url
    finally:
        _pg.drop(args.pg_url, name)


def run_one(
    args: argparse.Namespace, database: str, backend: str, rnd: int, env: dict[str, str], tmp: Path
) -> dict[str, Any]:
    """One case in a child process (its own process group: whatever it leaves running,
    its workers included, is killed when it ends); its results."""
    case = f"{database}-{rnd}-{backend}"
    name = f"errands_djbench_{os.getpid()}_{rnd}_{backend.replace('-', '_')}"
    logs = RESULTS / f"{args.name}-logs"
    out = tmp / f"{case}.json"
    sizes = sizes_of(args)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", backend, "--case", case]
    cmd += ["--out", str(out), "--logs", str(logs), "--enqueue", str(sizes.enqueue)]
    cmd += ["--latency", str(sizes.latency), "--progress", str(sizes.progress)]
    cmd += ["--concurrency", str(args.concurrency)]
    cmd += ["--db-worker-interval", str(args.db_worker_interval)]
    with fresh_database(args, database, name, tmp) as spec, open(logs / f"{case}.log", "ab") as fh:
        child_env = env | {
            "BENCH_DJANGO_BACKEND": backend,
            "BENCH_DJANGO_DATABASE": spec,
            "BENCH_DJANGO_CONN_MAX_AGE": str(args.conn_max_age),
        }
        proc = subprocess.Popen(
            cmd,
            env=child_env,
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = proc.wait(args.timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if rc != 0:
        raise RuntimeError(f"{case} exited with {rc} (see {logs / (case + '.log')})")
    result: dict[str, Any] = json.loads(out.read_text())
    result.update(case=case, round=rnd, database_kind=database)
    return result


def cell(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    text = f"{statistics.median(values):,.{digits}f}"
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f}–{max(values):,.{digits}f})"
    return text


def report(cases: list[dict[str, Any]], databases: list[str]) -> str:
    lines: list[str] = []
    for database in databases:
        mine = [c for c in cases if c["database_kind"] == database]
        if not mine:
            continue
        by = {b: [c for c in mine if c["backend"] == b] for b in BACKENDS}
        settings = mine[0]["database"]
        if database == "sqlite":
            head = (
                f"SQLite: journal_mode={settings['journal_mode']}, "
                f"synchronous={settings['synchronous']}, Django transactions "
                f"{settings['transaction_mode']} (django-tasks-db's claim: EXCLUSIVE)"
            )
        else:
            head = (
                f"PostgreSQL {settings['server_version']}: synchronous_commit="
                f"{settings['synchronous_commit']}, fsync={settings['fsync']}, "
                f"autovacuum={settings['autovacuum']}"
            )
        rounds = max(len(v) for v in by.values())
        lines += [f"### {head}, {rounds} round(s)", ""]
        lines += ["| | errands | django-tasks-db | errands × |", "|---|---:|---:|---:|"]
        for step, key, label, higher, digits in ROWS:
            values = {b: [c[step][key] for c in by[b] if step in c] for b in BACKENDS}
            ratio = "–"
            if higher is not None and values["errands"] and values["django-tasks-db"]:
                ours = statistics.median(values["errands"])
                theirs = statistics.median(values["django-tasks-db"])
                ratio = f"{(ours / theirs if higher else theirs / ours):.2f}×"
            row = [label, cell(values["errands"], digits), cell(values["django-tasks-db"], digits)]
            lines.append("| " + " | ".join([*row, ratio]) + " |")
        lines.append("")
        for backend in BACKENDS:
            if by[backend]:
                lines.append(f"- {backend} workers: {WORKERS} × `{by[backend][0]['worker']}`")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke run")
    ap.add_argument("--repeats", type=int, default=None, help="rounds (default 3; --quick: 1)")
    ap.add_argument("--enqueue", type=int, default=0, help="tasks per enqueue mode (5,000)")
    ap.add_argument("--latency", type=int, default=0, help="latency samples (200)")
    ap.add_argument("--progress", type=int, default=0, help="tasks reporting progress (1,000)")
    ap.add_argument("--concurrency", type=int, default=16, help="errands: per worker (16)")
    ap.add_argument(
        "--db-worker-interval",
        type=float,
        default=0.01,
        help="django-tasks-db: seconds db_worker sleeps when it finds no task (0.01)",
    )
    ap.add_argument(
        "--conn-max-age",
        type=int,
        default=600,
        help="Django's CONN_MAX_AGE (600; 0: Django's default, db_worker reconnects per poll)",
    )
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--ref", default="HEAD", help="the commit of src/errands measured")
    ap.add_argument("--max-load", type=float, default=None, help="wait for a load below this")
    ap.add_argument("--max-wait", type=float, default=300.0)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per case")
    ap.add_argument("--name", default="django_tasks")
    # a case, run by the driver in a process of its own
    ap.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--logs", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return run_case(args)

    from bench._source import fingerprint, snapshot
    from bench.web import git, machine, wait_for_quiet

    repeats = args.repeats or (1 if args.quick else 3)
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    src, sha = snapshot(args.ref)
    logs = RESULTS / f"{args.name}-logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="bench.django_project.settings",
        PYTHONPATH=os.pathsep.join(
            [str(src), str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        ),
        PYTHONUNBUFFERED="1",
    )
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["bench/django_tasks.py", *(argv or sys.argv[1:])]),
        "commit": sha,
        "commit_subject": git("log", "-1", "--format=%s", sha)[:80],
        "fingerprint": fingerprint(src / "errands"),
        "machine": machine(),
        "sizes": asdict(sizes_of(args)),
        "config": {
            "errands_concurrency": args.concurrency,
            "db_worker_interval": args.db_worker_interval,
            "conn_max_age": args.conn_max_age,
        },
        "cases": [],
        "errors": [],
    }
    log(f"errands {sha[:12]} ({results['fingerprint']}) against django-tasks-db, {repeats}×")
    tmp = Path(tempfile.mkdtemp(prefix="errands-django-bench-"))
    try:
        for database in databases:
            for rnd in range(1, repeats + 1):
                order = BACKENDS if rnd % 2 else BACKENDS[::-1]
                for backend in order:
                    log(f"{database}, round {rnd}: {backend}")
                    quiet = wait_for_quiet(args.max_load, args.max_wait)
                    try:
                        case = run_one(args, database, backend, rnd, env, tmp)
                    except Exception as exc:
                        log(f"  FAILED: {exc}")
                        results["errors"].append(f"{database} {rnd} {backend}: {exc}")
                        continue
                    case["load"] = quiet
                    took = ", ".join(f"{k} {v:.1f}" for k, v in case["seconds"].items())
                    log(f"  seconds: {took}")
                    results["cases"].append(case)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = report(results["cases"], databases)
    header = (
        f"errands `{sha[:12]}` ({results['commit_subject']}) against django-tasks-db, "
        f"{results['started']}; {results['machine']['nproc']} cores; sizes {results['sizes']}; "
        f"CONN_MAX_AGE {args.conn_max_age}"
    )
    text = f"{header}\n\n{table}"
    log("")
    log(text)
    for error in results["errors"]:
        log(f"ERROR {error}")
    (RESULTS / f"{args.name}.md").write_text(text + "\n")
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=1))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
