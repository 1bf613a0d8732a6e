"""The README's example runs as written."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from errands import Errands, TaskContext

ROOT = Path(__file__).resolve().parent.parent


def test_readme_example_runs(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    example = next(b for b in blocks if "asyncio.run(main())" in b)
    script = tmp_path / "example.py"
    script.write_text(example)
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "succeeded {'hits': ['alpha', 'beta', 'gamma']} 100.0"
    assert lines[1] == "[(1, {'hit': 'alpha'}), (2, {'hit': 'beta'}), (3, {'hit': 'gamma'})]"


def test_readme_fastapi_guide_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guide's ``main.py``, as written, serves its own route and the task API."""
    from starlette.testclient import TestClient

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    guide = next(b for b in blocks if b.startswith("# main.py"))
    (tmp_path / "guide_main.py").write_text(guide)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("guide_main")
    try:
        with TestClient(module.app) as client:
            alice, bob = {"x-api-key": "key-alice"}, {"x-api-key": "key-bob"}
            assert client.get("/hello", headers=alice).json() == {"hello": "alice"}
            sent = client.post(
                "/api/tasks",
                json={"name": "monthly_report", "payload": {"month": "2026-11"}},
                headers=alice,
            )
            assert sent.status_code == 202
            location = sent.headers["location"]
            assert location.startswith("/api/tasks/")
            module.tasks.run_worker(burst=True, handle_signals=False)
            done = client.get(location, headers=alice).json()
            assert done["status"] == "succeeded"
            assert done["result"] == {"month": "2026-11", "total": 465}
            assert client.get(location, headers=bob).status_code == 404
            assert client.get(location).status_code == 401
    finally:
        module.tasks.close()
        sys.modules.pop("guide_main", None)


def test_readme_dashboard_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard section's ``admin.py``, as written: hidden from a session that is
    not an administrator's, the overview with e-mail labels and the owner filter for
    one that is."""
    from base64 import b64encode

    from itsdangerous import TimestampSigner
    from starlette.testclient import TestClient

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    example = next(b for b in blocks if b.startswith("# admin.py"))
    (tmp_path / "readme_admin.py").write_text(example)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("readme_admin")

    def session(data: dict[str, str]) -> dict[str, str]:
        """The cookie of a session holding ``data``, as SessionMiddleware signs it."""
        signer = TimestampSigner("the application's own secret")
        value = signer.sign(b64encode(json.dumps(data).encode())).decode()
        return {"Cookie": f"session={value}"}

    tasks: Errands = module.tasks  # the example's app

    @tasks.task()
    def report(ctx: TaskContext, payload: dict[str, Any]) -> None:
        pass

    try:
        task = module.tasks.sync.submit("report", {}, owner="u1")
        with TestClient(module.site) as client:
            for who in ({}, session({"role": "user"})):
                assert client.get("/admin", headers=who).status_code == 404
            admin = session({"role": "admin"})
            page = client.get("/admin", headers=admin)
            assert page.status_code == 200 and "Overview" in page.text
            assert f'href="/admin/tasks/{task.id}"' in page.text and "ann@example.com" in page.text
            page = client.get("/admin", params={"owner": "ann@example.com"}, headers=admin)
            assert task.id in page.text
            page = client.get("/admin", params={"owner": "carol@example.com"}, headers=admin)
            assert "No user has the e-mail address carol@example.com." in page.text
    finally:
        module.tasks.close()
        sys.modules.pop("readme_admin", None)
