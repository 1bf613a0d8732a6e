"""Profile errands under W1: the client's enqueue loop (pyinstrument) and the two worker
processes while they drain the queue (py-spy).

    .venv/bin/pip install py-spy pyinstrument      # bench-only tools
    .venv/bin/python bench/profile_w1.py            # 5,000 tasks, synchronous=FULL
    .venv/bin/python bench/profile_w1.py --sync normal --n 20000
    .venv/bin/python bench/profile_w1.py --database pg     # a fresh PostgreSQL database

Writes to bench/results/profile/: ``client.txt`` (pyinstrument tree of the enqueue
loop), ``worker-<k>-<mode>.raw`` (py-spy collapsed stacks, one per worker, ``--threads``),
``summary-<mode>.txt`` (top functions by own and total samples, shares by package and by
thread, both workers together; start-up imports are counted apart).

``--mode gil`` (default) samples only the thread holding the GIL: where the Python CPU
goes, the scarce resource on 2 cores. ``--mode active`` samples every thread py-spy does
not consider idle, so time in SQLite with the GIL released (commits, fsync) shows too;
on this VM py-spy also counts some blocked waits (queue gets, ``recv``, ``epoll``) as
active, so read that mode for the database thread's split, not for totals.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._peers import RESULTS  # noqa: E402

OUT = RESULTS / "profile"
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def frame_parts(frame: str) -> tuple[str, str]:
    """('function', 'short/file.py') of one py-spy frame."""
    m = FRAME.match(frame)
    if not m:
        return frame, ""
    path = m.group("file")
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return m.group("func"), path


def package_of(path: str) -> str:
    if not path:
        return "(native / unknown)"
    head = path.split("/", 1)[0]
    return head if "/" in path else path.removesuffix(".py")


BOOT_MARKERS = ("_find_and_load", "ensure_schema", "_migration_lock")


def db_activity(frames: list[str]) -> str:
    """What the SQLite write thread is doing in one sample (py-spy without --native
    shows a C call such as ``cursor.execute`` as time in its Python caller)."""
    leaf = frames[-1]
    if leaf.startswith(("_worker (", "Thread.wait")):
        return "idle: waiting for work"
    if any(f.startswith("_begin_immediate") or "_on_begin" in f for f in frames):
        return "BEGIN IMMEDIATE: waiting for / taking the write lock"
    if leaf.startswith("DefaultDialect.do_commit"):
        return "COMMIT (WAL write + fsync at FULL)"
    if leaf.startswith("DefaultDialect.do_") or "sqlite_fast.py" in leaf:
        return "SQL statements inside SQLite"
    return "Python: SQLAlchemy + errands"


def pg_activity(frames: list[str]) -> str:
    """What a database thread (``errands-db``) is doing on PostgreSQL."""
    leaf = frames[-1]
    if leaf.startswith(("_worker (", "Thread.wait")):
        return "idle: waiting for work"
    if any("do_commit" in f for f in frames):
        return "COMMIT (round trip + WAL flush on the server)"
    if any(f.startswith(("wait (", "wait_c", "_wait", "PGconn.")) for f in frames[-3:]):
        return "waiting for the server (other statements)"
    if any("psycopg" in f for f in frames[-4:]):
        return "psycopg (adapting, parsing, sending)"
    if any("pool" in f and "sqlalchemy" in f for f in frames):
        return "SQLAlchemy pool (checkout, pre-ping, reset)"
    return "Python: SQLAlchemy + errands"


def summarize(raw_files: list[Path], top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    db_thread: collections.Counter[str] = collections.Counter()
    pg_thread: collections.Counter[str] = collections.Counter()
    samples = boot = 0
    for f in raw_files:
        for line in f.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            thread = ""
            while frames and frames[0].startswith(("thread (", "process ")):
                thread = frames[0] if frames[0].startswith("thread (") else thread
                frames = frames[1:]
            if not frames:
                continue
            if any(marker in fr for fr in frames for marker in BOOT_MARKERS):
                boot += count  # imports and schema check at start-up
                continue
            samples += count
            threads[re.sub(r"^thread \(\d+\):?", "", thread).strip() or "(unnamed)"] += count
            if "errands-db-write" in thread:
                db_thread[db_activity(frames)] += count
            elif "errands-db" in thread:
                pg_thread[pg_activity(frames)] += count
            names = []
            for fr in frames:
                func, path = frame_parts(fr)
                names.append(f"{func} ({path})")
            own[names[-1]] += count
            for name in set(names):
                total[name] += count
            packages[package_of(frame_parts(frames[-1])[1])] += count

    def block(
        title: str, counter: collections.Counter[str], n: int = top, of: int | None = None
    ) -> list[str]:
        whole = of or samples or 1
        lines = [title]
        for name, c in counter.most_common(n):
            lines.append(f"  {100 * c / whole:5.1f}%  {c:6d}  {name}")
        return [*lines, ""]

    out = [
        f"{samples} samples from {len(raw_files)} worker process(es), shares below are of "
        f"these; {boot} more samples in start-up (imports, schema check) left out",
        "",
    ]
    out += block("Own time (leaf frame), share of all samples:", own)
    out += block("Total time (frame anywhere on the stack):", total, 40)
    out += block("Own time by package of the leaf frame:", packages, 15)
    out += block("Samples by thread (both processes):", threads, 15)
    if db_thread:
        n = sum(db_thread.values())
        out += block("SQLite write thread (errands-db-write), by activity:", db_thread, 10, of=n)
    if pg_thread:
        n = sum(pg_thread.values())
        out += block("Database threads (errands-db), by activity:", pg_thread, 10, of=n)
    return "\n".join(out)


def pg_stats(app: Any, settle: float = 0.0) -> dict[str, int] | None:
    """This database's transaction and row counters (PostgreSQL only)."""
    if app.db.dialect != "postgresql":
        return None
    from sqlalchemy import text as sql

    time.sleep(settle)  # backends report their counters at most once a second
    with app.db.engine.connect() as conn:
        row = conn.execute(
            sql(
                "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted "
                "FROM pg_stat_database WHERE datname = current_database()"
            )
        ).one()
    return dict(row._mapping)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--database", choices=("sqlite", "pg"), default="sqlite")
    ap.add_argument("--sync", choices=("full", "normal"), default="full", help="SQLite's")
    ap.add_argument("--pg-url", default=None, help="PostgreSQL server (bench/_pg.py's default)")
    ap.add_argument(
        "--pg-set",
        action="append",
        metavar="NAME=VALUE",
        help="diagnostics: a setting for the fresh PostgreSQL database (ALTER DATABASE … SET),\n"
        "e.g. synchronous_commit=off (repeatable)",
    )
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--executor", choices=("async", "thread"), default="async")
    ap.add_argument("--mode", choices=("gil", "active"), default="gil")
    ap.add_argument("--ref", default="HEAD", help="git commit of the library (as run.py)")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")

    OUT.mkdir(parents=True, exist_ok=True)
    db = RESULTS / "state" / f"profile-{int(time.time())}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    query = "" if args.sync == "full" else f"?synchronous={args.sync}"
    os.environ["BENCH_ERRANDS_EXECUTOR"] = args.executor
    from bench import _pg
    from bench._source import snapshot

    src, sha = snapshot(args.ref)
    sys.path.insert(0, str(src))  # before anything imports errands
    os.environ["PYTHONPATH"] = os.pathsep.join([str(src), str(REPO)])
    os.environ["BENCH_ERRANDS_REF"] = sha
    with contextlib.ExitStack() as stack:
        if args.database == "pg":
            url = stack.enter_context(
                _pg.fresh_database(
                    args.pg_url or _pg.DEFAULT_ADMIN_URL,
                    f"errands_profile_{os.getpid()}",
                    dict(os.environ),
                    OUT / "migrate.log",
                    settings=_pg.parse_settings(args.pg_set),
                )
            )
        else:
            url = f"sqlite:///{db}{query}"
        os.environ["BENCH_ERRANDS_URL"] = url
        return profile(args, pyspy, db, sha)


def profile(args: argparse.Namespace, pyspy: str, db: Path, sha: str) -> int:
    from pyinstrument import Profiler
    from sqlalchemy import text as sql

    from bench.errands_tasks import app

    app.db.ensure_schema()
    profiler = Profiler(interval=0.001)
    t0 = time.perf_counter()
    with profiler:
        ids = [app.sync.submit("noop", {"i": i}, owner="bench-user").id for i in range(args.n)]
    enqueue_s = time.perf_counter() - t0
    (OUT / "client.txt").write_text(profiler.output_text(unicode=True, color=False))
    if app.db.dialect == "postgresql":  # as the benchmark (and the peers) do: untimed
        with app.db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(sql("ANALYZE"))

    cmd = [sys.executable, "-m", "errands", "worker", "bench.errands_tasks:app"]
    cmd += ["--concurrency", str(args.concurrency)]
    workers, spies = [], []
    stats_before = pg_stats(app)
    t_launch = time.time()
    for k in range(2):
        log = open(OUT / f"worker-{k}.log", "w")  # noqa: SIM115 (closed below)
        p = subprocess.Popen(
            cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        workers.append((p, log))
    for k, (p, _) in enumerate(workers):
        spy_cmd = [pyspy, "record", "--pid", str(p.pid), "--rate", str(args.rate)]
        spy_cmd += ["--format", "raw", "--threads", "-o", str(OUT / f"worker-{k}-{args.mode}.raw")]
        if args.mode == "gil":
            spy_cmd.append("--gil")
        spies.append(subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    try:
        deadline = time.monotonic() + args.timeout
        from errands import Status

        while app.sync.get(ids[-1], owner="bench-user").status is not Status.SUCCEEDED:
            if time.monotonic() > deadline:
                raise SystemExit("timed out waiting for the last task")
            time.sleep(0.05)
        t_done = time.time()
    finally:
        for s in spies:
            s.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for s in spies:
            try:
                s.wait(timeout=30)
            except subprocess.TimeoutExpired:
                s.kill()
        for p, _log in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGINT)
        for p, log in workers:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            log.close()
        stats_after = pg_stats(app, settle=1.5)
        app.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)

    raws = [OUT / f"worker-{k}-{args.mode}.raw" for k in range(2)]
    raws = [r for r in raws if r.exists()]
    head = (
        f"W1 profile, errands {sha[:12]}: n={args.n}, "
        + (
            f"PostgreSQL {' '.join(args.pg_set or [])}, "
            if args.database == "pg"
            else f"synchronous={args.sync.upper()}, "
        )
        + f"executor={args.executor}, "
        f"concurrency={args.concurrency}, py-spy mode {args.mode}; "
        f"enqueue {args.n / enqueue_s:,.0f}/s (under pyinstrument); "
        f"launch→last done {t_done - t_launch:.2f} s under py-spy "
        f"({args.rate} Hz); load average {os.getloadavg()}\n\n"
    )
    if stats_before and stats_after:
        delta = {k: stats_after[k] - stats_before[k] for k in stats_before}
        head += (
            "PostgreSQL activity from the worker launch to their exit (pg_stat_database, "
            "all sessions): "
            + ", ".join(f"{k} {v:,}" for k, v in delta.items())
            + f"; per task: {delta['xact_commit'] / args.n:.2f} commits, "
            f"{delta['tup_updated'] / args.n:.1f} rows updated\n\n"
        )
    text = head + summarize(raws)
    (OUT / f"summary-{args.mode}.txt").write_text(text)
    print(text)
    print(f"files in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
