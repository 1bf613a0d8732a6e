"""W1 throughput on PostgreSQL as worker processes grow: errands against PgQueuer.

    .venv/bin/python bench/pg_workers.py                            # k = 1,2,4,8; 3 repeats
    .venv/bin/python bench/pg_workers.py --workers 1,2 --repeats 1 --n 2000   # smoke run

For each k in ``--workers`` (1, 2, 4, 8 worker processes) and each of ``--repeats``
rounds, W1 of the peers' driver (``shared/bench/peers/common.py``) runs once for errands
and once for PgQueuer, alternating which goes first (per k, and flipped every round), so
both are measured in the same sitting under the same conditions. Each run is one
process of ``bench/_w1_runner.py``, which imports ``common``, sets its module constant
``WORKERS`` (2 in the harness) to k and runs the system's adapter with ``--workloads
w1``:

- errands: ``bench/errands_adapter.py`` (``--concurrency`` per worker, default 16 = the
  library's default), the project's interpreter, the measured commit (``--ref``, default
  HEAD) unpacked under ``bench/results/snapshots/`` and put first on ``PYTHONPATH``, on
  a new database ``errands_pgw_<pid>_<n>`` created on the ``--pg-url`` server, migrated
  with ``errands migrate`` and dropped afterwards (``bench/_pg.py``), over TCP like
  ``bench/run.py``'s ``pg`` configuration;
- PgQueuer: the peers' ``pgqueuer_bench.py`` as it is, with the peers' own interpreter
  (``--peers-python``, default ``<peers>/.venv/bin/python``), on a new database of its
  own (``$BENCH_PG_DSN``, instead of the harness's shared ``bench`` database, whose
  public schema its reset drops) reached like the harness reaches ``bench``: over the
  local Unix socket as the current OS user (``postgresql:///<database>``).

W1 (see the peers' README): 5,000 (``--n``) no-op tasks enqueued one call at a time with
the workers stopped (after the timed batch-enqueue column), an untimed ``ANALYZE``,
then k worker processes are launched; *process/s* = n / (last completion visible −
first task start). The start probe needs Redis (127.0.0.1:6379, db 15).

Output: the table on stdout and in ``bench/results/NAME.md``, every run (the driver's
JSON included) with medians, load averages and the commit in ``bench/results/NAME.json``
(``NAME``: ``--name``, default ``pg_workers``); driver and worker logs under
``bench/results/NAME-logs/``. Every database created is dropped, and any worker a run
left behind is killed. A run fails unless exactly k worker processes were started (the
adapters' own ``config`` text may say otherwise: PgQueuer's is a fixed string).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import _pg as pg  # noqa: E402
from bench import run as runner  # noqa: E402
from bench._peers import RESULTS, peers_dir  # noqa: E402
from bench._source import fingerprint, snapshot  # noqa: E402

SYSTEMS = ("errands", "pgqueuer")
LABELS = {"errands": "errands", "pgqueuer": "PgQueuer"}
#: What a worker process's command line holds, per system (to recognise leftovers).
MARKERS = {"errands": b"errands", "pgqueuer": b"pgqueuer"}
log = runner.log
fmt = runner.fmt


def kill_leftovers(pidfile: Path, marker: bytes) -> int:
    """Kill the worker process groups of ``pidfile`` that still run (the driver stops
    them itself unless it was interrupted). A pid counts only if it still leads its own
    session and its command line mentions ``marker``: a recycled pid is left alone."""
    if not pidfile.exists():
        return 0
    killed = 0
    for line in pidfile.read_text().split():
        pid = int(line)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if os.getsid(pid) != pid or marker not in cmdline:
                continue
            os.killpg(pid, signal.SIGKILL)
            killed += 1
        except (OSError, ProcessLookupError):
            continue
    pidfile.unlink(missing_ok=True)
    return killed


class Sitting:
    def __init__(self, args: argparse.Namespace, source: tuple[Path, str]) -> None:
        self.args = args
        self.source = source
        self.logs = RESULTS / f"{args.name}-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def env(self, system: str, url: str) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("ERRANDS_DATABASE_URL", "BENCH_ERRANDS_QUEUE", "BENCH_ERRANDS_PIDFILE"):
            env.pop(name, None)
        env.update(
            BENCH_PEERS_DIR=str(peers_dir()),
            BENCH_W1_N=str(self.args.n),
            BENCH_PHASE_TIMEOUT=str(min(240.0, self.args.timeout / 2)),
            PYTHONDONTWRITEBYTECODE="1",  # nothing written into the peers' directory
            PYTHONUNBUFFERED="1",
        )
        if system == "errands":
            env.update(
                BENCH_ERRANDS_URL=url,
                BENCH_ERRANDS_VARIANT="pg",
                BENCH_ERRANDS_EXECUTOR="async",
                BENCH_ERRANDS_ENGINE="sql",
                BENCH_ERRANDS_CONCURRENCY=str(self.args.concurrency),
                BENCH_ERRANDS_REF=self.source[1],
                PYTHONPATH=os.pathsep.join(
                    [
                        str(self.source[0]),
                        str(REPO),
                        *filter(None, env.get("PYTHONPATH", "").split(os.pathsep)),
                    ]
                ),
            )
        else:
            env["BENCH_PG_DSN"] = url
            env.pop("PYTHONPATH", None)
        return env

    def run(self, system: str, k: int, rep: int) -> dict[str, Any]:
        """One W1 run of ``system`` with k worker processes on a new database."""
        self.count += 1
        database = f"errands_pgw_{os.getpid()}_{self.count}"
        stem = f"{system}-k{k}-r{rep}"
        logfile = self.logs / f"{stem}.log"
        out = self.logs / f"{stem}.json"
        pidfile = self.logs / f"{stem}.pids"
        for f in (logfile, out, pidfile):
            f.unlink(missing_ok=True)
        url = pg.create(self.args.pg_url, database)
        t0 = time.monotonic()
        try:
            if system == "errands":
                env = self.env(system, url)
                pg.migrate(url, env, logfile)
                python = sys.executable
            else:  # as the harness reaches its `bench` database: local socket, OS user
                env = self.env(system, f"postgresql:///{database}")
                python = str(self.args.peers_python)
            cmd = [
                python,
                str(HERE / "_w1_runner.py"),
                "--system",
                system,
                "--workers",
                str(k),
                "--out",
                str(out),
                "--pidfile",
                str(pidfile),
                "--logs",
                str(self.logs / f"{stem}-workers"),
            ]
            rc = self._wait(cmd, env, logfile)
        finally:
            started = len(pidfile.read_text().split()) if pidfile.exists() else 0
            leftovers = kill_leftovers(pidfile, MARKERS[system])
            pg.drop(self.args.pg_url, database)
        result: dict[str, Any] = {"errors": []}
        if out.exists():
            result = json.loads(out.read_text())
        if rc != 0:
            result["errors"].append(f"exit code {rc}; see {logfile.relative_to(REPO)}")
        if leftovers:
            result["errors"].append(f"killed {leftovers} leftover worker process(es)")
        if started != k:  # the driver starts them once, for W1
            result["errors"].append(f"{started} worker processes were started, not {k}")
        result.update(
            _system=system,
            _workers=k,
            _workers_started=started,
            _round=rep,
            _seconds=time.monotonic() - t0,
        )
        return result

    def _wait(self, cmd: list[str], env: dict[str, str], logfile: Path) -> int:
        with open(logfile, "a") as fh:
            proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                return proc.wait(timeout=self.args.timeout)
            except subprocess.TimeoutExpired:
                log(f"  run exceeded {self.args.timeout:.0f} s: interrupting it")
                os.killpg(proc.pid, signal.SIGINT)  # the driver stops its workers on the way out
                try:
                    return proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    return proc.wait()
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                raise


# -- reporting --------------------------------------------------------------------------
def w1(run: dict[str, Any], key: str) -> float | None:
    value = runner.dig(run, ("w1", key))
    return float(value) if isinstance(value, int | float) else None


def median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarise(runs: list[dict[str, Any]], ks: list[int]) -> list[dict[str, Any]]:
    rows = []
    for k in ks:
        row: dict[str, Any] = {"workers": k}
        for system in SYSTEMS:
            rs = [r for r in runs if r["_system"] == system and r["_workers"] == k]
            rates = [w1(r, "process_per_s") for r in rs]
            row[system] = {
                "runs": len(rs),
                "process_per_s": median(rates),
                "min_max": [min(v), max(v)] if (v := [x for x in rates if x]) else None,
                "process_per_s_from_launch": median(
                    [w1(r, "process_per_s_from_launch") for r in rs]
                ),
                "worker_boot_s": median([w1(r, "worker_boot_s") for r in rs]),
                "enqueue_single_per_s": median([w1(r, "enqueue_single_per_s") for r in rs]),
            }
        e, p = row["errands"]["process_per_s"], row["pgqueuer"]["process_per_s"]
        row["ratio"] = e / p if e and p else None
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| worker processes (k) | errands W1 process/s | PgQueuer W1 process/s | "
        "errands ÷ PgQueuer | errands min – max | PgQueuer min – max |",
        "|---:|---:|---:|---:|---:|---:|",
    ]

    def spread(cell: dict[str, Any]) -> str:
        mm = cell["min_max"]
        return "–" if not mm else f"{fmt(mm[0])} – {fmt(mm[1])}"

    for row in rows:
        e, p = row["errands"], row["pgqueuer"]
        ratio = "–" if row["ratio"] is None else f"{row['ratio']:.2f}×"
        lines.append(
            f"| {row['workers']} | {fmt(e['process_per_s'])} | {fmt(p['process_per_s'])} | "
            f"{ratio} | {spread(e)} | {spread(p)} |"
        )
    return lines


def boot_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| k | errands process/s incl. worker boot | PgQueuer process/s incl. worker boot | "
        "errands worker boot s | PgQueuer worker boot s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        e, p = row["errands"], row["pgqueuer"]
        lines.append(
            f"| {row['workers']} | {fmt(e['process_per_s_from_launch'])} | "
            f"{fmt(p['process_per_s_from_launch'])} | {fmt(e['worker_boot_s'], 2)} | "
            f"{fmt(p['worker_boot_s'], 2)} |"
        )
    return lines


# -- main ---------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workers", default="1,2,4,8", help="worker process counts (1,2,4,8)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds; the table gives medians (3)")
    ap.add_argument("--n", type=int, default=5000, help="W1 tasks per run (5000)")
    ap.add_argument(
        "--concurrency", type=int, default=16, help="errands: per worker process (16, the default)"
    )
    ap.add_argument("--systems", default="errands,pgqueuer", help="errands, pgqueuer or both")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per run (600)")
    ap.add_argument("--pg-url", default=pg.DEFAULT_ADMIN_URL, help="the server's admin URL")
    ap.add_argument(
        "--peers-python",
        type=Path,
        default=None,
        help="PgQueuer's interpreter (default: the peers' <peers>/.venv/bin/python)",
    )
    ap.add_argument("--ref", default="HEAD", help="git commit of errands to measure (HEAD)")
    ap.add_argument("--name", default="pg_workers", help="bench/results/NAME.json and NAME.md")
    ap.add_argument(
        "--max-load",
        type=float,
        default=None,
        help="before each run wait (≤ --max-wait s) for the 1-min load average to drop below this",
    )
    ap.add_argument("--max-wait", type=float, default=120.0)
    args = ap.parse_args(argv)
    ks = [int(x) for x in args.workers.split(",") if x.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not ks or min(ks) < 1:
        ap.error("--workers: positive integers, e.g. 1,2,4,8")
    if not systems or not set(systems) <= set(SYSTEMS):
        ap.error(f"--systems: of {', '.join(SYSTEMS)}")
    if args.peers_python is None:
        args.peers_python = peers_dir() / ".venv" / "bin" / "python"
    if "pgqueuer" in systems and not args.peers_python.exists():
        ap.error(f"PgQueuer's interpreter {args.peers_python} does not exist (--peers-python)")
    try:
        postgres = pg.info(args.pg_url)
    except Exception as exc:
        ap.error(f"PostgreSQL is not reachable at {args.pg_url} ({exc})")

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    source = snapshot(args.ref)
    files = fingerprint(source[0] / "errands")
    log(
        f"W1 on PostgreSQL by worker processes {ks}, {systems}, {args.repeats} round(s), "
        f"n={args.n}; machine {runner.machine_info()}"
    )
    log(f"errands: {args.ref} = {source[1]} (files sha1 {files}); PostgreSQL {postgres}")
    sitting = Sitting(args, source)
    runs: list[dict[str, Any]] = []
    interrupted = None
    try:
        for rep in range(1, args.repeats + 1):
            for i, k in enumerate(ks):
                order = systems if (i + rep) % 2 else list(reversed(systems))
                for system in order:
                    load = (
                        runner.wait_for_quiet(args.max_load, args.max_wait)
                        if args.max_load
                        else None
                    )
                    log(f"[round {rep}] k={k} {system:<8} load {os.getloadavg()[0]:.2f} ...")
                    r = sitting.run(system, k, rep)
                    r["_load_at_start"] = load
                    runs.append(r)
                    log(
                        f"  {r['_seconds']:.0f} s: W1 process {fmt(w1(r, 'process_per_s'))}/s "
                        f"({fmt(w1(r, 'process_per_s_from_launch'))}/s incl. worker boot)"
                        + (f"; ERRORS {r['errors']}" if r.get("errors") else "")
                    )
    except KeyboardInterrupt:
        interrupted = "interrupted (Ctrl-C); the table has the runs done so far"
        log(interrupted)

    rows = summarise(runs, ks)
    errors = [
        f"{r['_system']} k={r['_workers']} round {r['_round']}: {e}"
        for r in runs
        for e in r.get("errors", [])
    ] + ([interrupted] if interrupted else [])
    summary = {
        "started_at": started,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "machine": runner.machine_info(),
        "loadavg_after": os.getloadavg(),
        "postgresql": postgres,
        "library_commit": source[1],
        "library_files_sha1": files,
        "n": args.n,
        "concurrency": args.concurrency,
        "workers": ks,
        "repeats": args.repeats,
        "rows": rows,
        "runs": runs,
        "errors": errors,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = [
        f"W1 process/s on PostgreSQL by worker processes: errands at commit {source[1][:12]} "
        f"(`--concurrency {args.concurrency}` per process) against PgQueuer (the peers' "
        f"adapter, its defaults), n = {args.n:,}, median of {args.repeats} round(s) "
        f"alternating the two systems ({started}; PostgreSQL "
        f"{postgres.get('version')}, synchronous_commit {postgres.get('synchronous_commit')}, "
        f"{runner.machine_info()['nproc']} cores):",
        "",
        *table(rows),
        "",
        "Including worker start-up (from the launch of the processes):",
        "",
        *boot_table(rows),
    ]
    if errors:
        md += ["", "Errors:", *(f"- {e}" for e in errors)]
    text = "\n".join(md) + "\n"
    (RESULTS / f"{args.name}.md").write_text(text)
    log("")
    log(text)
    log(f"written: {RESULTS / args.name}.json and .md; logs in {sitting.logs}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
