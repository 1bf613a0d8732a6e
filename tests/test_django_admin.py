"""errands' records in Django's admin (``errands.django.admin``), through Django's test
client on the example project in this process (an SQLite file; the tasks run on an
in-process worker): the list, its filters and search, the read-only record page, the
cancel, retry and delete actions going through errands, and who may see and do what.
"""

from __future__ import annotations

import asyncio
import html
import importlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from errands import ANY_OWNER, Errands, Status, TaskContext, TaskNotFound
from tests.django_site import setup_in_process

LIST = "/admin/errands/task/"
FAIL = "tests.django_admin.fail"
BIG = "tests.django_admin.big"


def page(task_id: str) -> str:
    return f"{LIST}{task_id}/change/"


@pytest.fixture(scope="module")
def app() -> Errands:
    """The example project's errands app, in this process, with a task that fails."""
    setup_in_process()
    from errands.django import get_app

    app = get_app()
    if FAIL not in app.registry:

        @app.task(name=FAIL, max_attempts=1)
        def fail(ctx: TaskContext, payload: dict[str, Any]) -> None:
            raise ValueError("the disk is full of owls")

        @app.task(name=BIG)
        def big(ctx: TaskContext, payload: dict[str, Any]) -> list[str]:
            return [f"line {n:06d}" for n in range(10_000)]  # 150 KB: in the blob store

    return app


def drain(app: Errands) -> None:
    """Run every due task to its end, on a worker in this process."""
    worker = app.worker(burst=True, handle_signals=False, poll_interval=0.1, concurrency=4)
    asyncio.run(worker.run())


def later(app: Errands, owner: str) -> str:
    """A queued task (due in an hour: no worker takes it meanwhile)."""
    record = app.sync.submit(
        "wordcount.tasks.add", {"args": [1, 1]}, owner=owner, run_at=timedelta(hours=1)
    )
    return record.id


def cancelled(app: Errands, owner: str) -> str:
    task_id = later(app, owner)
    app.sync.cancel(task_id, owner=ANY_OWNER)
    return task_id


@dataclass(frozen=True)
class Finished:
    """Finished tasks of two owners of this module's own."""

    alice: str
    bob: str
    added: str  # alice's wordcount.tasks.add(2, 3)
    counted: str  # alice's count_words(limit=3)
    failed: str  # bob's FAIL
    big: str  # bob's BIG


@pytest.fixture(scope="module")
def finished(app: Errands) -> Finished:
    from errands.django import owner

    tasks: Any = importlib.import_module("wordcount.tasks")  # the example's (on sys.path)
    add, count_words = tasks.add, tasks.count_words
    alice, bob = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    with owner(alice):
        added = add.enqueue(2, 3).id
        counted = count_words.enqueue(limit=3).id
    failed = app.sync.submit(FAIL, {}, owner=bob).id
    big = app.sync.submit(BIG, {}, owner=bob).id
    drain(app)
    return Finished(alice, bob, added, counted, failed, big)


def user(*, staff: bool, perms: Sequence[str] = ()) -> Any:
    from django.contrib.auth.models import Permission, User

    made = User.objects.create_user(f"user-{uuid.uuid4().hex[:10]}", is_staff=staff)
    for codename in perms:
        made.user_permissions.add(
            Permission.objects.get(content_type__app_label="errands", codename=codename)
        )
    return made


def client(signed_in: Any = None) -> Any:
    from django.test import Client

    made = Client()
    if signed_in is not None:
        made.force_login(signed_in)
    return made


@pytest.fixture(scope="module")
def manager(app: Errands) -> Any:
    """A staff client with every permission on the records."""
    return client(user(staff=True, perms=["view_task", "cancel_task", "retry_task", "delete_task"]))


def listed(response: Any) -> set[str]:
    """The ids of the records on a list page."""
    assert response.status_code == 200
    return set(re.findall(rf'<a href="{LIST}([0-9a-f-]{{36}})/change/', response.content.decode()))


def said(response: Any) -> list[str]:
    """The messages a page shows."""
    shown = re.search(r'<ul class="messagelist">(.*?)</ul>', response.content.decode(), re.S)
    items = re.findall(r"<li[^>]*>(.*?)</li>", shown.group(1), re.S) if shown else []
    return [html.unescape(item).strip() for item in items]


def act(who: Any, action: str, ids: Sequence[str]) -> list[str]:
    """Run an admin action on ``ids``; the messages of the page it leads to."""
    response = who.post(LIST, {"action": action, "_selected_action": list(ids)}, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain and response.redirect_chain[0][1] == 302
    return said(response)


# -- the list --------------------------------------------------------------------------
def test_list_filters_and_search(manager: Any, finished: Finished) -> None:
    everyone = listed(manager.get(LIST))
    assert {finished.added, finished.counted, finished.failed} <= everyone

    alice = listed(manager.get(LIST, {"owner": finished.alice}))
    assert alice == {finished.added, finished.counted}
    assert listed(manager.get(LIST, {"owner": finished.bob})) == {finished.failed, finished.big}

    failed = listed(manager.get(LIST, {"status": "failed"}))
    assert finished.failed in failed and finished.added not in failed
    assert listed(manager.get(LIST, {"status": "succeeded", "owner": finished.alice})) == alice

    named = listed(manager.get(LIST, {"name": "wordcount.tasks.add", "owner": finished.alice}))
    assert named == {finished.added}
    assert listed(manager.get(LIST, {"name": FAIL})) >= {finished.failed}

    assert listed(manager.get(LIST, {"q": finished.counted})) == {finished.counted}
    assert listed(manager.get(LIST, {"q": finished.bob})) == {finished.failed, finished.big}
    assert listed(manager.get(LIST, {"q": "count_words", "owner": finished.alice})) == {
        finished.counted
    }


def test_filters_offer_statuses_names_and_owners(manager: Any, finished: Finished) -> None:
    text = manager.get(LIST).content.decode()
    choices = ("status__exact=failed", "name=wordcount.tasks.count_words", f"owner={finished.bob}")
    for choice in choices:
        assert f'<a href="?{choice}">' in text
    # The owner column filters by its owner too.
    assert f'<a href="{LIST}?owner={finished.alice}">' in text


# -- the record's page -----------------------------------------------------------------
def test_record_page_is_read_only_with_progress_result_and_traceback(
    manager: Any, finished: Finished
) -> None:
    counted = manager.get(page(finished.counted)).content.decode()
    assert '<progress max="100" value="100.0"></progress> 100% (3 of 3)' in counted
    assert "&quot;files&quot;: 3" in counted  # the result, as JSON
    assert "&quot;limit&quot;: 3" in counted  # the payload's kwargs

    added = manager.get(page(finished.added)).content.decode()
    assert "<pre>5</pre>" in added

    failed = manager.get(page(finished.failed))
    assert failed.status_code == 200
    text = failed.content.decode()
    assert "ValueError" in text and "the disk is full of owls" in text
    assert "Traceback (most recent call last)" in text
    # Nothing to save and no deleting outside errands: only the actions change records.
    assert 'name="_save"' not in text and "/delete/" not in text
    assert manager.post(page(finished.failed), {"owner": "mallory"}).status_code == 403
    assert manager.get(f"{LIST}add/").status_code == 403


def test_a_result_in_the_blob_store_is_shown_cut(manager: Any, finished: Finished) -> None:
    from errands.django.models import Task

    assert Task.objects.get(pk=finished.big).result_ref is not None
    text = manager.get(page(finished.big)).content.decode()
    assert "&quot;line 000000&quot;" in text and "&quot;line 003000&quot;" in text
    assert "&quot;line 009999&quot;" not in text
    assert re.search(r"… \(\d+ characters in all\)</pre>", text)


def test_unknown_record_is_a_redirect_with_a_message(manager: Any) -> None:
    response = manager.get(page(str(uuid.uuid4())), follow=True)
    assert response.status_code == 200
    assert any("doesn’t exist" in message for message in said(response))


# -- the actions -----------------------------------------------------------------------
def test_cancel_action(app: Errands, manager: Any, finished: Finished) -> None:
    owner = f"carol-{uuid.uuid4().hex[:8]}"
    queued, again = later(app, owner), cancelled(app, owner)

    shown = act(manager, "cancel_tasks", [queued, again, finished.added])

    assert f"Cancelled: {queued}" in shown
    assert f"Not cancelled (already cancelled): {again}" in shown
    assert f"Not cancelled (already succeeded): {finished.added}" in shown
    assert app.sync.get(queued, owner=ANY_OWNER).status is Status.CANCELLED
    assert app.sync.get(finished.added, owner=ANY_OWNER).status is Status.SUCCEEDED
    history = manager.get(f"{LIST}{queued}/history/").content.decode()
    assert "Cancelled" in history


def test_retry_action(app: Errands, manager: Any, finished: Finished) -> None:
    owner = f"dave-{uuid.uuid4().hex[:8]}"
    was_cancelled = cancelled(app, owner)

    shown = act(manager, "retry_tasks", [was_cancelled, finished.failed, finished.counted])

    mine = app.sync.list(owner=owner).items
    assert [r.status for r in mine] == [Status.QUEUED, Status.CANCELLED]
    new = mine[0]
    assert (new.name, new.payload) == ("wordcount.tasks.add", {"args": [1, 1], "kwargs": {}})
    bobs = app.sync.list(owner=finished.bob, name=FAIL).items
    assert [r.status for r in bobs] == [Status.QUEUED, Status.FAILED]
    # Newest first, as listed.
    retried = [f"{was_cancelled} → {new.id}", f"{finished.failed} → {bobs[0].id}"]
    assert f"Submitted again (old → new): {', '.join(retried)}" in shown
    assert (
        "Not retried (only a failed or cancelled task can be retried; this one is "
        f"succeeded): {finished.counted}"
    ) in shown
    drain(app)  # the retried ones run (and FAIL fails again)
    assert app.sync.get(new.id, owner=ANY_OWNER).result == 2


def test_delete_action(app: Errands, manager: Any) -> None:
    from errands.django.models import Task

    owner = f"erin-{uuid.uuid4().hex[:8]}"
    done, waiting = cancelled(app, owner), later(app, owner)

    shown = act(manager, "delete_tasks", [done, waiting])

    assert f"Deleted: {done}" in shown
    assert f"Not deleted (the task is queued; cancel it before deleting it): {waiting}" in shown
    with pytest.raises(TaskNotFound):
        app.sync.get(done, owner=ANY_OWNER)
    assert not Task.objects.filter(pk=done).exists()
    assert app.sync.get(waiting, owner=ANY_OWNER).status is Status.QUEUED


def test_a_record_deleted_meanwhile_is_reported(app: Errands) -> None:
    from django.contrib import admin
    from django.contrib.messages.storage.fallback import FallbackStorage
    from django.test import RequestFactory

    from errands.django.admin import TaskAdmin
    from errands.django.models import Task

    gone = cancelled(app, f"frank-{uuid.uuid4().hex[:8]}")
    selected = list(Task.objects.filter(pk=gone))  # the admin read it; then errands deletes it
    app.sync.delete(gone, owner=ANY_OWNER)
    request = RequestFactory().post(LIST)
    request.user = user(staff=True, perms=["view_task", "cancel_task"])
    request.session = {}
    request._messages = FallbackStorage(request)

    TaskAdmin(Task, admin.site).cancel_tasks(request, selected)

    assert [str(m) for m in request._messages] == [f"Not cancelled (deleted meanwhile): {gone}"]


# -- who may see and do what -----------------------------------------------------------
def test_view_permission_alone_shows_records_without_actions(
    app: Errands, finished: Finished
) -> None:
    viewer = client(user(staff=True, perms=["view_task"]))
    queued = later(app, f"gina-{uuid.uuid4().hex[:8]}")

    response = viewer.get(LIST, {"owner": finished.alice})
    assert listed(response) == {finished.added, finished.counted}
    assert 'name="action"' not in response.content.decode()
    assert viewer.get(page(finished.failed)).status_code == 200

    viewer.post(LIST, {"action": "cancel_tasks", "_selected_action": [queued]})
    assert app.sync.get(queued, owner=ANY_OWNER).status is Status.QUEUED


def test_each_action_needs_its_permission(app: Errands) -> None:
    canceller = client(user(staff=True, perms=["view_task", "cancel_task"]))
    text = canceller.get(LIST).content.decode()
    assert 'value="cancel_tasks"' in text
    assert 'value="retry_tasks"' not in text and 'value="delete_tasks"' not in text
    done = cancelled(app, f"hank-{uuid.uuid4().hex[:8]}")
    canceller.post(LIST, {"action": "delete_tasks", "_selected_action": [done]})
    assert app.sync.get(done, owner=ANY_OWNER).status is Status.CANCELLED


def test_staff_without_permission_is_refused(finished: Finished) -> None:
    stranger = client(user(staff=True))
    assert stranger.get(LIST).status_code == 403
    assert stranger.get(page(finished.failed)).status_code == 403
    assert "errands/task" not in stranger.get("/admin/").content.decode()


@pytest.mark.parametrize("signed_in", ["user", "anonymous"])
def test_others_are_sent_to_the_login_page(finished: Finished, signed_in: str) -> None:
    who = client(user(staff=False, perms=["view_task"]) if signed_in == "user" else None)
    for url in (LIST, page(finished.failed)):
        response = who.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=")
