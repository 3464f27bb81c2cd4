from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "knowledge"
    verbose_name = "Knowledge bases"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from knowledge import checks  # noqa: F401  (registers knowledge.E001)
