"""Run the errands benchmark configurations and print the table (median of N runs).

    .venv/bin/python bench/run.py                      # SQLite FULL, NORMAL, PostgreSQL; 3 runs
    .venv/bin/python bench/run.py --peers /tmp/peers/results.json   # + peers table and targets
    .venv/bin/python bench/run.py --configs pg --repeats 1 --quick   # smoke test
    .venv/bin/python bench/run.py --configs celery-redis --peers /tmp/peers/results.json # vs Celery

Each run is one fresh process of ``bench/errands_adapter.py`` (the peers' W1/W2/W3 driver
with an errands adapter) against a new database, with a wall-clock limit: a new SQLite
file, or (``pg`` configurations) a new PostgreSQL database ``errands_bench_<pid>_<n>``
created on the server of ``--pg-url``, migrated with ``errands migrate`` (the measured
commit's migrations) and dropped ``WITH (FORCE)`` afterwards. The ``celery-*``
configurations run errands on its Celery engine (Redis or RabbitMQ broker) on Celery
queues of the run's own, deleted afterwards. Any worker process a run left behind is
killed and its database files are removed. Raw JSON and worker logs go
to ``bench/results/`` (git-ignored); the aggregated results to
``bench/results/errands.json`` and ``bench/results/errands.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import _celery  # noqa: E402
from bench import _pg as pg  # noqa: E402
from bench._peers import RESULTS, load_common, peers_dir  # noqa: E402
from bench._source import snapshot  # noqa: E402

common = load_common()


@dataclass(frozen=True)
class Config:
    name: str
    label: str
    synchronous: str  # SQLite's; "" on PostgreSQL
    executor: str = "async"
    backend: str = "sqlite"  # or "postgresql"
    engine: str = "sql"  # or "celery-redis", "celery-rabbitmq"


CONFIGS = {
    c.name: c
    for c in (
        Config("full", "errands (SQLite, synchronous=FULL)", "full"),
        Config(
            "normal",
            "errands (SQLite, synchronous=NORMAL: less durable on power loss)",
            "normal",
        ),
        Config(
            "full-thread", "errands (SQLite FULL, plain def tasks in threads)", "full", "thread"
        ),
        Config(
            "normal-thread",
            "errands (SQLite NORMAL, plain def tasks in threads)",
            "normal",
            "thread",
        ),
        Config("pg", "errands (PostgreSQL, LISTEN/NOTIFY)", "", "async", "postgresql"),
        Config(
            "pg-thread",
            "errands (PostgreSQL, plain def tasks in threads)",
            "",
            "thread",
            "postgresql",
        ),
        Config(
            "celery-redis",
            "errands (SQLite FULL, Celery engine, Redis broker)",
            "full",
            engine="celery-redis",
        ),
        Config(
            "celery-rabbitmq",
            "errands (SQLite FULL, Celery engine, RabbitMQ broker)",
            "full",
            engine="celery-rabbitmq",
        ),
        Config(
            "pg-celery-redis",
            "errands (PostgreSQL, Celery engine, Redis broker)",
            "",
            backend="postgresql",
            engine="celery-redis",
        ),
        Config(
            "pg-celery-rabbitmq",
            "errands (PostgreSQL, Celery engine, RabbitMQ broker)",
            "",
            backend="postgresql",
            engine="celery-rabbitmq",
        ),
    )
}
#: The plain-Celery peer on each Celery engine's broker (peers' results.json names).
CELERY_PEERS = {"celery-redis": "celery", "celery-rabbitmq": "celery-rabbitmq"}
CELERY_PEER_LABELS = {"celery-rabbitmq": "Celery (RabbitMQ broker + Redis results)"}

DEFAULT_PG_URL = pg.DEFAULT_ADMIN_URL

#: name -> path in a run's JSON; the same metrics as the peers' aggregate.py.
METRICS: dict[str, tuple[str, ...]] = {
    "w1_enqueue_single_per_s": ("w1", "enqueue_single_per_s"),
    "w1_enqueue_batch_per_s": ("w1", "enqueue_batch_per_s"),
    "w1_process_per_s": ("w1", "process_per_s"),
    "w1_process_per_s_from_launch": ("w1", "process_per_s_from_launch"),
    "w1_worker_boot_s": ("w1", "worker_boot_s"),
    "w2_start_p50_ms": ("w2", "submit_to_start_ms", "p50"),
    "w2_start_p99_ms": ("w2", "submit_to_start_ms", "p99"),
    "w2_complete_p50_ms": ("w2", "submit_to_complete_ms", "p50"),
    "w2_complete_p99_ms": ("w2", "submit_to_complete_ms", "p99"),
    "w3_enqueue_single_per_s": ("w3", "enqueue_single_per_s"),
    "w3_process_per_s": ("w3", "process_per_s"),
    "w3_process_per_s_from_launch": ("w3", "process_per_s_from_launch"),
}

REDIS_PEERS = ("celery", "rq", "rq-simple", "huey-redis", "dramatiq")
DURABLE_PEERS = ("huey-sqlite", "procrastinate", "procrastinate-c8", "pgqueuer")


# -- small helpers ----------------------------------------------------------------------
def dig(d: Any, path: Sequence[str]) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def log(msg: str) -> None:
    print(msg, flush=True)


def machine_info() -> dict[str, Any]:
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        mem_gib = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    return {
        "nproc": os.cpu_count(),
        "mem_gib": mem_gib,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
    }


# -- running ------------------------------------------------------------------------------
def wait_for_quiet(max_load: float, max_wait: float) -> float:
    """Wait (at most max_wait s) until the 1-minute load average is below max_load."""
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def _is_errands_worker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"errands" in cmdline and b"worker" in cmdline


def kill_leftovers(pidfile: Path) -> int:
    """Kill worker process groups a run left behind (its own cleanup normally does it)."""
    if not pidfile.exists():
        return 0
    killed = 0
    for line in pidfile.read_text().split():
        pid = int(line)
        if _is_errands_worker(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # workers lead their own process group
                killed += 1
    pidfile.unlink(missing_ok=True)
    return killed


def run_once(
    config: Config, rep: int, args: argparse.Namespace, source: tuple[Path, str]
) -> dict[str, Any]:
    if config.backend != "postgresql":
        return _run_once(config, rep, args, source, None)
    database = f"errands_bench_{os.getpid()}_{rep}_{config.name.replace('-', '_')}"
    url = pg.create(args.pg_url, database)
    try:
        return _run_once(config, rep, args, source, url)
    finally:
        pg.drop(args.pg_url, database)


def _run_once(
    config: Config,
    rep: int,
    args: argparse.Namespace,
    source: tuple[Path, str],
    pg_url: str | None,
) -> dict[str, Any]:
    raw = RESULTS / "raw"
    state = RESULTS / "state"
    raw.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    db = state / f"errands-{config.name}-run{rep}-{stamp}.db"
    out = raw / f"{config.name}.run{rep}.json"
    out.unlink(missing_ok=True)
    pidfile = state / f"{config.name}.run{rep}.pids"
    query = "" if config.synchronous == "full" else f"?synchronous={config.synchronous}"
    url = pg_url or f"sqlite:///{db}{query}"
    env = dict(os.environ)
    for name in ("ERRANDS_DATABASE_URL", "BENCH_ERRANDS_QUEUE", *_celery.CELERY_OVERRIDES):
        env.pop(name, None)
    broker = None
    if config.engine != "sql":
        broker = _celery.broker_url(config.engine, common.REDIS_URL)
        queue = _celery.new_queue(config.name)
        env.update(BENCH_ERRANDS_QUEUE=queue)
    env.update(
        BENCH_ERRANDS_URL=url,
        BENCH_ERRANDS_VARIANT=config.name,
        BENCH_ERRANDS_EXECUTOR=config.executor,
        BENCH_ERRANDS_ENGINE=config.engine,
        BENCH_ERRANDS_CONCURRENCY=str(args.concurrency),
        BENCH_ERRANDS_PIDFILE=str(pidfile),
        BENCH_PEERS_DIR=str(peers_dir()),
        BENCH_PHASE_TIMEOUT=str(min(240.0, args.timeout / 3)),
        BENCH_ERRANDS_REF=source[1],
        # the pinned library source first, then the repository (for the bench package)
        PYTHONPATH=os.pathsep.join(
            [str(source[0]), str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        ),
    )
    if args.quick:
        env.update(BENCH_W1_N="500", BENCH_W2_N="30", BENCH_W3_N="100")
    cmd = [sys.executable, str(HERE / "errands_adapter.py"), "--out", str(out)]
    logfile = raw / f"{config.name}.run{rep}.log"
    logfile.unlink(missing_ok=True)
    if pg_url is not None:
        pg.migrate(pg_url, env, logfile)
    t0 = time.monotonic()
    with open(logfile, "a") as fh:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            log(f"  run exceeded {args.timeout:.0f} s: interrupting it")
            os.killpg(proc.pid, signal.SIGINT)  # the driver stops its workers on the way out
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
    leftovers = kill_leftovers(pidfile)
    for suffix in ("", "-wal", "-shm", ".batch", ".batch-wal", ".batch-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    cleanup = None
    if broker is not None:  # the adapter deletes them too, unless it was interrupted
        try:
            _celery.delete_queues(broker, [queue, _celery.batch_queue(queue)])
        except Exception as exc:
            cleanup = f"deleting Celery queue {queue} failed: {exc}"
            log(f"  {cleanup}")
    result: dict[str, Any] = {"errors": []}
    if out.exists():
        result = json.loads(out.read_text())
    if cleanup:
        result["_cleanup"] = cleanup
    if rc != 0:
        result["errors"].append(f"exit code {rc}; see {logfile.relative_to(REPO)}")
    if leftovers:
        result["errors"].append(f"killed {leftovers} leftover worker process(es)")
    result["_config"] = config.name
    result["_seconds"] = time.monotonic() - t0
    result["_database"] = url if pg_url else str(db)
    return result


# -- aggregating --------------------------------------------------------------------------
def aggregate(runs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    out = []
    for name in names:
        rs = [r for r in runs if r["_config"] == name]
        med: dict[str, float | None] = {}
        spread: dict[str, list[float] | None] = {}
        for metric, path in METRICS.items():
            vals = [v for v in (dig(r, path) for r in rs) if isinstance(v, int | float)]
            med[metric] = statistics.median(vals) if vals else None
            spread[metric] = [min(vals), max(vals)] if vals else None
        out.append(
            {
                "name": name,
                "label": CONFIGS[name].label,
                "runs": len(rs),
                "median": med,
                "min_max": spread,
                "config": next((r.get("config") for r in rs if r.get("config")), {}),
                "errors": sorted({e for r in rs for e in r.get("errors", [])}),
                "checks": [
                    {"w1": dig(r, ("w1", "check")), "w3": dig(r, ("w3", "check"))} for r in rs
                ],
                "load": [[r.get("loadavg_before"), r.get("loadavg_after")] for r in rs],
                "cpu_calib_ms": [
                    [r.get("cpu_calib_ms_before"), r.get("cpu_calib_ms_after")] for r in rs
                ],
            }
        )
    return out


def table(rows: list[dict[str, Any]], batch_header: str) -> list[str]:
    lines = [
        "| System | W1 enqueue/s (single) | " + batch_header + " | W1 process/s | "
        "W1 process/s incl. worker boot | W2 submit→start p50 / p99 | "
        "W2 submit→complete p50 / p99 | W3 process/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in rows:
        m = c["median"]
        lines.append(
            f"| {c['label']} | {fmt(m['w1_enqueue_single_per_s'])} | "
            f"{fmt(m['w1_enqueue_batch_per_s'])} | {fmt(m['w1_process_per_s'])} | "
            f"{fmt(m['w1_process_per_s_from_launch'])} | "
            f"{fmt(m['w2_start_p50_ms'], 1)} / {fmt(m['w2_start_p99_ms'], 1)} | "
            f"{fmt(m['w2_complete_p50_ms'], 1)} / {fmt(m['w2_complete_p99_ms'], 1)} | "
            f"{fmt(m['w3_process_per_s'])} |"
        )
    return lines


def spread_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| Config | runs | W1 process/s | W2 start p50 | W2 complete p50 | W2 complete p99 | "
        "W3 process/s | worker boot s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in rows:
        s = c["min_max"]

        def mm(key: str, digits: int = 0, s: dict[str, Any] = s) -> str:
            return "–" if not s[key] else f"{fmt(s[key][0], digits)} – {fmt(s[key][1], digits)}"

        lines.append(
            f"| {c['name']} | {c['runs']} | {mm('w1_process_per_s')} | "
            f"{mm('w2_start_p50_ms', 1)} | {mm('w2_complete_p50_ms', 1)} | "
            f"{mm('w2_complete_p99_ms', 1)} | {mm('w3_process_per_s')} | "
            f"{mm('w1_worker_boot_s', 2)} |"
        )
    return lines


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{a / b:.2f}×"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def targets(rows: list[dict[str, Any]], peers: dict[str, dict[str, Any]]) -> list[str]:
    """The issues' targets, per errands configuration, against peers of the same sitting.

    Issue 5 (PostgreSQL): W1 process ≥ 1.5× PgQueuer, batch enqueue ahead of PgQueuer's,
    W2 p50s ≤ 2 / 3 ms, W3 ≥ 5× the best durable peer. Issue 2's rows (Huey-SQLite,
    Redis peers) are listed when those peers are in the peers file.
    """

    def peer(name: str, metric: str) -> float | None:
        p = peers.get(name)
        value = p["median"].get(metric) if p else None
        return float(value) if isinstance(value, int | float) else None

    lines = [
        "| errands config | target | errands | reference | ratio / value | verdict |",
        "|---|---|---:|---:|---:|---|",
    ]
    redis = [(n, peer(n, "w1_process_per_s")) for n in REDIS_PEERS if n in peers]
    durable = [(n, peer(n, "w3_process_per_s")) for n in DURABLE_PEERS if n in peers]
    best_redis = max(redis, key=lambda t: t[1] or 0.0, default=(None, None))
    best_durable = max(durable, key=lambda t: t[1] or 0.0, default=(None, None))

    def at_least(
        name: str, text: str, value: float | None, ref: float | None, factor: float, strict: bool
    ) -> str:
        ok = None
        if value and ref:
            ok = value > factor * ref if strict else value >= factor * ref
        return (
            f"| {name} | {text} | {fmt(value)} | {fmt(ref)} | {_ratio(value, ref)} | "
            f"{_verdict(ok)} |"
        )

    for c in rows:
        if CONFIGS[c["name"]].engine != "sql":
            continue  # the issues' targets are the SQL engine's; see celery_ratios()
        m = c["median"]
        n = c["name"]
        w1, w3 = m["w1_process_per_s"], m["w3_process_per_s"]
        if "pgqueuer" in peers:
            pgq = peer("pgqueuer", "w1_process_per_s")
            lines.append(at_least(n, "W1 process ≥ 1.5× PgQueuer", w1, pgq, 1.5, False))
            batch = m["w1_enqueue_batch_per_s"]
            pgq_batch = peer("pgqueuer", "w1_enqueue_batch_per_s")
            lines.append(
                at_least(n, "W1 batch enqueue ahead of PgQueuer's", batch, pgq_batch, 1.0, True)
            )
        if "huey-sqlite" in peers:
            huey = peer("huey-sqlite", "w1_process_per_s")
            lines.append(at_least(n, "W1 process ≥ 2× Huey-SQLite", w1, huey, 2.0, False))
        if redis:
            lines.append(
                at_least(
                    n,
                    f"W1 process ahead of every Redis peer (best: {best_redis[0]})",
                    w1,
                    best_redis[1],
                    1.0,
                    True,
                )
            )
        for metric, limit, text in (
            ("w2_start_p50_ms", 2.0, "W2 submit→start p50 ≤ 2 ms"),
            ("w2_complete_p50_ms", 3.0, "W2 submit→done-visible p50 ≤ 3 ms"),
        ):
            v = m[metric]
            ok = None if v is None else v <= limit
            lines.append(
                f"| {n} | {text} | {fmt(v, 1)} ms | {limit:.0f} ms | "
                f"{_ratio(v, limit)} of limit | {_verdict(ok)} |"
            )
        if durable:
            lines.append(
                at_least(
                    n,
                    f"W3 ≥ 5× best durable peer (best: {best_durable[0]})",
                    w3,
                    best_durable[1],
                    5.0,
                    False,
                )
            )
    return lines


#: (metric, label, digits, higher is better) of the Celery-engine comparison.
CELERY_METRICS = (
    ("w1_enqueue_single_per_s", "W1 enqueue/s (single)", 0, True),
    ("w1_process_per_s", "W1 process/s", 0, True),
    ("w1_process_per_s_from_launch", "W1 process/s incl. worker boot", 0, True),
    ("w2_start_p50_ms", "W2 submit→start p50 (ms)", 1, False),
    ("w2_start_p99_ms", "W2 submit→start p99 (ms)", 1, False),
    ("w2_complete_p50_ms", "W2 submit→complete p50 (ms)", 1, False),
    ("w2_complete_p99_ms", "W2 submit→complete p99 (ms)", 1, False),
    ("w3_enqueue_single_per_s", "W3 enqueue/s (single)", 0, True),
    ("w3_process_per_s", "W3 process/s", 0, True),
)


def celery_ratios(rows: list[dict[str, Any]], peers: dict[str, dict[str, Any]]) -> list[str]:
    """errands on the Celery engine beside plain Celery on the same broker: what the
    record layer costs. *cost* = how many times slower errands is (throughput: Celery ÷
    errands; latency: errands ÷ Celery), so 1.00× is free and 2.00× is half as fast."""
    lines: list[str] = []
    for c in rows:
        engine = CONFIGS[c["name"]].engine
        if engine == "sql":
            continue
        peer = peers.get(CELERY_PEERS[engine])
        if peer is None:
            lines += [f"- {c['name']}: no `{CELERY_PEERS[engine]}` in the peers file", ""]
            continue
        lines += [
            f"**{c['name']}** against **{peer['name']}** ({peer['label']}):",
            "",
            "| metric | errands | plain Celery | errands ÷ Celery | cost (× slower) |",
            "|---|---:|---:|---:|---:|",
        ]
        for metric, label, digits, higher_better in CELERY_METRICS:
            mine, theirs = c["median"].get(metric), peer["median"].get(metric)
            cost = _ratio(theirs, mine) if higher_better else _ratio(mine, theirs)
            lines.append(
                f"| {label} | {fmt(mine, digits)} | {fmt(theirs, digits)} | "
                f"{_ratio(mine, theirs)} | {cost} |"
            )
        lines.append("")
    return lines[:-1] if lines and lines[-1] == "" else lines


def load_peers(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None or not path.exists():
        return {}
    data = json.loads(path.read_text())
    peers = {c["name"]: c for c in data.get("configs", [])}
    for name, label in CELERY_PEER_LABELS.items():
        if name in peers and peers[name].get("label") in (None, name):
            peers[name]["label"] = label
    return peers


# -- main ------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--configs", default="full,normal,pg", help=f"of {', '.join(CONFIGS)}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="per worker process (default 16, the library default)",
    )
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per run (default 600)")
    ap.add_argument("--quick", action="store_true", help="small workloads (smoke test)")
    ap.add_argument("--peers", type=Path, default=None, help="peers' results.json (same sitting)")
    ap.add_argument(
        "--max-load",
        type=float,
        default=None,
        help="before each run, wait (≤ --max-wait s) for the 1-min load average to drop below this",
    )
    ap.add_argument("--max-wait", type=float, default=120.0)
    ap.add_argument(
        "--pg-url",
        default=DEFAULT_PG_URL,
        help="PostgreSQL maintenance database of the server the pg configurations use\n"
        f"(each run creates and drops its own database there; default {DEFAULT_PG_URL})",
    )
    ap.add_argument(
        "--name", default="errands", help="output name: bench/results/NAME.json and NAME.md"
    )
    ap.add_argument(
        "--ref",
        default="HEAD",
        help="git commit of the library to measure (default HEAD, resolved once at start; "
        "the working tree's uncommitted edits are not measured)",
    )
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown config(s) {unknown}; choose from {list(CONFIGS)}")

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    source = snapshot(args.ref)
    log(f"errands benchmark: {names} × {args.repeats}, machine {machine_info()}")
    log(f"library source: {args.ref} = {source[1]} (snapshot {source[0]})")
    log(f"peer harness: {peers_dir()}; load average {os.getloadavg()}")
    postgres = None
    if any(CONFIGS[n].backend == "postgresql" for n in names):
        try:
            postgres = pg.info(args.pg_url)
        except Exception as exc:
            ap.error(
                f"PostgreSQL is not reachable at {args.pg_url} ({exc}); start it (make "
                "postgres), pass --pg-url, or leave the pg configurations out (--configs "
                "full,normal)"
            )
        log(f"PostgreSQL: {postgres}")
    for engine in sorted({CONFIGS[n].engine for n in names} - {"sql"}):
        broker = _celery.broker_url(engine, common.REDIS_URL)
        try:
            _celery.check_broker(broker)
        except Exception as exc:
            ap.error(
                f"the {engine} configurations' broker {_celery.safe(broker)} does not answer "
                f"({exc}); start it (make brokers) or leave those configurations out"
            )
        log(f"{engine}: broker {_celery.safe(broker)}")
    runs: list[dict[str, Any]] = []
    for rep in range(1, args.repeats + 1):
        order = names if rep % 2 else list(reversed(names))  # alternate, as the peers do
        for name in order:
            load = wait_for_quiet(args.max_load, args.max_wait) if args.max_load else None
            log(f"[run {rep}] {name:<14} load {os.getloadavg()[0]:.2f} ...")
            r = run_once(CONFIGS[name], rep, args, source)
            r["_load_at_start"] = load
            runs.append(r)
            m = {k: dig(r, p) for k, p in METRICS.items()}
            log(
                f"  {r['_seconds']:.0f} s: W1 enq {fmt(m['w1_enqueue_single_per_s'])}/s, "
                f"proc {fmt(m['w1_process_per_s'])}/s; W2 start p50 {fmt(m['w2_start_p50_ms'], 1)} "
                f"ms, done p50 {fmt(m['w2_complete_p50_ms'], 1)} ms; "
                f"W3 {fmt(m['w3_process_per_s'])}/s"
                + (f"; ERRORS {r['errors']}" if r.get("errors") else "")
            )

    rows = aggregate(runs, names)
    peers = load_peers(args.peers)
    summary = {
        "started_at": started,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "postgresql": postgres,
        "argv": sys.argv,
        "workloads": {"w1_n": common.N_W1, "w2_n": common.N_W2, "w3_n": common.N_W3},
        "quick": args.quick,
        "library_commit": source[1],
        "concurrency": args.concurrency,
        "configs": rows,
        "runs": runs,
        "peers_file": str(args.peers) if args.peers else None,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")

    md = [
        f"errands at commit {source[1][:12]}, median of {args.repeats} run(s) per "
        f"configuration ({started}):",
        "",
    ]
    if postgres:
        md[1:1] = [
            "",
            "PostgreSQL "
            + ", ".join(f"{k} {v}" for k, v in postgres.items())
            + "; an untimed ANALYZE after each enqueue phase (as for the peers on PostgreSQL).",
        ]
    md += table(rows, "W1 enqueue/s (batch: submit_many, one transaction)")
    md += ["", "Spread between runs (min – max):", "", *spread_table(rows)]
    if peers:
        peer_rows = list(peers.values())
        md += ["", f"Peers (from {args.peers}):", ""]
        md += table(peer_rows, "W1 enqueue/s (batch API)")
        goals = targets(rows, peers)
        if len(goals) > 2:  # more than the header: some configuration on the SQL engine
            md += ["", "Targets (ratios against the peers above):", "", *goals]
        ratios = celery_ratios(rows, peers)
        if ratios:
            md += [
                "",
                "The record layer's cost: errands on the Celery engine beside plain Celery on "
                "the same broker (cost = how many times slower errands is: Celery ÷ errands "
                "for rates, errands ÷ Celery for latencies):",
                "",
                *ratios,
            ]
    errors = [(c["name"], e) for c in rows for e in c["errors"]]
    if errors:
        md += ["", "Errors:"] + [f"- {n}: {e}" for n, e in errors]
    text = "\n".join(md) + "\n"
    (RESULTS / f"{args.name}.md").write_text(text)
    log("")
    log(text)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
