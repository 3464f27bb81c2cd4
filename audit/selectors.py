"""Reads of the audit trail: a workspace's entries (filtered) and the chain verification."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from accounts.models import Workspace
from accounts.tenancy import scoped
from audit.models import AuditChainHead, AuditEntry


def entries_for_workspace(
    workspace: Workspace,
    *,
    actor: str = "",
    action: str = "",
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> QuerySet[AuditEntry]:
    """The workspace's entries, newest first; `actor` is an email, `until` inclusive."""
    entries = scoped(AuditEntry, workspace)
    if actor:
        entries = entries.filter(actor_label__iexact=actor.strip())
    if action:
        entries = entries.filter(action=action)
    if since is not None:
        entries = entries.filter(created_at__date__gte=since)
    if until is not None:
        entries = entries.filter(created_at__date__lte=until)
    return entries.order_by("-seq")


def actor_labels_for_workspace(workspace: Workspace) -> list[str]:
    """Every actor email that appears in the workspace's trail (for the filter's list)."""
    labels = scoped(AuditEntry, workspace).exclude(actor_label="").values_list("actor_label")
    return sorted({label for (label,) in labels.distinct()})


# --- verification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    entry_id: int | None
    message: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" + (f" (id {self.entry_id})" if self.entry_id is not None else "")
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class ChainReport:
    checked: int
    head_seq: int
    problem: ChainProblem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _rows() -> Iterator[AuditEntry]:
    return AuditEntry.objects.order_by("seq", "pk").iterator(chunk_size=2000)


def verify_chain() -> ChainReport:
    """Walk the chain in seq order and report the first entry that does not verify.

    Catches an edited row (its hash no longer matches), a deleted row (a gap in seq, or a
    chain head ahead of the last entry), an inserted row (a hash nobody without the key
    can compute; or a duplicate/out-of-place seq) and reordered rows (seq is inside the
    hash, and each entry names the hash of its predecessor).
    """
    expected_seq = 1
    prev_hash = ""
    checked = 0
    for entry in _rows():
        checked += 1
        if entry.seq != expected_seq:
            if entry.seq > expected_seq:
                message = (
                    f"expected seq {expected_seq} next, found seq {entry.seq}: "
                    f"entries {expected_seq}..{entry.seq - 1} are missing (deleted)"
                )
            else:
                message = f"seq {entry.seq} appears again after seq {expected_seq - 1} (inserted)"
            return ChainReport(
                checked, expected_seq - 1, ChainProblem(entry.seq, entry.pk, message)
            )
        if entry.prev_hash != prev_hash:
            return ChainReport(
                checked,
                entry.seq,
                ChainProblem(
                    entry.seq, entry.pk, "does not follow the previous entry (prev_hash differs)"
                ),
            )
        if entry.hash != entry.compute_hash():
            return ChainReport(
                checked,
                entry.seq,
                ChainProblem(entry.seq, entry.pk, "its content does not match its hash (edited)"),
            )
        prev_hash = entry.hash
        expected_seq += 1
    last_seq = expected_seq - 1
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is not None and (head.seq, head.hash) != (last_seq, prev_hash):
        if head.seq > last_seq:
            message = f"the chain head is at seq {head.seq}: the newest entries were deleted"
            return ChainReport(checked, last_seq, ChainProblem(last_seq + 1, None, message))
        message = f"the chain head (seq {head.seq}) does not match the newest entry"
        return ChainReport(checked, last_seq, ChainProblem(head.seq, None, message))
    return ChainReport(checked, last_seq, None)


def entry_as_dict(entry: AuditEntry) -> dict[str, Any]:
    """One entry as exported (JSONL/CSV): every field, hashes included for offline checks."""
    return {
        "seq": entry.seq,
        "created_at": entry.created_at.isoformat(),
        "workspace_id": entry.workspace_id,
        "actor_id": entry.actor_id,
        "actor": entry.actor_label,
        "action": entry.action,
        "target": entry.target,
        "before": entry.before,
        "after": entry.after,
        "ip": entry.ip,
        "user_agent": entry.user_agent,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }
