"""The example Django project's ``manage.py`` as real processes, on SQLite and
PostgreSQL: ``errands_worker`` runs Django's and errands' own tasks (with the options of
``errands worker``), ``errands_purge`` deletes expired records, and ``migrate`` sets up
errands' tables on an empty database and on one ``errands migrate`` set up first."""

# ruff: noqa: F811 (the tests' site_db parameter is the fixture imported below)

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from errands import ANY_OWNER, Errands, Status, TaskContext, TaskNotFound
from errands.store import migrations
from tests.conftest import ROOT, eventually
from tests.django_site import (
    SiteWorker,
    empty_database,
    errands_url,
    manage,
    site_db,  # noqa: F401 (a fixture)
)

pytestmark = pytest.mark.slow

OWNER = "ann"
QUICK = ("--poll", "0.2", "--lease", "3")


@contextmanager
def opened(db: str) -> Iterator[Errands]:
    """errands on the example's database, in this process."""
    app = Errands(errands_url(db))
    try:
        yield app
    finally:
        app.close()


def enqueue(db: str) -> dict[str, str]:
    """Enqueue the example's tasks in a ``manage.py shell``: two of Django's ``@task``
    (through the project's tasks backend) and one of errands' ``@app.task``."""
    code = "\n".join(
        [
            "import json",
            "from errands.django import get_app, owner",
            "from wordcount.tasks import add, count_words",
            f"with owner({OWNER!r}):",
            "    ids = {'add': add.enqueue(2, 3).id, 'count': count_words.enqueue(limit=4).id}",
            f"ids['shout'] = get_app().sync.submit('shout', {{'text': 'hi'}}, owner={OWNER!r}).id",
            "print(json.dumps(ids))",
        ]
    )
    out = manage(db, "shell", "--no-imports", "-c", code).stdout
    ids: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    return ids


def check_done(app: Errands, ids: dict[str, str]) -> None:
    added = app.sync.get(ids["add"], owner=OWNER)
    assert (added.status, added.result) == (Status.SUCCEEDED, 5)
    counted = app.sync.get(ids["count"], owner=OWNER)
    assert counted.status is Status.SUCCEEDED and counted.result["files"] == 4
    assert counted.progress.percent == 100
    assert app.sync.outputs(ids["count"], owner=OWNER)  # each file's word, emitted
    shouted = app.sync.get(ids["shout"], owner=OWNER)
    assert (shouted.status, shouted.result) == (Status.SUCCEEDED, "HI")


# -- errands_worker --------------------------------------------------------------------
def test_burst_worker_runs_django_and_errands_tasks(site_db: str) -> None:
    ids = enqueue(site_db)

    # The options of errands worker: here, only the named tasks run.
    manage(site_db, "errands_worker", "--burst", "--names", "wordcount.tasks.add", *QUICK)

    with opened(site_db) as app:
        assert app.sync.get(ids["add"], owner=OWNER).status is Status.SUCCEEDED
        for left in ("count", "shout"):
            assert app.sync.get(ids[left], owner=OWNER).status is Status.QUEUED

        ran = manage(site_db, "errands_worker", "--burst", "-c", "2", *QUICK)

        assert "started: shout, wordcount.tasks.add, wordcount.tasks.count_words" in ran.stderr
        check_done(app, ids)


def test_worker_runs_until_stopped(site_db: str) -> None:
    worker = SiteWorker(site_db, *QUICK)
    try:
        eventually(lambda: "started" in worker.output(), "the worker to start", timeout=60)
        ids = enqueue(site_db)
        with opened(site_db) as app:

            def finished() -> bool:
                return all(app.sync.get(i, owner=OWNER).done for i in ids.values())

            eventually(finished, "the tasks to finish", timeout=60)
            check_done(app, ids)
        assert worker.stop(signal.SIGTERM) == 0
        assert "stopped" in worker.output()
    finally:
        worker.close()


def test_bad_options_fail_as_errands_worker_does(tmp_path: Path) -> None:
    db = str(tmp_path / "site.sqlite3")
    refused = manage(db, "errands_worker", "--burst", "-c", "0", check=False)
    assert refused.returncode == 2
    assert "concurrency must be at least 1" in refused.stderr

    unreachable = manage("postgresql://postgres@127.0.0.1:9/none", "errands_purge", check=False)
    assert unreachable.returncode == 5
    assert "cannot use the database" in unreachable.stderr


# -- errands_purge ---------------------------------------------------------------------
def test_purge_removes_expired_records(site_db: str) -> None:
    with opened(site_db) as app:

        @app.task(name="brief", retention=timedelta(0))
        def brief(ctx: TaskContext, payload: dict[str, Any]) -> None: ...

        @app.task(name="kept")
        def kept(ctx: TaskContext, payload: dict[str, Any]) -> None: ...

        # Cancelled while queued: finished now, "brief" ones expired at once.
        ids: dict[str, list[str]] = {"brief": [], "kept": []}
        for name in ("brief", "brief", "brief", "kept"):
            task_id = app.sync.submit(name, {}, owner=OWNER, run_at=timedelta(hours=1)).id
            app.sync.cancel(task_id, owner=OWNER)
            ids[name].append(task_id)

        purged = manage(site_db, "errands_purge", "--batch", "2")

        assert purged.stdout.strip() == "purged 3 expired task record(s)"
        for task_id in ids["brief"]:
            with pytest.raises(TaskNotFound):
                app.sync.get(task_id, owner=ANY_OWNER)
        assert app.sync.get(ids["kept"][0], owner=ANY_OWNER).status is Status.CANCELLED


# -- migrate ---------------------------------------------------------------------------
def assert_current(db: str) -> None:
    """errands' tables are at errands' newest migration and Django has applied all of
    its migrations (errands' included)."""
    engine = create_engine(errands_url(db))
    try:
        assert migrations.current_revision(engine) == migrations.head_revision()
    finally:
        engine.dispose()
    shown = manage(db, "showmigrations").stdout
    assert "[X] 0001_initial" in shown.split("errands\n", 1)[1]
    assert "[ ]" not in shown


def test_migrate_on_an_empty_database(site_db: str) -> None:
    assert_current(site_db)  # site_db: an empty database that manage.py migrate set up


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migrate_after_errands_migrate(kind: str, tmp_path: Path) -> None:
    with empty_database(kind, tmp_path) as db:
        env = os.environ | {"ERRANDS_DATABASE_URL": errands_url(db), "PYTHONPATH": str(ROOT)}
        subprocess.run(
            [sys.executable, "-m", "errands", "migrate"],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )

        migrated = manage(db, "migrate", "--no-input")

        assert "Applying errands.0001_initial... OK" in migrated.stdout
        assert_current(db)


def test_the_model_matches_its_migration(tmp_path: Path) -> None:
    checked = manage(str(tmp_path / "site.sqlite3"), "makemigrations", "--check", "--dry-run")
    assert "No changes detected" in checked.stdout
