"""The demo's own command line: ``python -m errands.demo`` (or ``errands demo``, which
hands over to it).

    python -m errands.demo [serve] [--host H] [--port 8000] [--corpus DIR] [--data DIR]
                           [--concurrency N]
    python -m errands.demo createadmin EMAIL [--password P] [--data DIR]

The database is ``$ERRANDS_DATABASE_URL``, else ``sqlite:///errands-demo.db``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .accounts import AccountError
from .web import Demo, DemoSettings, create_app


def _settings(args: argparse.Namespace, **extra: Any) -> DemoSettings:
    """The settings for ``args`` (the database is ``DemoSettings``' default)."""
    corpus = getattr(args, "corpus", None)
    return DemoSettings(corpus=Path(corpus) if corpus else None, data_dir=Path(args.data), **extra)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    site = create_app(_settings(args, worker_options={"concurrency": args.concurrency}))
    print(f"errands demo: http://{args.host}:{args.port}/  (Ctrl-C stops it)", flush=True)
    # h11 refuses an incomplete header block over 16 KiB itself (a plain 400); let the
    # API answer its 431 problem document instead.
    uvicorn.run(
        site,
        host=args.host,
        port=args.port,
        log_level="warning",
        h11_max_incomplete_event_size=64 * 1024,
    )
    return 0


def createadmin(args: argparse.Namespace) -> int:
    demo = Demo(_settings(args, worker=False))
    demo.setup()
    try:
        user = demo.accounts.make_admin(args.email, args.password)
    except AccountError as exc:
        print(f"errands: {exc}", file=sys.stderr)
        return 2
    finally:
        demo.errands.close()
    print(f"{user.email} is an administrator")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="errands demo", description="The errands demo application."
    )
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("serve", help="serve the demo (web and worker in one process)")
    for target in (parser, p):
        target.add_argument("--host", default="127.0.0.1")
        target.add_argument("--port", type=int, default=8000)
        target.add_argument("--corpus", help="directory to search (default: the stdlib)")
        target.add_argument("--data", default=".errands-demo", help="exports and session secret")
        target.add_argument("--concurrency", type=int, default=4)
    p = sub.add_parser("createadmin", help="make a demo account an administrator")
    p.add_argument("email")
    p.add_argument("--password", help="create the account with this password if it is new")
    p.add_argument("--data", default=".errands-demo")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return createadmin(args) if args.command == "createadmin" else serve(args)


if __name__ == "__main__":
    sys.exit(main())
