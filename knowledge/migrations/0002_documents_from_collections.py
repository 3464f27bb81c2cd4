"""Each workspace's document collections (flows.Document) become knowledge bases: one per
collection, of the same name, keyword-only, each document a text document already split
and searchable (chunking is pure Python), its text kept as a file like any upload."""

import hashlib

from django.db import migrations

CHUNK_SIZE = 800
CHUNK_OVERLAP = 100


def forwards(apps, schema_editor):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from django.utils import timezone

    from knowledge.models import chunking_fingerprint_for
    from knowledge.parsing import Section
    from knowledge.splitting import split_sections

    Document = apps.get_model("flows", "Document")
    KnowledgeBase = apps.get_model("knowledge", "KnowledgeBase")
    KnowledgeDocument = apps.get_model("knowledge", "KnowledgeDocument")
    Chunk = apps.get_model("knowledge", "Chunk")
    fingerprint = chunking_fingerprint_for(CHUNK_SIZE, CHUNK_OVERLAP)
    bases = {}
    for old in Document.objects.order_by("workspace_id", "collection", "pk").iterator():
        key = (old.workspace_id, old.collection)
        kb = bases.get(key)
        if kb is None:
            kb = bases[key] = KnowledgeBase.objects.create(
                workspace_id=old.workspace_id,
                name=old.collection,
                description="Made from the document collection of this name.",
                chunk_size=CHUNK_SIZE,
                chunk_overlap=CHUNK_OVERLAP,
                created_by_id=old.created_by_id,
            )
        data = old.content.encode("utf-8")
        digest = hashlib.sha256(data).hexdigest()
        if KnowledgeDocument.objects.filter(knowledge_base=kb, content_hash=digest).exists():
            continue  # the same text twice in one collection: kept once
        drafts = split_sections(
            [Section(old.content)], chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP
        )
        stored = default_storage.save(
            f"knowledge/{old.workspace_id}/{kb.pk}/{digest}", ContentFile(data)
        )
        document = KnowledgeDocument.objects.create(
            workspace_id=old.workspace_id,
            knowledge_base=kb,
            name=old.title,
            format="text",
            size=len(data),
            content_hash=digest,
            file=stored,
            status="indexed" if drafts else "failed",
            error_code="" if drafts else "no_text",
            error_message="" if drafts else "The document has no text.",
            chunk_count=len(drafts),
            progress_done=len(drafts),
            progress_total=len(drafts),
            chunking_fingerprint=fingerprint,
            created_by_id=old.created_by_id,
            indexed_at=timezone.now() if drafts else None,
        )
        Chunk.objects.bulk_create(
            Chunk(
                workspace_id=old.workspace_id,
                knowledge_base=kb,
                document=document,
                index=draft.index,
                text=draft.text,
                page=draft.page,
                heading=(draft.heading or "")[:500],
                content_hash=draft.content_hash,
                searchable=True,
            )
            for draft in drafts
        )


class Migration(migrations.Migration):
    dependencies = [
        ("knowledge", "0001_initial"),
        ("flows", "0002_flow_draft"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
