"""``manage.py errands_purge``: ``errands purge`` for the project's app — delete the
finished task records whose retention has passed (``--batch`` rows per transaction)."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand

from ....cli import add_purge_options, purge
from ...conf import get_app
from .. import command_errors


class Command(BaseCommand):  # type: ignore[misc]
    help = "Delete the expired finished task records of this project's errands."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_purge_options(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        with command_errors():
            purge(get_app(), argparse.Namespace(**options), out=self.stdout)
