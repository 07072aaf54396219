"""Reads for identity: which membership a token stands for."""

from django.db.models import Q
from django.utils import timezone

from config.models import Membership
from config.services import token_digest


def membership_for_token(*, raw: str) -> Membership | None:
    # One filter() call: both conditions must hold for the same token (two
    # calls would join the tokens twice and let an expired token through
    # whenever the membership has another, valid one).
    return (
        Membership.objects.select_related("user", "project")
        .filter(
            Q(tokens__expires_at__isnull=True) | Q(tokens__expires_at__gt=timezone.now()),
            tokens__digest=token_digest(raw),
        )
        .first()
    )
