"""The demo's own command line: ``python -m errands.demo`` (or ``errands demo``, which
hands over to it).

    python -m errands.demo [serve] [--host H] [--port 8000] [--corpus DIR] [--data DIR]
                           [--concurrency N] [--database-url URL]
    python -m errands.demo createadmin EMAIL [--password P] [--data DIR] [--database-url URL]

The database is ``--database-url``, else ``$ERRANDS_DATABASE_URL``, else
``sqlite:///errands-demo.db``.

``createadmin`` makes an existing account an administrator, or creates one. A new
account needs a password: ``--password``, or else it is asked for. On a terminal it is
read with ``getpass`` (not echoed), twice, and both must match; when standard input is
not a terminal (a script: ``echo "$PW" | errands createadmin …``), its first line is the
password. A password on the command line is visible to other users of the machine (in
``ps``): prefer the prompt.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from . import store
from .accounts import AccountError, normalize_email
from .web import Demo, DemoSettings, create_app

DATABASE_HELP = "database URL (default: $ERRANDS_DATABASE_URL, else sqlite:///errands-demo.db)"


def _settings(args: argparse.Namespace, **extra: Any) -> DemoSettings:
    """The settings for ``args`` (without ``--database-url``: ``DemoSettings``' default)."""
    corpus = getattr(args, "corpus", None)
    return DemoSettings(
        database_url=getattr(args, "database_url", None),
        corpus=Path(corpus) if corpus else None,
        data_dir=Path(args.data),
        **extra,
    )


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


def new_password(email: str, stdin: TextIO | None = None) -> str:
    """The password of the new account ``email``: asked for twice with ``getpass`` on a
    terminal (``AccountError`` if the two differ), else the first line of ``stdin``."""
    stdin = stdin or sys.stdin
    if not stdin.isatty():
        return stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"Password for the new account {email}: ")
    if getpass.getpass("The same password again: ") != first:
        raise AccountError("The two passwords differ; nothing was changed.")
    return first


def createadmin(args: argparse.Namespace) -> int:
    demo = Demo(_settings(args, worker=False))
    demo.setup()
    try:
        password = args.password
        email = normalize_email(args.email)
        if password is None and demo.errands.db.read(store.user_by_email, email) is None:
            password = new_password(email)
        user = demo.accounts.make_admin(args.email, password)
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
    parser.add_argument("--database-url", default=None, help=DATABASE_HELP)
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("serve", help="serve the demo (web and worker in one process)")
    p.add_argument("--database-url", default=argparse.SUPPRESS, help=DATABASE_HELP)
    for target in (parser, p):
        target.add_argument("--host", default="127.0.0.1")
        target.add_argument("--port", type=int, default=8000)
        target.add_argument("--corpus", help="directory to search (default: the stdlib)")
        target.add_argument("--data", default=".errands-demo", help="exports and session secret")
        target.add_argument("--concurrency", type=int, default=4)
    p = sub.add_parser("createadmin", help="make a demo account an administrator")
    p.add_argument("email")
    p.add_argument(
        "--password",
        help="the password of a new account (default: asked for, or read from standard input)",
    )
    p.add_argument("--data", default=".errands-demo")
    p.add_argument("--database-url", default=argparse.SUPPRESS, help=DATABASE_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return createadmin(args) if args.command == "createadmin" else serve(args)


if __name__ == "__main__":
    sys.exit(main())
