"""A client that leaves a long live stream is normal: the server stops writing to it at
once and logs nothing above debug (before, a browser leaving a finished task with
thousands of hits got a burst of ``WARNING asyncio: socket.send() raised exception.``,
one per frame written after the connection was lost).

A real uvicorn server (``serve``), a finished task with many outputs, and raw socket
clients that read the beginning of its event stream and then reset the connection; the
log of the whole process is captured.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import struct
from collections.abc import Callable

import pytest

from errands import Errands
from tests.conftest import FAST, LiveServer, eventually

Serve = Callable[..., LiveServer]
#: Outputs of the finished task: far more frames than a socket's buffers hold.
ITEMS = 5000


def finished_task(app: Errands) -> str:
    record = app.sync.submit("steps", {"steps": ITEMS, "delay": 0}, owner="u1")
    app.run_worker(**(FAST | {"burst": True}))
    assert app.sync.get(record.id, owner="u1").status.value == "succeeded"
    return record.id


def leave_early(port: int, path: str, headers: str = "") -> bytes:
    """GET ``path``, read the first part of the answer, then reset the connection (as a
    browser leaving the page: no more reading, the socket closed)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-User: u1\r\n{headers}\r\n"
    sock.sendall(request.encode())
    got = b""
    while len(got) < 20_000:
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset: every later write of the server fails
    return got


@pytest.mark.parametrize("path", ["/events", "/events?last_event_id=0-0"])
def test_a_client_leaving_a_long_stream_is_not_logged(
    app: Errands, serve: Serve, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    server = serve()
    task_id = finished_task(app)
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        got = leave_early(port, f"/api/tasks/{task_id}{path}")
        assert got.startswith(b"HTTP/1.1 200") and b"event: output" in got
    # The streams ended: nothing of them is left watching the task.
    eventually(lambda: not server.hub.feeds, "the streams to let go of the task")
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [f"{r.name}: {r.getMessage()}" for r in loud[:5]]


def test_a_client_leaving_a_long_websocket_is_not_logged(
    app: Errands, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """The same on the WebSocket (the handshake by hand: the client resets the
    connection mid-stream, without a closing handshake)."""
    server = serve()
    task_id = finished_task(app)
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    caplog.set_level(logging.DEBUG)
    upgrade = (
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
    )
    for _ in range(3):
        got = leave_early(port, f"/api/tasks/{task_id}/ws", upgrade)
        assert got.startswith(b"HTTP/1.1 101") and b'"event":"output"' in got
    eventually(lambda: not server.hub.feeds, "the streams to let go of the task")
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [f"{r.name}: {r.getMessage()}" for r in loud[:5]]
