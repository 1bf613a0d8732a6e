"""What a caller who is not an administrator may ask of ``POST /tasks``: no priority by
default (one would put their tasks ahead of every other user's), priorities within the
configured bounds, and ``run_at`` at most ``max_run_at_delay`` ahead. Administrators may
ask anything; refusals are 422s naming the field and write nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from errands import ConfigurationError, Errands
from errands.web.limits import ClientLimits
from tests.conftest import LiveServer
from tests.test_web_api import assert_problem, client, counts, rows, submit

AHEAD = (datetime.now(UTC) + timedelta(days=31)).isoformat()
SOON = (datetime.now(UTC) + timedelta(days=29)).isoformat()


def refused(c: Any, field: str, **extra: Any) -> None:
    r = c.post("/api/tasks", json={"name": "steps", "payload": {"steps": 1}, **extra})
    doc = assert_problem(r, 422)
    assert [e["field"] for e in doc["errors"]] == [field], doc


def test_by_default_only_administrators_set_a_priority_or_a_distant_run_at(
    app: Errands, serve: Callable[..., LiveServer]
) -> None:
    server = serve()
    with client(server, "alice") as alice, client(server, "admin") as admin:
        refused(alice, "priority", priority=1)
        refused(alice, "priority", priority=0)
        r = alice.post("/api/tasks", json={"name": "steps", "run_at": AHEAD})
        assert assert_problem(r, 422)["errors"] == [
            {"field": "run_at", "message": "must be at most 30 days from now"}
        ]
        assert counts(app) == rows(task=0, job=0)
        assert submit(alice, "steps", {"steps": 1}, run_at=SOON)["status"] == "queued"
        assert submit(admin, "steps", {"steps": 1}, priority=1000)["priority"] == 1000
        assert submit(admin, "steps", {"steps": 1}, run_at=AHEAD)["status"] == "queued"
        assert counts(app) == rows(task=3, job=3)


def test_priorities_within_the_configured_bounds(
    app: Errands, serve: Callable[..., LiveServer]
) -> None:
    capped = serve(max_client_priority=5, max_run_at_delay=None)
    with client(capped, "alice") as alice:
        assert submit(alice, "steps", {"steps": 1}, priority=5)["priority"] == 5
        assert submit(alice, "steps", {"steps": 1}, priority=-3)["priority"] == -3
        refused(alice, "priority", priority=6)
        assert submit(alice, "steps", {"steps": 1}, run_at=AHEAD)["status"] == "queued"
    listed = serve(allowed_priorities=[0, 10])
    with client(listed, "bob") as bob:
        assert submit(bob, "steps", {"steps": 1}, priority=10)["priority"] == 10
        refused(bob, "priority", priority=5)
    # A group's priority follows the same rule.
    with client(listed, "bob") as bob:
        r = bob.post(
            "/api/tasks", json={"name": "steps", "payloads": [{"steps": 1}], "priority": 3}
        )
        assert [e["field"] for e in assert_problem(r, 422)["errors"]] == ["priority"]


def test_the_flask_blueprint_keeps_the_same_rule(app: Errands) -> None:
    from tests.test_flask_api import FlaskServer

    server = FlaskServer(app, submit_rate=None)
    try:
        with server.client("alice") as alice, server.client("admin") as admin:
            refused(alice, "priority", priority=7)
            refused(alice, "run_at", run_at=AHEAD)
            assert submit(admin, "steps", {"steps": 1}, priority=7)["priority"] == 7
    finally:
        server.stop()


@pytest.mark.parametrize(
    "options",
    [
        {"allowed_priorities": ["high"]},
        {"max_client_priority": 1.5},
        {"max_client_priority": True},
        {"max_run_at_delay": -1},
    ],
)
def test_bad_limits_are_refused_at_configuration(options: dict[str, Any]) -> None:
    args = {"allowed_priorities": None, "max_client_priority": None, "max_run_at_delay": None}
    with pytest.raises(ConfigurationError):
        ClientLimits.of(**(args | options))
