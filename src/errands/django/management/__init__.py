"""The management commands of ``errands.django``: ``errands_worker`` and
``errands_purge``, errands' own commands (``errands worker``, ``errands purge``) for
the project's app, with the same options."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.core.management.base import CommandError

from ...cli import failure


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    """errands' expected failures (the database unreachable, bad settings, …) as
    Django's ``CommandError``, with the message and exit code of ``errands``'s own."""
    try:
        yield
    except Exception as exc:
        known = failure(exc)
        if known is None:
            raise
        code, message = known
        raise CommandError(message, returncode=code) from exc
