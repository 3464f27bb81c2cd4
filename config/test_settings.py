"""Settings for the test suite: the real settings with FLOWDECK_TESTING on."""

import os

os.environ.setdefault("FLOWDECK_TESTING", "1")
os.environ.setdefault("FLOWDECK_CHANNEL_PREFIX", f"fdtest{os.getpid()}")

from config.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only
