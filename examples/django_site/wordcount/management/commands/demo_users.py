"""``manage.py demo_users``: the example's two users, alice and bob (made, or given the
password again when they exist), to sign in as and see that neither sees the other's
tasks."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

NAMES = ("alice", "bob")
PASSWORD = "errands-demo"


class Command(BaseCommand):
    help = "Make the example's users alice and bob (password: errands-demo, or --password)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--password", default=PASSWORD)

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        for name in NAMES:
            user, made = users.objects.get_or_create(username=name)
            user.set_password(options["password"])
            user.save()
            self.stdout.write(f"{'made' if made else 'updated'} {name}")
