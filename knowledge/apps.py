from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    """Knowledge bases, their documents and chunks, ingestion jobs and the vector store."""

    name = "knowledge"
    verbose_name = "Knowledge bases"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from knowledge import checks  # noqa: F401  (registers knowledge.E001 / E002)
