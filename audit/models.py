"""The audit trail: append-only, gapless, hash-chained entries.

Each entry holds `seq` (1, 2, 3, ... across the whole platform, no gaps), the previous
entry's hash and its own `hash = HMAC-SHA256(FLOWDECK_AUDIT_KEY, prev_hash + canonical
JSON of its fields)`. `manage.py verify_audit` recomputes the chain.

Nothing in the application edits or deletes an entry: `save()` refuses updates, `delete()`
refuses, and the manager's queryset refuses `update()`/`delete()`/bulk writes. Raw SQL by
someone holding database credentials cannot be prevented from here — that is what the
keyed chain is for: without the HMAC key such a change cannot be made to verify.

The workspace and actor links are deliberately not CASCADE and carry no database
constraint: an entry must outlive the workspace or user it names (deleting a user must
neither delete nor rewrite history), so the ids stay as they were written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from typing import Any, NoReturn

from django.conf import settings
from django.db import models

from accounts.models import User, Workspace


class AuditImmutable(Exception):
    """An attempt to change or delete an audit entry through the application."""


class AuditQuerySet(models.QuerySet["AuditEntry"]):
    def update(self, **kwargs: Any) -> int:
        raise AuditImmutable("Audit entries cannot be updated.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditImmutable("Audit entries cannot be deleted.")

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        raise AuditImmutable("Audit entries cannot be updated.")

    def bulk_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditImmutable("Audit entries are written one by one by audit.services.record().")

    def update_or_create(self, *args: Any, **kwargs: Any) -> Any:
        raise AuditImmutable("Audit entries cannot be updated.")

    # Not copied to the manager: the audit trail is written only through record().
    update.queryset_only = True  # type: ignore[attr-defined]  # a marker Django's manager reads off the function; stubs know no function attributes
    delete.queryset_only = True  # type: ignore[attr-defined]  # a marker Django's manager reads off the function; stubs know no function attributes


AuditManager = models.Manager.from_queryset(AuditQuerySet)


class AuditEntry(models.Model):
    """One thing that happened: who (actor), where (workspace), what (action, target)."""

    seq = models.PositiveBigIntegerField(unique=True, editable=False)
    created_at = models.DateTimeField(editable=False, db_index=True)
    workspace = models.ForeignKey(
        Workspace,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        help_text="Empty for platform-level events (sign-ins, platform whitelist).",
    )
    actor = models.ForeignKey(
        User,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_label = models.CharField(max_length=254, blank=True, help_text="Email at the time.")
    action = models.CharField(max_length=64, db_index=True)
    target = models.CharField(max_length=255, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditManager()

    class Meta:
        ordering = ["-seq"]
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["workspace", "-seq"], name="audit_workspace_seq"),
            models.Index(fields=["workspace", "action", "-seq"], name="audit_workspace_action"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.target}".strip()

    # --- append-only ----------------------------------------------------------------------
    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding or kwargs.get("force_update") or kwargs.get("update_fields"):
            raise AuditImmutable("Audit entries cannot be changed once written.")
        if not self.hash or self.seq is None:
            raise AuditImmutable("Write audit entries with audit.services.record().")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise AuditImmutable("Audit entries cannot be deleted.")

    # --- the chain ------------------------------------------------------------------------
    def chain_fields(self) -> dict[str, Any]:
        """The fields the hash covers, as plain JSON values (stable across databases)."""
        created = self.created_at.astimezone(dt.UTC).isoformat(timespec="microseconds")
        return {
            "v": 1,
            "seq": self.seq,
            "created_at": created,
            "workspace_id": self.workspace_id,
            "actor_id": self.actor_id,
            "actor_label": self.actor_label,
            "action": self.action,
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "ip": self.ip,
            "user_agent": self.user_agent,
        }

    def compute_hash(self) -> str:
        return chain_hash(self.prev_hash, self.chain_fields())


class AuditChainHead(models.Model):
    """A single row (pk=1): the last seq and hash. Writers lock it to append in order.

    `seal` is HMAC(key, "head", seq, hash): someone with SQL access who deletes the newest
    entries cannot rewind the head to the entry before them without the key. A head that
    is deleted outright is rebuilt by the next write with an `audit.head_rebuilt` entry,
    which verification reports; a wipe of every row is caught against an anchor kept out
    of band (`verify_audit --anchor`, and the `audit head` log line of every write).
    """

    seq = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, blank=True)
    seal = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"audit chain head at #{self.seq}"

    def compute_seal(self) -> str:
        return head_seal(self.seq, self.hash)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    key = settings.FLOWDECK_AUDIT_KEY.encode()
    message = (prev_hash + canonical_json(fields)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def head_seal(seq: int, hash_: str) -> str:
    """The keyed seal of a chain head at (`seq`, `hash_`); also the anchor an operator keeps."""
    return chain_hash("head", {"seq": seq, "hash": hash_})
