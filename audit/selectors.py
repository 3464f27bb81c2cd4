"""Reads of the audit trail: a workspace's entries (filtered) and the chain verification."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from accounts.models import Workspace
from accounts.tenancy import scoped
from audit.models import AuditChainHead, AuditEntry, head_seal


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
    first_missing: int | None = None  # set when entries were deleted: the lowest missing seq

    def __str__(self) -> str:
        where = f"seq {self.seq}" + (f" (id {self.entry_id})" if self.entry_id is not None else "")
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class ChainReport:
    checked: int
    head_seq: int
    problem: ChainProblem | None
    last_good: int = 0  # the highest seq up to which the chain verified
    anchor: str = ""  # "SEQ:SEAL" of the verified head, for the operator to keep

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class Anchor:
    """A sealed head an operator kept out of band ("SEQ:SEAL", printed by verify_audit)."""

    seq: int
    seal: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        seq, _, seal = text.strip().partition(":")
        if not seq.isdigit() or len(seal) != 64:
            raise ValueError("An anchor is SEQ:SEAL as printed by verify_audit.")
        return cls(int(seq), seal.lower())


def _rows() -> Iterator[AuditEntry]:
    return AuditEntry.objects.order_by("seq", "pk").iterator(chunk_size=2000)


def _missing(checked: int, last_good: int, seq: int, message: str) -> ChainReport:
    return ChainReport(
        checked, last_good, ChainProblem(seq, None, message, first_missing=seq), last_good
    )


def verify_chain(anchor: Anchor | None = None) -> ChainReport:
    """Walk the chain in seq order and report the first entry that does not verify.

    Catches an edited row (its hash no longer matches), a deleted row (a gap in seq), an
    inserted row (a hash nobody without the key can compute; or a duplicate/out-of-place
    seq) and reordered rows (seq is inside the hash, and each entry names the hash of its
    predecessor). Truncation: the newest entries deleted with the head left ahead of them,
    rewound (its keyed seal no longer matches), or deleted (its rebuild is an entry of its
    own); everything deleted, against `anchor`, the sealed head kept out of band. Deletions
    name the first missing seq.
    """
    expected_seq = 1
    prev_hash = ""
    checked = 0
    anchored = anchor is None
    for entry in _rows():
        checked += 1
        last_good = expected_seq - 1
        if entry.seq != expected_seq:
            if entry.seq > expected_seq:
                message = (
                    f"expected seq {expected_seq} next, found seq {entry.seq}: "
                    f"entries {expected_seq}..{entry.seq - 1} are missing (deleted)"
                )
                problem = ChainProblem(entry.seq, entry.pk, message, first_missing=expected_seq)
            else:
                message = f"seq {entry.seq} appears again after seq {expected_seq - 1} (inserted)"
                problem = ChainProblem(entry.seq, entry.pk, message)
            return ChainReport(checked, last_good, problem, last_good)
        if entry.prev_hash != prev_hash:
            message = "does not follow the previous entry (prev_hash differs)"
            return ChainReport(
                checked, entry.seq, ChainProblem(entry.seq, entry.pk, message), last_good
            )
        if entry.hash != entry.compute_hash():
            message = "its content does not match its hash (edited)"
            return ChainReport(
                checked, entry.seq, ChainProblem(entry.seq, entry.pk, message), last_good
            )
        if entry.action == "audit.head_rebuilt":
            lost = int((entry.after or {}).get("last_seq") or entry.seq - 1) + 1
            message = (
                f"the chain head was deleted and rebuilt after seq {lost - 1}: "
                f"entries from seq {lost} on may have been deleted with it"
            )
            return ChainReport(
                checked,
                entry.seq,
                ChainProblem(entry.seq, entry.pk, message, first_missing=lost),
                lost - 1,
            )
        if anchor is not None and entry.seq == anchor.seq:
            if head_seal(entry.seq, entry.hash) != anchor.seal:
                message = "does not match the anchor kept for it (the chain was rewritten)"
                return ChainReport(
                    checked, entry.seq, ChainProblem(entry.seq, entry.pk, message), last_good
                )
            anchored = True
        prev_hash = entry.hash
        expected_seq += 1
    last_seq = expected_seq - 1
    if not anchored:
        assert anchor is not None
        message = (
            f"the anchor kept for seq {anchor.seq} is past the newest entry (seq {last_seq}): "
            f"entries {last_seq + 1}..{anchor.seq} are missing (deleted)"
        )
        return _missing(checked, last_seq, last_seq + 1, message)
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is None:
        if checked:
            message = "the chain head is missing: the newest entries may have been deleted with it"
            return _missing(checked, last_seq, last_seq + 1, message)
        return ChainReport(0, 0, None)
    if head.seal != head.compute_seal():
        message = (
            f"the chain head (seq {head.seq}) is not sealed with the audit key: it was rewound "
            "or forged, and the entries after it were deleted"
        )
        return _missing(checked, last_seq, min(head.seq, last_seq) + 1, message)
    if (head.seq, head.hash) != (last_seq, prev_hash):
        if head.seq > last_seq:
            message = f"the chain head is at seq {head.seq}: the newest entries were deleted"
            return _missing(checked, last_seq, last_seq + 1, message)
        message = f"the chain head (seq {head.seq}) does not match the newest entry"
        return ChainReport(checked, last_seq, ChainProblem(head.seq, None, message), last_seq)
    return ChainReport(checked, last_seq, None, last_seq, f"{head.seq}:{head.seal}")


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
