"""The demo application as the HTTP tests build it: a small corpus in ``tmp_path``, a
fast in-process worker, and cheap password hashes (the tests sign in many times)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from starlette.testclient import TestClient  # its httpx2 warning is ignored in pyproject

from errands import ANY_OWNER, TaskRecord
from errands.demo import accounts, store
from errands.demo.web import Demo, DemoSettings, create_app
from tests.conftest import eventually


def build_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **worker: Any) -> FastAPI:
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    corpus = tmp_path / "corpus"
    (corpus / "pkg").mkdir(parents=True)
    (corpus / "one.py").write_text("import os\nNEEDLE = 1\n")
    (corpus / "two.py").write_text("# a needle in a haystack\nprint('hay')\n")
    (corpus / "pkg" / "three.py").write_text("def needle():\n    return 'needle'\n")
    (corpus / "notes.txt").write_text("no needle here: not a .py file\n")
    options = {"poll_interval": 0.2, "heartbeat_interval": 0.25, "lease_seconds": 4} | worker
    return create_app(
        DemoSettings(
            database_url=f"sqlite:///{tmp_path}/d.db",
            data_dir=tmp_path / "data",
            corpus=corpus,
            worker=True,
            worker_options=options,
        )
    )


PASSWORD = "correct horse battery staple"
"""Every test account's password."""


def csrf_in(html: str) -> str:
    """The CSRF token a demo page carries (in a form, or in its meta tag)."""
    found = re.search(r'name="csrf" value="([^"]+)"', html) or re.search(
        r'name="csrf-token" content="([^"]+)"', html
    )
    assert found, html
    return found[1]


@dataclass
class DemoClient:
    """A ``TestClient`` of the demo (its lifespan running) and the demo behind it, with
    what the tests do as a person at the pages would: sign in, read the CSRF token,
    search, submit through the API, wait for a task."""

    client: TestClient
    demo: Demo

    def log_in(self, email: str | None) -> None:
        """Sign in as ``email`` (None: nobody), with a fresh session."""
        self.client.cookies.clear()
        if email is None:
            return
        r = self.client.post(
            "/login",
            data={"email": email, "password": PASSWORD, "csrf": self.csrf("/login")},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text

    def csrf(self, path: str = "/") -> str:
        """The session's CSRF token, from the page at ``path``."""
        return csrf_in(self.client.get(path).text)

    def owner(self, email: str) -> str:
        user = self.demo.errands.db.read(store.user_by_email, email)
        assert user is not None
        return user.owner

    def search(self, query: str = "needle", **fields: str) -> str:
        """Search through the home page's form (checkboxes are ``"on"``); the task's id."""
        data = {"query": query, "glob": "*.py", "csrf": self.csrf(), **fields}
        r = self.client.post("/search", data=data, follow_redirects=False)
        assert r.status_code == 303, r.text
        found = re.fullmatch(r"/tasks/([0-9a-f-]{36})", r.headers["location"])
        assert found, r.headers["location"]
        return found[1]

    def submit(self, name: str, payload: Any, **extra: Any) -> str:
        """Submit through the HTTP API as the signed-in user; the new task's id."""
        r = self.client.post(
            "/api/tasks",
            json={"name": name, "payload": payload, **extra},
            headers={"X-CSRF-Token": self.csrf()},
        )
        assert r.status_code == 202, r.text
        task_id: str = r.json()["id"]
        return task_id

    def record(self, task_id: str) -> TaskRecord:
        return self.demo.errands.sync.get(task_id, owner=ANY_OWNER)

    def finished(self, task_id: str, timeout: float = 20.0) -> TaskRecord:
        """The task's record once it is done."""

        def done() -> TaskRecord | None:
            record = self.record(task_id)
            return record if record.done else None

        record: TaskRecord = eventually(done, f"task {task_id} to finish", timeout=timeout)
        return record
