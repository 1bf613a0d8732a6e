"""The Django Tasks backend (``errands.django.ErrandsBackend``) in the example project,
configured in this process on an SQLite file: enqueue through Django's ``@task`` and
errands' own decorator, transactions, owners, and ``get_result`` for every status."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eventually_async
from tests.django_site import setup_in_process

setup_in_process()

from django.db import connection, transaction  # noqa: E402
from django.test import RequestFactory  # noqa: E402

import errands  # noqa: E402
from errands import Status  # noqa: E402
from errands.django import SYSTEM_OWNER, get_app, owner  # noqa: E402
from errands.django.middleware import OwnerMiddleware  # noqa: E402
from errands.django.tasks_compat import (  # noqa: E402
    TaskResultDoesNotExist,
    TaskResultStatus,
)
from tests.apps import django_tasks  # noqa: E402


def _records() -> dict[str, Any]:
    page = get_app().sync.list(owner=errands.ANY_OWNER, limit=500)
    return {r.id: r for r in page.items}


def test_enqueue_writes_a_record_owned_by_the_current_owner() -> None:
    result = django_tasks.echo.enqueue({"a": 1})
    assert result.status == TaskResultStatus.READY
    record = get_app().sync.get(result.id, owner=SYSTEM_OWNER)
    assert record.name == "tests.apps.django_tasks.echo"
    assert record.payload == {"args": [{"a": 1}], "kwargs": {}}
    with owner("42"):
        mine = django_tasks.echo.using(priority=7).enqueue(value=2)
    record = get_app().sync.get(mine.id, owner="42")
    assert (record.owner, record.priority, record.payload["kwargs"]) == ("42", 7, {"value": 2})


def test_errands_own_tasks_work_beside_django_tasks() -> None:
    from wordcount.tasks import shout  # type: ignore[import-not-found]  # the example's @app.task

    assert shout.name in get_app().registry
    record = get_app().sync.submit("shout", {"text": "hi"}, owner="7")
    assert record.status is Status.QUEUED
    with pytest.raises(TaskResultDoesNotExist), owner("7"):
        django_tasks.echo.get_result(record.id)  # not a Django task's record


def test_a_rolled_back_transaction_leaves_no_record_and_a_committed_one_does() -> None:
    before = set(_records())
    with pytest.raises(RuntimeError), transaction.atomic():
        lost = django_tasks.echo.enqueue("rolled back")
        raise RuntimeError("the view fails")
    assert lost.id not in _records()
    with transaction.atomic():
        kept = django_tasks.echo.enqueue("committed")
        # Not visible to errands' own connections before the commit.
        assert kept.id not in _records()
    assert set(_records()) - before == {kept.id}


def test_errands_own_tasks_join_djangos_transaction_with_connection() -> None:
    from wordcount.tasks import shout  # type: ignore[import-not-found]  # noqa: F401

    app = get_app()
    with pytest.raises(RuntimeError), transaction.atomic():
        lost = app.sync.submit("shout", {"text": "no"}, owner="9", connection=connection)
        raise RuntimeError
    with transaction.atomic():
        kept = app.sync.submit("shout", {"text": "yes"}, owner="9", connection=connection)
    records = _records()
    assert lost.id not in records and kept.id in records


def test_enqueue_shares_the_views_transaction_with_its_rows() -> None:
    """The view's own row and the task commit together: both or neither."""
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS test_orders (id INTEGER PRIMARY KEY)")
    with pytest.raises(RuntimeError), transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("INSERT INTO test_orders (id) VALUES (1)")
        gone = django_tasks.echo.enqueue("order 1")
        raise RuntimeError
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM test_orders")
        assert cur.fetchone()[0] == 0
    assert gone.id not in _records()


def test_the_middleware_makes_the_signed_in_user_the_owner() -> None:
    from django.contrib.auth.models import AnonymousUser, User

    user, _ = User.objects.get_or_create(username="middleware-user")
    seen: list[str] = []

    def view(request: Any) -> Any:
        seen.append(django_tasks.echo.enqueue("from a view").id)
        from django.http import HttpResponse

        return HttpResponse()

    request = RequestFactory().get("/")
    request.user = user
    OwnerMiddleware(view)(request)
    assert get_app().sync.get(seen[-1], owner=str(user.pk)).owner == str(user.pk)
    anonymous = RequestFactory().get("/")
    anonymous.user = AnonymousUser()
    OwnerMiddleware(view)(anonymous)
    assert get_app().sync.get(seen[-1], owner=SYSTEM_OWNER).owner == SYSTEM_OWNER


def test_owner_blocks_nest_and_refuse_bad_owners() -> None:
    with owner("a"):
        with owner("b"):
            inner = django_tasks.echo.enqueue(1)
        outer = django_tasks.echo.enqueue(2)
    assert get_app().sync.get(inner.id, owner="b") and get_app().sync.get(outer.id, owner="a")
    with pytest.raises(TypeError), owner(""):
        pass
    with pytest.raises(ValueError), owner(errands.ANY_OWNER):
        django_tasks.echo.enqueue(3)


def test_capabilities_are_declared() -> None:
    backend = django_tasks.echo.get_backend()
    assert (backend.supports_defer, backend.supports_priority) == (True, True)
    assert (backend.supports_get_result, backend.supports_async_task) == (True, True)


async def test_get_result_maps_every_status(tmp_path: Path, run_worker: Any) -> None:
    app = get_app()
    release = tmp_path / "release"
    later = datetime.now(UTC) + timedelta(hours=1)

    def enqueue() -> dict[str, Any]:
        with owner("u1"):
            return {
                "queued": django_tasks.echo.using(run_after=later).enqueue(0),
                "running": django_tasks.wait_for.enqueue(str(release)),
                "succeeded": django_tasks.echo.enqueue([1, 2]),
                "failed": django_tasks.fail.enqueue("boom"),
                "cancelled": django_tasks.wait_for.enqueue(str(tmp_path / "never")),
                "context": django_tasks.report.enqueue(3),
                "async": django_tasks.async_double.enqueue(21),
                "inherits": django_tasks.whose.enqueue(),
            }

    results = await asyncio.to_thread(enqueue)

    def read(name: str) -> Any:
        with owner("u1"):
            return results[name].task.get_result(results[name].id)

    async with run_worker(app, concurrency=8):
        await eventually_async(
            lambda: read("running").status == TaskResultStatus.RUNNING, "a running task"
        )
        await eventually_async(
            lambda: read("cancelled").status == TaskResultStatus.RUNNING, "the second one"
        )
        await app.cancel(results["cancelled"].id, owner="u1")
        for name in ("succeeded", "failed", "cancelled", "context", "async", "inherits"):

            def finished(name: str = name) -> bool:
                return bool(read(name).is_finished)

            await eventually_async(finished, f"{name} to finish")
        release.touch()
        await eventually_async(lambda: read("running").is_finished, "the released task")

    queued = read("queued")
    assert queued.status == TaskResultStatus.READY and queued.started_at is None
    assert queued.enqueued_at is not None and queued.attempts == 0
    done = read("succeeded")
    assert done.status == TaskResultStatus.SUCCESSFUL and done.return_value == [1, 2]
    assert done.args == [[1, 2]] and done.attempts == 1
    assert done.started_at is not None and done.finished_at is not None
    failed = read("failed")
    assert failed.status == TaskResultStatus.FAILED and failed.errors
    assert failed.errors[-1].exception_class is ValueError
    assert "boom" in failed.errors[-1].traceback
    with pytest.raises(ValueError):
        failed.return_value  # noqa: B018 (Django raises for a failed task)
    cancelled = read("cancelled")
    assert cancelled.status == TaskResultStatus.FAILED
    assert cancelled.errors[-1].exception_class is errands.TaskCancelled
    assert read("running").return_value == "released"
    assert read("context").return_value == 1  # the attempt, from Django's context
    record = await app.get(results["context"].id, owner="u1")
    assert (record.progress.current, record.progress.total) == (3, 3)
    assert [d for _, d in await app.outputs(record.id, owner="u1")] == [
        {"step": 1},
        {"step": 2},
        {"step": 3},
    ]
    assert read("async").return_value == 42
    assert read("inherits").return_value == "u1"
    # Another owner's result does not exist for this one.
    with owner("u2"), pytest.raises(TaskResultDoesNotExist):
        django_tasks.echo.get_result(results["succeeded"].id)
    with owner(errands.ANY_OWNER):
        assert django_tasks.echo.get_result(results["succeeded"].id).id == done.id


async def test_aenqueue_and_aget_result() -> None:
    with owner("async-owner"):
        result = await django_tasks.echo.aenqueue("x")
        again = await django_tasks.echo.aget_result(result.id)
    assert again.id == result.id and again.status == TaskResultStatus.READY


def test_keyed_submits_on_djangos_connection_find_the_record_holding_the_key() -> None:
    """A unique task or an idempotency key reads the record that holds it back through
    Django's connection (whose SQLite cursors parse declared types)."""
    app = get_app()
    if "unique-echo" not in app.registry:

        @app.task(name="unique-echo", unique=True)
        def unique_echo(ctx: Any, payload: dict[str, Any]) -> None:
            return None

    first = app.sync.submit("unique-echo", {"n": 1}, owner="u9", connection=connection)
    again = app.sync.submit("unique-echo", {"n": 1}, owner="u9", connection=connection)
    assert again.id == first.id and again.created_at == first.created_at
    with transaction.atomic():
        keyed = app.sync.submit(
            "unique-echo", {"n": 2}, owner="u9", connection=connection, idempotency_key="k"
        )
        same = app.sync.submit(
            "unique-echo", {"n": 2}, owner="u9", connection=connection, idempotency_key="k"
        )
    assert same.id == keyed.id and same.payload == {"n": 2}
