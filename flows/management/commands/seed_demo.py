"""`manage.py seed_demo`: the demo workspace, user and flows on an empty database.

It lives with what it seeds (flows): tenancy (accounts) imports no other app.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import User, Workspace
from accounts.services import workspace_create
from flows.demo import seed_demo_flow

DEMO_EMAIL = os.environ.get("FLOWDECK_DEMO_EMAIL", "demo@flowdeck.local")
DEMO_PASSWORD = os.environ.get("FLOWDECK_DEMO_PASSWORD", "flowdeck-demo")
DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = "Create the demo workspace, user and flow if no workspace exists yet (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            if Workspace.objects.exists():
                demo = User.objects.filter(email=DEMO_EMAIL, is_active=True).first()
                if demo is not None and demo.check_password(DEMO_PASSWORD):
                    self.stdout.write(f"Demo login: {DEMO_EMAIL} / {DEMO_PASSWORD}")
                elif demo is not None:
                    self.stdout.write(f"Demo login: {DEMO_EMAIL} (password changed since)")
                return
            user = User.objects.filter(email=DEMO_EMAIL).first()
            if user is None:
                user = User.objects.create_user(DEMO_EMAIL, DEMO_PASSWORD, name="Demo User")
            workspace = workspace_create(name="Demo workspace", slug=DEMO_SLUG, owner=user)
            self.seed_flows(workspace, user)
        self.stdout.write(self.style.SUCCESS(f"Demo login: {DEMO_EMAIL} / {DEMO_PASSWORD}"))

    def seed_flows(self, workspace: Workspace, user: User) -> None:
        seed_demo_flow(workspace=workspace, user=user)
