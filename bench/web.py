"""HTTP API benchmark: ``task_api`` on SQLite or PostgreSQL, a real uvicorn process, real workers.

    .venv/bin/python bench/web.py                  # full run (~2 min)
    .venv/bin/python bench/web.py --quick          # smoke test (~25 s)
    .venv/bin/python bench/web.py --repeats 3 --max-load 1.2   # medians of 3, quieter machine
    .venv/bin/python bench/web.py --only status --profile      # + py-spy of the server
    .venv/bin/python bench/web.py --database pg                # on PostgreSQL

Three measurements against one uvicorn process (``bench/web_server.py``, serving
``bench.web_tasks:make_api``) on a fresh SQLite file in a temporary directory, or with
``--database pg`` a fresh migrated PostgreSQL database (``bench/_pg.py``; dropped after):

1. status reads: ``GET /api/tasks/{id}`` over a few hundred finished tasks, 50
   keep-alive connections, for ``--duration`` s after a warm-up; once plainly (200 with
   the resource), once with ``If-None-Match: <current ETag>`` (304), and once against
   ``GET /api/ping`` of the same app, which does no errands work (the framework's
   floor; ``--no-floor`` skips it);
2. submits: ``POST /api/tasks`` from 50 connections spread over 1,000 owners (no rate
   limit, no worker running);
3. fan-out: ``--watchers`` SSE clients of one task (``GET /api/tasks/{id}/events``)
   while an ``errands worker`` runs it; the task reports progress every 0.1 s and the
   worker writes it every 0.1 s. Delay = client receipt − the record's ``updated_at``
   (the worker's flush time), per progress event and watcher.

The load comes from a separate client process (this file, ``_client`` mode): a minimal
HTTP/1.1 keep-alive client on asyncio streams for 1 and 2, ``asyncio.Protocol``
connections for 3 (uvloop when installed); its own CPU use is reported, and the
server's CPU (user + system) and context switches per request. Like ``bench/run.py``,
the library measured is a git commit (``--ref``, default HEAD) unpacked under
``bench/results/snapshots/`` and put first on the ``PYTHONPATH`` of the server and the
workers. Output: the table on stdout and in ``bench/results/web.md``, everything in
``bench/results/web.json``, process logs (and py-spy's raw stacks) in
``bench/results/web-logs/`` (``NAME`` instead of ``web`` with ``--name NAME``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import math
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
LOGS = RESULTS / "web-logs"  # per --name: bench/results/NAME-logs (set in main)
HOST = "127.0.0.1"


# ======================================================================================
# shared helpers
# ======================================================================================
def raise_nofile(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int, system_only: bool = False) -> float | None:
    """CPU seconds (user + system, or system alone; all threads) a process has used."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[12]) + (0 if system_only else int(fields[11]))) / _TICK


def context_switches(pid: int) -> int | None:
    """Voluntary + involuntary context switches of all a process's threads, from /proc."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
    except OSError:
        return None
    return total


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process in MiB, from /proc."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def summary_ms(values: list[float]) -> dict[str, Any]:
    """Seconds in, milliseconds out: p50/p90/p99/max/mean."""
    v = sorted(values)
    if not v:
        return {"n": 0}
    return {
        "n": len(v),
        "p50": percentile(v, 0.50) * 1000,  # type: ignore[operator]
        "p90": percentile(v, 0.90) * 1000,  # type: ignore[operator]
        "p99": percentile(v, 0.99) * 1000,  # type: ignore[operator]
        "max": v[-1] * 1000,
        "mean": statistics.fmean(v) * 1000,
    }


class ProtocolError(Exception):
    pass


# ======================================================================================
# the client process (``web.py _client SPEC OUT``)
# ======================================================================================
class CpuMeter:
    """CPU seconds of this process and of the given pids, between two snapshots."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def snap(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {"client": self_cpu()}
        for name, pid in self.pids.items():
            out[name] = proc_cpu(pid)
            out[f"{name}_system"] = proc_cpu(pid, system_only=True)
        return out

    @staticmethod
    def percent(
        a: dict[str, float | None], b: dict[str, float | None], seconds: float
    ) -> dict[str, float | None]:
        """Percent of one core, per process."""
        out: dict[str, float | None] = {}
        for k, v0 in a.items():
            v1 = b.get(k)
            out[k] = None if v0 is None or v1 is None else 100 * (v1 - v0) / seconds
        return out


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (status line, headers, Content-Length body); its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    if status in (204, 304) or status < 200:
        return status
    lower = head.lower()
    i = lower.find(b"\r\ncontent-length:")
    if i < 0:
        raise ProtocolError(f"no Content-Length in a {status} response: {head[:300]!r}")
    j = lower.find(b"\r\n", i + 17)
    n = int(head[i + 17 : j])
    if n:
        await reader.readexactly(n)
    return status


def build_requests(spec: dict[str, Any]) -> Callable[[int], bytes]:
    host = f"{spec['host']}:{spec['port']}"
    if spec["kind"] == "floor":
        ping = f"GET /api/ping HTTP/1.1\r\nHost: {host}\r\nX-User: reader-0\r\n\r\n".encode()
        return lambda i: ping
    if spec["kind"] in ("get", "get-inm"):
        reqs = []
        for path, owner, etag in spec["targets"]:
            cond = f"If-None-Match: {etag}\r\n" if spec["kind"] == "get-inm" else ""
            reqs.append(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-User: {owner}\r\n{cond}\r\n".encode()
            )
        n = len(reqs)
        return lambda i: reqs[i % n]
    if spec["kind"] == "post":
        owners = int(spec["owners"])
        path = spec["path"]

        def post(i: int) -> bytes:
            body = b'{"name":"noop","payload":{"i":%d}}' % i
            return (
                b"POST %s HTTP/1.1\r\nHost: %s\r\nX-User: user-%d\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (path.encode(), host.encode(), i % owners, len(body), body)
            )

        return post
    raise ValueError(spec["kind"])


async def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """``concurrency`` keep-alive connections, each sending its next request as soon as
    the previous response is read; latencies of the requests sent and answered inside
    the measured window."""
    make = build_requests(spec)
    counter = itertools.count()
    lat: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    window = {"start": float("inf"), "end": float("inf")}
    stop = False
    clock = time.perf_counter

    async def connection() -> None:
        while not stop:
            try:
                reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
            except OSError as exc:
                errors[f"connect: {exc!r}"] += 1
                await asyncio.sleep(0.05)
                continue
            try:
                while not stop:
                    req = make(next(counter))
                    t0 = clock()
                    writer.write(req)
                    status = await read_response(reader)
                    t1 = clock()
                    if t0 >= window["start"] and t1 <= window["end"]:
                        lat.append(t1 - t0)
                        statuses[status] += 1
            except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError) as exc:
                errors[f"{type(exc).__name__}: {str(exc)[:200]}"] += 1
                await asyncio.sleep(0.01)
            finally:
                writer.close()

    meter = CpuMeter(spec["pids"])
    tasks = [asyncio.ensure_future(connection()) for _ in range(spec["concurrency"])]
    await asyncio.sleep(spec["warmup"])
    server = spec["pids"].get("server")
    cpu0 = meter.snap()
    switches0 = context_switches(server) if server else None
    window["start"] = clock()
    await asyncio.sleep(spec["duration"])
    window["end"] = clock()
    cpu1 = meter.snap()
    switches1 = context_switches(server) if server else None
    seconds = window["end"] - window["start"]
    stop = True
    _, pending = await asyncio.wait(tasks, timeout=10)
    for t in pending:
        t.cancel()
    return {
        "kind": spec["kind"],
        "concurrency": spec["concurrency"],
        "seconds": seconds,
        "requests": len(lat),
        "per_s": len(lat) / seconds,
        "latency_ms": summary_ms(lat),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "unexpected": sum(v for k, v in statuses.items() if k != spec["expect"]),
        "errors": dict(errors),
        "cpu_percent": CpuMeter.percent(cpu0, cpu1, seconds),
        "server_cpu_us_per_request": None
        if cpu0.get("server") is None or cpu1.get("server") is None or not lat
        else 1e6 * (cpu1["server"] - cpu0["server"]) / len(lat),  # type: ignore[operator]
        "server_context_switches_per_request": None
        if switches0 is None or switches1 is None or not lat
        else (switches1 - switches0) / len(lat),
    }


def _chunks(buf: bytearray, out: bytearray) -> bool:
    """Move the complete chunks of a chunked body from ``buf`` to ``out``; True at the
    last (empty) chunk."""
    while True:
        j = buf.find(b"\r\n")
        if j < 0:
            return False
        size = int(bytes(buf[:j]).split(b";")[0], 16)
        end = j + 2 + size + 2
        if len(buf) < end:
            return False
        out += buf[j + 2 : j + 2 + size]
        del buf[:end]
        if size == 0:
            return True


async def run_fanout(spec: dict[str, Any]) -> dict[str, Any]:
    """``watchers`` SSE connections to one task; each event's receipt time.

    Each connection is an ``asyncio.Protocol``: the receipt time is taken in
    ``data_received``, as soon as the loop has read the socket (no stream reader and
    no coroutine wake-up in between)."""
    loop = asyncio.get_running_loop()
    n = spec["watchers"]
    request = (
        f"GET {spec['path']} HTTP/1.1\r\nHost: {spec['host']}:{spec['port']}\r\n"
        f"X-User: {spec['owner']}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    updated: dict[int, float] = {}  # version -> the record's updated_at (Unix s)
    streams: list[list[tuple[int, str, float]]] = [[] for _ in range(n)]
    endings: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    counts = {"primed": 0, "failed": 0}
    everyone = asyncio.Event()
    gate = asyncio.Semaphore(64)  # connections being opened at once

    def settle(primed: bool) -> None:
        counts["primed" if primed else "failed"] += 1
        if counts["primed"] + counts["failed"] >= n:
            everyone.set()

    def on_frame(frame: bytes, now: float, events: list[tuple[int, str, float]]) -> bool:
        """Record an event frame; False for anything else (retry:, keep-alive)."""
        if not frame.startswith(b"id: "):
            return False
        ident, _, rest = frame[4:].partition(b"\nevent: ")
        kind, _, data = rest.partition(b"\ndata: ")
        version = int(ident.partition(b"-")[0])
        if version not in updated:
            i = data.find(b'"updated_at":"')
            if i >= 0:
                j = data.find(b'"', i + 14)
                updated[version] = datetime.fromisoformat(data[i + 14 : j].decode()).timestamp()
        events.append((version, kind.decode(), now))
        return True

    class Watcher(asyncio.Protocol):
        def __init__(self, k: int) -> None:
            self.events = streams[k]
            self.raw = bytearray()
            self.body = bytearray()
            self.head = False
            self.chunked = False
            self.primed = False
            self.transport: Any = None  # uvloop's transports are not asyncio.Transport
            self.done: asyncio.Future[None] = loop.create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.transport.write(request)

        def finish(self, how: str, error: str | None = None) -> None:
            if self.done.done():
                return
            endings[how] += 1
            if error:
                errors[error] += 1
            if not self.primed:
                settle(False)
            self.done.set_result(None)
            if self.transport is not None:
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            now = time.time()
            raw = self.raw
            raw += data
            if not self.head:
                i = raw.find(b"\r\n\r\n")
                if i < 0:
                    return
                head = bytes(raw[:i])
                del raw[: i + 4]
                if head[9:12] != b"200":
                    self.finish("error", f"status {head[9:12].decode()}: {head[:200]!r}")
                    return
                self.head = True
                self.chunked = b"transfer-encoding: chunked" in head.lower()
            body = self.body
            if self.chunked:
                try:
                    last = _chunks(raw, body)
                except ValueError as exc:
                    self.finish("error", f"bad chunk: {exc}")
                    return
            else:
                body += raw
                raw.clear()
                last = False
            while (p := body.find(b"\n\n")) >= 0:
                frame = bytes(body[:p])
                del body[: p + 2]
                if on_frame(frame, now, self.events) and not self.primed:
                    self.primed = True
                    settle(True)
            if last:
                self.finish("end of stream")

        def connection_lost(self, exc: Exception | None) -> None:
            self.finish("eof" if exc is None else "error", None if exc is None else repr(exc))

    async def watcher(k: int) -> None:
        try:
            async with gate:
                _, proto = await loop.create_connection(
                    lambda: Watcher(k), spec["host"], spec["port"]
                )
        except OSError as exc:
            errors[f"connect: {exc!r}"] += 1
            endings["error"] += 1
            settle(False)
            return
        try:
            await proto.done
        finally:
            proto.finish("cancelled")

    meter = CpuMeter(spec["pids"])
    t_open = time.monotonic()
    tasks = [asyncio.ensure_future(watcher(k)) for k in range(n)]
    try:
        await asyncio.wait_for(everyone.wait(), spec["ready_timeout"])
    except TimeoutError:
        errors["not every watcher connected in time"] += 1
    connect_s = time.monotonic() - t_open
    cpu0 = meter.snap()
    t0 = time.monotonic()
    # tell the driver to start the worker
    print("READY " + json.dumps(counts), flush=True)
    _, pending = await asyncio.wait(tasks, timeout=spec["timeout"])
    seconds = time.monotonic() - t0
    cpu1 = meter.snap()
    for t in pending:
        t.cancel()
    if pending:
        errors[f"{len(pending)} watchers still open at the deadline"] += 1
        await asyncio.wait(pending, timeout=5)
    result = {
        "watchers": n,
        "primed": counts["primed"],
        "failed": counts["failed"],
        "connect_s": connect_s,
        "seconds": seconds,
        "endings": dict(endings),
        "errors": dict(errors),
        "cpu_percent": CpuMeter.percent(cpu0, cpu1, seconds),
        **analyse_fanout(streams, updated),
    }
    events = result["events_per_watcher"]["total"]
    if events:
        result["client_cpu_us_per_event"] = 1e6 * (cpu1["client"] - cpu0["client"]) / events  # type: ignore[operator]
    return result


def analyse_fanout(
    streams: list[list[tuple[int, str, float]]], updated: dict[int, float]
) -> dict[str, Any]:
    done_versions = {e[0] for s in streams for e in s if e[1] == "done"}
    run_versions = [e[0] for s in streams for e in s if e[1] == "status" and e[0] > 1]
    out: dict[str, Any] = {
        "done_versions": sorted(done_versions),
        "first_running_version": min(run_versions) if run_versions else None,
    }
    delays: list[float] = []
    done_delays: list[float] = []
    by_version: dict[int, list[float]] = {}
    per_watcher: list[int] = []
    for s in streams:
        count = 0
        for version, kind, now in s:
            if kind == "progress":
                count += 1
                if version in updated:
                    delays.append(now - updated[version])
                by_version.setdefault(version, []).append(now)
            elif kind == "done" and version in updated:
                done_delays.append(now - updated[version])
        per_watcher.append(count)
    out["progress_delay_ms"] = summary_ms(delays)
    out["done_delay_ms"] = summary_ms(done_delays)
    # how long one version took to reach every watcher that got it
    out["spread_ms"] = summary_ms([max(v) - min(v) for v in by_version.values()])
    written = None
    if len(done_versions) == 1 and run_versions:
        # versions between the claim ("running") and the outcome are progress writes
        written = next(iter(done_versions)) - min(run_versions) - 1
    out["progress_versions_written"] = written
    out["progress_versions_delivered"] = len(by_version)
    pw = sorted(per_watcher)
    out["events_per_watcher"] = {
        "min": pw[0] if pw else None,
        "median": statistics.median(pw) if pw else None,
        "max": pw[-1] if pw else None,
        "all_versions": sum(1 for c in pw if written is not None and c >= written),
        "total": sum(pw),
    }
    return out


def client_main(argv: Sequence[str]) -> int:
    spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    raise_nofile()
    mode = spec.get("mode")
    coro = run_fanout(spec) if mode == "fanout" else run_load(spec)
    if spec.get("loop") == "uvloop":
        import uvloop

        result = uvloop.run(coro)
    else:
        result = asyncio.run(coro)
    result["client_loop"] = spec.get("loop")
    Path(out_path).write_text(json.dumps(result, indent=1))
    return 0


# ======================================================================================
# the driver
# ======================================================================================
def log(msg: str) -> None:
    print(msg, flush=True)


class Processes:
    """Every subprocess this run starts; each leads its own process group, and all of
    them are stopped (SIGTERM to the group, then SIGKILL) however the run ends."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._files: list[Any] = []

    def start(
        self, name: str, cmd: list[str], env: dict[str, str], *, pipe_stdout: bool = False
    ) -> subprocess.Popen[bytes]:
        logf = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 (closed in stop_all)
        self._files.append(logf)
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe_stdout else logf,
            stderr=logf,
            start_new_session=True,
        )
        self.running.append((name, proc))
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        # anything left in its group (it leads a session of its own)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def stop_all(self) -> None:
        for _, proc in reversed(self.running):
            self.stop(proc)
        self.running.clear()
        for f in self._files:
            f.close()
        self._files.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Api:
    """A tiny synchronous client for the driver's own (unmeasured) requests."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection(HOST, port, timeout=30)

    def call(
        self,
        method: str,
        path: str,
        owner: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        h = {"X-User": owner, **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=data, headers=h)
                resp = self.conn.getresponse()
                break
            except (OSError, http.client.HTTPException):
                # the server closes idle keep-alive connections after 5 s: once more on
                # a new connection (only the driver's own, unmeasured requests get here)
                self.conn.close()
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
                if attempt == 2:
                    raise
        raw = resp.read()
        doc = json.loads(raw) if raw and "json" in (resp.getheader("content-type") or "") else raw
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, doc

    def close(self) -> None:
        self.conn.close()


def wait_for_server(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            api = Api(port)
            status, _, _ = api.call("GET", "/api/tasks?limit=1", "probe")
            api.close()
            if status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not answer in time")


def git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return out.stdout.strip()


def module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def wait_for_quiet(max_load: float | None, max_wait: float) -> dict[str, float]:
    """Wait (≤ max_wait s) for the 1-minute load average to drop below max_load; the
    load average and a CPU calibration (ms for a fixed pure-Python loop: higher means
    less CPU for us) just before a test."""
    if max_load is not None:
        deadline = time.monotonic() + max_wait
        while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
            time.sleep(5)
    t0 = time.perf_counter()
    x = 0
    for i in range(300_000):
        x += i * i
    calib = (time.perf_counter() - t0) * 1000
    load = os.getloadavg()[0]
    log(f"  load average {load:.2f}, CPU calibration {calib:.1f} ms")
    return {"loadavg": load, "cpu_calib_ms": calib}


class Run:
    def __init__(self, args: argparse.Namespace, procs: Processes, tmp: Path) -> None:
        self.args = args
        self.procs = procs
        self.tmp = tmp
        self.env: dict[str, str] = {}
        self.server: subprocess.Popen[bytes] | None = None
        #: The process whose CPU and memory are reported (the server's, or its worker's).
        self.measured = 0
        self.port = 0
        self.profiles: dict[str, Any] = {}

    # -- processes ---------------------------------------------------------------------
    def errands(self, name: str, *extra: str, env: dict[str, str] | None = None) -> Any:
        cmd = [sys.executable, "-m", "errands", *extra]
        return self.procs.start(name, cmd, {**self.env, **(env or {})})

    def worker(self, name: str, *extra: str, env: dict[str, str] | None = None) -> Any:
        return self.errands(
            name, "worker", "bench.web_tasks:app", "--shutdown-timeout", "2", *extra, env=env
        )

    def client(self, name: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        spec = {"host": HOST, "port": self.port, "loop": self.args.client_loop, **spec}
        spec_path = self.tmp / f"{name}.spec.json"
        out_path = self.tmp / f"{name}.out.json"
        spec_path.write_text(json.dumps(spec))
        proc = self.procs.start(
            name, [sys.executable, str(Path(__file__)), "_client", str(spec_path), str(out_path)],
            self.env,
        )  # fmt: skip
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.procs.stop(proc)
            raise RuntimeError(f"client {name} did not finish in {timeout:.0f} s") from None
        if rc != 0 or not out_path.exists():
            raise RuntimeError(f"client {name} failed (exit {rc}); see {LOGS / name}.log")
        return json.loads(out_path.read_text())  # type: ignore[no-any-return]

    # -- phases ------------------------------------------------------------------------
    def start_server(self) -> None:
        self.port = free_port()
        if self.args.framework == "flask":
            # One process, as uvicorn's: gunicorn's threaded worker (WSGI has no event
            # loop; each request, and each open event stream, holds a thread).
            cmd = [
                sys.executable, "-m", "gunicorn", "bench.web_tasks:make_flask()",
                "--bind", f"{HOST}:{self.port}", "--workers", "1",
                "--worker-class", "gthread", "--threads", str(self.args.threads),
                "--keep-alive", "30", "--log-level", "warning",
            ]  # fmt: skip
            self.server = self.procs.start("server", cmd, self.env)
            wait_for_server(self.port, self.server)
            # What is measured (CPU, memory, profiles) is gunicorn's worker process.
            children = Path(f"/proc/{self.server.pid}/task/{self.server.pid}/children")
            self.measured = int(children.read_text().split()[0])
            return
        cmd = [
            sys.executable,
            str(HERE / "web_server.py"),
            "--port",
            str(self.port),
            "--http",
            self.args.http,
            "--loop",
            self.args.loop,
        ]
        self.server = self.procs.start("server", cmd, self.env)
        wait_for_server(self.port, self.server)
        self.measured = self.server.pid

    def seed(self) -> list[tuple[str, str, str]]:
        """``--tasks`` finished tasks over 30 owners: (path, owner, ETag) each."""
        api = Api(self.port)
        ids: list[tuple[str, str]] = []
        for i in range(self.args.tasks):
            owner = f"reader-{i % 30}"
            body = {"name": "noop", "payload": {"i": i}}
            status, _, doc = api.call("POST", "/api/tasks", owner, body)
            if status != 202:
                raise RuntimeError(f"seeding: POST /api/tasks answered {status}: {doc!r}")
            # paths built here, not taken from the resource's links: at fb92171 those
            # lacked the router's prefix with FastAPI 0.165
            ids.append((f"/api/tasks/{doc['id']}", owner))
        w = self.worker("worker-seed", "--burst")
        try:
            rc = w.wait(120)
        except subprocess.TimeoutExpired:
            raise RuntimeError("the seeding worker did not drain the queue in 120 s") from None
        if rc != 0:
            raise RuntimeError(f"the seeding worker exited with code {rc}")
        targets = []
        for path, owner in ids:
            status, headers, doc = api.call("GET", path, owner)
            if status != 200 or doc.get("status") != "succeeded":
                raise RuntimeError(f"seeded task {path}: {status} {doc!r}")
            targets.append((path, owner, headers["etag"]))
        api.close()
        return targets

    def profile_start(self, label: str) -> subprocess.Popen[bytes] | None:
        if not self.args.profile or self.server is None:
            return None
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        out = LOGS / f"profile-{label}.txt"
        out.unlink(missing_ok=True)
        cmd = [
            pyspy, "record", "--pid", str(self.measured), "--format", "raw",
            "--rate", "250", "--duration", str(int(self.args.warmup + self.args.duration)),
            "--output", str(out), "--nonblocking",
            *(["--gil"] if self.args.profile == "gil" else []),
        ]  # fmt: skip
        return self.procs.start(f"py-spy-{label}", cmd, self.env)

    def profile_end(self, label: str, proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None:
            return
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            self.procs.stop(proc)
        out = LOGS / f"profile-{label}.txt"
        if out.exists():
            self.profiles[label] = summarise_profile(out)

    def status_reads(self, targets: list[tuple[str, str, str]]) -> dict[str, Any]:
        a = self.args
        runs: dict[str, list[dict[str, Any]]] = {"get": [], "get-inm": [], "floor": []}
        kinds = [("get", 200), ("get-inm", 304)] + ([("floor", 200)] if a.floor else [])
        for rep in range(a.repeats):
            for kind, expect in kinds:
                log(f"  {kind} run {rep + 1}/{a.repeats}: {a.warmup:g} + {a.duration:g} s")
                quiet = wait_for_quiet(a.max_load, a.max_wait)
                prof = self.profile_start(f"{kind}-{rep + 1}")
                r = self.client(
                    f"client-{kind}-{rep + 1}",
                    {
                        "mode": "load",
                        "kind": kind,
                        "expect": expect,
                        "targets": targets,
                        "concurrency": a.concurrency,
                        "warmup": a.warmup,
                        "duration": a.duration,
                        "pids": {"server": self.measured},
                    },
                    timeout=a.warmup + a.duration + 60,
                )
                self.profile_end(f"{kind}-{rep + 1}", prof)
                r["before"] = quiet
                r["server_rss_mib"] = rss_mib(self.measured)
                r["loadavg_after"] = os.getloadavg()
                runs[kind].append(r)
                log(f"    {describe_load(r)}")
        return runs

    def submits(self) -> list[dict[str, Any]]:
        a = self.args
        out = []
        for rep in range(a.repeats):
            log(f"  post run {rep + 1}/{a.repeats}: {a.warmup:g} + {a.duration:g} s")
            quiet = wait_for_quiet(a.max_load, a.max_wait)
            r = self.client(
                f"client-post-{rep + 1}",
                {
                    "mode": "load",
                    "kind": "post",
                    "expect": 202,
                    "path": "/api/tasks",
                    "owners": 1000,
                    "concurrency": a.concurrency,
                    "warmup": a.warmup,
                    "duration": a.duration,
                    "pids": {"server": self.measured},
                },
                timeout=a.warmup + a.duration + 60,
            )
            r["before"] = quiet
            r["server_rss_mib"] = rss_mib(self.measured)
            r["loadavg_after"] = os.getloadavg()
            out.append(r)
            log(f"    {describe_load(r)}")
        return out

    def fanout(self) -> dict[str, Any]:
        a = self.args
        quiet = wait_for_quiet(a.max_load, a.max_wait)
        api = Api(self.port)
        owner = "watched"
        payload = {"seconds": a.fanout_seconds, "interval": 0.1}
        body = {"name": "ticker", "payload": payload}
        status, _, doc = api.call("POST", "/api/tasks", owner, body)
        if status != 202:
            raise RuntimeError(f"fan-out: POST /api/tasks answered {status}: {doc!r}")
        task_path = f"/api/tasks/{doc['id']}"
        path = f"{task_path}/events"
        spec = {
            "host": HOST,
            "port": self.port,
            "loop": a.client_loop,
            "mode": "fanout",
            "path": path,
            "owner": owner,
            "watchers": a.watchers,
            "ready_timeout": 120,
            "timeout": a.fanout_seconds + 60,
            "pids": {"server": self.measured},
        }
        spec_path, out_path = self.tmp / "fanout.spec.json", self.tmp / "fanout.out.json"
        spec_path.write_text(json.dumps(spec))
        client = self.procs.start(
            "client-fanout",
            [sys.executable, str(Path(__file__)), "_client", str(spec_path), str(out_path)],
            self.env,
            pipe_stdout=True,
        )
        assert client.stdout is not None
        ready, deadline, line = False, time.monotonic() + 150, b""
        while time.monotonic() < deadline and client.poll() is None:
            r, _, _ = select.select([client.stdout], [], [], 1.0)
            if r:
                line = client.stdout.readline()
                if line.startswith(b"READY"):
                    ready = True
                    break
        if not ready:
            raise RuntimeError(f"fan-out client not ready (exit {client.poll()}): {line!r}")
        log(f"  watchers connected: {line.decode().strip()}; starting the worker")
        worker = self.worker(
            "worker-fanout", "--names", "ticker", env={"BENCH_WEB_PROGRESS_INTERVAL": "0.1"}
        )
        # the worker's CPU from the claim on (its start-up left out)
        t_worker, cpu_start = time.monotonic(), proc_cpu(worker.pid)
        while time.monotonic() - t_worker < 30 and client.poll() is None:
            if api.call("GET", task_path, owner)[2].get("status") != "queued":
                t_worker, cpu_start = time.monotonic(), proc_cpu(worker.pid)
                break
            time.sleep(0.02)
        try:
            rc = client.wait(a.fanout_seconds + 90)
        except subprocess.TimeoutExpired:
            raise RuntimeError("the fan-out client did not finish") from None
        worker_cpu = proc_cpu(worker.pid)
        worker_s = time.monotonic() - t_worker
        self.procs.stop(worker)
        if rc != 0 or not out_path.exists():
            raise RuntimeError(f"fan-out client failed (exit {rc}); see {LOGS}/client-fanout.log")
        result: dict[str, Any] = json.loads(out_path.read_text())
        result["worker_cpu_percent"] = (
            None
            if worker_cpu is None or cpu_start is None
            else 100 * (worker_cpu - cpu_start) / worker_s
        )
        status, _, final = api.call("GET", task_path, owner)
        result["final"] = {
            "status": final.get("status"),
            "version": final.get("version"),
            "progress": final.get("progress"),
        }
        result["before"] = quiet
        result["server_rss_mib"] = rss_mib(self.measured)
        result["loadavg_after"] = os.getloadavg()
        api.close()
        return result


def describe_load(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    cpu = r["cpu_percent"]
    return (
        f"{r['per_s']:,.0f} req/s, p50 {lat.get('p50', 0):.2f} ms, p99 {lat.get('p99', 0):.2f} ms; "
        f"statuses {r['statuses']}; server CPU {fmt(cpu.get('server'))}%, "
        f"of which system {fmt(cpu.get('server_system'))}%, "
        f"client CPU {fmt(cpu.get('client'))}%, server RSS {fmt(r.get('server_rss_mib'))} MiB, "
        f"server CPU {fmt(r.get('server_cpu_us_per_request'))} µs and "
        f"{fmt(r.get('server_context_switches_per_request'), 2)} context switches per request"
        + (f"; ERRORS {r['errors']}" if r["errors"] else "")
    )


_LINE = re.compile(r":\d+\)$")


def summarise_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Own and total (inclusive) samples per function, and own samples per package, from
    py-spy's raw (collapsed) stacks."""
    own: Counter[str] = Counter()
    own_lines: Counter[str] = Counter()
    total: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        leaf = _LINE.sub(")", frames[-1])
        own[leaf] += n
        own_lines[frames[-1]] += n
        packages[_package(frames[-1])] += n
        for f in {_LINE.sub(")", f) for f in frames}:
            total[f] += n

    def errands(counter: Counter[str]) -> list[tuple[str, int]]:
        return [(f, n) for f, n in counter.most_common() if _package(f) == "errands"][:top]

    return {
        "samples": samples,
        "by_package_own": packages.most_common(),
        "own": own.most_common(top),
        "total": total.most_common(top),
        "errands_total": errands(total),
        "errands_own": errands(own),
        "errands_own_lines": errands(own_lines),
    }


def _package(frame: str) -> str:
    """``errands``, ``sqlalchemy``, ``asyncio``, … of a py-spy frame ``name (file:line)``."""
    where = _LINE.sub("", frame.rpartition(" (")[2].rstrip(")") + ")").rstrip(")")
    where = re.sub(r":\d+$", "", where)
    if "/" in where:
        return where.split("/", 1)[0]
    return where.removesuffix(".py").removeprefix("<frozen ").rstrip(">")


# -- reporting ---------------------------------------------------------------------------
def fmt(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median requests/s (the first of the two middle ones)."""
    ordered = sorted(runs, key=lambda r: r["per_s"])
    return ordered[(len(ordered) - 1) // 2]


def load_row(label: str, r: dict[str, Any]) -> str:
    lat, cpu = r["latency_ms"], r["cpu_percent"]
    bad = r["unexpected"] + sum(r["errors"].values())
    return (
        f"| {label} | {fmt(r['per_s'])} | {fmt(lat.get('p50'), 2)} | {fmt(lat.get('p99'), 2)} | "
        f"{fmt(lat.get('max'), 1)} | {fmt(cpu.get('server'))} | {fmt(cpu.get('client'))} | "
        f"{fmt(r.get('server_cpu_us_per_request'))} | "
        f"{fmt(r.get('server_context_switches_per_request'), 1)} | "
        f"{', '.join(f'{k}×{v}' for k, v in r['statuses'].items())}"
        f"{f' (**{bad} bad**)' if bad else ''} | {_quiet(r)} |"
    )


def _quiet(r: dict[str, Any]) -> str:
    q = r.get("before") or {}
    return f"{fmt(q.get('loadavg'), 1)} / {fmt(q.get('cpu_calib_ms'), 0)}"


def report(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    cfg = results["config"]
    lines = [
        f"# errands HTTP API benchmark ({results['started']})",
        "",
        f"- commit `{results['commit'][:12]}` ({results['commit_subject']}); "
        f"source fingerprint `{results['fingerprint']}`",
        f"- machine: {m['nproc']} cores, {m['mem_gib']} GiB, Linux {m['kernel']}, Python "
        f"{m['python']}, SQLite {m['sqlite']}; load average before "
        f"{' / '.join(f'{x:.2f}' for x in m['loadavg_before'])}, after "
        f"{' / '.join(f'{x:.2f}' for x in m['loadavg_after'])}",
        (
            f"- server: 1 gunicorn process, gthread worker, {cfg.get('threads')} threads "
            "(errands.flask.task_blueprint), "
            if cfg.get("framework") == "flask"
            else f"- server: 1 uvicorn process (http={cfg['http']}, loop={cfg['loop']}), "
        )
        + (
            f"PostgreSQL {m['postgresql']['version']}"
            if cfg.get("database") == "pg"
            else f"SQLite synchronous={cfg['synchronous']}"
        )
        + ", database threads "
        f"{cfg.get('pool_size') or 'default (4)'}; client: separate process, "
        f"loop={cfg['client_loop']}, "
        f"{cfg['concurrency']} keep-alive connections; {cfg['warmup']:.0f} s warm-up + "
        f"{cfg['duration']:.0f} s measured per test × {cfg['repeats']}",
        "",
    ]
    if results.get("status_reads") or results.get("submits"):
        lines += [
            "| test | requests/s | p50 ms | p99 ms | max ms | server CPU % | client CPU % "
            "| server CPU µs / request | server context switches / request | statuses "
            "| load avg / calib ms before |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        sr = results.get("status_reads") or {}
        if sr.get("get"):
            g = median_run(sr["get"])
            lines.append(load_row(f"`GET /api/tasks/{{id}}` → 200 ({cfg['tasks']} tasks)", g))
        if sr.get("get-inm"):
            c = median_run(sr["get-inm"])
            lines.append(load_row("same + `If-None-Match: <ETag>` → 304", c))
        if sr.get("floor"):
            lines.append(
                load_row(
                    "floor: `GET /api/ping`, same app, no errands work", median_run(sr["floor"])
                )
            )
        if results.get("submits"):
            lines.append(
                load_row("`POST /api/tasks` → 202 (1,000 owners)", median_run(results["submits"]))
            )
        if sr.get("get") and sr.get("get-inm") and cfg["repeats"] > 1:
            lines += [
                "",
                "Each run (requests/s): GET "
                + ", ".join(fmt(r["per_s"]) for r in sr["get"])
                + "; GET + If-None-Match "
                + ", ".join(fmt(r["per_s"]) for r in sr["get-inm"])
                + (
                    "; floor " + ", ".join(fmt(r["per_s"]) for r in sr["floor"])
                    if sr.get("floor")
                    else ""
                )
                + "; POST "
                + ", ".join(fmt(r["per_s"]) for r in results.get("submits") or []),
            ]
        if sr.get("get") and sr.get("get-inm"):
            ratio = results["ratios"]["inm_vs_plain"]
            lines += [
                "",
                f"304 vs 200 throughput ratio: **{ratio:.2f}×** "
                f"(p50 {results['ratios']['inm_vs_plain_p50']:.2f}× of the plain read's)"
                + (
                    ""
                    if cfg["repeats"] == 1
                    else "; median of the pairs "
                    + ", ".join(f"{x:.2f}×" for x in results["ratios"]["inm_vs_plain_each"])
                ),
            ]
        if results.get("ratios", {}).get("floor_vs_plain"):
            lines += [
                "",
                f"Floor vs plain read: the same app answers `GET /api/ping` "
                f"**{results['ratios']['floor_vs_plain']:.2f}×** as fast as a task read "
                "(what HTTP + FastAPI cost alone).",
            ]
        lines.append("")
    f = results.get("fanout")
    if f:
        pw = f["events_per_watcher"]
        d = f["progress_delay_ms"]
        cpu = f["cpu_percent"]
        lines += [
            f"Fan-out: {f['watchers']:,} SSE watchers of one task on one web process; the task "
            f"reports progress every 0.1 s for {cfg['fanout_seconds']:.0f} s, the worker writes "
            "it every 0.1 s (`progress_interval=0.1`).",
            "",
            "| metric | value |",
            "|---|---:|",
            f"| watchers connected / failed | {f['primed']:,} / {f['failed']:,} "
            f"(in {f['connect_s']:.1f} s) |",
            f"| progress versions written (between running and done) | "
            f"{fmt(f['progress_versions_written'])} |",
            f"| progress events per watcher: min / median / max | {fmt(pw['min'])} / "
            f"{fmt(pw['median'])} / {fmt(pw['max'])} |",
            f"| progress versions delivered (to any watcher) | "
            f"{fmt(f['progress_versions_delivered'])} |",
            f"| watchers that got every version | {pw['all_versions']:,} of {f['watchers']:,} |",
            f"| events delivered in all | {pw['total']:,} |",
            f"| delay write → receipt p50 / p90 / p99 / max ms | {fmt(d.get('p50'), 1)} / "
            f"{fmt(d.get('p90'), 1)} / {fmt(d.get('p99'), 1)} / {fmt(d.get('max'), 1)} |",
            f"| one version reaching all watchers (first → last receipt) p50 / max ms | "
            f"{fmt(f['spread_ms'].get('p50'), 1)} / {fmt(f['spread_ms'].get('max'), 1)} |",
            f"| `done` event delay p50 / max ms | {fmt(f['done_delay_ms'].get('p50'), 1)} / "
            f"{fmt(f['done_delay_ms'].get('max'), 1)} |",
            f"| server CPU % / client CPU % / worker CPU % | {fmt(cpu.get('server'))} / "
            f"{fmt(cpu.get('client'))} / {fmt(f.get('worker_cpu_percent'))} |",
            f"| client CPU per event received | {fmt(f.get('client_cpu_us_per_event'), 1)} µs |",
            f"| streams ended | {', '.join(f'{k}: {v}' for k, v in f['endings'].items())} |",
            f"| load average / CPU calibration ms before | {_quiet(f)} |",
            "",
        ]
    if results["errors"]:
        lines += ["**Errors:**", "", *(f"- {e}" for e in results["errors"]), ""]
    if results.get("profiles"):
        lines += ["Profile (py-spy, server process; the profiled runs are slower):", ""]
        for label, p in results["profiles"].items():
            n = p["samples"] or 1
            pkgs = ", ".join(f"{k} {100 * v / n:.0f}%" for k, v in p["by_package_own"][:8])
            lines += [
                f"- {label} ({cfg['profile']} mode, {p['samples']} samples); own time by "
                f"package: {pkgs}",
                "  - errands functions, inclusive:",
                *(f"    - {100 * v / n:5.1f}%  `{f}`" for f, v in p["errands_total"][:12]),
                "  - errands functions, own:",
                *(f"    - {100 * v / n:5.1f}%  `{f}`" for f, v in p["errands_own"][:8]),
            ]
        lines.append("")
    return lines


def machine() -> dict[str, Any]:
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        mem = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    return {
        "nproc": os.cpu_count(),
        "mem_gib": mem,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        "loadavg_before": os.getloadavg(),
    }


def check_logs(logdir: Path) -> list[str]:
    problems = []
    for f in sorted(logdir.glob("*.log")):
        text = f.read_text(errors="replace")
        for marker in ("Traceback", " ERROR ", "ERROR:", "Exception in ASGI"):
            if marker in text:
                problems.append(f"{f.name}: {text.count(marker)}× {marker.strip()!r} (see {f})")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument("--duration", type=float, default=None, help="measured s per test (10)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up s per test (2)")
    ap.add_argument("--watchers", type=int, default=None, help="SSE watchers (1000)")
    ap.add_argument("--fanout-seconds", type=float, default=None, help="the watched task (20)")
    ap.add_argument("--tasks", type=int, default=None, help="tasks the status test reads (300)")
    ap.add_argument("--concurrency", type=int, default=50, help="client connections (50)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each load test (median)")
    ap.add_argument("--only", default="status,submit,fanout", help="tests to run")
    ap.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="skip the framework floor (GET /api/ping) in the status test",
    )
    ap.add_argument("--database", default="sqlite", choices=["sqlite", "pg"])
    ap.add_argument(
        "--framework",
        default="fastapi",
        choices=["fastapi", "flask"],
        help="task_api under uvicorn, or errands.flask's blueprint under gunicorn (gthread)",
    )
    ap.add_argument("--threads", type=int, default=16, help="gunicorn's threads (flask)")
    ap.add_argument("--pg-url", default=None, help="PostgreSQL server (bench/_pg.py's default)")
    ap.add_argument("--synchronous", default="full", choices=["full", "normal"])
    ap.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help="the server's database threads/connections (Errands(pool_size=); default 4)",
    )
    have_fast = module_available("httptools") and module_available("uvloop")
    ap.add_argument(
        "--http", default="httptools" if have_fast else "h11", choices=["h11", "httptools"]
    )
    ap.add_argument(
        "--loop", default="uvloop" if have_fast else "asyncio", choices=["asyncio", "uvloop"]
    )
    ap.add_argument(
        "--client-loop", default="uvloop" if module_available("uvloop") else "asyncio",
        choices=["asyncio", "uvloop"],
    )  # fmt: skip
    ap.add_argument(
        "--max-load",
        type=float,
        default=None,
        help="before each test, wait (≤ --max-wait s) for the 1-min load average to drop below",
    )
    ap.add_argument("--max-wait", type=float, default=120.0)
    ap.add_argument(
        "--profile",
        nargs="?",
        const="gil",
        default=None,
        choices=["gil", "active"],
        help="py-spy the server during the status reads: the thread holding the GIL\n"
        "(default) or every active thread; the profiled runs are slower",
    )
    ap.add_argument("--ref", default="HEAD", help="git commit of the library to measure")
    ap.add_argument("--name", default="web", help="bench/results/NAME.json and NAME.md")
    args = ap.parse_args(argv)
    quick = args.quick
    for key, full, short in (
        ("duration", 10.0, 2.0),
        ("warmup", 2.0, 1.0),
        ("watchers", 1000, 100),
        ("fanout_seconds", 20.0, 3.0),
        ("tasks", 300, 50),
    ):
        if getattr(args, key) is None:
            setattr(args, key, short if quick else full)
    only = {t.strip() for t in args.only.split(",") if t.strip()}

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from bench import _pg
    from bench._source import fingerprint, snapshot

    src, sha = snapshot(args.ref)
    raise_nofile()
    global LOGS
    LOGS = RESULTS / f"{args.name}-logs"
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    tmp = Path(tempfile.mkdtemp(prefix="errands-web-bench-"))
    db = tmp / "bench.db"
    query = "" if args.synchronous == "full" else "?synchronous=normal"
    procs = Processes(LOGS)
    env = dict(os.environ)
    env.update(
        ERRANDS_DATABASE_URL=f"sqlite:///{db}{query}",
        PYTHONPATH=os.pathsep.join(
            [str(src), str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        ),
        PYTHONUNBUFFERED="1",
    )
    env.pop("BENCH_WEB_PROGRESS_INTERVAL", None)
    env.pop("BENCH_WEB_POOL_SIZE", None)
    if args.pool_size:
        env["BENCH_WEB_POOL_SIZE"] = str(args.pool_size)
    run = Run(args, procs, tmp)
    run.env = env
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": sha,
        "commit_subject": git("log", "-1", "--format=%s", sha)[:80],
        "src_dirty_vs_head": bool(git("status", "--porcelain", "src")),
        "fingerprint": fingerprint(src / "errands"),
        "machine": machine(),
        "config": {
            "database": args.database,
            "framework": args.framework,
            "threads": args.threads,
            "http": args.http,
            "loop": args.loop,
            "client_loop": args.client_loop,
            "synchronous": args.synchronous,
            "pool_size": args.pool_size,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "duration": args.duration,
            "repeats": args.repeats,
            "tasks": args.tasks,
            "watchers": args.watchers,
            "fanout_seconds": args.fanout_seconds,
            "quick": quick,
            "max_load": args.max_load,
            "profile": args.profile,
        },
        "errors": [],
    }
    m = results["machine"]
    pg_admin = args.pg_url or _pg.DEFAULT_ADMIN_URL
    if args.database == "pg":
        m["postgresql"] = _pg.info(pg_admin)
    log(
        f"errands web benchmark: commit {sha[:12]}, {m['nproc']} cores, load average "
        f"{' / '.join(f'{x:.2f}' for x in m['loadavg_before'])}; database "
        f"{db if args.database == 'sqlite' else 'PostgreSQL ' + m['postgresql']['version']}"
    )

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    rc = 0
    databases = contextlib.ExitStack()
    try:
        if args.database == "pg":
            env["ERRANDS_DATABASE_URL"] = databases.enter_context(
                _pg.fresh_database(
                    pg_admin, f"errands_web_bench_{os.getpid()}", env, LOGS / "migrate.log"
                )
            )
        else:
            migrate = run.errands("migrate", "migrate", "--app", "bench.web_tasks:app")
            if migrate.wait(60) != 0:
                raise RuntimeError(f"errands migrate failed; see {LOGS}/migrate.log")
        run.start_server()
        log(f"server pid {run.server.pid} on port {run.port}")  # type: ignore[union-attr]
        if "status" in only:
            log(f"seeding {args.tasks} finished tasks")
            targets = run.seed()
            log("status reads")
            results["status_reads"] = run.status_reads(targets)
            # each 304 run against the plain run just before it, then the median
            pairs = list(
                zip(results["status_reads"]["get"], results["status_reads"]["get-inm"], strict=True)
            )
            per_s = [c["per_s"] / g["per_s"] for g, c in pairs]
            p50 = [c["latency_ms"]["p50"] / g["latency_ms"]["p50"] for g, c in pairs]
            results["ratios"] = {
                "inm_vs_plain": statistics.median(per_s),
                "inm_vs_plain_p50": statistics.median(p50),
                "inm_vs_plain_each": per_s,
            }
            floor = results["status_reads"]["floor"]
            if floor:
                results["ratios"]["floor_vs_plain"] = statistics.median(
                    f["per_s"] / g["per_s"]
                    for g, f in zip(results["status_reads"]["get"], floor, strict=True)
                )
        if "submit" in only:
            log("submits")
            results["submits"] = run.submits()
        if "fanout" in only:
            log(f"fan-out: {args.watchers} watchers, {args.fanout_seconds:.0f} s task")
            results["fanout"] = run.fanout()
    except KeyboardInterrupt as exc:
        results["errors"].append(f"interrupted ({exc or 'Ctrl-C'})")
        rc = 130
    except Exception as exc:
        results["errors"].append(f"{type(exc).__name__}: {exc}")
        rc = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # let the cleanup (≤ ~15 s a process) finish
        procs.stop_all()
        databases.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    results["errors"] += check_logs(LOGS)
    for r in [*(results.get("status_reads") or {}).values(), results.get("submits") or []]:
        for x in r:
            if x["errors"] or x["unexpected"]:
                results["errors"].append(
                    f"{x['kind']}: {x['unexpected']} unexpected statuses {x['statuses']}, "
                    f"errors {x['errors']}"
                )
    if results.get("fanout"):
        f = results["fanout"]
        if f["errors"] or f["failed"]:
            results["errors"].append(f"fan-out: {f['failed']} failed, errors {f['errors']}")
    results["profiles"] = run.profiles
    results["machine"]["loadavg_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=1, default=str))
    lines = report(results)
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    log("")
    log("\n".join(lines))
    log(f"written: {RESULTS / args.name}.json and .md; logs in {LOGS}")
    return rc or (1 if results["errors"] else 0)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        sys.exit(client_main(sys.argv[2:]))
    sys.exit(main())
