"""``manage.py errands_worker``: ``errands worker`` for the project's app.

It takes the options of ``errands worker`` (``-c/--concurrency``, ``--burst``,
``--lease``, ``--names``, …) and runs the tasks of the project's app
(:func:`errands.django.get_app`): the installed apps' ``tasks`` modules are imported
as Django starts, so their Django ``@task`` functions and errands ``@app.task``
functions are all there. It logs at INFO (``-v 0``: warnings only) unless ``LOGGING``
gives the root logger a handler of the project's own.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from django.core.management.base import BaseCommand

from ....cli import add_worker_options, configure_logging, run_worker
from ...conf import get_app
from .. import command_errors


class Command(BaseCommand):  # type: ignore[misc]
    help = "Run an errands worker for this project's tasks."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_worker_options(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        configure_logging(logging.INFO if options["verbosity"] >= 1 else logging.WARNING)
        with command_errors():
            run_worker(get_app(), argparse.Namespace(**options))
