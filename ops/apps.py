from django.apps import AppConfig


class OpsConfig(AppConfig):
    """No models: process command lines, the web entry point, `manage.py serve`."""

    name = "ops"
    verbose_name = "Operations"
