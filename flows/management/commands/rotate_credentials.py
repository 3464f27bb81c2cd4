"""Re-encrypt every credential secret under the first key of FLOWDECK_ENCRYPTION_KEY.

Key rotation: put the new key first (`FLOWDECK_ENCRYPTION_KEY=new,old`), run this command,
then drop the old key.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from flows.crypto import rotate
from flows.models import Credential


class Command(BaseCommand):
    help = "Re-encrypt all credential secrets with the current (first) encryption key."

    def handle(self, *args: Any, **options: Any) -> None:
        count = 0
        with transaction.atomic():
            for credential in Credential.objects.select_for_update().exclude(api_key_encrypted=""):
                credential.api_key_encrypted = rotate(credential.api_key_encrypted)
                credential.save(update_fields=["api_key_encrypted"])
                count += 1
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted {count} credential(s)."))
