from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import User
from accounts.services import workspace_create


class Command(BaseCommand):
    help = "Create a workspace owned by an existing user (created without a password if new)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--owner", required=True, help="email of the owner")
        parser.add_argument("--name", default="", help="display name (defaults to the slug)")

    def handle(self, *args: Any, slug: str, owner: str, name: str, **options: Any) -> None:
        user = User.objects.filter(email__iexact=owner).first()
        if user is None:
            user = User.objects.create_user(owner, None)
            self.stdout.write(f"Created user {user.email} (no password: use password reset).")
        try:
            workspace = workspace_create(name=name or slug, slug=slug, owner=user)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(self.style.SUCCESS(f"Created workspace {workspace.slug} owned by {user}"))
