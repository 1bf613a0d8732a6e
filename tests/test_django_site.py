"""The example Django project in this process, with Django's test client: the
``{% errands_task %}`` tag, and the pages (sign-in, start a count, its live page, "my
tasks") on a real SQLite file (``tests.django_site.setup_in_process``).

The browser test (``test_django_browser.py``) watches the same pages run with a worker.
"""

from __future__ import annotations

import html
import io
import re
import secrets
import types
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from tests.django_site import setup_in_process

TASK_PAGE = re.compile(r"^/count/([0-9a-f-]{36})$")
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module", autouse=True)
def django_site() -> str:
    return setup_in_process()


def make_user(prefix: str = "user") -> Any:
    """A new user, whose owner id (``str(pk)``) no task has yet: the other Django tests
    of this process share the database, and own tasks by small numbers ("7")."""
    from django.contrib.auth import get_user_model

    users: Any = get_user_model().objects
    pk = 10**8 + secrets.randbelow(2**31 - 10**8)
    return users.create_user(f"{prefix}-{pk}", password=PASSWORD, pk=pk)


def client_of(user: Any = None, **options: Any) -> Any:
    from django.test import Client

    client = Client(**options)
    if user is not None:
        client.force_login(user)
    return client


def render(source: str, context: dict[str, Any] | None = None, *, request: bool = True) -> str:
    """``source`` (with ``{% load errands %}`` before it) rendered for a GET request,
    or without one."""
    from django.template import Context, RequestContext, Template
    from django.test import RequestFactory

    template = Template("{% load errands %}" + source)
    if not request:
        return str(template.render(Context(context or {})))
    return str(template.render(RequestContext(RequestFactory().get("/"), context or {})))


def attributes(markup: str) -> dict[str, str]:
    """The (unescaped) attributes of the one ``<errands-task>`` in ``markup``."""
    (tag,) = re.findall(r"<errands-task([^>]*)>", markup)
    return {name: html.unescape(value) for name, value in re.findall(r' ([\w-]+)="([^"]*)"', tag)}


def scripts(markup: str) -> list[str]:
    return re.findall(r'<script type="module" src="([^"]+)"></script>', markup)


def records(owner: str) -> list[Any]:
    from errands.django import get_app

    return list(get_app().sync.list(owner=owner, limit=100).items)


Mount = Callable[..., None]


@pytest.fixture
def urlconf() -> Iterator[Mount]:
    """``urlconf(*patterns)``: a URLconf of these patterns in force for the test."""
    from django.urls import set_urlconf

    def mount(*patterns: Any) -> None:
        module = types.ModuleType(f"urlconf_{uuid.uuid4().hex}")
        module.urlpatterns = list(patterns)  # type: ignore[attr-defined]
        set_urlconf(cast(Any, module))

    try:
        yield mount
    finally:
        set_urlconf(None)


# -- the template tag ---------------------------------------------------------------------
def test_tag_renders_the_element_and_its_script() -> None:
    from django.templatetags.static import static

    out = render("{% errands_task task_id %}", {"task_id": "01a2-b3"})
    assert scripts(out) == [static("errands/errands-task.js")]
    assert out.index("<script") < out.index("<errands-task")
    assert out.endswith("</errands-task>")
    attrs = attributes(out)
    # The example mounts errands' API at tasks/: the element reads {api}/tasks/<id>.
    assert attrs["task-id"] == "01a2-b3"
    assert attrs["api"] == "/"
    assert len(attrs["csrf"]) >= 32  # the request's token
    assert list(attrs) == ["task-id", "api", "csrf"]


def test_tag_escapes_every_attribute() -> None:
    evil = '"><script>alert(1)</script>'
    out = render(
        "{% errands_task task_id api=api id='task' data_note=note %}",
        {"task_id": evil, "api": '/x?a=1&b="2"', "note": "<b>'hi'</b>"},
    )
    assert "<script>alert" not in out
    assert out.count("<script") == 1  # the element's script, nothing else
    attrs = attributes(out)
    assert attrs["task-id"] == evil
    assert attrs["api"] == '/x?a=1&b="2"'
    assert attrs["id"] == "task"
    assert attrs["data-note"] == "<b>'hi'</b>"


def test_tag_keywords_override_and_drop_attributes() -> None:
    out = render("{% errands_task '42' api='/elsewhere' csrf=None poll=2 class=None %}")
    assert attributes(out) == {"task-id": "42", "api": "/elsewhere", "poll": "2"}


def test_script_comes_once_per_request() -> None:
    out = render("{% errands_task 'a' %}{% errands_task 'b' %}")
    assert len(scripts(out)) == 1
    assert out.index("<script") < out.index('task-id="a"')
    # errands_script first (in <head>, say): the elements after it do not repeat it.
    out = render("{% errands_script %}{% errands_script %}<p>{% errands_task 'a' %}")
    assert len(scripts(out)) == 1
    assert out.startswith("<script")
    # With no request in the context: once per rendering.
    out = render("{% errands_task 'a' %}{% errands_task 'b' %}", request=False)
    assert len(scripts(out)) == 1


def test_tag_without_a_request_has_no_csrf() -> None:
    assert "csrf" not in attributes(render("{% errands_task 'a' %}", request=False))


def test_api_follows_the_mount(urlconf: Mount) -> None:
    from django.urls import include, path, set_script_prefix

    urlconf(path("app/errands-api/tasks/", include("errands.django.urls")))
    assert attributes(render("{% errands_task 'a' %}"))["api"] == "/app/errands-api"
    # Served below a prefix (SCRIPT_NAME): reverse() includes it.
    set_script_prefix("/site/")
    try:
        assert attributes(render("{% errands_task 'a' %}"))["api"] == "/site/app/errands-api"
    finally:
        set_script_prefix("/")


def test_api_needs_a_mount_it_can_use_or_a_keyword(urlconf: Mount) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.urls import include, path

    urlconf(path("jobs/", include("errands.django.urls")))
    with pytest.raises(ImproperlyConfigured, match="ending in 'tasks/'"):
        render("{% errands_task 'a' %}")
    urlconf(path("<int:team>/tasks/", include("errands.django.urls")))
    with pytest.raises(ImproperlyConfigured, match=r"include\("):
        render("{% errands_task 'a' %}")
    urlconf()
    with pytest.raises(ImproperlyConfigured, match=r"include\("):
        render("{% errands_task 'a' %}")
    # Told where the API is, the tag needs no mount.
    assert attributes(render("{% errands_task 'a' api='/api' %}"))["api"] == "/api"


# -- the pages ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/mine", "/count/01a2aae0-0000-7000-8000-000000000000"])
def test_pages_require_sign_in(path: str) -> None:
    response = client_of().get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_starting_requires_sign_in() -> None:
    from errands import ANY_OWNER
    from errands.django import get_app

    before = get_app().sync.list(owner=ANY_OWNER, limit=1).items
    response = client_of().post("/count", {"limit": "5"})
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert get_app().sync.list(owner=ANY_OWNER, limit=1).items == before


def test_sign_in_and_out() -> None:
    user = make_user()
    client = client_of(enforce_csrf_checks=True)
    page = client.get("/accounts/login/?next=/mine")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert token is not None
    form = {"username": user.username, "csrfmiddlewaretoken": token[1], "next": "/mine"}
    wrong = client.post("/accounts/login/", form | {"password": "wrong"})
    assert wrong.status_code == 200
    assert client.get("/mine").status_code == 302
    signed_in = client.post("/accounts/login/", form | {"password": PASSWORD})
    assert signed_in.status_code == 302
    assert signed_in["Location"] == "/mine"
    mine = client.get("/mine")
    assert mine.status_code == 200
    assert f'<span class="who">{user.username}</span>' in mine.content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', mine.content.decode())
    assert token is not None
    out = client.post("/accounts/logout/", {"csrfmiddlewaretoken": token[1]})
    assert out.status_code == 302
    assert out["Location"] == "/accounts/login/"
    assert client.get("/mine").status_code == 302


def test_start_enqueues_for_the_signed_in_user_and_redirects_to_the_task() -> None:
    user = make_user()
    client = client_of(user)
    form = client.get("/")
    assert form.status_code == 200
    assert 'action="/count"' in form.content.decode()

    response = client.post("/count", {"limit": "7", "slow": "on"})
    assert response.status_code == 302
    found = TASK_PAGE.match(response["Location"])
    assert found, response["Location"]
    (record,) = records(str(user.pk))
    assert record.id == found[1]
    assert record.owner == str(user.pk)
    assert record.name == "wordcount.tasks.count_words"
    assert record.status.value == "queued"
    assert record.payload == {"args": [], "kwargs": {"limit": 7, "pause": 0.02}}

    page = client.get(response["Location"])
    assert page.status_code == 200
    text = page.content.decode()
    assert "Count the words of 7 modules" in text
    attrs = attributes(text)
    assert attrs["task-id"] == record.id
    assert attrs["api"] == "/"
    assert scripts(text) == ["/static/errands/errands-task.js", "/static/wordcount/task-page.js"]


def test_start_bounds_the_limit() -> None:
    user = make_user()
    client = client_of(user)
    client.post("/count", {"limit": "100000"})
    client.post("/count", {"limit": "many"})
    limits = sorted(r.payload["kwargs"]["limit"] for r in records(str(user.pk)))
    assert limits == [200, 1000]


def test_the_task_pages_csrf_token_is_the_sessions() -> None:
    """The token the element sends is one Django's CSRF check accepts for this user."""
    user = make_user()
    client = client_of(user, enforce_csrf_checks=True)
    start = client.get("/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', start.content.decode())
    assert token is not None
    response = client.post("/count", {"limit": "3", "csrfmiddlewaretoken": token[1]})
    assert response.status_code == 302
    csrf = attributes(client.get(response["Location"]).content.decode())["csrf"]
    assert client.post("/count", {"limit": "3"}).status_code == 403
    assert client.post("/count", {"limit": "3"}, headers={"X-CSRFToken": csrf}).status_code == 302
    assert len(records(str(user.pk))) == 2


def test_someone_elses_task_page_is_not_found() -> None:
    alice, bob = make_user("alice"), make_user("bob")
    response = client_of(alice).post("/count", {"limit": "3"})
    page = response["Location"]
    assert client_of(alice).get(page).status_code == 200
    assert client_of(bob).get(page).status_code == 404
    assert client_of(bob).get("/count/not-a-task").status_code == 404


def test_my_tasks_lists_only_the_users_own() -> None:
    alice, bob = make_user("alice"), make_user("bob")
    for user, limit in [(alice, 3), (bob, 4), (alice, 5)]:
        client_of(user).post("/count", {"limit": str(limit)})
    mine = {r.id for r in records(str(alice.pk))}
    theirs = {r.id for r in records(str(bob.pk))}
    assert len(mine) == 2
    assert len(theirs) == 1

    page = client_of(alice).get("/mine")
    assert page.status_code == 200
    text = page.content.decode()
    listed = re.findall(r'<tr data-task-id="([^"]+)">', text)
    assert set(listed) == mine
    assert listed == sorted(listed, reverse=True)  # newest first
    for task_id in mine:
        assert f'href="/count/{task_id}"' in text
    assert "Count the words of 5 modules" in text
    assert "Count the words of 4 modules" not in text

    empty = client_of(make_user()).get("/mine")
    assert "No tasks yet." in empty.content.decode()


def test_demo_users_command_makes_users_who_can_sign_in() -> None:
    from django.core.management import call_command
    from django.test import Client

    out = io.StringIO()
    call_command("demo_users", password=PASSWORD, stdout=out)
    assert re.fullmatch(r"(made|updated) alice\n(made|updated) bob\n", out.getvalue())
    for name in ("alice", "bob"):
        assert Client().login(username=name, password=PASSWORD)
    call_command("demo_users", password="another", stdout=out)
    assert out.getvalue().endswith("updated alice\nupdated bob\n")
    assert Client().login(username="alice", password="another")
    assert not Client().login(username="alice", password=PASSWORD)
