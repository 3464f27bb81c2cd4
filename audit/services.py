"""Writes for the audit trail: `record()` and the few helpers around it.

`record()` MUST be called inside the transaction of the change it records: it appends
to the chain in the current transaction, so a change that rolls back leaves no entry and
an entry never exists without its change (Zulip's RealmAuditLog rule). It refuses to run
outside a transaction. Appending locks the single chain-head row until that transaction
ends, which serialises writers (PostgreSQL: SELECT ... FOR UPDATE; SQLite: the database
write lock, taken at BEGIN IMMEDIATE) — that is what keeps `seq` gapless.

Call it AFTER the change's own writes (as the last write of the transaction): the chain
head is then always the last lock a transaction takes, so two transactions can never wait
on each other (one holding the head, wanting a row the other holds) — no deadlocks.

Never pass secrets in `before`/`after` (credential keys: `has_api_key` booleans only).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, models, transaction
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from accounts.models import User, Workspace
from audit import context
from audit.actions import ACTIONS
from audit.models import AuditChainHead, AuditEntry, head_seal

log = logging.getLogger(__name__)

HEAD_PK = 1


class UnknownAuditAction(ValueError):
    """`record()` was given an action that is not in audit.actions.ACTIONS."""


def record(
    *,
    action: str,
    workspace: Workspace | None = None,
    actor: User | Any | None = None,
    target: str = "",
    before: Any = None,
    after: Any = None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> AuditEntry:
    """Append one entry to the audit trail, inside the caller's transaction.

    `ip` and `user_agent` default to the current request or WebSocket context.
    """
    if action not in ACTIONS:
        raise UnknownAuditAction(
            f"Unregistered audit action {action!r}: add it to audit/actions.py."
        )
    if not transaction.get_connection().in_atomic_block:
        raise TransactionManagementError(
            "audit.record() must run inside the transaction of the change it records."
        )
    ctx = context.current()
    if ip is None and ctx is not None:
        ip = ctx.ip
    if user_agent is None and ctx is not None:
        user_agent = ctx.user_agent
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None  # AnonymousUser
    head = _lock_head()
    return _append(
        head,
        AuditEntry(
            created_at=timezone.now(),
            workspace_id=workspace.pk if workspace is not None else None,
            actor_id=actor.pk if actor is not None else None,
            actor_label=_text(actor.email if actor is not None else "", 254),
            action=action,
            target=_text(target, 255),
            before=_json(before),
            after=_json(after),
            ip=context.clean_ip(ip),
            user_agent=_text(user_agent or "", context.USER_AGENT_MAX),
        ),
    )


def _append(head: AuditChainHead, entry: AuditEntry) -> AuditEntry:
    """Chain `entry` after the locked `head`, save it and move the head (sealed) to it."""
    entry.seq, entry.prev_hash = head.seq + 1, head.hash
    entry.hash = entry.compute_hash()
    entry.save()
    head.seq, head.hash = entry.seq, entry.hash
    head.seal = head.compute_seal()
    head.save(update_fields=["seq", "hash", "seal"])
    # Out of band: shipped logs hold every sealed head, so a later wipe of the tables is
    # visible against the last one (`verify_audit --anchor SEQ:SEAL`).
    log.info("audit head", extra={"audit_seq": entry.seq, "audit_seal": head.seal})
    return entry


def _lock_head() -> AuditChainHead:
    head = AuditChainHead.objects.select_for_update().filter(pk=HEAD_PK).first()
    if head is not None:
        return head
    # No head: the first entry ever (or a flushed database), or someone deleted the row.
    # Start from the last entry; if there is one, the head was deleted, and the chain says
    # so in an entry of its own that verification reports (a rebuilt head cannot vouch for
    # the entries that may have been deleted with it).
    last = AuditEntry.objects.order_by("-seq").only("seq", "hash").first()
    try:
        with transaction.atomic():
            seq, hash_ = (last.seq, last.hash) if last else (0, "")
            AuditChainHead.objects.create(
                pk=HEAD_PK, seq=seq, hash=hash_, seal=head_seal(seq, hash_)
            )
    except IntegrityError:
        return AuditChainHead.objects.select_for_update().get(pk=HEAD_PK)  # a concurrent writer
    head = AuditChainHead.objects.select_for_update().get(pk=HEAD_PK)
    if last is not None:
        log.error("audit chain head was missing; rebuilt at seq %s", last.seq)
        rebuilt = AuditEntry(
            created_at=timezone.now(),
            action="audit.head_rebuilt",
            target="audit:head",
            after={"last_seq": last.seq},
        )
        _append(head, rebuilt)
    return head


def _text(value: Any, limit: int) -> str:
    return str(value or "").replace("\x00", "")[:limit]


def _json(value: Any) -> Any:
    """Plain JSON values only (NUL characters dropped: PostgreSQL refuses them)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_text(k, 1000): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_json(v) for v in items]
    return _text(value, 10_000)


# --- failed authorisation -----------------------------------------------------------------


def access_denied(
    *, actor: Any, workspace: Workspace | None, target: str, after: Any = None
) -> None:
    """Record `access.denied` for an authenticated caller; never raises.

    The refused request may be inside a transaction that is about to roll back (the 404
    propagates through it), so the entry is written in its own transaction: at once when
    no transaction is open, otherwise by AuditContextMiddleware after the response is
    ready. Outside a request (a consumer handler inside a transaction) it is written in a
    savepoint of the current transaction.
    """
    if actor is None or not getattr(actor, "is_authenticated", False):
        return
    ctx = context.current()
    denial = {
        "action": "access.denied",
        "workspace": workspace,
        "actor": actor,
        "target": target,
        "after": after,
        "ip": ctx.ip if ctx is not None else None,
        "user_agent": ctx.user_agent if ctx is not None else None,
    }
    try:
        if ctx is not None and ctx.deferred and transaction.get_connection().in_atomic_block:
            ctx.pending_denials.append(denial)
            return
        with transaction.atomic():
            record(**denial)
    except Exception:  # the 404 must stand whatever happens here
        log.exception("could not record access.denied", extra={"target": target})


# Target prefixes follow the names the other entries use ("token:5", not "apitoken:5").
TARGET_PREFIXES = {"apitoken": "token"}


def access_denied_lookup(
    model: type[models.Model], workspace: Workspace, lookup: dict[str, Any], *, invalid: bool
) -> None:
    """`access.denied` for a scoped lookup that found nothing in `workspace`.

    Notes whether the id exists in another workspace (a probe) or nowhere. Never raises.
    """
    ctx = context.current()
    actor = ctx.user if ctx is not None else None
    if actor is None or not getattr(actor, "is_authenticated", False):
        return  # internal lookups (workers, commands) are not probes
    model_name = model._meta.model_name or model.__name__.lower()  # Django's own default
    name = TARGET_PREFIXES.get(model_name, model_name)
    if set(lookup) <= {"pk", "id", "deleted_at__isnull"} and ("pk" in lookup or "id" in lookup):
        target = f"{name}:{lookup.get('pk', lookup.get('id'))}"
    else:
        target = f"{name}:" + ",".join(f"{k}={getattr(v, 'pk', v)}" for k, v in lookup.items())
    reason = "invalid"
    if not invalid:
        try:
            with transaction.atomic():  # a savepoint: a failure here must not poison the caller
                elsewhere = model._default_manager.filter(**lookup).exclude(workspace=workspace)
                reason = "other_workspace" if elsewhere.exists() else "not_found"
        except Exception:
            reason = "not_found"
    access_denied(actor=actor, workspace=workspace, target=target, after={"reason": reason})


def write_pending_denials(ctx: context.AuditContext) -> None:
    """Write the denials a request deferred (called by the middleware; never raises)."""
    pending, ctx.pending_denials = ctx.pending_denials, []
    for denial in pending:
        try:
            with transaction.atomic():
                record(**denial)
        except Exception:
            log.exception("could not record access.denied", extra={"target": denial["target"]})


# --- exports ------------------------------------------------------------------------------


@transaction.atomic
def audit_export_record(
    *, workspace: Workspace, acting: User, fmt: str, filters: dict[str, Any]
) -> AuditEntry:
    """An admin exported their workspace's trail: recorded before the first byte leaves."""
    return record(
        action="audit.export",
        workspace=workspace,
        actor=acting,
        target=f"workspace:{workspace.slug}",
        after={"format": fmt, "filters": filters},
    )


# --- snapshots that never hold secrets ------------------------------------------------------


def credential_snapshot(credential: Any) -> dict[str, Any]:
    """What the trail may say about a credential: never the key, only whether it has one."""
    return {
        "name": credential.name,
        "provider": credential.provider,
        "base_url": credential.base_url,
        "has_api_key": bool(credential.api_key_encrypted),
    }


def credential_diff(credential: Any) -> dict[str, Any]:
    """`before` (as stored) and `after` (as about to be saved) of a credential being changed."""
    stored = type(credential)._default_manager.filter(pk=credential.pk).first()
    after = credential_snapshot(credential)
    after["api_key_changed"] = (
        stored is not None and stored.api_key_encrypted != credential.api_key_encrypted
    )
    return {"before": credential_snapshot(stored) if stored else None, "after": after}
