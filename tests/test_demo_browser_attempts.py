"""A task's new attempt in a real browser: the demo's task page and ``<errands-task>``
drop the items of the attempt that failed and show the new attempt's only.

The server, the browser and Alice's signed-in context are those of
``test_demo_browser`` (imported), with one change made before the server starts: every
search here runs twice. Its first attempt searches ``small/`` (other hits than the
payload's), then waits for the test to open a gate and breaks, so the worker retries it;
its second attempt waits for a gate, searches what the payload says, and waits for a
last gate before it returns. So each step happens when the test says, not after a
guessed delay.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Route, expect

from errands import ANY_OWNER, Status, TaskContext, TaskFailed
from errands.demo import tasks as demo_tasks
from errands.demo.tasks import SearchIn
from tests import test_demo_browser as demo_browser
from tests.browser import hit_lines, mark_page, wait_reloaded
from tests.conftest import eventually
from tests.test_demo_browser import (
    ALICE,
    RECORD_DONE,
    Server,
    csrf_of,
    host_page,
    serve_host_pages,
    submit_search,
)
from tests.test_demo_browser import search as search_form

# That module's fixtures, used here by name: the demo's server (it starts after
# ``gates`` below) and Alice's signed-in context (the browser is conftest's).
server, alice = demo_browser.server, demo_browser.alice

pytestmark = pytest.mark.slow

#: What the first attempt of every search here searches; the second searches the
#: payload's glob, SECOND.
FIRST = "small"
SECOND = "mid"
#: A gate the test never opens fails the task (instead of holding the worker for ever).
GATE_SECONDS = 60.0

#: Every ``errands:attempt`` the page sees, with what the element held then.
RECORD_ATTEMPTS = """
window.__attempts = [];
document.addEventListener("errands:attempt", (event) => {
  const task = event.target;
  window.__attempts.push({
    detail: event.detail,
    lastSeq: task.lastSeq,
    outputFloor: task.outputFloor,
    mode: task.getAttribute("data-mode"),
  });
});
"""


class Gates:
    """Files the searches wait for: ``<task id>.<name>``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, task_id: str, name: str) -> Path:
        return self.folder / f"{task_id}.{name}"

    def open(self, task_id: str, name: str) -> None:
        self.path(task_id, name).touch()

    def open_all(self, task_id: str) -> None:
        for name in ("fail", "start", "finish"):
            self.open(task_id, name)

    def wait(self, ctx: TaskContext, name: str) -> None:
        gate = self.path(ctx.task_id, name)
        deadline = time.monotonic() + GATE_SECONDS
        while not gate.exists():
            ctx.raise_if_cancelled()
            if time.monotonic() > deadline:
                raise TaskFailed(f"the test did not open {gate.name}", retry=False)
            time.sleep(0.02)


def searching_twice(gates: Gates, register: Callable[..., None]) -> Callable[..., None]:
    """``errands.demo.tasks.register`` with the demo's search wrapped (see the module's
    docstring)."""

    def register_twice(app: Any, *, corpus: Path, exports: Path, **options: Any) -> None:
        register(app, corpus=corpus, exports=exports, **options)
        definition = app.registry.get("search")
        search = definition.fn

        def search_twice(ctx: TaskContext, payload: SearchIn) -> Any:
            if ctx.attempt == 1:
                search(ctx, payload.model_copy(update={"glob": f"{FIRST}/*.py"}))
                gates.wait(ctx, "fail")
                raise RuntimeError("the first attempt breaks")  # retried (max_attempts=2)
            gates.wait(ctx, "start")
            result = search(ctx, payload)
            gates.wait(ctx, "finish")
            return result

        definition.fn = search_twice

    return register_twice


@pytest.fixture(scope="module", autouse=True)
def gates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gates]:
    """Set up before the server (autouse fixtures come first): its searches run twice."""
    found = Gates(tmp_path_factory.mktemp("gates"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo_tasks, "register", searching_twice(found, demo_tasks.register))
        yield found


@pytest.fixture
def twice(server: Server, gates: Gates) -> Iterator[list[str]]:
    """The searches a test starts (their ids, appended by the test) have every gate
    opened at its end, passed or not: no search is left waiting."""
    search = server.demo.errands.registry.get("search")
    assert search.fn.__name__ == "search_twice", "the server's searches do not run twice"
    started: list[str] = []
    yield started
    for task_id in started:
        gates.open_all(task_id)


def second_attempt_waits(server: Server, task_id: str) -> None:
    """Wait until the search's second attempt runs (it waits at its "start" gate)."""

    def running_again() -> bool:
        record = server.record(task_id)
        return record.status is Status.RUNNING and record.attempts == 2

    eventually(running_again, "the second attempt", timeout=20)


@pytest.mark.parametrize("mode", ["sse", "poll"])
def test_task_page_shows_only_the_new_attempts_hits(
    server: Server,
    alice: BrowserContext,
    gates: Gates,
    twice: list[str],
    mode: str,
) -> None:
    first, second = server.hits[FIRST], server.hits[SECOND]
    page = alice.new_page()
    if mode == "poll":
        # "Nothing to send": EventSource gives up, and the element polls at once.
        page.route(re.compile(r"/events(\?.*)?$"), lambda route: route.fulfill(status=204))
    page.add_init_script(RECORD_ATTEMPTS)
    page.add_init_script(RECORD_DONE)
    task_id = search_form(page, f"{SECOND}/*.py", slow=False)
    twice.append(task_id)
    mark_page(page)  # the page reloads itself once the task is done
    task = page.locator("#task")
    hits = page.locator("#hits li")
    count = page.locator("#hit-count")
    status = task.locator(".et-status")
    bar = task.locator(".et-bar")

    # The first attempt's hits, live; it waits before it breaks.
    expect(task).to_have_attribute("data-mode", mode)
    expect(hits).to_have_text(hit_lines(first))
    expect(count).to_have_text(str(len(first)))
    expect(status).to_have_attribute("data-status", "running")
    expect(bar).to_have_js_property("value", 100)  # it has read every file of small/
    assert page.evaluate("() => window.__attempts") == []

    # It breaks; the worker retries it. The new attempt waits before it searches: the
    # page has dropped the first attempt's hits and the bar has started over.
    gates.open(task_id, "fail")
    second_attempt_waits(server, task_id)
    record = server.record(task_id)
    assert record.output_floor == len(first) + 1  # past every item of the first attempt
    expect(hits).to_have_count(0)
    expect(count).to_have_text("0")
    expect(task).to_have_js_property("outputFloor", record.output_floor)
    expect(status).to_have_attribute("data-status", "running")
    expect(bar).to_have_js_property("position", -1)  # indeterminate: nothing reported yet
    expect(task.locator(".et-percent")).to_have_text("")
    attempts = page.evaluate("() => window.__attempts")
    assert attempts == [
        {
            "detail": {"attempt": 2, "output_floor": record.output_floor},
            "lastSeq": record.output_floor,
            "outputFloor": record.output_floor,
            "mode": mode,
        }
    ]

    # The second attempt searches: its hits, and none of the first's.
    gates.open(task_id, "start")
    expect(hits).to_have_text(hit_lines(second))
    expect(count).to_have_text(str(len(second)))
    expect(bar).to_have_js_property("value", 100)
    assert [int(s) for s in hits.evaluate_all("(lis) => lis.map((li) => li.dataset.seq)")] == [
        record.output_floor + i for i in range(1, len(second) + 1)
    ]
    assert len(page.evaluate("() => window.__attempts")) == 1
    assert server.record(task_id).status is Status.RUNNING  # still waiting to finish

    # It succeeds: the page reloads itself and the server renders the same hits.
    gates.open(task_id, "finish")
    wait_reloaded(page)
    done = json.loads(page.evaluate("() => sessionStorage.getItem('done')") or "null")
    assert done is not None, "errands:done was not seen"
    assert done["mode"] == mode and done["status"] == "succeeded"
    assert done["hits"] == hit_lines(second)
    assert done["result"]["hits"] == len(second)
    expect(status).to_have_attribute("data-status", "succeeded")
    expect(hits).to_have_text(hit_lines(second))
    expect(count).to_have_text(str(len(second)))
    record = server.record(task_id)
    assert record.status is Status.SUCCEEDED and record.attempts == 2
    outputs = server.demo.errands.sync.outputs(task_id, owner=ANY_OWNER)
    assert [(d["path"], d["line"], d["text"]) for _, d in outputs] == second
    page.close()


def test_element_back_on_the_page_after_a_new_attempt(
    server: Server,
    alice: BrowserContext,
    gates: Gates,
    twice: list[str],
) -> None:
    # The documented example page; its element is taken off the page during the first
    # attempt and put back once the second has emitted everything. It resumes from its
    # last event id, of the first attempt: the stream says "attempt" first.
    first, second = server.hits[FIRST], server.hits[SECOND]
    csrf = csrf_of(server, alice, ALICE)
    task_id = submit_search(alice, csrf, f"{SECOND}/*.py", slow=False)
    twice.append(task_id)
    page = alice.new_page()
    page.add_init_script(RECORD_ATTEMPTS)
    serve_host_pages(page, server, {"/host/attempts.html": host_page(task_id, csrf)})
    streams: list[str] = []

    def stream_opened(route: Route) -> None:
        streams.append(route.request.url)
        route.continue_()

    page.route(re.compile(r"/events(\?.*)?$"), stream_opened)
    page.goto("/host/attempts.html")
    element = page.locator("#search")
    items = page.locator("#search .hits li")
    expect(element).to_have_attribute("data-mode", "sse")
    expect(items).to_have_text([f"{p}:{n}{t}" for p, n, t in first])

    version, last_seq = page.evaluate(
        """() => {
          const task = (window.__parked = document.getElementById("search"));
          task.remove();
          return [task.resource.version, task.lastSeq];
        }"""
    )
    assert last_seq == len(first)
    gates.open(task_id, "fail")
    second_attempt_waits(server, task_id)
    gates.open(task_id, "start")

    def everything_emitted() -> bool:
        outputs = server.demo.errands.sync.outputs(task_id, owner=ANY_OWNER)
        return len(outputs) == len(second)

    eventually(everything_emitted, "the second attempt's hits", timeout=20)
    floor = server.record(task_id).output_floor
    assert floor == len(first) + 1
    page.evaluate("() => document.querySelector('main').append(window.__parked)")
    expect(items).to_have_text([f"{p}:{n}{t}" for p, n, t in second])
    assert page.evaluate("() => window.__attempts") == [
        {
            "detail": {"attempt": 2, "output_floor": floor},
            "lastSeq": floor,
            "outputFloor": floor,
            "mode": "sse",
        }
    ]
    assert len(streams) == 2, streams
    assert streams[1].endswith(f"/events?last_event_id={version}-{last_seq}"), streams

    gates.open(task_id, "finish")
    expect(element.locator(".et-status")).to_have_text("succeeded")
    expect(items).to_have_text([f"{p}:{n}{t}" for p, n, t in second])
    expect(page).to_have_title(f"{len(second)} hits")
    page.close()


def test_task_page_rendered_before_the_new_attempt(
    server: Server,
    alice: BrowserContext,
    gates: Gates,
    twice: list[str],
) -> None:
    # The server renders the first attempt's hits; the element's script is held back
    # until the second attempt has emitted everything. The element, new on the page,
    # starts at the current attempt (no errands:attempt: it held nothing): the page
    # drops the rendered hits the task's resource says are no longer its output.
    first, second = server.hits[FIRST], server.hits[SECOND]
    csrf = csrf_of(server, alice, ALICE)
    task_id = submit_search(alice, csrf, f"{SECOND}/*.py", slow=False)
    twice.append(task_id)

    def first_emitted() -> bool:
        outputs = server.demo.errands.sync.outputs(task_id, owner=ANY_OWNER)
        return len(outputs) == len(first)

    eventually(first_emitted, "the first attempt's hits", timeout=20)
    page = alice.new_page()
    page.add_init_script(RECORD_ATTEMPTS)
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    script = re.compile(r"/static/errands-task\.js$")
    page.route(script, hold)
    page.goto(f"/tasks/{task_id}", wait_until="commit")
    hits = page.locator("#hits li")
    expect(hits).to_have_text(hit_lines(first))  # rendered by the server
    assert held, "the element's script was not requested"

    gates.open(task_id, "fail")
    second_attempt_waits(server, task_id)
    gates.open(task_id, "start")

    def everything_emitted() -> bool:
        outputs = server.demo.errands.sync.outputs(task_id, owner=ANY_OWNER)
        return len(outputs) == len(second)

    eventually(everything_emitted, "the second attempt's hits", timeout=20)
    held[0].continue_()
    page.unroute(script)  # for the page's own reload once the task is done
    task = page.locator("#task")
    expect(task).to_have_attribute("data-mode", "sse")
    expect(hits).to_have_text(hit_lines(second))
    expect(page.locator("#hit-count")).to_have_text(str(len(second)))
    expect(task).to_have_js_property("outputFloor", len(first) + 1)
    assert page.evaluate("() => window.__attempts") == []
    mark_page(page)
    gates.open(task_id, "finish")
    wait_reloaded(page)  # done: the page reloads itself
    expect(task.locator(".et-status")).to_have_attribute("data-status", "succeeded")
    expect(hits).to_have_text(hit_lines(second))
    page.close()
