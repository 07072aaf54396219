"""Reads for identity: which membership a token stands for."""

from django.db.models import Q
from django.utils import timezone

from config.models import Membership
from config.services import token_digest


def membership_for_token(*, raw: str) -> Membership | None:
    return (
        Membership.objects.select_related("user", "project")
        .filter(tokens__digest=token_digest(raw))
        .filter(Q(tokens__expires_at__isnull=True) | Q(tokens__expires_at__gt=timezone.now()))
        .first()
    )
