"""The ``errands`` command line.

Commands that act on tasks (``ls``, ``show``, ``cancel``) and on users' schedules
(``schedules ls|pause|resume|rm``) are administrative: they see every owner's unless
``--owner`` narrows them. Exit codes: 0 success; 1 the task failed or was cancelled
(``submit --wait``); 2 bad usage or input; 3 not found (a task or a schedule);
4 ``--wait`` timed out; 5 the database cannot be reached (or is not answering); 6 the
database is out of space.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from .app import ANY_OWNER, Errands
from .errors import (
    DatabaseUnavailable,
    ErrandsError,
    ScheduleNotFound,
    StorageFull,
    TaskNotFound,
    WaitTimeout,
)
from .records import Schedule, Status, TaskRecord
from .store.database import driver_reason


def load_app(path: str) -> Errands:
    """Import ``module:attr`` (the current directory is importable) and return the app."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"errands: expected MODULE:ATTR, got {path!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"errands: cannot import {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if not isinstance(obj, Errands):
        raise SystemExit(f"errands: {path!r} is not an errands.Errands instance")
    return obj


def _app_from(args: argparse.Namespace) -> Errands:
    return load_app(args.app) if args.app else Errands(args.database_url)


def record_dict(record: TaskRecord, *, admin: bool = True) -> dict[str, Any]:
    data = asdict(record)
    data["status"] = record.status.value
    data["progress"]["percent"] = record.progress.percent
    data["done"] = record.done
    for key in ("run_at", "created_at", "updated_at", "started_at", "finished_at", "expires_at"):
        data[key] = None if data[key] is None else data[key].isoformat()
    if not admin:
        data.pop("error_detail", None)
    return data


def schedule_dict(schedule: Schedule) -> dict[str, Any]:
    """A schedule as ``errands schedules ls --json`` prints it (``every`` in seconds)."""
    data = asdict(schedule)
    data["every"] = None if schedule.every is None else schedule.every.total_seconds()
    for key in ("next_run_at", "last_run_at", "created_at", "updated_at"):
        data[key] = None if data[key] is None else data[key].isoformat()
    return data


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


# -- commands -------------------------------------------------------------------------
def worker_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~errands.WorkerSettings` given by the options of
    :func:`add_worker_options` (those left out keep their defaults)."""
    settings: dict[str, Any] = {
        "concurrency": args.concurrency,
        "burst": args.burst,
        "lease_seconds": args.lease,
        "shutdown_timeout": args.shutdown_timeout,
        "heartbeat_interval": args.heartbeat,
        "poll_interval": args.poll,
        "progress_interval": args.progress_interval,
        "names": [n.strip() for n in args.names.split(",") if n.strip()] if args.names else None,
    }
    return {key: value for key, value in settings.items() if value is not None}


def run_worker(app: Errands, args: argparse.Namespace) -> int:
    """Run a worker of ``app`` with the options of :func:`add_worker_options` until it
    is stopped (or drained, with ``--burst``)."""
    app.run_worker(**worker_settings(args))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    return run_worker(load_app(args.app), args)


def cmd_submit(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        print(f"errands: the payload is not valid JSON: {exc}", file=sys.stderr)
        return 2
    run_at = timedelta(seconds=args.delay) if args.delay else None
    record = app.sync.submit(
        args.name, payload, owner=args.owner, priority=args.priority, run_at=run_at
    )
    if not args.wait:
        _print_json(record_dict(record, admin=False))
        return 0
    print(f"submitted {record.id}", file=sys.stderr)
    hint = worker_hint(app, args.app)
    try:
        final = follow(app, record.id, args.owner, timeout=args.timeout, out=sys.stderr, hint=hint)
    except WaitTimeout as exc:
        print(timed_out(exc.record, args.timeout, hint), file=sys.stderr)
        return 4
    if final.status is Status.SUCCEEDED:
        _print_json(final.result)
        return 0
    error = final.error
    detail = f"{error.type}: {error.message}" if error else final.status.value
    print(f"task {final.status.value}: {detail}", file=sys.stderr)
    return 1


#: Seconds a followed task may stay queued before ``follow`` says that no worker has
#: claimed it (and how to start one).
QUEUED_HINT_AFTER = 5.0


def worker_hint(app: Errands, app_path: str) -> str:
    """How to start a worker for ``app`` (loaded from ``app_path``), on its database."""
    url = app.db.url.render_as_string(hide_password=True)
    return f"errands worker {app_path} --database-url {url}"


def timed_out(record: TaskRecord | None, timeout: float | None, hint: str) -> str:
    """What ``submit --wait --timeout`` says when the task is not done in time: still
    queued (no worker has claimed it: how to start one) or still running."""
    task = "the task" if record is None else f"task {record.id}"
    if record is not None and record.status is Status.QUEUED:
        due = record.run_at is not None and record.run_at > datetime.now(UTC)
        if due:
            return (
                f"errands: {task} is queued after {timeout} s: it is due at "
                f"{_when(record.run_at)}, and a worker runs it then"
            )
        return (
            f"errands: {task} is still queued after {timeout} s: no worker has claimed it."
            f" Is a worker running on this database? Start one with:\n  {hint}"
        )
    percent = (
        ""
        if record is None or record.progress.percent is None
        else (f", {record.progress.percent:.0f}% done")
    )
    return (
        f"errands: {task} is still running after {timeout} s (a worker has it{percent});"
        f" it goes on: see it with errands show {'ID' if record is None else record.id}"
    )


def render_progress(record: TaskRecord, width: int) -> str:
    percent, message = record.progress.percent, record.progress.message
    bar_width = max(10, min(40, width - 40))
    filled = 0 if percent is None else int(bar_width * percent / 100)
    pct = "  --%" if percent is None else f"{percent:4.0f}%"
    text = f"[{'#' * filled}{'.' * (bar_width - filled)}] {pct} {record.status.value}"
    if message:
        text += f"  {message}"
    return text[: max(20, width - 1)]


def follow(
    app: Errands,
    task_id: str,
    owner: str,
    *,
    timeout: float | None,
    out: TextIO,
    hint: str | None = None,
) -> TaskRecord:
    """Show the task's progress live until it finishes; return the final record. When
    the task is still queued (and due) after ``QUEUED_HINT_AFTER`` seconds, say once
    that no worker has claimed it, with ``hint``: how to start one."""
    tty = out.isatty()
    changed = threading.Event()
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    last = ""
    hinted = hint is None
    with app.watchers.watch(task_id, lambda _change: changed.set()):
        while True:
            changed.clear()
            record = app.sync.get(task_id, owner=owner)
            width = shutil.get_terminal_size((100, 20)).columns
            line = render_progress(record, width)
            if (
                not hinted
                and record.status is Status.QUEUED
                and time.monotonic() - started >= QUEUED_HINT_AFTER
                and (record.run_at is None or record.run_at <= datetime.now(UTC))
            ):
                hinted = True
                note = f"waiting: no worker has claimed the task yet; start one with:\n  {hint}"
                out.write(("\r\x1b[2K" if tty else "") + note + "\n")
                if tty:
                    last = ""  # the progress line again, below the note
            if line != last:
                out.write(("\r\x1b[2K" + line) if tty else line + "\n")
                out.flush()
                last = line
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if record.done or wait <= 0:
                if tty:
                    out.write("\n")  # below the progress line
                if not record.done:
                    raise WaitTimeout(record)
                return record
            changed.wait(wait)


def cmd_ls(args: argparse.Namespace) -> int:
    app = _app_from(args)
    owner = args.owner or ANY_OWNER
    page = app.sync.list(
        owner=owner, status=args.status, name=args.name, limit=args.limit, cursor=args.cursor
    )
    if args.json:
        _print_json(
            {"items": [record_dict(r) for r in page.items], "next_cursor": page.next_cursor}
        )
        return 0
    for r in page.items:
        pct = r.progress.percent
        progress = f"{pct:5.1f}%" if pct is not None else "     -"
        print(
            f"{r.id}  {r.status.value:<9}  {progress}  {r.owner:<16}  {r.name}  "
            f"{r.created_at:%Y-%m-%d %H:%M:%S}"
        )
    if page.next_cursor:
        print(f"-- more: --cursor {page.next_cursor}", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    app = _app_from(args)
    owner = args.owner or ANY_OWNER
    data = record_dict(app.sync.get(args.id, owner=owner))
    if args.output:
        outputs = app.sync.outputs(args.id, owner=owner)
        data["output"] = [{"seq": seq, "data": item} for seq, item in outputs]
    _print_json(data)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    app = _app_from(args)
    record = app.sync.cancel(args.id, owner=args.owner or ANY_OWNER)
    state = "cancel requested" if record.status is Status.RUNNING else record.status.value
    print(f"{record.id}: {state}")
    return 0


def _when(when: datetime | None) -> str:
    return "-" if when is None else f"{when.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def _timing(s: Schedule) -> str:
    """A cron expression in quotes (``"0 8 * * 1"``), or an interval (``3600s``)."""
    if s.every is None:
        return f'"{s.cron}"'
    seconds = s.every.total_seconds()
    return f"{int(seconds) if seconds.is_integer() else seconds}s"


def schedule_line(s: Schedule) -> str:
    """One line of ``errands schedules ls``: id, owner, name, timing (a quoted cron
    expression, or an interval such as ``3600s``), time zone, ``active`` or ``paused``,
    next run (UTC), last task."""
    timing = _timing(s)
    state = "paused" if s.paused else "active"
    return (
        f"{s.id}  {s.owner:<16}  {s.name}  {timing:<18}  {s.timezone}  {state}  "
        f"next {_when(s.next_run_at)}  last {s.last_task_id or '-'}"
    )


def cmd_schedules_ls(args: argparse.Namespace) -> int:
    app = _app_from(args)
    items = app.sync.schedules.list(
        owner=args.owner or ANY_OWNER, limit=args.limit, cursor=args.cursor
    )
    next_cursor = items[-1].id if len(items) == args.limit else None
    if args.json:
        _print_json({"items": [schedule_dict(s) for s in items], "next_cursor": next_cursor})
        return 0
    for s in items:
        print(schedule_line(s))
    if next_cursor:
        print(f"-- more: --cursor {next_cursor}", file=sys.stderr)
    return 0


def cmd_schedules_pause(args: argparse.Namespace) -> int:
    app = _app_from(args)
    schedule = app.sync.schedules.pause(args.id, owner=args.owner or ANY_OWNER)
    print(f"{schedule.id}: paused")
    return 0


def cmd_schedules_resume(args: argparse.Namespace) -> int:
    app = _app_from(args)
    schedule = app.sync.schedules.resume(args.id, owner=args.owner or ANY_OWNER)
    print(f"{schedule.id}: active, next run {_when(schedule.next_run_at)}")
    return 0


def cmd_schedules_rm(args: argparse.Namespace) -> int:
    app = _app_from(args)
    app.sync.schedules.delete(args.id, owner=args.owner or ANY_OWNER)
    print(f"{args.id}: deleted")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    app = _app_from(args)
    app.migrate()
    print(f"errands schema is up to date ({app.db.url.render_as_string(hide_password=True)})")
    return 0


def purge(app: Errands, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Delete ``app``'s expired records (the options of :func:`add_purge_options`);
    say how many on ``out`` (default: standard output)."""
    n = app.sync.purge(batch=args.batch)
    print(f"purged {n} expired task record(s)", file=out)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    return purge(_app_from(args), args)


# -- parsing --------------------------------------------------------------------------
def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``errands worker`` after its ``MODULE:ATTR`` (read them with
    :func:`worker_settings`); ``manage.py errands_worker`` takes them too."""
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("--burst", action="store_true", help="exit once no job is due or running")
    parser.add_argument("--lease", type=float, default=15.0, help="lease seconds (default 15)")
    parser.add_argument(
        "--heartbeat", type=float, default=None, help="heartbeat seconds (default lease / 3)"
    )
    parser.add_argument("--poll", type=float, default=None, help="fallback poll seconds")
    parser.add_argument("--shutdown-timeout", type=float, default=30.0)
    parser.add_argument(
        "--progress-interval", type=float, default=None, help="seconds between progress writes"
    )
    parser.add_argument("--names", default=None, help="comma-separated task names to run")


def add_purge_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``errands purge`` (and of ``manage.py errands_purge``)."""
    parser.add_argument("--batch", type=int, default=500)


DATABASE_HELP = (
    "database URL (default: $ERRANDS_DATABASE_URL, else sqlite:///errands.db;"
    " sqlite:///errands-demo.db for demo and createadmin)"
)


def add_database_option(parser: argparse.ArgumentParser) -> None:
    """``--database-url`` after a subcommand too (``errands migrate --database-url U``):
    absent there, it leaves the value given before the subcommand (``SUPPRESS``: the
    subparser sets no default that would overwrite it)."""
    parser.add_argument("--database-url", default=argparse.SUPPRESS, help=DATABASE_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="errands", description="Background tasks your users can watch."
    )
    parser.add_argument("--database-url", default=None, help=DATABASE_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("worker", help="run a worker")
    p.add_argument("app", metavar="MODULE:ATTR", help="the Errands app, e.g. myproject.tasks:app")
    add_worker_options(p)
    add_database_option(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("submit", help="submit a task")
    p.add_argument("app", metavar="MODULE:ATTR")
    p.add_argument("name")
    p.add_argument("payload", metavar="JSON", nargs="?", default="{}")
    p.add_argument("--owner", required=True)
    p.add_argument("--priority", type=int, default=None)
    p.add_argument("--delay", type=float, default=None, help="start after this many seconds")
    p.add_argument("--wait", action="store_true", help="show progress, then print the result")
    p.add_argument("--timeout", type=float, default=None, help="give up waiting after S s")
    add_database_option(p)
    p.set_defaults(func=cmd_submit)

    # The demo is an application of its own (``python -m errands.demo``); these two
    # hand over to it, with the rest of the command line.
    for name, text in (
        ("demo", "serve the demo application (web and worker in one process)"),
        ("createadmin", "make a demo account an administrator"),
    ):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=cmd_demo)

    for name, func, text in (
        ("ls", cmd_ls, "list tasks, newest first"),
        ("show", cmd_show, "show one task (with error details)"),
        ("cancel", cmd_cancel, "cancel a task"),
        ("migrate", cmd_migrate, "apply database migrations"),
        ("purge", cmd_purge, "delete expired finished records"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--app", default=None, metavar="MODULE:ATTR", help="use this app's database")
        if name in ("show", "cancel"):
            p.add_argument("id")
        if name in ("ls", "show", "cancel"):
            p.add_argument("--owner", default=None, help="only this owner's tasks")
        if name == "ls":
            p.add_argument("--status", choices=[s.value for s in Status], default=None)
            p.add_argument("--name", default=None)
            p.add_argument("--limit", type=int, default=50)
            p.add_argument("--cursor", default=None)
            p.add_argument("--json", action="store_true")
        if name == "show":
            p.add_argument("--output", action="store_true", help="include emitted items")
        if name == "purge":
            add_purge_options(p)
        add_database_option(p)
        p.set_defaults(func=func)
    add_schedule_commands(sub)
    return parser


def add_schedule_commands(sub: Any) -> None:
    """``errands schedules ls|pause|resume|rm``: users' schedules, every owner's unless
    ``--owner`` narrows them."""
    group = sub.add_parser("schedules", help="list, pause, resume or delete users' schedules")
    add_database_option(group)
    actions = group.add_subparsers(dest="action", required=True)
    for name, func, text in (
        ("ls", cmd_schedules_ls, "list schedules, oldest first"),
        ("pause", cmd_schedules_pause, "pause a schedule"),
        ("resume", cmd_schedules_resume, "resume a schedule (its next tick is after now)"),
        ("rm", cmd_schedules_rm, "delete a schedule (the tasks it created stay)"),
    ):
        p = actions.add_parser(name, help=text)
        p.add_argument("--app", default=None, metavar="MODULE:ATTR", help="use this app's database")
        if name != "ls":
            p.add_argument("id")
        p.add_argument("--owner", default=None, help="only this owner's schedules")
        if name == "ls":
            p.add_argument("--limit", type=int, default=50)
            p.add_argument("--cursor", default=None)
            p.add_argument("--json", action="store_true")
        add_database_option(p)
        p.set_defaults(func=func)


def cmd_demo(args: argparse.Namespace) -> int:
    """``errands demo …`` and ``errands createadmin …``: run ``python -m errands.demo``
    in this process's place (the library itself never imports the demo)."""
    env = dict(os.environ)
    env.setdefault("ERRANDS_DATABASE_URL", "sqlite:///errands-demo.db")
    command = [] if args.command == "demo" else [args.command]
    argv = [sys.executable, "-m", "errands.demo", *command, *args.rest]
    os.execve(sys.executable, argv, env)
    return 0  # not reached


def configure_logging(level: int) -> None:
    """Log to stderr at ``level``, unless the process's logging is set up already
    (a Django project's ``LOGGING`` with a root handler, say); alembic's only warnings."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def failure(exc: Exception) -> tuple[int, str] | None:
    """The exit code and message of an error a command ends with (None: not one of
    errands' expected failures, a bug to show with its traceback)."""
    if isinstance(exc, TaskNotFound):
        return 3, "task not found"
    if isinstance(exc, ScheduleNotFound):
        return 3, "schedule not found"
    if isinstance(exc, DatabaseUnavailable):  # the driver's words: an operator reads them
        return 5, f"cannot use the database: {driver_reason(exc)}"
    if isinstance(exc, StorageFull):
        return 6, f"the database is out of space: {driver_reason(exc)}"
    if isinstance(exc, ErrandsError | ValueError):
        return 2, str(exc)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command in ("demo", "createadmin"):
        args.rest = [*unknown, *args.rest]  # the demo's own options, for its own parser
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    verbose = args.verbose or args.command == "worker"
    configure_logging(logging.INFO if verbose else logging.WARNING)
    if args.database_url:
        os.environ["ERRANDS_DATABASE_URL"] = args.database_url
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        known = failure(exc)
        if known is None:
            raise
        code, message = known
        print(f"errands: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main"]
