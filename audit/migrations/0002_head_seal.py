from django.db import migrations, models


def seal_existing_head(apps, schema_editor):
    """Seal the head as it stands at upgrade time (the chain up to it is verified as before)."""
    from audit.models import head_seal

    AuditChainHead = apps.get_model("audit", "AuditChainHead")
    for head in AuditChainHead.objects.all():
        head.seal = head_seal(head.seq, head.hash)
        head.save(update_fields=["seal"])


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditchainhead",
            name="seal",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.RunPython(seal_existing_head, migrations.RunPython.noop),
    ]
