"""Flowdeck settings, read from the environment.

Production: set DATABASE_URL (PostgreSQL), REDIS_URL, SECRET_KEY, ALLOWED_HOSTS,
FLOWDECK_ENCRYPTION_KEY and FLOWDECK_AUDIT_KEY; leave DEBUG unset. Start-up refuses to go
on without them, and `manage.py check --deploy` is then clean (README.md lists every
variable).

Embedded default: with no DATABASE_URL the database is SQLite (WAL, busy timeout) under
FLOWDECK_DATA_DIR; with no REDIS_URL `manage.py serve` starts a private Redis server and
hands its URL to the Daphne and Celery children, so the embedded default runs the same
code path as production (channels-redis, the Celery Redis broker).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name, "")
    items = [item.strip() for item in value.split(",") if item.strip()]
    return items or default


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


DEBUG = env_bool("DEBUG", False)
TESTING = env_bool("FLOWDECK_TESTING", False)
DATABASE_URL = os.environ.get("DATABASE_URL", "")
# The embedded default (no DATABASE_URL) is a single-machine install on loopback: it may
# generate its own secrets under DATA_DIR and does not insist on HTTPS.
EMBEDDED = not DATABASE_URL
LOCAL_SECRETS_OK = DEBUG or TESTING or EMBEDDED
HTTPS = env_bool("FLOWDECK_HTTPS", not (DEBUG or TESTING or EMBEDDED))
DATA_DIR = Path(os.environ.get("FLOWDECK_DATA_DIR", BASE_DIR / "var")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def private_file(path: Path) -> Path:
    """`path`, created empty if missing, readable by this user only (0600) from the start:
    generated secrets and the embedded SQLite database (whose -wal and -shm files SQLite
    creates with the database file's permissions)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        path.chmod(0o600)
    return path


def _dev_secret(name: str) -> str:
    """A per-checkout random secret for DEBUG/embedded use, kept under DATA_DIR."""
    path = DATA_DIR / name
    if not path.exists() or not path.read_text().strip():
        private_file(path).write_text(secrets.token_urlsafe(50))
    private_file(path)
    return path.read_text().strip()


SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not LOCAL_SECRETS_OK:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = _dev_secret("secret_key")

# Fernet key(s) for credentials at rest; the first encrypts, all decrypt (rotation).
FLOWDECK_ENCRYPTION_KEYS = env_list("FLOWDECK_ENCRYPTION_KEY", [])
# HMAC key for the audit hash chain (issue 6); separate from SECRET_KEY so it can be rotated apart.
FLOWDECK_AUDIT_KEY = os.environ.get("FLOWDECK_AUDIT_KEY", "")
if not LOCAL_SECRETS_OK and not FLOWDECK_ENCRYPTION_KEYS:
    raise ImproperlyConfigured("FLOWDECK_ENCRYPTION_KEY must be set when DEBUG is off.")
if not FLOWDECK_ENCRYPTION_KEYS:
    key_path = DATA_DIR / "encryption_key"
    if not key_path.exists() or not key_path.read_text().strip():
        private_file(key_path).write_text(Fernet.generate_key().decode())
    private_file(key_path)
    FLOWDECK_ENCRYPTION_KEYS = [key_path.read_text().strip()]
for _key in FLOWDECK_ENCRYPTION_KEYS:
    try:
        Fernet(_key)
    except (ValueError, TypeError) as exc:  # fail at start, not at the first secret saved
        raise ImproperlyConfigured(
            "FLOWDECK_ENCRYPTION_KEY must be comma-separated Fernet keys (32 url-safe "
            "base64-encoded bytes each; make one with `python -c 'from cryptography.fernet "
            "import Fernet; print(Fernet.generate_key().decode())'`)."
        ) from exc
if not FLOWDECK_AUDIT_KEY:
    if not LOCAL_SECRETS_OK:
        raise ImproperlyConfigured("FLOWDECK_AUDIT_KEY must be set when DEBUG is off.")
    FLOWDECK_AUDIT_KEY = _dev_secret("audit_key")

ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if LOCAL_SECRETS_OK else []
)
if not ALLOWED_HOSTS:
    # Without it every request would be a 400; say so at start instead.
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off (comma-separated).")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "csp",
    "ninja",  # its Swagger UI assets from our own static files (/api/docs works air-gapped)
    "accounts",
    "flows",
    "runs",
    "chat",
    "usage",
    "knowledge",
    "audit",
    "ops",
]


def _checkout_app(name: str) -> bool:
    """Whether the dev-only app `name` is here: in a checkout, not in an installed wheel
    (pyproject.toml leaves it out). Its `apps` module is the test, so an unrelated
    distribution of the same top-level name is not mistaken for it."""
    try:
        return importlib.util.find_spec(f"{name}.apps") is not None
    except ImportError:
        return False


if _checkout_app("devtools"):  # the benchmarks (`manage.py bench_stream`, `bench_run_page`)
    INSTALLED_APPS.append("devtools")

MIDDLEWARE = [
    # First: /healthz and /readyz answered before sessions, CSRF, host checks or redirects.
    "ops.health.HealthMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads a body: oversized uploads are refused unread (knowledge.uploads).
    "knowledge.uploads.UploadSizeMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    "csp.middleware.CSPMiddleware",
    "audit.middleware.AuditContextMiddleware",
    "config.errors.ServiceUnavailableMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.workspaces",
            ],
        },
    }
]

# --- Database ---------------------------------------------------------------------------
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
        "FLOWDECK_DB_POOL", True
    ):
        # psycopg's connection pool, one per process: "closing" a connection returns it.
        # Celery closes a task thread's connection after every task, and Daphne's database
        # threads close theirs after every call; without a pool each of those paid a new
        # PostgreSQL connection (4 ms here) on the way to a run's first token.
        DATABASES["default"]["OPTIONS"] = {
            **DATABASES["default"].get("OPTIONS", {}),
            "pool": {
                "min_size": env_int("FLOWDECK_DB_POOL_MIN", 2),
                "max_size": env_int("FLOWDECK_DB_POOL_MAX", 20),
                "timeout": 30,
            },
        }
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = 60
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    SQLITE_PATH = Path(os.environ.get("FLOWDECK_SQLITE_PATH") or DATA_DIR / "flowdeck.sqlite3")
    if not TESTING:
        private_file(SQLITE_PATH)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(SQLITE_PATH),
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;",
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
            },
            # A file, not :memory:, so test subprocesses (daphne, celery) share it.
            "TEST": {"NAME": str(DATA_DIR / "test.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, Celery broker, cache -------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
CHANNEL_PREFIX = os.environ.get("FLOWDECK_CHANNEL_PREFIX", "flowdeck")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "config.layers.FlowdeckChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": CHANNEL_PREFIX,
                "capacity": env_int("FLOWDECK_CHANNEL_CAPACITY", 100),
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CHANNEL_PREFIX,
        }
    }
    # The broker may be a Redis of its own (scale-out: the run queue apart from the busy
    # channel-layer and cache Redis).
    CELERY_BROKER_URL = os.environ.get("FLOWDECK_BROKER_URL") or REDIS_URL
else:
    # Only processes outside `manage.py serve` get here (migrate, shell, unit tests).
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CELERY_BROKER_URL = "memory://"

CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("FLOWDECK_VISIBILITY_TIMEOUT", 3600),
    "global_keyprefix": f"{CHANNEL_PREFIX}:celery:",
}
CELERY_TASK_DEFAULT_QUEUE = f"{CHANNEL_PREFIX}.runs"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "reap-stale-runs": {"task": "runs.tasks.reap_stale_runs", "schedule": 5.0},
    "requeue-stale-documents": {
        "task": "knowledge.tasks.requeue_stale_documents",
        "schedule": 5.0,
    },
}

# --- Auth ---------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
PASSWORD_RESET_TIMEOUT = 3600 * 24
INVITATION_TTL = timedelta(days=env_int("FLOWDECK_INVITATION_TTL_DAYS", 7))

# Login throttling (django-axes): lock a username+IP pair after repeated failures.
AXES_FAILURE_LIMIT = env_int("FLOWDECK_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("FLOWDECK_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_USERNAME_FORM_FIELD = "username"
AXES_USERNAME_CALLABLE = "accounts.lockout.axes_username"  # every spelling counts as one
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
AXES_IPWARE_PROXY_COUNT = env_int("FLOWDECK_PROXY_COUNT", 0) or None
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"] if AXES_IPWARE_PROXY_COUNT else ["REMOTE_ADDR"]
)

# --- Email: console unless EMAIL_HOST is configured ------------------------------------------
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Flowdeck <flowdeck@localhost>")

# --- I18N, static -------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
# collectstatic's output. The container image sets it outside the data directory: the files
# belong to the image (built with it), not to a volume that outlives it.
STATIC_ROOT = Path(os.environ.get("FLOWDECK_STATIC_ROOT") or DATA_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if (DEBUG or TESTING)
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG or TESTING

# --- Security: secure by default outside DEBUG --------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the editor island reads it for API writes
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
# Content-Security-Policy (django-csp): scripts, connections, fonts and images from this
# deployment only, never inline script; inline styles are allowed (the admin's and the
# canvas's). /api/docs is left out until its Swagger UI is served from here (issue 14).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
if HTTPS:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SILENCED_SYSTEM_CHECKS = ["security.W021"] if not env_bool("SECURE_HSTS_PRELOAD") else []

# --- Flowdeck limits ----------------------------------------------------------------------
FLOWDECK = {
    "WS_MAX_MESSAGE_BYTES": env_int("FLOWDECK_WS_MAX_MESSAGE_BYTES", 256 * 1024),
    "GRAPH_MAX_BYTES": 1024 * 1024,
    "GRAPH_MAX_NODES": 500,
    "RUN_TIME_LIMIT_SECONDS": env_int("FLOWDECK_RUN_TIME_LIMIT", 600),
    "RUN_LEASE_SECONDS": env_int("FLOWDECK_RUN_LEASE_SECONDS", 15),
    "RUNS_PER_MINUTE_PER_USER": env_int("FLOWDECK_RUNS_PER_MINUTE_PER_USER", 30),
    "RUNS_PER_MINUTE_PER_WORKSPACE": env_int("FLOWDECK_RUNS_PER_MINUTE_PER_WORKSPACE", 120),
    "MAX_CONCURRENT_RUNS_PER_WORKSPACE": env_int("FLOWDECK_MAX_CONCURRENT_RUNS", 20),
    "TOKEN_FLUSH_SECONDS": env_int("FLOWDECK_TOKEN_FLUSH_MS", 25) / 1000,
    "SESSION_RECHECK_SECONDS": 2.0,
    # How long the one-call run API and the OpenAI-compatible endpoint wait for a run by
    # default, and the most a caller may ask for (chat.calls).
    "CALL_TIMEOUT_SECONDS": env_int("FLOWDECK_CALL_TIMEOUT", 120),
    "CALL_TIMEOUT_MAX_SECONDS": env_int("FLOWDECK_CALL_TIMEOUT_MAX", 600),
    # A queued run whose task has not been picked up this long, while the broker's queue
    # holds fewer tasks than there are such runs (a broker restarted empty), is sent again.
    "REDISPATCH_SECONDS": env_int("FLOWDECK_REDISPATCH_SECONDS", 20),
}
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Knowledge bases (knowledge/): per-workspace limits, checked before anything is stored.
FLOWDECK_KNOWLEDGE = {
    "MAX_FILE_BYTES": env_int("FLOWDECK_KNOWLEDGE_MAX_FILE_MB", 50) * 1024 * 1024,
    "MAX_FILES_PER_UPLOAD": env_int("FLOWDECK_KNOWLEDGE_MAX_FILES_PER_UPLOAD", 20),
    "MAX_DOCUMENTS_PER_WORKSPACE": env_int("FLOWDECK_KNOWLEDGE_MAX_DOCUMENTS", 1000),
    "MAX_CHUNKS_PER_DOCUMENT": env_int("FLOWDECK_KNOWLEDGE_MAX_CHUNKS", 50_000),
    "EMBED_BATCH": env_int("FLOWDECK_KNOWLEDGE_EMBED_BATCH", 64),
    # Embedding requests in flight per document: endpoints answer a batch in tens to hundreds
    # of milliseconds, mostly waiting, so a few at once keep one busy.
    "EMBED_CONCURRENCY": env_int("FLOWDECK_KNOWLEDGE_EMBED_CONCURRENCY", 4),
    # PDFs of at least this many pages are read by a child process (pypdf is pure Python:
    # in the worker it would hold the interpreter for seconds; starting the child takes a
    # few tenths of a second, what parsing a hundred pages takes); 0: always in the worker.
    "PDF_CHILD_PAGES": env_int("FLOWDECK_KNOWLEDGE_PDF_CHILD_PAGES", 100),
    # At most this many children read one PDF, each a range of its pages.
    "PDF_CHILDREN": env_int("FLOWDECK_KNOWLEDGE_PDF_CHILDREN", min(4, os.cpu_count() or 1)),
    "LEASE_SECONDS": env_int("FLOWDECK_KNOWLEDGE_LEASE_SECONDS", 120),
}
# Uploaded files: through Django's storage API (STORAGES["default"]): the data directory
# here; an S3 bucket with django-storages is a change of STORAGES only (README).
MEDIA_ROOT = Path(os.environ.get("FLOWDECK_MEDIA_ROOT") or DATA_DIR / "media")
MEDIA_URL = "/media/"  # never served: documents are read by the workers, not downloaded
# Files in an upload go to a temporary file beyond this (never into memory).
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Loopback/private networks a credential's base URL may point at (flows.endpoints): a
# platform admin's decision. Default: none in production ("none" also says so); loopback
# and private networks on a developer's machine and the embedded default (a local Ollama,
# vLLM or LM Studio).
LOCAL_NETWORKS = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
]
FLOWDECK_MODEL_PRIVATE_NETWORKS = [
    n
    for n in env_list(
        "FLOWDECK_MODEL_PRIVATE_NETWORKS", LOCAL_NETWORKS if (DEBUG or TESTING or EMBEDDED) else []
    )
    if n.lower() != "none"
]
FLOWDECK_WEB_PORT = env_int("PORT", 8000)  # the platform's own web port: never an endpoint

# --- Logging: JSON lines in production, readable lines in DEBUG and the embedded default --
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
# The embedded default is someone at a console (`make run`), not a log shipper.
PLAIN_LOGS = env_bool("FLOWDECK_PLAIN_LOGS", DEBUG or EMBEDDED)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            "rename_fields": {"asctime": "ts", "levelname": "level", "name": "logger"},
        },
        "plain": {
            "()": "ops.logs.PlainFormatter",
            "format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        },
    },
    "filters": {
        # Celery's INFO lines for each tick of the beat schedule (the reaper, every 5 s).
        "quiet_ticks": {
            "()": "ops.logs.QuietTicks",
            "tasks": sorted({entry["task"] for entry in CELERY_BEAT_SCHEDULE.values()}),
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain" if PLAIN_LOGS else "json",
            "filters": ["quiet_ticks"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "axes": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}
