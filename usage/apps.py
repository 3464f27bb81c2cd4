from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connects the receiver of runs' `run_finished` (usage depends on runs, not back).
        from usage import receivers  # noqa: F401
