"""``manage.py`` of the bench project (``python bench/django_project/manage.py …``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    repo = str(Path(__file__).resolve().parents[2])
    if repo not in sys.path:
        sys.path.append(repo)  # after PYTHONPATH: a snapshot of src/ there comes first
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
