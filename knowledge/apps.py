from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    """Knowledge bases, their documents and chunks, ingestion jobs and the vector store."""

    name = "knowledge"
    verbose_name = "Knowledge bases"
    default_auto_field = "django.db.models.BigAutoField"
