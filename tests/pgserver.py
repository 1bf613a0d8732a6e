"""A private PostgreSQL server for tests that stop, restart, crash or pause it.

The machine's shared server (``127.0.0.1:5432``) serves every other PostgreSQL test,
possibly in another pytest process at the same moment: a test that restarts it breaks
theirs. Such a test runs its own cluster instead::

    server = PrivatePostgres(Path(tempfile.mkdtemp(prefix="errands-pg-")))
    server.start()                        # initdb the first time, then pg_ctl start
    url = server.create_database("app")   # postgresql://postgres@127.0.0.1:PORT/app
    server.restart()                      # every connection is cut
    server.pause(); server.resume()       # SIGSTOP / SIGCONT: a server that hangs
    server.kill(); server.start()         # a crash, then crash recovery
    server.close()                        # no process left, the directory deleted

The cluster lives in ``root``: ``data/`` (the data directory), ``sock/`` (its unix
socket), ``postgres.log`` (the server's log). It listens on 127.0.0.1 on a free port
below the kernel's ephemeral range (an outgoing connection never takes it while the
server is down for a restart), with trust authentication and ``fsync=off``.

``initdb`` and ``postgres`` refuse to run as root: when the current user is root they
run as the ``postgres`` system user (``root`` is handed to it; its parent directories
must let it in, as the system's temporary directory does).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: Written into a server's root: the pid of the process that owns the server. A root
#: whose owner is gone is a leftover of a crashed run (see :func:`reap_leftovers`).
OWNER_FILE = "errands-pgserver.owner"
#: The prefix of the roots :meth:`PrivatePostgres.temporary` makes.
ROOT_PREFIX = "errands-pg-"

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "shared_buffers": "16MB",
    "fsync": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "dynamic_shared_memory_type": "posix",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "log_timezone": "'UTC'",
    "timezone": "'UTC'",
}


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (or no user to run them as)."""


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``: ``pg_config
    --bindir``, else the newest ``/usr/lib/postgresql/*/bin``, else ``PATH``."""
    try:
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        if out and (Path(out) / "initdb").is_file():
            return Path(out)
    except (OSError, subprocess.SubprocessError):
        pass
    versions = []
    for candidate in glob.glob("/usr/lib/postgresql/*/bin"):
        version = Path(candidate).parent.name
        if (Path(candidate) / "initdb").is_file():
            key = tuple(int(p) if p.isdigit() else 0 for p in version.split("."))
            versions.append((key, Path(candidate)))
    if versions:
        return max(versions)[1]
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).resolve().parent
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb): not in pg_config --bindir, "
        "/usr/lib/postgresql/*/bin or PATH"
    )


def pick_port() -> int:
    """A free TCP port on 127.0.0.1 below the ephemeral range (so that no outgoing
    connection takes it while the server is down); any free port if there is no room."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    if low > 12000:
        for _ in range(100):
            port = random.randrange(10000, low)
            if port_is_free(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- processes --------------------------------------------------------------------------
def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _children(parent: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[1] == parent and stat[0] not in ("Z", "X"):
                pids.append(int(entry))
    return pids


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _postmaster_of(data: Path) -> int | None:
    """The pid of the postmaster running on ``data``, if one runs: the one in
    ``postmaster.pid`` if it is alive and runs on that directory, else any process
    whose command line names the directory (a pid file removed under it)."""
    try:
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        pid = 0
    marker = f"-D {data}"
    if pid > 0 and _alive(pid) and marker in _cmdline(pid):
        return pid
    for entry in os.listdir("/proc"):
        pid = int(entry) if entry.isdigit() else 0
        if pid and _cmdline(pid).rstrip().endswith(marker) and _alive(pid):
            return pid
    return None


def _kill_cluster(data: Path, timeout: float = 10.0) -> None:
    """SIGKILL the postmaster on ``data`` and every child of it; wait until they are gone."""
    deadline = time.monotonic() + timeout
    while (pid := _postmaster_of(data)) is not None:
        children = _children(pid)
        _signal([pid, *children], signal.SIGKILL)
        _wait_gone([pid, *children], deadline)
        if time.monotonic() > deadline:
            raise RuntimeError(f"the PostgreSQL server on {data} does not die (pid {pid})")


def _wait_gone(pids: list[int], deadline: float) -> bool:
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def reap_leftovers(parent: Path | None = None) -> list[Path]:
    """Kill the servers and delete the roots ``ROOT_PREFIX*`` in ``parent`` (the
    temporary directory by default) whose owner process is gone: leftovers of a run
    that crashed before it could close them. Returns the roots it deleted."""
    parent = Path(tempfile.gettempdir()) if parent is None else parent
    reaped = []
    for root in parent.glob(f"{ROOT_PREFIX}*"):
        try:
            owner = int((root / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue  # not a server's root, or one that is being set up
        if _alive(owner):
            continue
        with contextlib.suppress(RuntimeError):
            _kill_cluster(root / "data", timeout=5)
            shutil.rmtree(root, ignore_errors=True)
            reaped.append(root)
    return reaped


_open: set[PrivatePostgres] = set()
_reaped = False


@atexit.register
def _close_all() -> None:
    for server in list(_open):
        with contextlib.suppress(Exception):
            server.close()


class PrivatePostgres:
    """A PostgreSQL cluster of its own in ``root`` (created if missing), on a free port.
    Every method may be called in any state; :meth:`close` leaves no process behind."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self.port = 0
        self._bindir: Path | None = None
        self._paused = False
        #: Seconds the last :meth:`start` took, initdb included when it ran.
        self.startup_seconds = 0.0

    @classmethod
    def temporary(cls) -> PrivatePostgres:
        """A server whose root is a new directory in the system's temporary directory."""
        return cls(Path(tempfile.mkdtemp(prefix=ROOT_PREFIX)))

    # -- state ------------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid while it runs (paused or not), else None."""
        return _postmaster_of(self.data) if self.data.is_dir() else None

    def pids(self) -> list[int]:
        """Every process of the cluster: the postmaster and its children."""
        pid = self.postmaster_pid()
        return [] if pid is None else [pid, *_children(pid)]

    def running(self) -> bool:
        return self.postmaster_pid() is not None

    @property
    def paused(self) -> bool:
        return self._paused

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- running commands ---------------------------------------------------------------
    def _owner(self) -> tuple[int, int] | None:
        """(uid, gid) of the ``postgres`` system user when we are root (the server's
        binaries refuse to run as root); None: run them as ourselves."""
        if os.geteuid() != 0:
            return None
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable(
                "running as root and there is no 'postgres' user to run the server as"
            ) from None
        return user.pw_uid, user.pw_gid

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        if self._bindir is None:
            self._bindir = find_bindir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        owner = self._owner()
        return subprocess.run(
            [str(self._bindir / argv[0]), *argv[1:]],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            user=None if owner is None else owner[0],
            group=None if owner is None else owner[1],
            extra_groups=None if owner is None else [],
        )

    def _fail(self, what: str, result: subprocess.CompletedProcess[str]) -> RuntimeError:
        return RuntimeError(
            f"{what} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
            f"\n--- {self.logfile} (tail):\n{self.log_tail()}"
        )

    # -- life cycle ---------------------------------------------------------------------
    def _init(self) -> None:
        global _reaped
        if not _reaped:
            _reaped = True
            reap_leftovers(self.root.parent)
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        (self.root / OWNER_FILE).write_text(f"{os.getpid()}\n")
        owner = self._owner()
        if owner is not None:
            for path in (self.root, self.sockets):
                os.chown(path, *owner)
        result = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        )
        if result.returncode != 0:
            raise self._fail("initdb", result)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# tests/pgserver.py\ninclude 'errands.conf'\n")

    def _configure(self) -> None:
        settings = SETTINGS | {"port": str(self.port)}
        # A unix socket path is limited to 107 bytes; without one, TCP only.
        sockets = str(self.sockets) if len(str(self.sockets)) < 80 else ""
        settings["unix_socket_directories"] = f"'{sockets}'"
        text = "".join(f"{name} = {value}\n" for name, value in settings.items())
        (self.data / "errands.conf").write_text(text)

    def start(self) -> None:
        """Start the server (initdb first if there is no cluster yet); return when it
        accepts connections. A paused server is resumed; after :meth:`kill`, the server
        recovers from the crash."""
        began = time.monotonic()
        if self.running():
            self.resume()
            self._wait_ready()
            return
        if not (self.data / "PG_VERSION").is_file():
            _open.add(self)
            shutil.rmtree(self.data, ignore_errors=True)
            self._init()
        _open.add(self)
        self._paused = False
        self._clear_stale_lock_files()
        for attempt in range(5):
            if not self.port:
                self.port = pick_port()
            self._configure()
            result = self._run(
                "pg_ctl", "start", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60"
            )
            if result.returncode == 0:
                break
            self._kill()  # whatever it left half started
            if attempt < 4 and "could not bind" in self.log_tail(20):
                self.port = 0  # taken by someone else meanwhile: another port
                continue
            raise self._fail("pg_ctl start", result)
        self._wait_ready()
        self.startup_seconds = time.monotonic() - began

    def _clear_stale_lock_files(self) -> None:
        """After a crash, ``postmaster.pid`` and the socket's lock file name a dead
        postmaster. PostgreSQL starts over such files unless a process of that pid
        exists: the dead postmaster as a zombie (it is not our child: init reaps it,
        here up to 2 s later), or an unrelated process that took the pid. No postmaster
        runs on the directory (the caller checked), so such files go. (The crashed
        server's shared memory block is found and removed all the same: its key comes
        from the data directory.)"""
        for lock in [self.data / "postmaster.pid", *self.sockets.glob(".s.PGSQL.*.lock")]:
            try:
                pid = int(lock.read_text().split("\n", 1)[0])
            except (OSError, ValueError):
                continue
            if Path(f"/proc/{pid}").exists():
                lock.unlink(missing_ok=True)
                if lock.suffix == ".lock":
                    lock.with_suffix("").unlink(missing_ok=True)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline or not self.running():
                    raise RuntimeError(
                        f"PostgreSQL on port {self.port} does not accept connections: {exc}"
                        f"\n--- {self.logfile} (tail):\n{self.log_tail()}"
                    ) from exc
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE`` (``smart``, ``fast`` or ``immediate``); a server that
        does not stop within a minute is killed."""
        if not self.running():
            self._paused = False
            return
        self.resume()
        result = self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60")
        if result.returncode != 0 and self.running():
            self._kill()

    def restart(self, mode: str = "fast") -> None:
        """Stop (``mode``) and start again, on the same port; return when the server
        accepts connections."""
        self.stop(mode)
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash). Its children exit when they see it gone;
        those that do not within 5 s are killed too, so that :meth:`start` can recover."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        children = _children(pid)
        _signal([pid], signal.SIGKILL)
        if self._paused:  # stopped children notice the postmaster's death only when resumed
            _signal(children, signal.SIGCONT)
            self._paused = False
        if not _wait_gone([pid, *children], time.monotonic() + 5):
            _signal(children, signal.SIGKILL)
            _wait_gone(children, time.monotonic() + 5)

    def _kill(self) -> None:
        _kill_cluster(self.data)
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP the postmaster, then every child of it: the server hangs, its
        sockets open (connections and new connection attempts get no answer)."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        _signal([pid], signal.SIGSTOP)  # first: it forks no more children
        self._paused = True
        _signal(_children(pid), signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT every process of the cluster (harmless when it is not paused)."""
        pid = self.postmaster_pid()
        if pid is not None:
            _signal([*_children(pid), pid], signal.SIGCONT)
        self._paused = False

    def close(self) -> None:
        """Stop whatever runs (immediate shutdown, then SIGKILL), paused or not, and
        delete ``root``. The server can be started again (a new cluster)."""
        try:
            if self.running():
                self.resume()
                with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                    self._run(
                        "pg_ctl",
                        "stop",
                        "-D",
                        str(self.data),
                        "-m",
                        "immediate",
                        "-w",
                        "-t",
                        "10",
                        timeout=15,
                    )
                self._kill()
        finally:
            _open.discard(self)
            self._paused = False
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- databases ----------------------------------------------------------------------
    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name``; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def __repr__(self) -> str:
        return f"PrivatePostgres({str(self.root)!r}, port={self.port})"
