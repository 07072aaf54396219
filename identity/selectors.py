"""Reads for identity: whom and which membership a token stands for; whether a user
name is locked out."""

from django.db.models import Q
from django.utils import timezone

from identity.models import PasswordFailure, Token
from identity.services import token_digest


def token_find(*, raw: str) -> Token | None:
    """The unexpired token ``raw`` is, with its user and its membership's
    project (none for an unscoped token), if its user is still active.
    Deleting the project or the membership deletes its tokens (by cascade),
    so all three revocations hold from the next request, in one query."""
    return (
        Token.objects.select_related("user", "membership__project")
        .filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()),
            digest=token_digest(raw),
            user__is_active=True,
        )
        .first()
    )


def password_locked(*, username: str) -> bool:
    """Whether ``username`` is locked out after failed sign-ins."""
    return PasswordFailure.objects.filter(
        username=username, locked_until__gt=timezone.now()
    ).exists()
