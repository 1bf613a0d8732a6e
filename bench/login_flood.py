"""Another user's page latency while the demo's login form is flooded with wrong passwords.

    .venv/bin/python bench/login_flood.py                 # 10 s per phase, 50 flooders
    .venv/bin/python bench/login_flood.py --seconds 5 --clients 50

The demo (``errands.demo.web.create_app``, no worker, default Argon2 hashes) is served by
uvicorn in a child process on a fresh SQLite file. A signed-in user loads ``GET /tasks``
over and over, one request after another, for ``--seconds``: first with nothing else
going on ("quiet"), then while ``--clients`` parallel clients each post wrong passwords
to ``/login`` in a loop, each attempt for a new unknown address ("flood"). It prints the
page's p50 and p99 latency in both phases and how the flood's attempts were answered
(400 wrong password: hashed; 429 throttled: no hash; 503 busy: the hashing lane full,
no hash).

Two set-ups: the demo's defaults (the flooders share 127.0.0.1, so the per-address
throttle stops them after 20 attempts), and the per-address throttle opened wide, so
every attempt reaches the hashing lane (one thread, 8 waiting) and only the lane stands
between the flood and the other pages. Client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

READER = "reader@example.com"
PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def serve(port: int, data: Path, open_throttle: bool) -> None:
    """The child process: the demo on ``data``/demo.db, the reader registered."""
    import uvicorn

    from errands.demo.throttle import Rules
    from errands.demo.web import DemoSettings, create_app

    corpus = data / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "one.py").write_text("VALUE = 1\n")
    settings = DemoSettings(
        database_url=f"sqlite:///{data}/demo.db",
        data_dir=data / "data",
        corpus=corpus,
        worker=False,
    )
    if open_throttle:
        settings.address_throttle = Rules(attempts=1_000_000)
    app = create_app(settings)
    app.state.demo.accounts.register(READER, PASSWORD)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=512)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def csrf(client: httpx.Client, path: str) -> str:
    found = CSRF.search(client.get(path).text)
    assert found, path
    return found[1]


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99, in milliseconds."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


def read_pages(client: httpx.Client, seconds: float) -> list[float]:
    """Load the reader's "My tasks" page again and again; each load's duration."""
    took = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        r = client.get("/tasks")
        took.append(time.monotonic() - start)
        assert r.status_code == 200, r.status_code
    return took


def flood(
    url: str, clients: int, stop: threading.Event, answers: Counter[int]
) -> list[threading.Thread]:
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)

    def flooder(n: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            token = csrf(client, "/login")
            ready.wait()
            i = 0
            while not stop.is_set():
                data = {"email": f"flood{n}-{i}@example.com", "password": "wrong!", "csrf": token}
                status = client.post("/login", data=data).status_code
                with lock:
                    answers[status] += 1
                i += 1

    threads = [threading.Thread(target=flooder, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    return threads


def measure(open_throttle: bool, seconds: float, clients: int) -> dict[str, object]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="errands-login-flood-") as tmp:
        env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
        args = [sys.executable, __file__, "--serve", str(port), "--data", tmp]
        server = subprocess.Popen([*args, *(["--open"] if open_throttle else [])], env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{url}/login", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("the demo did not start") from None
                    time.sleep(0.2)
            with httpx.Client(base_url=url, timeout=120, follow_redirects=True) as reader:
                data = {"email": READER, "password": PASSWORD, "csrf": csrf(reader, "/login")}
                assert reader.post("/login", data=data).status_code == 200
                read_pages(reader, 1.0)  # warm up
                quiet = read_pages(reader, seconds)
                stop = threading.Event()
                answers: Counter[int] = Counter()
                threads = flood(url, clients, stop, answers)
                during = read_pages(reader, seconds)
                stop.set()
                for t in threads:
                    t.join(120)
        finally:
            server.terminate()
            server.wait(30)
    return {"quiet": quiet, "flood": during, "answers": dict(sorted(answers.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--open", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, Path(args.data), args.open)
        return
    print(
        f"GET /tasks of a signed-in user, {args.seconds:g} s per phase; flood: "
        f"{args.clients} parallel clients posting wrong passwords to /login"
    )
    print(f"{'set-up':<34} {'phase':<6} {'loads':>6} {'p50 ms':>8} {'p99 ms':>8}  flood answers")
    for open_throttle in (False, True):
        name = "per-address throttle opened" if open_throttle else "defaults (throttle + lane)"
        found = measure(open_throttle, args.seconds, args.clients)
        for phase in ("quiet", "flood"):
            samples = found[phase]
            assert isinstance(samples, list)
            p50, p99 = percentiles(samples)
            answers = found["answers"] if phase == "flood" else ""
            print(f"{name:<34} {phase:<6} {len(samples):>6} {p50:>8.1f} {p99:>8.1f}  {answers}")


if __name__ == "__main__":
    main()
