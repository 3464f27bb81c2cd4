"""The key django-axes counts failed sign-ins under.

Sign-in finds the user case-insensitively and ignores surrounding spaces (and the form
applies NFKC), so axes must count every spelling of one address as that address: counted
per exact string, `Victim@x`, ` victim@x` and `VICTIM@X` each got five fresh attempts.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from django.conf import settings
from django.http import HttpRequest


def normalized_username(value: object) -> str:
    """The address as the lock-out counts it: NFKC, stripped, case-folded."""
    if not isinstance(value, str):
        return ""
    return unicodedata.normalize("NFKC", value).strip().casefold()


def axes_username(request: HttpRequest | None, credentials: dict[str, Any] | None) -> str:
    """AXES_USERNAME_CALLABLE: the normalised username of a sign-in attempt."""
    field = settings.AXES_USERNAME_FORM_FIELD
    if credentials and field in credentials:
        return normalized_username(credentials.get(field))
    data = getattr(request, "POST", None) or {}
    return normalized_username(data.get(field))
