"""Claim throughput on PostgreSQL with many waiting owners: 1 owner against 1,000.

    .venv/bin/python bench/pg_owners.py                                # 100,000 jobs, 3 rounds
    .venv/bin/python bench/pg_owners.py --jobs 10000 --measure 4000 --repeats 1   # smoke run

Does it cost errands anything to pick the next job fairly when the queue holds many
owners' jobs? For each count in ``--owners`` (1 and 1,000) and each of ``--repeats``
rounds, alternating which case goes first:

1. a **fresh database** on the ``--pg-url`` server, migrated with ``errands migrate``
   (the measured commit's migrations; created and dropped with ``bench/scale.py``'s
   PostgreSQL backend);
2. ``--jobs`` (100,000) no-op ``noop`` tasks of ``bench/web_tasks.py`` queued with
   ``app.sync.submit_many`` (untimed), spread evenly over the owners (owner after owner,
   at most ``--batch`` (1,000) payloads a call: 100 calls for the one owner, one call of
   100 for each of 1,000 owners); the turns errands gives them interleave the owners;
3. ``ANALYZE`` of the errands tables (as the bench adapter does after an enqueue phase;
   this server runs with ``autovacuum = off``);
4. ``--workers`` (2) ``errands worker bench.web_tasks:app --concurrency 16`` processes
   are launched, like ``bench/scale.py``'s claim phase; the client polls the count of
   finished records every 0.25 s, and the workers are stopped (SIGTERM) once
   ``--measure`` (20,000) tasks finished — the rest stays queued: the whole measurement
   runs with a deep queue (80,000 waiting jobs; with 1,000 owners, every owner still
   waiting);
5. from the records: **claim throughput** = M / (the M-th ``finished_at`` − the first
   ``started_at``), M = ``--measure``; also the *steady* rate between the finishes
   number M/10 and M (leaves out the workers' start-up), and the rate from the worker
   launch to the client seeing M finished. Any failed record fails the run; the number
   of distinct owners among the first M finished shows the turns at work.

``--measure 0`` (or ≥ ``--jobs``) drains the whole queue instead (M = ``--jobs``, the
run ends when ``errands_job`` is empty, as in ``bench/scale.py``).

The report gives the median per owner count and the slowdown of each against the
first (1 owner ÷ N owners; the target is ≤ 1.3× for 1,000 owners). Output: the table on
stdout and in ``bench/results/NAME.md``, every round in ``bench/results/NAME.json``
(``NAME``: ``--name``, default ``pg_owners``), worker logs in
``bench/results/NAME-logs/``. Like ``bench/run.py``, the library measured is a git
commit (``--ref``, default HEAD) unpacked under ``bench/results/snapshots/``, first on
the path of this process and of the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import _pg as pg  # noqa: E402
from bench import scale  # noqa: E402
from bench import web as webbench  # noqa: E402

RESULTS = HERE / "results"
TARGET = 1.3  # many owners may be at most this many times slower than one
TABLES = ("errands_output", "errands_job", "errands_task", "errands_worker")
POLL_S = 0.25
log = scale.log
fmt = scale.fmt
median = scale.median


class OwnersTarget(scale.Target):
    """One fresh database of one case: ``scale.Target``'s app and worker environment,
    with jobs spread over a number of owners and a claim phase of a fixed count."""

    def enqueue(self, owners: int) -> float:
        """``--jobs`` no-op tasks, evenly over ``owners`` owners; seconds taken."""
        a = self.bench.args
        per_owner, extra = divmod(a.jobs, owners)
        t0 = time.perf_counter()
        i = 0
        for k in range(owners):
            count = per_owner + (1 if k < extra else 0)
            end = i + count
            while i < end:
                chunk = range(i, min(end, i + a.batch))
                self.app.sync.submit_many("noop", [{"i": j} for j in chunk], owner=f"owner-{k}")
                i = chunk.stop
        return time.perf_counter() - t0

    def analyze(self) -> None:
        for table in TABLES:
            self.backend.execute(self.url, f"ANALYZE {table}")

    def finished_count(self) -> int:
        rows = self.backend.execute(
            self.url, "SELECT count(*) FROM errands_task WHERE finished_at IS NOT NULL"
        )
        return int(rows[0][0])

    def waiting_jobs(self) -> int:
        return int(self.backend.execute(self.url, "SELECT count(*) FROM errands_job")[0][0])

    def claim_phase(self, owners: int, rnd: int) -> dict[str, Any]:
        a = self.bench.args
        measure = a.measure  # main() made it ≤ a.jobs
        drain = measure == a.jobs
        enqueue_s = self.enqueue(owners)
        self.analyze()
        queued = self.waiting_jobs()
        if queued != a.jobs:
            raise RuntimeError(f"{queued} jobs queued, not {a.jobs}")
        quiet = self.bench.quiet()
        procs = self.bench.procs
        t_launch = time.time()
        workers = [
            procs.start(
                f"owners{owners}-r{rnd}-worker{w}",
                [
                    sys.executable, "-m", "errands", "worker", "bench.web_tasks:app",
                    "--concurrency", str(a.concurrency), "--shutdown-timeout", "5",
                ],
                self.env(),
            )
            for w in range(a.workers)
        ]  # fmt: skip
        deadline = time.monotonic() + a.timeout
        try:
            while True:
                done = self.waiting_jobs() == 0 if drain else self.finished_count() >= measure
                if done:
                    break
                for w in workers:
                    if w.poll() is not None:
                        raise RuntimeError(f"a worker exited with code {w.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.finished_count()} of {measure} finished after {a.timeout:.0f} s"
                    )
                time.sleep(POLL_S)
            t_seen = time.time()
        finally:
            for w in workers:
                procs.stop(w)
        return {
            "owners": owners,
            "jobs": a.jobs,
            "measure": measure,
            "enqueue_s": enqueue_s,
            "before": quiet,
            **self.timing(measure, t_launch, t_seen),
        }

    def timing(self, measure: int, t_launch: float, t_seen: float) -> dict[str, Any]:
        """Throughput from the records of the first ``measure`` tasks to finish."""
        by_status = dict(
            self.backend.execute(
                self.url, "SELECT status, count(*) FROM errands_task GROUP BY status"
            )
        )
        bad = {s: c for s, c in by_status.items() if s not in ("succeeded", "queued", "running")}
        if bad:
            raise RuntimeError(f"records ended {bad}")
        first = self.backend.execute(self.url, "SELECT min(started_at) FROM errands_task")[0][0]
        finishes = [
            self.backend.timestamp(row[0])
            for row in self.backend.execute(
                self.url,
                "SELECT finished_at FROM errands_task WHERE finished_at IS NOT NULL "
                "ORDER BY finished_at LIMIT %s",
                (measure,),
            )
        ]
        if len(finishes) < measure:
            raise RuntimeError(f"only {len(finishes)} of {measure} tasks finished")
        owners_seen = self.backend.execute(
            self.url,
            "SELECT count(DISTINCT owner) FROM (SELECT owner FROM errands_task "
            "WHERE finished_at IS NOT NULL ORDER BY finished_at LIMIT %s) s",
            (measure,),
        )[0][0]
        start = self.backend.timestamp(first)
        skip = measure // 10
        last, steady_from = finishes[-1], finishes[skip - 1] if skip else finishes[0]
        return {
            "per_s": measure / (last - start) if last > start else None,
            "per_s_steady": (measure - skip) / (last - steady_from) if last > steady_from else None,
            "per_s_from_launch": measure / (t_seen - t_launch),
            "worker_boot_s": start - t_launch,
            "window_s": last - start,
            "owners_in_first_measured": int(owners_seen),
            "by_status_after_stop": by_status,
        }


class Sitting(scale.Scale):
    def case(self, owners: int, rnd: int) -> dict[str, Any]:
        backend = scale.Postgres(self.args.pg_url)
        label = f"owners{owners}_r{rnd}"
        try:
            url = backend.create(label)
            self.migrate(url, f"{label}-migrate")
            target = OwnersTarget(self, backend, label, url)
            try:
                return target.claim_phase(owners, rnd)
            finally:
                target.close()
        finally:
            backend.drop_all()


# -- reporting ------------------------------------------------------------------------
def summarise(rounds: list[dict[str, Any]], owner_counts: list[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for owners in owner_counts:
        rs = [r for r in rounds if r["owners"] == owners]
        rates = [r["per_s"] for r in rs if r.get("per_s")]
        rows.append(
            {
                "owners": owners,
                "rounds": len(rs),
                "per_s": median(rates),
                "min_max": [min(rates), max(rates)] if rates else None,
                "per_s_steady": median([r.get("per_s_steady") for r in rs]),
                "per_s_from_launch": median([r.get("per_s_from_launch") for r in rs]),
                "enqueue_s": median([r.get("enqueue_s") for r in rs]),
                "owners_in_first_measured": median([r.get("owners_in_first_measured") for r in rs]),
            }
        )
    for row in rows:  # how many times slower than the first owner count
        for key in ("per_s", "per_s_steady"):
            base, value = rows[0][key], row[key]
            row[f"slowdown_{key}"] = base / value if base and value else None
    return rows


def report(results: dict[str, Any]) -> list[str]:
    a = results["config"]
    rows = results["rows"]
    m = results["machine"]
    base = rows[0]["owners"] if rows else 1
    lines = [
        f"# errands claim throughput by waiting owners ({results['started']})",
        "",
        f"- commit `{results['commit'][:12]}` ({results['commit_subject']}); source "
        f"fingerprint `{results['fingerprint']}`",
        f"- machine: {m['nproc']} cores, {m['mem_gib']} GiB, Python {m['python']}; load "
        f"average before {' / '.join(f'{x:.2f}' for x in m['loadavg_before'])}, after "
        f"{' / '.join(f'{x:.2f}' for x in m.get('loadavg_after', []))}",
        f"- PostgreSQL {', '.join(f'{k} {v}' for k, v in results['postgresql'].items())}",
        f"- {a['jobs']:,} no-op jobs queued per case (submit_many, ≤ {a['batch']:,} a call, "
        f"then ANALYZE); {a['workers']} workers × concurrency {a['concurrency']}; measured: "
        f"the first {a['measure_effective']:,} tasks to finish; median of {a['repeats']} "
        "round(s), the cases alternating",
        "",
        f"| waiting owners | claim tasks/s (first start → M-th finish) | steady tasks/s "
        f"(finish M/10 → M) | incl. worker boot | slowdown vs {base} owner(s) | steady "
        f"slowdown | within {TARGET}× | owners among the first M |",
        "|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        sd, sds = row["slowdown_per_s"], row["slowdown_per_s_steady"]
        verdict = "–" if sd is None or row is rows[0] else ("**yes**" if sd <= TARGET else "**no**")
        lines.append(
            f"| {row['owners']:,} | {fmt(row['per_s'])} | {fmt(row['per_s_steady'])} | "
            f"{fmt(row['per_s_from_launch'])} | {'–' if sd is None else f'{sd:.2f}×'} | "
            f"{'–' if sds is None else f'{sds:.2f}×'} | {verdict} | "
            f"{fmt(row['owners_in_first_measured'])} |"
        )
    lines += ["", "Each round:", ""]
    for r in results["rounds"]:
        lines.append(
            f"- round {r['round']}, {r['owners']:,} owner(s): {fmt(r['per_s'])}/s "
            f"(steady {fmt(r['per_s_steady'])}/s, {r['window_s']:.1f} s window, worker boot "
            f"{r['worker_boot_s']:.2f} s; enqueue {r['enqueue_s']:.1f} s; load "
            f"{fmt(r['before'].get('loadavg'), 2)})"
        )
    if results["errors"]:
        lines += ["", "**Errors:**", "", *(f"- {x}" for x in results["errors"])]
    return [*lines, ""]


# -- main -------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--owners", default="1,1000", help="owner counts; the first is the base")
    ap.add_argument("--jobs", type=int, default=100_000, help="jobs queued per case (100,000)")
    ap.add_argument(
        "--measure",
        type=int,
        default=20_000,
        help="tasks timed: the first M to finish (20,000); 0 = drain all",
    )
    ap.add_argument("--batch", type=int, default=1000, help="payloads per submit_many (1,000)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    ap.add_argument("--concurrency", type=int, default=16, help="per worker process (16)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds (3)")
    ap.add_argument("--timeout", type=float, default=600.0, help="s per claim phase (600)")
    ap.add_argument("--pg-url", default=pg.DEFAULT_ADMIN_URL, help="the server's admin URL")
    ap.add_argument(
        "--max-load",
        type=float,
        default=None,
        help="before each claim phase wait (≤ --max-wait s) for the 1-min load average to "
        "drop below this",
    )
    ap.add_argument("--max-wait", type=float, default=120.0)
    ap.add_argument("--ref", default="HEAD", help="git commit of the library to measure")
    ap.add_argument("--name", default="pg_owners", help="bench/results/NAME.json and NAME.md")
    args = ap.parse_args(argv)
    owner_counts = [int(x) for x in args.owners.split(",") if x.strip()]
    if not owner_counts or min(owner_counts) < 1 or max(owner_counts) > args.jobs:
        ap.error("--owners: positive counts, each at most --jobs")
    if args.jobs < 10 or args.measure < 0 or args.batch < 1:
        ap.error("--jobs ≥ 10, --measure ≥ 0, --batch ≥ 1")
    measure = args.jobs if not args.measure or args.measure >= args.jobs else args.measure
    requested, args.measure = args.measure, measure
    try:
        postgres = pg.info(args.pg_url)
    except Exception as exc:
        ap.error(f"PostgreSQL is not reachable at {args.pg_url} ({exc})")

    src, sha, where = scale.measured_errands(args.ref)
    logs = RESULTS / f"{args.name}-logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    tmp = Path(tempfile.mkdtemp(prefix="errands-owners-"))
    procs = webbench.Processes(logs)
    sitting = Sitting(args, procs, tmp)
    sitting.env = scale.child_env(src)
    results: dict[str, Any] = {
        **scale.results_head(sha, where),
        "postgresql": postgres,
        "argv": sys.argv,
        "config": {
            **{
                k: getattr(args, k)
                for k in (
                    "owners",
                    "jobs",
                    "batch",
                    "workers",
                    "concurrency",
                    "repeats",
                    "max_load",
                )
            },
            "measure": requested,
            "measure_effective": measure,
        },
        "rounds": [],
        "errors": [],
    }
    log(
        f"claim throughput by waiting owners {owner_counts}: commit {sha[:12]}, {args.jobs:,} "
        f"jobs, first {measure:,} timed, {args.repeats} round(s); load average "
        f"{' / '.join(f'{x:.2f}' for x in results['machine']['loadavg_before'])}"
    )

    scale.interrupt_on_signals()
    rc = 0
    try:
        for rnd in range(1, args.repeats + 1):
            order = owner_counts if rnd % 2 else list(reversed(owner_counts))
            for owners in order:
                log(f"[round {rnd}] {owners:,} owner(s): queueing {args.jobs:,} jobs")
                r = sitting.case(owners, rnd)
                r["round"] = rnd
                results["rounds"].append(r)
                log(
                    f"  {fmt(r['per_s'])} tasks/s (steady {fmt(r['per_s_steady'])}/s, "
                    f"{fmt(r['per_s_from_launch'])}/s incl. worker boot); enqueue "
                    f"{r['enqueue_s']:.1f} s; {r['owners_in_first_measured']} owners among "
                    f"the first {r['measure']:,}"
                )
    except KeyboardInterrupt as exc:
        results["errors"].append(f"interrupted ({exc or 'Ctrl-C'})")
        rc = 130
    except Exception as exc:
        import traceback

        traceback.print_exc()
        results["errors"].append(f"{type(exc).__name__}: {exc}")
        rc = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # let the cleanup finish
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    results["errors"] += webbench.check_logs(logs)
    results["machine"]["loadavg_after"] = os.getloadavg()
    results["rows"] = summarise(results["rounds"], owner_counts)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=1, default=str))
    lines = report(results)
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines))
    log("")
    log("\n".join(lines))
    log(f"written: {RESULTS / args.name}.json and .md; logs in {logs}")
    return rc or (1 if results["errors"] else 0)


if __name__ == "__main__":
    sys.exit(main())
