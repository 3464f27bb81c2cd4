from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from audit import signals

        signals.connect()
