"""A stand-in for ``manage.py errands_worker`` while that command is not on main:
Django set up with the bench settings, then the project's errands worker.

    python bench/django_project/errands_worker.py --concurrency 16

``bench/django_tasks.py`` uses ``manage.py errands_worker`` instead as soon as the
installed errands has it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __name__ == "__main__":
    repo = str(Path(__file__).resolve().parents[2])
    if repo not in sys.path:
        sys.path.append(repo)
    ap = argparse.ArgumentParser()
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    args = ap.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django_project.settings")
    import django

    django.setup()
    from errands.django import get_app

    get_app().run_worker(concurrency=args.concurrency)
