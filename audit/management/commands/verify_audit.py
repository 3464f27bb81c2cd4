"""`manage.py verify_audit`: recompute the audit hash chain; exit non-zero at the first bad entry."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.selectors import verify_chain


class Command(BaseCommand):
    help = (
        "Recompute the audit trail's HMAC chain. Detects edited, deleted, inserted or "
        "reordered entries and names the first bad one (seq and id); exits 1 if any."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = verify_chain()
        if report.problem is not None:
            raise CommandError(
                f"Audit chain BROKEN at {report.problem} "
                f"({report.checked} entries read, last good seq {report.problem.seq - 1})."
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Audit chain OK: {report.checked} entries, head at seq {report.head_seq}."
            )
        )
