"""The demo application as the HTTP tests build it: a small corpus in ``tmp_path``, a
fast in-process worker, and cheap password hashes (the tests sign in many times)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI

from errands.demo import accounts
from errands.demo.web import DemoSettings, create_app


def build_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **worker: Any) -> FastAPI:
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    corpus = tmp_path / "corpus"
    (corpus / "pkg").mkdir(parents=True)
    (corpus / "one.py").write_text("import os\nNEEDLE = 1\n")
    (corpus / "two.py").write_text("# a needle in a haystack\nprint('hay')\n")
    (corpus / "pkg" / "three.py").write_text("def needle():\n    return 'needle'\n")
    (corpus / "notes.txt").write_text("no needle here: not a .py file\n")
    options = {"poll_interval": 0.2, "heartbeat_interval": 0.25, "lease_seconds": 1.5} | worker
    return create_app(
        DemoSettings(
            database_url=f"sqlite:///{tmp_path}/d.db",
            data_dir=tmp_path / "data",
            corpus=corpus,
            worker=True,
            worker_options=options,
        )
    )
