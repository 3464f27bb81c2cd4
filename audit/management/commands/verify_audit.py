"""`manage.py verify_audit`: recompute the audit hash chain; exit non-zero at the first bad entry."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.selectors import Anchor, verify_chain


class Command(BaseCommand):
    help = (
        "Recompute the audit trail's HMAC chain. Detects edited, deleted, inserted or "
        "reordered entries and truncation (the newest entries deleted, with or without the "
        "chain head), names the first bad entry and the first missing seq; exits 1 if any. "
        "Keep the anchor it prints somewhere the database's users cannot write, and pass "
        "the last one with --anchor: then even a wipe of every entry is detected."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--anchor",
            default="",
            help="SEQ:SEAL printed by an earlier verify_audit (or an `audit head` log line).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            anchor = Anchor.parse(options["anchor"]) if options["anchor"] else None
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        report = verify_chain(anchor)
        problem = report.problem
        if problem is not None:
            missing = (
                f", first missing seq {problem.first_missing}"
                if problem.first_missing is not None
                else ""
            )
            raise CommandError(
                f"Audit chain BROKEN at {problem} "
                f"({report.checked} entries read, last good seq {report.last_good}{missing})."
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Audit chain OK: {report.checked} entries, head at seq {report.head_seq}."
            )
        )
        if report.anchor:
            self.stdout.write(f"Anchor (keep it out of band): {report.anchor}")
