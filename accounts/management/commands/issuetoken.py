from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import User, Workspace
from accounts.services import api_token_create


class Command(BaseCommand):
    help = "Issue a new API token for a member of a workspace and print it (shown once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("email")
        parser.add_argument("--name", default="CLI token")

    def handle(self, *args: Any, slug: str, email: str, name: str, **options: Any) -> None:
        workspace = Workspace.objects.filter(slug=slug).first()
        user = User.objects.filter(email__iexact=email).first()
        if workspace is None or user is None:
            raise CommandError("No such workspace or user.")
        try:
            issued = api_token_create(workspace=workspace, user=user, name=name)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(issued.secret)
