"""The admin dashboard (``errands.web.dashboard``) mounted in small host applications of
the tests' own (not the demo): who gets in, what its pages show of real records on a
real SQLite file, retry and cancel behind its CSRF protection, any mount path, owner
labels and filters, and its charts."""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.testclient import TestClient  # its httpx2 warning is ignored in pyproject

from errands import ANY_OWNER, Errands, Retry, Status, TaskContext
from errands.admin import Bucket
from errands.web.dashboard import UnknownOwner, dashboard
from errands.web.dashboard.charts import fmt_seconds, latency_svg, throughput_svg
from errands.web.dashboard.csrf import COOKIE
from tests.conftest import FAST

SVG = "{http://www.w3.org/2000/svg}"
FUTURE = datetime(2999, 1, 1, tzinfo=UTC)
ROOT = "root"  # the hosts' administrator (the X-User header says who is asking)
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
LABELS = {"u-alice": "Alice <alice@example.com>", "u-bob": "Bob"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Errands]:
    errands = Errands(f"sqlite:///{tmp_path / 'dash.db'}")

    @errands.task(max_attempts=1)
    def boom(ctx: TaskContext, payload: dict[str, Any]) -> None:
        raise RuntimeError("the flux capacitor <broke>")

    @errands.task(max_attempts=2)
    def hello(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("again") and ctx.attempt == 1:
            ctx.emit({"lost": "with the first attempt"})
            raise Retry(delay=0)
        for i in range(payload.get("items", 0)):
            ctx.emit({"item": i})
        return {"greeting": f"hello {payload.get('who', '')}"}

    yield errands
    errands.close()


def run_all(app: Errands) -> None:
    """Run every due task to its end (a burst worker)."""
    asyncio.run(app.worker(burst=True, **FAST).run())


def is_root(request: Request) -> bool:
    return request.headers.get("x-user") == ROOT


def host(app: Errands, path: str = "/admin", **options: Any) -> Starlette:
    """A plain Starlette site with the dashboard mounted at ``path`` (with its bare
    path), and a page of its own."""

    async def home(request: Request) -> Response:
        return HTMLResponse("<p>the host's home</p>")

    site = Starlette()
    site.add_route("/", home)
    site.router.routes.extend(
        dashboard(app, is_admin=options.pop("is_admin", is_root), **options).routes(path)
    )
    return site


@dataclass
class Admin:
    """A client of the host as its administrator."""

    client: TestClient
    prefix: str = "/admin"

    def get(self, path: str = "/", **params: Any) -> str:
        r = self.client.get(self.prefix + path, params=params, headers={"X-User": ROOT})
        assert r.status_code == 200, (path, r.status_code, r.text)
        text: str = r.text
        return text

    def post(self, path: str, token: str | None, **headers: str) -> httpx.Response:
        data = {} if token is None else {"csrf": token}
        response: httpx.Response = self.client.post(
            self.prefix + path,
            data=data,
            headers={"X-User": ROOT, **headers},
            follow_redirects=False,
        )
        return response


def token_in(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found[1]


def row_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-task-id="([^"]+)"', html)


# -- who gets in --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_everyone_but_an_administrator_gets_a_plain_404_everywhere(app: Errands, kind: str) -> None:
    failed = app.sync.submit("boom", {}, owner="u-bob")
    waiting = app.sync.submit("hello", {}, owner="u-alice", run_at=FUTURE)
    run_all(app)
    assert app.sync.get(failed.id, owner=ANY_OWNER).status is Status.FAILED

    async def is_root_async(request: Request) -> bool:
        await asyncio.sleep(0)
        return is_root(request)

    site = host(app, is_admin=is_root if kind == "sync" else is_root_async)
    paths = [
        "/admin",
        "/admin/",
        f"/admin/tasks/{failed.id}",
        f"/admin/tasks/{failed.id}/retry",
        f"/admin/tasks/{waiting.id}/cancel",
        "/admin/tasks/not-an-id",
        f"/admin/live?id={waiting.id}",
        "/admin/static/dashboard.css",
        "/admin/static/dashboard.js",
        "/admin/no/such/page",
    ]
    with TestClient(site) as client:
        missing = client.get("/no-such-page-on-the-host")
        assert missing.status_code == 404
        for who in (None, "alice", "Root", ""):
            headers = {} if who is None else {"X-User": who}
            for path in paths:
                for method in METHODS:
                    r = client.request(
                        method, path, headers=headers, data={"csrf": "x"}, follow_redirects=False
                    )
                    assert r.status_code == 404, (who, method, path, r.status_code)
                    # The very answer of any missing page of the host: nothing tells.
                    assert r.headers["content-type"] == missing.headers["content-type"]
                    assert r.content == (b"" if method == "HEAD" else missing.content)
                    assert COOKIE not in r.headers.get("set-cookie", "")
        # Nothing happened.
        assert app.sync.get(waiting.id, owner=ANY_OWNER).status is Status.QUEUED
        assert len(app.sync.list(owner="u-bob").items) == 1
        # The administrator: the pages, and a 405 for a wrong method on a real path.
        root = {"X-User": ROOT}
        assert client.get("/admin", headers=root, follow_redirects=False).status_code == 200
        assert client.get(f"/admin/tasks/{failed.id}", headers=root).status_code == 200
        assert client.get(f"/admin/tasks/{failed.id}/retry", headers=root).status_code == 405
        assert client.post("/admin/", headers=root).status_code == 405
        assert client.get("/admin/no/such/page", headers=root).status_code == 404
        assert client.get("/admin/tasks/not-an-id", headers=root).status_code == 404
        css = client.get("/admin/static/dashboard.css", headers=root)
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_the_hosts_own_404_page_for_strangers(app: Errands) -> None:
    """``not_found``: the host's page, so that the dashboard's paths look like every
    other missing page of the site."""

    def page(request: Request) -> Response:
        return HTMLResponse("<h1>Nothing here</h1>", status_code=404)

    site = FastAPI()
    site.router.routes.extend(dashboard(app, is_admin=is_root, not_found=page).routes("/admin"))
    with TestClient(site) as client:
        for path in ("/admin", "/admin/", "/admin/tasks/x"):
            r = client.post(path)
            assert r.status_code == 404 and r.text == "<h1>Nothing here</h1>"
        assert client.get("/admin", headers={"X-User": ROOT}).status_code == 200


def test_mounted_alone_the_bare_path_is_starlettes_redirect(app: Errands) -> None:
    """``site.mount(path, dashboard)`` works too: Starlette redirects the bare path to the
    overview, ``path/``; ``routes(path)`` answers it directly (no redirect to notice)."""
    site = Starlette(routes=[Mount("/admin", dashboard(app, is_admin=is_root))])
    with TestClient(site) as client:
        r = client.get("/admin", headers={"X-User": ROOT}, follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"].endswith("/admin/")
        assert "Overview" in client.get("/admin/", headers={"X-User": ROOT}).text


# -- the pages ----------------------------------------------------------------------------
def test_the_overview_shows_every_owners_tasks_counts_queue_and_charts(app: Errands) -> None:
    alice_ok = app.sync.submit("hello", {"who": "world"}, owner="u-alice")
    bob_bad = app.sync.submit("boom", {}, owner="u-bob")
    run_all(app)
    carol_waits = app.sync.submit("hello", {}, owner="u-carol", run_at=FUTURE)

    with TestClient(host(app, owner_label=lambda owners: LABELS)) as client:
        html = Admin(client).get()
    # Newest first, every owner, each by its label (or its id without one).
    assert row_ids(html) == [carol_waits.id, bob_bad.id, alice_ok.id]
    assert "Alice &lt;alice@example.com&gt;" in html and ">Bob</a>" in html
    assert ">u-carol</a>" in html
    assert 'href="/admin/?owner=u-alice"' in html
    for task_id in (alice_ok.id, bob_bad.id, carol_waits.id):
        assert f'href="/admin/tasks/{task_id}"' in html
    assert re.search(rf'<tr data-task-id="{carol_waits.id}" data-live>', html)  # unfinished
    counts = dict(
        re.findall(r'data-status="(\w+)">\s*<a [^>]*><span class="value">(\d+)</span>', html)
    )
    assert counts == {
        "queued": "1",
        "running": "0",
        "succeeded": "1",
        "failed": "1",
        "cancelled": "0",
    }
    assert re.search(r'<span class="value">1</span><span class="label">in the queue', html)
    assert re.search(r'<span class="value">0</span><span class="label">due now', html)
    # The charts: well-formed SVG, a bar per outcome of the last hour.
    for figure in ("throughput-chart", "latency-chart"):
        found = re.search(rf'<figure class="chart" id="{figure}">.*?(<svg.*?</svg>)', html, re.S)
        assert found, figure
        svg = ET.fromstring(found[1])
        if figure == "throughput-chart":
            bars = {
                c
                for el in svg.iter(f"{SVG}rect")
                for c in (el.get("class") or "").split()
                if c.startswith("bar-") and "bar" in (el.get("class") or "").split()
            }
            assert bars == {"bar-succeeded", "bar-failed"}
    # Its own look: its stylesheet and script, from where it is mounted; no third party.
    assert re.search(r'<link rel="stylesheet" href="/admin/static/dashboard\.css\?v=\w+">', html)
    assert re.search(r'<script src="/admin/static/dashboard\.js\?v=\w+" defer>', html)
    links = re.findall(r'(?:src|href|action)="([^"]*)"', html)
    assert links and all(link.startswith("/admin/") for link in links), links
    assert 'data-live-url="/admin/live"' in html


def test_filters_and_pages(app: Errands) -> None:
    ids = [app.sync.submit("hello", {"n": i}, owner="u-alice", run_at=FUTURE).id for i in range(23)]
    bobs = app.sync.submit("boom", {}, owner="u-bob", run_at=FUTURE).id

    def owner_filter(text: str) -> str:
        if text.endswith("@example.com"):
            owner = {"alice@example.com": "u-alice"}.get(text)
            if owner is None:
                raise UnknownOwner(f"Nobody is {text}.")
            return owner
        return text

    with TestClient(host(app, owner_filter=owner_filter)) as client:
        admin = Admin(client)
        first = admin.get()
        assert row_ids(first) == [bobs, *reversed(ids[-19:])]
        older = re.search(r'<a href="([^"]+)" rel="next">', first)
        assert older and older[1].startswith("/admin/?cursor=")
        second = client.get(older[1].replace("&amp;", "&"), headers={"X-User": ROOT}).text
        assert row_ids(second) == list(reversed(ids[:4]))
        assert 'rel="next"' not in second and 'href="/admin/">« Newest' in second

        # By owner (its id, or what the host's filter makes of the text), status, name.
        for text in ("u-alice", "alice@example.com"):
            page = admin.get(owner=text, status="queued", name="hello")
            assert bobs not in page and ids[-1] in page
            nxt = re.search(r'<a href="([^"]+)" rel="next">', page)
            assert nxt and "status=queued" in nxt[1] and "name=hello" in nxt[1]
            assert "owner=" + text.replace("@", "%40") in nxt[1]  # filters survive paging
        assert row_ids(admin.get(name="boom")) == [bobs]
        assert row_ids(admin.get(status="failed")) == []
        nobody = admin.get(owner="carol@example.com")
        assert "Nobody is carol@example.com." in nobody and row_ids(nobody) == []
        # Junk is ignored, not an error.
        assert len(row_ids(admin.get(status="nonsense", cursor="junk"))) == 20


def test_the_task_page_shows_everything_about_a_task(app: Errands) -> None:
    bad = app.sync.submit("boom", {"n": 1}, owner="u-bob")
    ok = app.sync.submit("hello", {"who": "<b>", "items": 25, "again": True}, owner="u-alice")
    run_all(app)
    run_all(app)  # the second attempt (Retry with no delay)
    done = app.sync.get(ok.id, owner=ANY_OWNER)
    assert done.status is Status.SUCCEEDED and done.attempts == 2 and done.output_floor > 0

    site = host(app, owner_label=lambda owners: LABELS, task_title=lambda r: f"Job {r.name}")
    with TestClient(site) as client:
        admin = Admin(client)
        html = admin.get(f"/tasks/{bad.id}")
        assert "<h1>Job boom</h1>" in html
        assert "Bob</a>" in html and "<code>u-bob</code>" in html
        traceback = re.search(r'<pre class="traceback" id="traceback">(.*?)</pre>', html, re.S)
        assert traceback and "Traceback (most recent call last)" in traceback[1]
        assert "RuntimeError: the flux capacitor &lt;broke&gt;" in traceback[1]
        assert "<strong>RuntimeError</strong>" in html
        assert "&#34;n&#34;: 1" in html
        assert f'action="/admin/tasks/{bad.id}/retry"' in html and "/cancel" not in html

        html = admin.get(f"/tasks/{ok.id}")
        assert "&#34;greeting&#34;: &#34;hello &lt;b&gt;&#34;" in html  # the result, escaped
        assert "<dt>Attempts</dt><dd>2 of 2</dd>" in html
        assert f"<dt>Output floor</dt><dd>{done.output_floor}</dd>" in html
        items = re.findall(r'<li value="(\d+)"><code class="json">(.*?)</code>', html)
        assert len(items) == 20 and "there are more" in html  # the current attempt's first
        assert all(int(seq) > done.output_floor for seq, _ in items)
        assert items[0][1] == "{&#34;item&#34;: 0}" and "lost" not in html
        assert "/retry" not in html and "/cancel" not in html and 'id="traceback"' not in html
        # Pages are not to be kept or framed.
        r = client.get(f"/admin/tasks/{ok.id}", headers={"X-User": ROOT})
        assert r.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_live_states_for_the_pages_script(app: Errands) -> None:
    waiting = app.sync.submit("hello", {}, owner="u-alice", run_at=FUTURE)
    with TestClient(host(app)) as client:
        r = client.get(
            "/admin/live",
            params=[("id", waiting.id), ("id", "not-an-id")],
            headers={"X-User": ROOT},
        )
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert r.json() == {
        "tasks": {
            waiting.id: {
                "status": "queued",
                "done": False,
                "cancel_requested": False,
                "progress": {"current": None, "total": None, "percent": None, "message": None},
            }
        }
    }


# -- the actions --------------------------------------------------------------------------
def test_retry_and_cancel_need_the_dashboards_token_from_this_host(app: Errands) -> None:
    failed = app.sync.submit("boom", {"n": 2}, owner="u-bob")
    run_all(app)
    waiting = app.sync.submit("hello", {}, owner="u-alice", run_at=FUTURE)

    with TestClient(host(app)) as client:
        admin = Admin(client)
        first = client.get(f"/admin/tasks/{failed.id}", headers={"X-User": ROOT})
        cookie = first.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/admin"} <= attributes
        assert "secure" not in attributes  # plain HTTP here
        token = token_in(first.text)
        assert client.cookies[COOKIE] == token
        # The cookie is kept, not renewed, while the browser holds it.
        again = client.get(f"/admin/tasks/{waiting.id}", headers={"X-User": ROOT})
        assert "set-cookie" not in again.headers and token_in(again.text) == token

        refusals: list[tuple[str | None, dict[str, str]]] = [
            (None, {}),  # no token
            ("forged" + token[6:], {}),  # not the cookie's
            (token, {"Origin": "https://evil.example"}),  # another site
            (token, {"Origin": "http://testserver.evil.example"}),
            (token, {"Origin": "null"}),
            (token, {"Referer": "https://evil.example/page"}),
            (token, {"Origin": "http://testserver:8080"}),  # another port
        ]
        for submitted, headers in refusals:
            for action, task_id in (("retry", failed.id), ("cancel", waiting.id)):
                r = admin.post(f"/tasks/{task_id}/{action}", submitted, **headers)
                assert r.status_code == 403, (action, submitted, headers)
                assert "Form expired" in r.text
        # Without the cookie, the right token is no token.
        client.cookies.delete(COOKIE)
        assert admin.post(f"/tasks/{waiting.id}/cancel", token).status_code == 403
        client.cookies.set(COOKIE, token, path="/admin")
        # A JSON body is not the form.
        r = client.post(
            f"/admin/tasks/{waiting.id}/cancel",
            json={"csrf": token},
            headers={"X-User": ROOT},
            follow_redirects=False,
        )
        assert r.status_code == 403
        assert app.sync.get(waiting.id, owner=ANY_OWNER).status is Status.QUEUED
        assert len(app.sync.list(owner="u-bob").items) == 1

        # Accepted: from this host (by Origin, by Referer, or with neither header).
        r = admin.post(f"/tasks/{failed.id}/retry", token, Origin="http://testserver")
        assert r.status_code == 303
        new_id = r.headers["location"].removeprefix("/admin/tasks/")
        new = app.sync.get(new_id, owner=ANY_OWNER)
        assert new_id != failed.id and new.owner == "u-bob" and new.payload == {"n": 2}
        assert new.name == "boom" and new.status is Status.QUEUED
        r = admin.post(f"/tasks/{waiting.id}/cancel", token, Referer="http://testserver/admin/")
        assert r.status_code == 303 and r.headers["location"] == f"/admin/tasks/{waiting.id}"
        assert app.sync.get(waiting.id, owner=ANY_OWNER).status is Status.CANCELLED
        # Behind a proxy that names the public host in X-Forwarded-Host.
        r = admin.post(
            f"/tasks/{waiting.id}/retry",
            token,
            Origin="https://tasks.example.com",
            **{"X-Forwarded-Host": "tasks.example.com"},
        )
        assert r.status_code == 303

        # Not retryable, not there: said so.
        html = admin.get(f"/tasks/{new_id}")
        assert f'action="/admin/tasks/{new_id}/cancel"' in html and "/retry" not in html
        r = admin.post(f"/tasks/{new_id}/retry", token)
        assert r.status_code == 409 and "only a failed or cancelled task can be retried" in r.text
        zero = "00000000-0000-0000-0000-000000000000"
        assert admin.post(f"/tasks/{zero}/cancel", token).status_code == 404
        assert admin.post(f"/tasks/{zero}/retry", token).status_code == 404


def test_any_mount_path_inside_a_host_under_a_prefix(app: Errands) -> None:
    """Mounted at ``/ops/errands`` of a FastAPI site that is itself served under
    ``/app`` (a proxy's prefix): every link, the form actions, the redirects and the
    cookie's path follow."""
    failed = app.sync.submit("boom", {}, owner="u-bob")
    run_all(app)
    site = FastAPI()
    site.mount("/ops/errands", dashboard(app, is_admin=is_root, home_url="/app/"))
    base = "/app/ops/errands"
    with TestClient(site, root_path="/app") as client:
        admin = Admin(client, prefix=base)
        first = client.get(f"{base}/", headers={"X-User": ROOT})
        assert f"path={base};" in first.headers["set-cookie"].lower()
        html = first.text
        assert f'href="{base}/tasks/{failed.id}"' in html
        assert f'<a class="dash-brand" href="{base}/">' in html
        assert f'action="{base}/"' in html and '<a class="dash-home" href="/app/">' in html
        assert f'href="{base}/?status=failed"' in html
        page = client.get(f"{base}/tasks/{failed.id}", headers={"X-User": ROOT})
        assert f'action="{base}/tasks/{failed.id}/retry"' in page.text
        r = admin.post(f"/tasks/{failed.id}/retry", token_in(page.text))
        assert r.status_code == 303 and r.headers["location"].startswith(f"{base}/tasks/")
        assert client.get(f"{base}/tasks/{failed.id}").status_code == 404  # not admin


def test_owner_labels_and_filter_may_be_async(app: Errands) -> None:
    task = app.sync.submit("hello", {}, owner="u-alice", run_at=FUTURE)
    asked: list[list[str]] = []

    async def labels(owners: list[str]) -> Mapping[str, str]:
        asked.append(owners)
        return {o: f"label of {o}" for o in owners}

    async def owner_filter(text: str) -> str:
        return {"ALICE": "u-alice"}.get(text, text)

    site = host(app, owner_label=labels, owner_filter=owner_filter)
    with TestClient(site) as client:
        admin = Admin(client)
        assert row_ids(admin.get(owner="ALICE")) == [task.id]
        assert row_ids(admin.get(owner="u-bob")) == []
        assert "label of u-alice" in admin.get(f"/tasks/{task.id}")
    assert ["u-alice"] in asked


# -- the charts alone ---------------------------------------------------------------------
def _class(el: ET.Element, name: str) -> bool:
    return name in (el.get("class") or "").split()


def _buckets(**at: dict[str, Any]) -> list[Bucket]:
    start = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    return [Bucket(start=start + timedelta(minutes=i), **at.get(f"m{i}", {})) for i in range(61)]


def test_charts_are_well_formed_svg_with_titles() -> None:
    buckets = _buckets(
        m3={"succeeded": 4, "failed": 1, "run_p50": 0.2, "run_p95": 1.5, "wait_p50": 0.05},
        m4={"cancelled": 2, "run_p50": 0.3, "run_p95": 0.9, "wait_p50": 0.1},
        m40={"succeeded": 9, "run_p50": 12.0, "run_p95": 30.0, "wait_p50": None},
    )
    bars = ET.fromstring(throughput_svg(buckets))
    assert bars.get("viewBox") == "0 0 720 220"
    rects = [el for el in bars.iter(f"{SVG}rect") if _class(el, "bar")]
    assert len(rects) == 4  # 2 + 1 + 1 stacked segments
    titles = [el.findtext(f"{SVG}title") for el in rects]
    assert "12:03–12:04 UTC: 4 succeeded" in titles and "12:04–12:05 UTC: 2 cancelled" in titles
    labels = [el.text for el in bars.iter(f"{SVG}text")]
    assert "12:00" in labels and "12:10" in labels and "tasks finished" in labels
    assert "10" in labels  # the y axis reaches past the peak of 9

    lines = ET.fromstring(latency_svg(buckets))
    paths = {el.get("class"): el.get("d") for el in lines.iter(f"{SVG}path")}
    assert set(paths) == {"line-p50", "line-p95", "line-wait"}
    assert paths["line-p50"] and paths["line-p50"].count("M") == 2  # broken over the gap
    assert len(list(lines.iter(f"{SVG}circle"))) == 8
    assert fmt_seconds(0.25) == "250 ms" and fmt_seconds(90) == "90 s"

    empty = ET.fromstring(throughput_svg(_buckets()))
    assert "No task finished in the last hour" in [el.text for el in empty.iter(f"{SVG}text")]
    assert ET.fromstring(latency_svg([])) is not None
