"""Account forms that differ from Django's defaults."""

from __future__ import annotations

from collections.abc import Iterator

from django.contrib.auth import forms as auth_forms

from accounts.models import User


class PasswordResetForm(auth_forms.PasswordResetForm):
    """Also sends the link to active users who have no password yet.

    `createworkspace --owner` creates owners without a password and tells them to use
    password reset; Django's form skips such users. Receiving the email proves ownership
    of the address just as well for them, so they may set their first password this way.
    """

    def get_users(self, email: str) -> Iterator[User]:
        for user in User.objects.filter(email__iexact=email, is_active=True):
            if user.email.casefold() == email.casefold():
                yield user
