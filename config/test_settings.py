"""Settings for the test suite: the real settings with FLOWDECK_TESTING on."""

import os

os.environ.setdefault("FLOWDECK_TESTING", "1")
os.environ.setdefault("FLOWDECK_CHANNEL_PREFIX", f"fdtest{os.getpid()}")

from config.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only

# Several test processes may share this machine's PostgreSQL (developers running parts of
# the suite side by side): each gets its own test database outside CI. Subprocesses started
# by the live-stack fixtures get the exact database in their environment.
if (
    os.environ.get("CI", "").lower() not in {"1", "true"}
    and "FLOWDECK_SQLITE_PATH" not in os.environ
):
    _db = DATABASES["default"]  # noqa: F405
    if _db["ENGINE"] == "django.db.backends.postgresql":
        _db["TEST"] = {"NAME": f"test_{_db['NAME']}_{os.getpid()}"}
    else:
        _db["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}  # noqa: F405
