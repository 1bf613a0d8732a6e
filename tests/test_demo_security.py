"""The demo's security headers and pages, over HTTP (``errands.demo.security``,
``apidocs``, ``admin.admin_metrics``): the headers on every kind of page, pages that
fit the Content-Security-Policy (no inline script, handler or style), the favicon,
``/metrics`` for administrators only, the tokens page's post/redirect/get with a
one-time reveal, and the corpus named without its path. The whole demo app on a real
SQLite file, with its in-process worker running (``TestClient`` runs the lifespan)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient  # its httpx2 warning is ignored in pyproject

from errands.demo import apidocs, tasks
from errands.demo.security import CONTENT_SECURITY_POLICY
from errands.demo.web import Demo, corpus_name
from tests.apps.demo_site import PASSWORD, DemoClient, build_demo

ADMIN = "boss@example.com"
ALICE = "alice@example.com"
#: The headers every page (HTML) carries.
PAGE_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
#: What the policy must hold whatever else changes in it.
REQUIRED_DIRECTIVES = {
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "object-src": ["'none'"],
    "frame-ancestors": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'self'"],
}
#: Markup the policy refuses: inline scripts, inline handlers, style attributes,
#: javascript: URLs.
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)
STYLE_ATTRIBUTE = re.compile(r"<[^>]+\sstyle\s*=", re.I)
JAVASCRIPT_URL = re.compile(r"""(?:href|src|action)\s*=\s*["']?\s*javascript:""", re.I)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DemoClient]:
    app = build_demo(tmp_path, monkeypatch)
    demo: Demo = app.state.demo
    demo.accounts.register(ALICE, PASSWORD)
    demo.accounts.make_admin(ADMIN, PASSWORD)
    with TestClient(app) as client:
        yield DemoClient(client, demo)


def directives(policy: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def policy_holds(policy: str) -> bool:
    """Whether a Content-Security-Policy keeps ``REQUIRED_DIRECTIVES`` and allows
    nothing unsafe. (The dashboard at /admin sends its own, stricter one: its
    ``default-src 'none'`` covers ``object-src``.)"""
    found = directives(policy)
    if found.get("default-src") == ["'none'"]:
        found.setdefault("object-src", ["'none'"])
    return all(found.get(k) == v for k, v in REQUIRED_DIRECTIVES.items()) and not any(
        "unsafe" in value for values in found.values() for value in values
    )


def check_page(response: Any, status: int = 200) -> str:
    """The page's HTML, once its status, its headers and its markup are checked."""
    where = f"{response.request.method} {response.url.path}"
    assert response.status_code == status, (where, response.status_code)
    assert response.headers["content-type"].startswith("text/html"), where
    policy = response.headers.get("content-security-policy", "")
    admin = response.url.path.startswith("/admin/") or response.url.path == "/admin"
    assert policy == CONTENT_SECURITY_POLICY or (admin and policy_holds(policy)), (where, policy)
    for name, value in PAGE_HEADERS.items():
        if name != "content-security-policy":
            assert response.headers.get(name) == value, (where, name, response.headers.get(name))
    html: str = response.text
    for pattern in (INLINE_SCRIPT, INLINE_HANDLER, STYLE_ATTRIBUTE, JAVASCRIPT_URL):
        found = pattern.search(html)
        assert found is None, (where, found and html[found.start() : found.end() + 60])
    return html


def test_the_policy_runs_no_inline_script() -> None:
    assert policy_holds(CONTENT_SECURITY_POLICY)
    policy = directives(CONTENT_SECURITY_POLICY)
    assert policy["default-src"] == ["'self'"] and policy["connect-src"] == ["'self'"]


def test_every_page_carries_the_headers_and_fits_the_policy(site: DemoClient) -> None:
    c = site.client
    # Anonymous: the welcome page, the account forms, the API's docs, a missing page, a
    # form that expired (no CSRF token), a member's page (a redirect to the login form).
    for path in ("/", "/login", "/register", "/api/docs"):
        check_page(c.get(path))
    check_page(c.get("/no/such/page"), 404)
    expired = c.post("/login", data={"email": ALICE, "password": PASSWORD})
    assert "Form expired" in check_page(expired, 403)
    assert c.get("/tasks", follow_redirects=False).status_code == 303

    # Alice: her pages, a task of hers, a task that is not (the 404 page), a message page.
    site.log_in(ALICE)
    task_id = site.search()
    site.finished(task_id)
    for path in ("/", "/tasks", f"/tasks/{task_id}", "/schedules", "/tokens"):
        check_page(c.get(path))
    check_page(c.get("/tasks/00000000-0000-0000-0000-000000000000"), 404)
    check_page(c.get("/admin"), 404)  # not an administrator
    check_page(c.post("/tokens", data={"name": "x"}), 403)  # no CSRF token

    # The administrator: the dashboard (its charts included), a task in it, every schedule.
    site.log_in(ADMIN)
    dashboard = check_page(c.get("/admin"))
    assert "<svg" in dashboard and 'class="bar-succeeded"' in dashboard
    check_page(c.get(f"/admin/tasks/{task_id}"))
    check_page(c.get("/admin/schedules"))
    check_page(c.get("/admin/tasks/no-such-task"), 404)

    # Static files and the API: nosniff, and the API's answers as they were.
    for path in ("/static/app.css", "/static/errands-task.js", "/favicon.ico"):
        r = c.get(path)
        assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff", path
    api = c.get("/api/tasks")
    assert api.status_code == 200 and api.headers["content-type"] == "application/json"
    assert api.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in api.headers
    refused = TestClient(c.app).get("/api/tasks")  # no session: the API's own 401
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"


def test_favicon(site: DemoClient) -> None:
    c = site.client
    icon = c.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file's header
    svg = c.get("/static/favicon.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.headers["content-security-policy"] == CONTENT_SECURITY_POLICY  # a document too
    page = c.get("/login").text
    assert '<link rel="icon" href="/favicon.ico"' in page
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page


def test_metrics_answer_administrators_only(site: DemoClient) -> None:
    c = site.client

    def refused(r: Any) -> None:
        assert r.status_code == 404, r.status_code
        assert "Not found" in r.text and "errands_" not in r.text

    def served(r: Any) -> None:
        assert r.status_code == 200, r.status_code
        assert r.headers["content-type"].startswith("text/plain")
        assert "errands_queue_depth" in r.text

    for path in ("/metrics", "/metrics/"):
        refused(c.get(path))  # anonymous
    refused(c.post("/metrics"))
    site.log_in(ALICE)
    refused(c.get("/metrics"))
    alice_token = create_token(site, "alice's script")
    script = TestClient(c.app)  # no cookies: the token alone
    refused(script.get("/metrics", headers={"Authorization": f"Bearer {alice_token}"}))
    refused(script.get("/metrics", headers={"Authorization": "Bearer ert_made_up"}))

    site.log_in(ADMIN)
    served(c.get("/metrics"))
    served(c.get("/metrics/"))
    admin_token = create_token(site, "prometheus")
    served(script.get("/metrics", headers={"Authorization": f"Bearer {admin_token}"}))


def create_token(site: DemoClient, name: str) -> str:
    r = site.client.post(
        "/tokens", data={"name": name, "csrf": site.csrf("/tokens")}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/tokens"
    found = re.search(r'<pre id="new-token">(ert_[^<]+)</pre>', site.client.get("/tokens").text)
    assert found
    return found[1]


def session_data(site: DemoClient) -> bytes:
    """What the session cookie carries (signed, not encrypted: base64 JSON)."""
    cookie = site.client.cookies["errands_session"]
    payload = cookie.split(".")[0]
    return base64.b64decode(payload + "=" * (-len(payload) % 4))


def test_a_new_token_is_shown_once_after_a_redirect(site: DemoClient) -> None:
    c = site.client
    site.log_in(ALICE)
    r = c.post(
        "/tokens",
        data={"name": "my script", "csrf": site.csrf("/tokens")},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/tokens"
    assert "ert_" not in r.text
    shown = check_page(c.get("/tokens"))
    found = re.search(r'<pre id="new-token">(ert_[^<]+)</pre>', shown)
    assert found, shown
    token = found[1]
    assert 'id="copy-token" data-copy="new-token"' in shown
    assert '<script type="module" src="/static/copy-button.js"></script>' in shown
    assert token.encode() not in session_data(site)  # the session gave it up

    # Reloading shows it no more, creates nothing, and leaves the token working.
    again = check_page(c.get("/tokens"))
    assert token not in again and 'id="new-token"' not in again and "copy-button.js" not in again
    assert again.count('action="/tokens/') == 1  # one token: the reload made none
    assert "my script" in again
    script = TestClient(c.app)
    r = script.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text


def test_pages_name_the_corpus_not_its_path(site: DemoClient, tmp_path: Path) -> None:
    c = site.client
    site.log_in(ALICE)
    home = c.get("/").text
    assert '<p class="muted" id="corpus">Searches the files of corpus.</p>' in home
    task_id = site.search()
    site.finished(task_id)
    for path in ("/", "/tasks", f"/tasks/{task_id}", "/tokens", "/api/docs"):
        assert str(tmp_path) not in c.get(path).text, path
    site.log_in(ADMIN)
    for path in ("/admin", f"/admin/tasks/{task_id}"):
        assert str(tmp_path) not in c.get(path).text, path
    # The default corpus has a name of its own; a name can be set.
    assert corpus_name(tasks.default_corpus().resolve()) == "the Python standard library"
    assert corpus_name(Path("/srv/data/manuals")) == "manuals"


def test_the_api_docs_without_swagger_ui_list_the_operations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As an install without the package that ships Swagger UI's files.
    monkeypatch.setattr(apidocs, "swagger_ui_files", lambda: None)
    app = build_demo(tmp_path, monkeypatch)
    client = TestClient(app)  # no lifespan: no worker needed
    page = check_page(client.get("/api/docs"))
    assert '<a href="/openapi.json">The OpenAPI document</a>' in page
    assert "<td><code>POST</code></td><td><code>/api/tasks</code></td>" in page
    assert "<td><code>GET</code></td><td><code>/api/tasks/{task_id}</code></td>" in page
    assert client.get("/static/swagger-ui/swagger-ui-bundle.js").status_code == 404


def test_the_api_docs_serve_swagger_ui_from_the_installed_package(site: DemoClient) -> None:
    files = apidocs.swagger_ui_files()
    assert files is not None, "the demo extra's fastapi-offline is not installed"
    c = site.client
    page = check_page(c.get("/api/docs"))
    assert '<div id="swagger-ui" data-openapi-url="/openapi.json"></div>' in page
    for name, media_type in apidocs.SWAGGER_FILES.items():
        assert f'"/static/swagger-ui/{name}"' in page
        r = c.get(f"/static/swagger-ui/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(media_type)
        assert r.content == (files / name).read_bytes()
    assert c.get("/static/swagger-ui/favicon.png").status_code == 404  # only those two
    urls = re.findall(r'(?:href|src)="([^"]*)"', page)
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
