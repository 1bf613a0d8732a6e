"""Every file in ``examples/`` runs: ``demo.sh`` as ``make cli-demo`` runs it (a worker
on ``examples.tasks:app``, ``count`` submitted and followed, ``errands ls``), and the
task it does not submit, ``fail``, on a real worker of that module. (The README's own
examples run in tests/test_readme.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, WorkerProcess

pytestmark = pytest.mark.slow  # real worker processes (demo.sh: ~5 s)

BIN = Path(sys.executable).parent  # the virtual environment's, with its `errands`
EXAMPLES = ROOT / "examples"


def test_every_example_file_is_run_here() -> None:
    """A new file in examples/ needs a test (this list grows with it): the Django project
    is run by tests/test_django_*.py, the Flask application by tests/test_flask_*.py."""
    files = sorted(p.name for p in EXAMPLES.iterdir() if p.name != "__pycache__")
    assert files == ["__init__.py", "demo.sh", "django_site", "flask_app.py", "tasks.py"]


def test_demo_script_follows_a_task_to_its_result(tmp_path: Path) -> None:
    # Its own database: never the web demo's (ERRANDS_DATABASE_URL).
    env = os.environ | {
        "BIN": str(BIN),
        "ERRANDS_CLI_DEMO_DATABASE_URL": f"sqlite:///{tmp_path}/cli-demo.db",
        "ERRANDS_DATABASE_URL": f"sqlite:///{tmp_path}/web-demo.db",
    }
    out = subprocess.run(
        ["bash", str(EXAMPLES / "demo.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    # stdout: the migration's line, the result (JSON), the listing with the finished task.
    migrated, _, rest = out.stdout.partition("\n")
    assert migrated.startswith("errands schema is up to date (sqlite:")
    result, _, listing = rest.partition("Recent tasks (errands ls):\n")
    assert json.loads(result) == {"counted": 200}
    (row,) = listing.splitlines()
    task_id = re.match(r"(\S+)\s+succeeded\s+100\.0%\s+demo-user\s+count\s", row)
    assert task_id is not None, listing
    # stderr: the task followed live to the end, by the worker the script started.
    assert f"submitted {task_id[1]}" in out.stderr
    assert re.search(r"\] +100% succeeded +step 200 of 200$", out.stderr, re.M), out.stderr
    assert "started: count, fail" in out.stderr
    assert (tmp_path / "cli-demo.db").exists() and not (tmp_path / "web-demo.db").exists()


def test_fail_task_fails_with_its_reason(
    db_url: str, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    spawn_worker("examples.tasks:app", "--concurrency", "1")
    out = subprocess.run(
        [
            str(BIN / "errands"),
            "submit",
            "examples.tasks:app",
            "fail",
            json.dumps({"reason": "no such file"}),
            "--owner",
            "demo-user",
            "--wait",
        ],
        cwd=ROOT,
        env=os.environ | {"ERRANDS_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert out.stdout == ""
    assert out.stderr.splitlines()[-1] == "task failed: TaskFailed: no such file", out.stderr
