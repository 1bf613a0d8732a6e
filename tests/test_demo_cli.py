"""``errands demo`` and ``errands createadmin`` as real commands."""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import eventually

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path) -> dict[str, str]:
    return os.environ | {
        "ERRANDS_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
        "PYTHONPATH": str(ROOT / "src"),
    }


def _errands(tmp_path: Path, *args: str, input: str = "") -> subprocess.CompletedProcess[str]:
    """``errands ARGS`` in a process of its own, ``input`` on its standard input (a
    pipe: not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "errands", *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow  # `errands createadmin` processes, hashing with the production hasher
def test_createadmin(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    made = _errands(
        tmp_path, "createadmin", "Root@Example.com", "--password", "s3cret-pass", "--data", data
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "root@example.com is an administrator"
    again = _errands(tmp_path, "createadmin", "root@example.com", "--data", data)
    assert again.returncode == 0, again.stderr
    missing = _errands(tmp_path, "createadmin", "nobody@example.com", "--data", data)
    assert missing.returncode == 2
    assert "give a password" in missing.stderr
    short = _errands(
        tmp_path, "createadmin", "x@example.com", "--password", "short", "--data", data
    )
    assert short.returncode == 2 and "at least 8" in short.stderr


@pytest.mark.slow
def test_demo_command_serves_the_app_and_stops_cleanly(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.py").write_text("needle = 1\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "errands",
            "demo",
            "--port",
            str(port),
            "--corpus",
            str(corpus),
            "--data",
            str(tmp_path / "data"),
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(f"errands demo: http://127.0.0.1:{port}/")
        base = f"http://127.0.0.1:{port}"
        page = eventually(
            lambda: httpx.get(f"{base}/login", timeout=2),
            "the demo to serve",
            timeout=30,
            every=0.1,
            tolerate=(httpx.TransportError,),
        )
        assert page.status_code == 200 and 'name="csrf"' in page.text
        assert httpx.get(f"{base}/static/errands-task.js").status_code == 200
        metrics = httpx.get(f"{base}/metrics")  # administrators only
        assert metrics.status_code == 404 and "errands_queue_depth" not in metrics.text
        assert httpx.get(f"{base}/api/tasks").status_code == 401
        assert _split_huge_header(port).startswith(b"HTTP/1.1 431 ")
        assert (tmp_path / "demo.db").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0


def _split_huge_header(port: int) -> bytes:
    """The answer's first line and headers to a 17 KB header block sent in 1,400-byte
    packets, as it arrives over a real network (the server must not refuse it before the
    API can answer its 431 problem document)."""
    request = (
        b"GET /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
        + b"a" * 17_000
        + b"\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(request), 1400):
            conn.sendall(request[i : i + 1400])
            time.sleep(0.002)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head = answer.partition(b"\r\n\r\n")[0]
    assert b"content-type: application/problem+json" in head.lower(), answer[:500]
    return head


@pytest.mark.slow  # `errands createadmin` processes, hashing with the production hasher
def test_createadmin_reads_a_new_accounts_password_from_standard_input(tmp_path: Path) -> None:
    """Not a terminal (a script): the password is standard input's first line."""
    data = str(tmp_path / "data")
    args = ["createadmin", "new@example.com", "--data", data]
    made = _errands(tmp_path, *args, input="s3cret-pass\nignored\n")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "new@example.com is an administrator"
    assert "s3cret-pass" not in made.stdout + made.stderr
    # An existing account is not asked for anything.
    again = _errands(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    # Nothing on standard input: no password, nothing created.
    empty = _errands(tmp_path, "createadmin", "other@example.com", "--data", data)
    assert empty.returncode == 2 and "give a password" in empty.stderr


def _read_until(fd: int, text: bytes, timeout: float = 30) -> bytes:
    """What the terminal ``fd`` shows, up to and with ``text``."""
    got = b""
    deadline = time.monotonic() + timeout
    while text not in got:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {text!r} on the terminal: {got!r}"
        got += os.read(fd, 1024)
    return got


@pytest.mark.slow
@pytest.mark.parametrize(("second", "made"), [("s3cret-pass", True), ("other-pass", False)])
def test_createadmin_asks_for_a_new_accounts_password_twice_on_a_terminal(
    tmp_path: Path, second: str, made: bool
) -> None:
    """On a terminal (a pseudo-terminal here, as the process's standard input and
    error; a new session, so no other terminal is its /dev/tty), ``getpass`` asks twice
    without echoing; two different answers create nothing."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "errands",
            "createadmin",
            "tty@example.com",
            "--data",
            str(tmp_path / "data"),
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdin=child,
        stdout=subprocess.PIPE,
        stderr=child,
        start_new_session=True,
    )
    os.close(child)
    try:
        shown = _read_until(main, b"Password for the new account tty@example.com: ")
        os.write(main, b"s3cret-pass\n")
        shown += _read_until(main, b"The same password again: ")
        os.write(main, second.encode() + b"\n")
        out, _ = proc.communicate(timeout=60)
        shown += _drain(main)
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"s3cret-pass" not in shown and second.encode() not in shown  # not echoed
    if made:
        assert proc.returncode == 0, shown
        assert out.decode().strip() == "tty@example.com is an administrator"
    else:
        assert proc.returncode == 2
        assert b"The two passwords differ; nothing was changed." in shown


def _drain(fd: int) -> bytes:
    got = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # the other side closed
            break
        if not chunk:
            break
        got += chunk
    return got
