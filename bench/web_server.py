"""The web benchmark's server: one uvicorn process serving ``bench.web_tasks:make_api``.

    python bench/web_server.py --port 8000 [--http httptools|h11] [--loop uvloop|asyncio]

The same as ``python -m uvicorn bench.web_tasks:make_api --factory --log-level warning
--no-access-log`` (one process), after raising the open-file limit (the fan-out test
holds a thousand connections). The repository must be on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import resource

import uvicorn


def raise_nofile(want: int = 65536) -> int:
    """Raise the soft open-file limit towards ``want`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--http", default="auto", choices=["auto", "h11", "httptools"])
    ap.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    args = ap.parse_args()
    raise_nofile()
    uvicorn.run(
        "bench.web_tasks:make_api",
        factory=True,
        host=args.host,
        port=args.port,
        http=args.http,
        loop=args.loop,
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
