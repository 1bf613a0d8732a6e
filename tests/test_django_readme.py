"""The README's five Django steps, run as they stand: a fresh project from
``django-admin startproject`` with an app of its own (``reports``), the files and
commands of the section's code blocks applied in order, then a signed-in user's POST
to the view, the worker the text starts (in burst mode: it drains the queue and
returns), and the outcome read back.

A block's first line names its file (``# mysite/settings.py (at the end)``: appended;
else written). A ``bash`` block's lines are commands; the test knows each kind and
fails on any other, so the text cannot grow a step this test does not run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # a new project, its migrations and a worker: processes

DOC = ROOT / "README.md"
SECTION = "### Adding errands to an existing Django project in five steps"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)
FILE_LINE = re.compile(r"^(?:# |\{# )(\S+?)( \(at the end\))?(?: #\})?$")

#: Run in the project after the view's request: the outcome, as JSON.
CHECK = """
import json, re

import django
from django.contrib.auth import get_user_model
from django.test import Client
from django.test.utils import setup_test_environment

django.setup()
setup_test_environment()
from errands.django import get_app

users = get_user_model().objects
task_id = {task_id!r}
alice, bob = users.get(username="alice"), users.get(username="bob")
record = get_app().sync.get(task_id, owner=str(alice.pk))
outputs = get_app().sync.outputs(task_id, owner=str(alice.pk))
client = Client()
client.force_login(alice)
page = client.get(f"/reports/{{task_id}}")
element = re.search(r"<errands-task[^>]*>", page.content.decode())
client.force_login(bob)
print(json.dumps({{
    "alice": str(alice.pk),
    "owner": record.owner,
    "status": record.status.value,
    "result": record.result,
    "percent": record.progress.percent,
    "message": record.progress.message,
    "outputs": [item for _, item in outputs],
    "page": page.status_code,
    "element": element[0] if element else None,
    "script": "/static/errands/errands-task.js" in page.content.decode(),
    "bobs_page": client.get(f"/reports/{{task_id}}").status_code,
}}))
"""

#: Run in the project: two users, and alice's POST to the view; the task's id.
START = """
import django
from django.contrib.auth import get_user_model
from django.test import Client
from django.test.utils import setup_test_environment

django.setup()
setup_test_environment()
users = get_user_model().objects
alice = users.create_user("alice", password="-")
users.create_user("bob", password="-")
client = Client()
client.force_login(alice)
response = client.post("/reports/start")
assert response.status_code == 302, response
print(response["Location"].rpartition("/")[2])
"""


def section() -> str:
    text = DOC.read_text()
    assert SECTION in text, f"{DOC} has no section {SECTION!r}"
    body = text.split(SECTION, 1)[1]
    return re.split(r"^#{2,3} ", body, maxsplit=1, flags=re.M)[0]


def test_the_section_has_five_steps() -> None:
    steps = re.findall(r"^#### (\d)\. ", section(), re.M)
    assert steps == ["1", "2", "3", "4", "5"]


class Project:
    """A Django project in a folder, run with this interpreter (errands installed)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = os.environ | {"DJANGO_SETTINGS_MODULE": "mysite.settings"}
        self.env.pop("SITE_DATABASE", None)

    def run(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def script(self, name: str, source: str) -> str:
        (self.root / name).write_text(source)
        return self.run(name)


def test_the_five_steps_run(tmp_path: Path) -> None:
    project = Project(tmp_path / "project")
    project.root.mkdir()
    # The existing project: django-admin startproject, and an app of its own.
    project.run("-m", "django", "startproject", "mysite", ".")
    project.run("manage.py", "startapp", "reports")
    with (project.root / "mysite" / "settings.py").open("a") as settings:
        settings.write('\nINSTALLED_APPS += ["reports"]\n')

    workers: list[list[str]] = []
    files: list[str] = []
    for lang, body in FENCE.findall(section()):
        if lang == "bash":
            for line in body.splitlines():
                command = shlex.split(line)
                if command == ["pip", "install", "errands[django]"]:
                    continue  # this environment has it
                assert command[:2] == ["python", "manage.py"], f"cannot run {line!r}"
                if command[2] == "errands_worker":
                    workers.append(command[1:])  # after the request below
                else:
                    assert command[2] in ("migrate",), f"cannot run {line!r}"
                    project.run(*command[1:])
            continue
        first, _, content = body.partition("\n")
        named = FILE_LINE.match(first)
        assert named, f"a {lang} block that names no file: {first!r}"
        path = project.root / named[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a" if named[2] else "w") as out:
            out.write(("\n" if named[2] else "") + content)
        files.append(named[1])
    assert files == [
        "mysite/settings.py",
        "reports/tasks.py",
        "reports/views.py",
        "mysite/urls.py",
        "reports/templates/reports/report.html",
    ]
    assert workers == [["manage.py", "errands_worker"]]

    task_id = project.script("start.py", START).strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", task_id), task_id
    for command in workers:
        project.run(*command, "--burst")
    outcome = json.loads(project.script("check.py", CHECK.format(task_id=task_id)))

    numbers = [3, 1, 4, 1, 5, 9, 2, 6]
    totals = [sum(numbers[: i + 1]) for i in range(len(numbers))]
    assert outcome["status"] == "succeeded", outcome
    assert outcome["owner"] == outcome["alice"]  # the signed-in user, by OwnerMiddleware
    assert outcome["result"] == sum(numbers)
    assert outcome["percent"] == 100
    assert outcome["message"] == "added 6"
    assert outcome["outputs"] == [
        {"n": n, "total": t} for n, t in zip(numbers, totals, strict=True)
    ]
    assert outcome["page"] == 200
    assert outcome["element"].startswith(f'<errands-task task-id="{task_id}" api="/" csrf="')
    assert outcome["script"]
    assert outcome["bobs_page"] == 404
