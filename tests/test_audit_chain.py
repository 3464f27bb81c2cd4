"""The audit chain: gapless, keyed, append-only; `verify_audit` names the first bad entry."""

from __future__ import annotations

import hashlib
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError

from accounts.models import Membership, User, Workspace
from audit.models import AuditEntry, AuditImmutable, canonical_json
from audit.services import UnknownAuditAction, record
from flows.services import flow_create

TABLE = AuditEntry._meta.db_table


def _write(
    n: int, workspace: Workspace | None = None, actor: User | None = None
) -> list[AuditEntry]:
    entries = []
    for i in range(n):
        with transaction.atomic():
            entries.append(
                record(
                    action="flow.create",
                    workspace=workspace,
                    actor=actor,
                    target=f"flow:{i}",
                    after={"name": f"flow {i}", "n": i},
                    ip="10.0.0.1",
                    user_agent="pytest",
                )
            )
    return entries


def _verify() -> str:
    """Run the command; return its output, or the CommandError message when it fails."""
    from io import StringIO

    out = StringIO()
    try:
        call_command("verify_audit", stdout=out)
    except CommandError as exc:
        return f"FAILED {exc}"
    return out.getvalue()


def _sql(statement: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def _all_seqs() -> list[int]:
    return list(AuditEntry.objects.order_by("seq").values_list("seq", flat=True))


# --- a clean chain ----------------------------------------------------------------------------
def test_entries_get_consecutive_seqs_and_link_to_their_predecessor(workspace_a, alice_owner):
    first, second, third = _write(3, workspace_a, alice_owner)
    start = first.seq
    assert [second.seq, third.seq] == [start + 1, start + 2]
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    assert third.actor_label == "alice@example.com"
    assert "OK" in _verify()


def test_hash_is_keyed_so_a_plain_sha256_of_the_fields_does_not_match(db, settings):
    (entry,) = _write(1)
    plain = hashlib.sha256((entry.prev_hash + canonical_json(entry.chain_fields())).encode())
    assert entry.hash != plain.hexdigest()
    settings.FLOWDECK_AUDIT_KEY = "another key"
    assert "FAILED" in _verify() and f"seq {entry.seq}" in _verify()


def test_record_refuses_unregistered_actions(db):
    with transaction.atomic(), pytest.raises(UnknownAuditAction):
        record(action="flow.explode", target="flow:1")
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_record_refuses_to_run_outside_a_transaction():
    with pytest.raises(TransactionManagementError):
        record(action="flow.create", target="flow:1")
    assert not AuditEntry.objects.exists()


def test_a_rolled_back_change_leaves_no_entry(workspace_a, alice_owner):
    acting = Membership.objects.get(workspace=workspace_a, user=alice_owner)
    before = AuditEntry.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        flow_create(workspace=workspace_a, acting=acting, name="doomed")
        assert AuditEntry.objects.filter(action="flow.create", after__name="doomed").exists()
        raise RuntimeError("the request failed after the change")
    assert AuditEntry.objects.count() == before
    assert "OK" in _verify()


# --- tampering, straight in the database ------------------------------------------------------
def test_an_edited_field_is_caught_and_named(db):
    entries = _write(5)
    victim = entries[2]
    _sql(f"UPDATE {TABLE} SET target = %s WHERE id = %s", ["flow:999", victim.pk])
    result = _verify()
    assert result.startswith("FAILED")
    assert f"seq {victim.seq} (id {victim.pk})" in result and "edited" in result


def test_an_edited_payload_is_caught(db):
    entries = _write(3)
    _sql(f"UPDATE {TABLE} SET after = %s WHERE id = %s", ['{"name": "other"}', entries[0].pk])
    assert f"seq {entries[0].seq} (id {entries[0].pk})" in _verify()


def test_a_deleted_row_is_caught_and_the_gap_named(db):
    entries = _write(5)
    _sql(f"DELETE FROM {TABLE} WHERE id = %s", [entries[1].pk])
    result = _verify()
    assert result.startswith("FAILED")
    after_gap = entries[2]
    assert f"seq {after_gap.seq} (id {after_gap.pk})" in result
    assert f"entries {entries[1].seq}..{entries[1].seq} are missing" in result


def test_deleting_the_newest_rows_is_caught_by_the_chain_head(db):
    entries = _write(4)
    _sql(f"DELETE FROM {TABLE} WHERE seq >= %s", [entries[2].seq])
    result = _verify()
    assert result.startswith("FAILED")
    assert f"seq {entries[2].seq}" in result and "newest entries were deleted" in result


HEAD_TABLE = "audit_auditchainhead"


def _verify_with(anchor: str) -> str:
    from io import StringIO

    out = StringIO()
    try:
        call_command("verify_audit", anchor=anchor, stdout=out)
    except CommandError as exc:
        return f"FAILED {exc}"
    return out.getvalue()


def test_deleting_the_newest_rows_and_rewinding_the_head_is_caught(db):
    entries = _write(5)
    kept = entries[1]
    _sql(f"DELETE FROM {TABLE} WHERE seq > %s", [kept.seq])
    # The head rewound to the entry before the deleted ones, as SQL access allows; its seal
    # cannot be recomputed without the key.
    _sql(f"UPDATE {HEAD_TABLE} SET seq = %s, hash = %s", [kept.seq, kept.hash])
    result = _verify()
    assert result.startswith("FAILED") and "not sealed" in result
    assert f"first missing seq {kept.seq + 1}" in result


def test_deleting_the_newest_rows_and_the_head_is_caught_even_after_more_writes(db):
    entries = _write(5)
    kept = entries[2]
    _sql(f"DELETE FROM {TABLE} WHERE seq > %s", [kept.seq])
    _sql(f"DELETE FROM {HEAD_TABLE}")
    result = _verify()
    assert result.startswith("FAILED") and "chain head is missing" in result
    assert f"first missing seq {kept.seq + 1}" in result
    # The application's next write rebuilds the head, and says so in the chain itself.
    _write(2)
    rebuilt = AuditEntry.objects.get(action="audit.head_rebuilt")
    assert rebuilt.seq == kept.seq + 1 and rebuilt.after == {"last_seq": kept.seq}
    result = _verify()
    assert result.startswith("FAILED") and "rebuilt" in result
    assert f"first missing seq {kept.seq + 1}" in result


def test_deleting_everything_is_caught_against_the_kept_anchor(db):
    _write(4)
    report = _verify()
    assert "OK" in report
    anchor = report.split("Anchor (keep it out of band): ")[1].strip()
    seq = int(anchor.split(":")[0])
    assert "OK" in _verify_with(anchor)
    _sql(f"DELETE FROM {TABLE}")
    _sql(f"DELETE FROM {HEAD_TABLE}")
    assert "OK" in _verify()  # without an anchor, an empty trail is indistinguishable
    result = _verify_with(anchor)
    assert result.startswith("FAILED") and "first missing seq 1" in result
    assert f"entries 1..{seq} are missing" in result


def test_an_anchor_that_does_not_match_its_entry_is_caught(db):
    entries = _write(3)
    assert "FAILED" in _verify_with(f"{entries[1].seq}:{'0' * 64}")
    assert "BROKEN" not in _verify_with(f"{entries[1].seq}:{_anchor_of(entries[1])}")
    assert _verify_with("nonsense").startswith("FAILED An anchor is")


def _anchor_of(entry: AuditEntry) -> str:
    from audit.models import head_seal

    return head_seal(entry.seq, entry.hash)


def test_a_deleted_middle_row_names_the_first_missing_seq_and_the_last_good_one(db):
    entries = _write(6)
    _sql(f"DELETE FROM {TABLE} WHERE seq IN (%s, %s)", [entries[2].seq, entries[3].seq])
    result = _verify()
    assert f"last good seq {entries[1].seq}" in result
    assert f"first missing seq {entries[2].seq}" in result


def test_an_inserted_forged_row_is_caught(db):
    entries = _write(3)
    last = entries[-1]
    forged_fields = dict(last.chain_fields(), seq=last.seq + 1, target="flow:forged")
    forged_hash = hashlib.sha256((last.hash + canonical_json(forged_fields)).encode()).hexdigest()
    _sql(
        f"INSERT INTO {TABLE} (seq, created_at, actor_label, action, target, user_agent, "
        "prev_hash, hash) VALUES (%s, %s, '', 'flow.create', 'flow:forged', '', %s, %s)",
        [last.seq + 1, last.created_at, last.hash, forged_hash],
    )
    forged_id = AuditEntry.objects.get(seq=last.seq + 1).pk
    result = _verify()
    assert result.startswith("FAILED")
    assert f"seq {last.seq + 1} (id {forged_id})" in result


def test_a_row_inserted_in_the_middle_by_renumbering_is_caught(db):
    entries = _write(4)
    # Make room after the second entry, the way someone with only SQL access would.
    for entry in reversed(entries[2:]):
        _sql(f"UPDATE {TABLE} SET seq = seq + 1 WHERE id = %s", [entry.pk])
    _sql(
        f"INSERT INTO {TABLE} (seq, created_at, actor_label, action, target, user_agent, "
        "prev_hash, hash) VALUES (%s, %s, '', 'flow.create', 'flow:x', '', %s, %s)",
        [entries[2].seq, entries[1].created_at, entries[1].hash, "0" * 64],
    )
    inserted = AuditEntry.objects.get(seq=entries[2].seq)
    assert f"seq {inserted.seq} (id {inserted.pk})" in _verify()


def test_two_rows_swapping_their_seq_are_caught(db):
    entries = _write(4)
    a, b = entries[1], entries[2]
    _sql(f"UPDATE {TABLE} SET seq = %s WHERE id = %s", [10**9, a.pk])
    _sql(f"UPDATE {TABLE} SET seq = %s WHERE id = %s", [a.seq, b.pk])
    _sql(f"UPDATE {TABLE} SET seq = %s WHERE id = %s", [b.seq, a.pk])
    result = _verify()
    assert result.startswith("FAILED")
    # b now sits at a's place: it is the first entry that does not verify.
    assert f"seq {a.seq} (id {b.pk})" in result


@pytest.mark.django_db(transaction=True)
def test_verify_audit_exits_nonzero_as_a_separate_process():
    """As an operator runs it: `manage.py verify_audit` exits 0 on a clean chain, 1 when not."""
    import subprocess
    import sys

    from django.conf import settings

    from tests.live import subprocess_env

    entries = _write(3)
    command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "verify_audit"]
    env = subprocess_env(FLOWDECK_TESTING="1")
    clean = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr
    assert "Audit chain OK: 3 entries" in clean.stdout
    _sql(f"UPDATE {TABLE} SET ip = %s WHERE id = %s", ["10.0.0.2", entries[1].pk])
    broken = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1
    assert f"seq {entries[1].seq} (id {entries[1].pk})" in broken.stderr


# --- append-only through the ORM and the chain under concurrency --------------------------------
def test_the_orm_cannot_change_or_delete_entries(db):
    (entry,) = _write(1)
    entry.target = "flow:other"
    with pytest.raises(AuditImmutable):
        entry.save()
    with pytest.raises(AuditImmutable):
        entry.delete()
    with pytest.raises(AuditImmutable):
        AuditEntry.objects.filter(pk=entry.pk).update(target="x")
    with pytest.raises(AuditImmutable):
        AuditEntry.objects.filter(pk=entry.pk).delete()
    with pytest.raises(AuditImmutable):
        AuditEntry.objects.all().delete()
    with pytest.raises(AuditImmutable):
        AuditEntry.objects.bulk_create([AuditEntry(action="flow.create")])
    with pytest.raises(AuditImmutable):
        AuditEntry(action="flow.create", target="hand-made").save()
    assert AuditEntry.objects.get(pk=entry.pk).target == "flow:0"
    assert "OK" in _verify()


def test_deleting_a_user_or_workspace_keeps_their_entries_intact(workspace_a, alice_owner):
    (entry,) = _write(1, workspace_a, alice_owner)
    other = User.objects.create_user("gone@example.com", "x")
    with transaction.atomic():
        gone = record(action="auth.login", actor=other, target=f"user:{other.pk}")
    other.delete()
    kept = AuditEntry.objects.get(pk=gone.pk)
    assert kept.actor_id == gone.actor_id and kept.actor_label == "gone@example.com"
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
    assert "OK" in _verify()


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_get_a_gapless_sequence():
    threads, per_thread = 6, 5
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(per_thread):
                with transaction.atomic():
                    record(action="flow.create", target=f"flow:{n}-{i}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not errors, errors
    assert _all_seqs() == list(range(1, threads * per_thread + 1))
    assert "OK" in _verify()
