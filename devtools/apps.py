from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    """Dev-only management commands; no models, no URLs."""

    name = "devtools"
    label = "devtools"
    verbose_name = "Flowdeck developer tools"
