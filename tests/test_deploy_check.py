"""Production settings: `check --deploy` is clean, and missing secrets stop the start.

Each case runs `manage.py` in a subprocess with a production-like environment built from
scratch (no DEBUG, no test settings), because settings are read once per process.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parent.parent


def production_env(tmp_path: Path, **overrides: str | None) -> dict[str, str]:
    """What an operator sets in production; an override of None removes the variable."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": "postgres://flowdeck@db.internal:5432/flowdeck",
        "REDIS_URL": "redis://redis.internal:6379/0",
        "ALLOWED_HOSTS": "flowdeck.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://flowdeck.example.com",
        "FLOWDECK_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "FLOWDECK_AUDIT_KEY": secrets.token_urlsafe(32),
        "FLOWDECK_DATA_DIR": str(tmp_path / "data"),
    }
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_in_production(tmp_path: Path) -> None:
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output, output
    assert "WARNING" not in output and "?:" not in output, output


def test_production_settings_are_secure(tmp_path: Path) -> None:
    """The values behind a clean check, read from the settings a production process gets."""
    probe = (
        "from django.conf import settings as s; "
        "from django.utils.module_loading import import_string; "
        "from channels_redis.pubsub import RedisPubSubChannelLayer; "
        "layer = import_string(s.CHANNEL_LAYERS['default']['BACKEND']); "
        "print(s.DEBUG, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, "
        "s.SECURE_HSTS_SECONDS > 0, s.DATABASES['default']['ENGINE'], "
        "issubclass(layer, RedisPubSubChannelLayer), s.CELERY_BROKER_URL)"
    )
    result = manage(production_env(tmp_path), "shell", "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == [
        "False",
        "True",
        "True",
        "True",
        "True",
        "django.db.backends.postgresql",
        "True",  # a channels-redis layer
        "redis://redis.internal:6379/0",
    ]
    assert not (tmp_path / "data" / "secret_key").exists()  # nothing generated in production


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("SECRET_KEY", "SECRET_KEY must be set"),
        ("FLOWDECK_ENCRYPTION_KEY", "FLOWDECK_ENCRYPTION_KEY must be set"),
        ("FLOWDECK_AUDIT_KEY", "FLOWDECK_AUDIT_KEY must be set"),
        ("ALLOWED_HOSTS", "ALLOWED_HOSTS must be set"),
    ],
)
def test_production_refuses_to_start_without(tmp_path: Path, missing: str, message: str) -> None:
    result = manage(production_env(tmp_path, **{missing: None}), "check")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr, result.stderr


def test_a_malformed_encryption_key_stops_the_start(tmp_path: Path) -> None:
    result = manage(production_env(tmp_path, FLOWDECK_ENCRYPTION_KEY="not-a-fernet-key"), "check")
    assert result.returncode != 0
    assert "must be comma-separated Fernet keys" in result.stderr, result.stderr


def test_debug_without_secret_key_is_allowed_for_development(tmp_path: Path) -> None:
    """DEBUG on (a developer against a real PostgreSQL) may use a generated local key."""
    env = production_env(tmp_path, SECRET_KEY=None, DEBUG="1")
    result = manage(env, "check")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "secret_key").exists()
