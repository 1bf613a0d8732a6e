"""Is a worker process on this host still alive? Its identity, beyond a pid.

A worker that was killed cannot say so. Its leases run out in time, but a worker on the
same host can see at once that the process is gone, and hand its tasks back within
seconds. A pid alone cannot tell: the kernel reuses pids, and containers that share a
host name may each have their own pid namespace. So each worker records a *process
key*: the kernel's boot id, its pid namespace and its start time (in clock ticks since
boot). Another worker judges a row only when the boot id and the namespace are its own
(the pid then means the same process to both), and calls the worker dead when that pid
is gone, is a zombie, or started at another time (a new process under a reused pid).

This needs Linux's ``/proc``; elsewhere ``process_key()`` is None, nothing is judged, and
lease expiry alone recovers a dead worker's tasks.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

_PROC = Path("/proc")


@cache
def _host_part() -> str | None:
    """``<boot id>/<pid namespace>``: what two processes must share for one's pid to
    mean the same process to the other."""
    try:
        boot = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{namespace}"


def _start_ticks(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process, or None if there is
    no such process."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid …": comm may hold spaces and parentheses; the fields after
    # its last ")" are plain. The start time is field 22 of the line, the 20th after comm.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], fields[19]


def process_key(pid: int | None = None) -> str | None:
    """This process's key (or ``pid``'s), or None where it cannot be told."""
    host = _host_part()
    if host is None:
        return None
    pid = os.getpid() if pid is None else pid
    try:
        found = _start_ticks(pid)
    except (OSError, IndexError, ValueError):
        return None
    return None if found is None else f"{host}/{found[1]}"


def is_dead(pid: int, key: str | None) -> bool:
    """True when the process a worker row names (its ``pid`` and ``process_key``) is
    certainly gone. False when it is alive, or when this process cannot tell (another
    host, another pid namespace, no key)."""
    host = _host_part()
    if key is None or host is None:
        return False
    recorded_host, _, ticks = key.rpartition("/")
    if recorded_host != host:
        return False
    try:
        found = _start_ticks(pid)
    except (OSError, IndexError, ValueError):
        return False
    if found is None:
        return True
    state, started = found
    return state in ("Z", "X") or started != ticks
