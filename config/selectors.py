"""Reads for identity: which membership a token stands for; how beat's
periodic tasks are doing."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from config.models import PasswordFailure, PeriodicRun, Token
from config.services import token_digest


def token_find(*, raw: str) -> Token | None:
    """The unexpired token ``raw`` is, with its membership's user and
    project, if its user is still active. Deleting the project or the
    membership deletes its tokens (by cascade), so all three revocations
    hold from the next request, in one query."""
    return (
        Token.objects.select_related("membership__user", "membership__project")
        .filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()),
            digest=token_digest(raw),
            membership__user__is_active=True,
        )
        .first()
    )


def password_locked(*, username: str) -> bool:
    """Whether ``username`` is locked out after failed sign-ins."""
    return PasswordFailure.objects.filter(
        username=username, locked_until__gt=timezone.now()
    ).exists()


@dataclass(frozen=True)
class PeriodicState:
    name: str
    scheduled: bool  # beat has a PeriodicTask row for it
    enabled: bool
    every: float  # seconds between runs
    succeeded_at: datetime | None  # last success on a worker
    # The last success or the running beat's start, whichever is later.
    waiting_since: datetime | None


def periodic_states(*, every: Mapping[str, float]) -> list[PeriodicState]:
    """Each periodic task named in ``every`` (its interval as configured;
    the interval of its beat row if an operator changed it there)."""
    names = list(every)
    rows = {
        t.name: t for t in PeriodicTask.objects.filter(name__in=names).select_related("interval")
    }
    runs = {r.name: r for r in PeriodicRun.objects.filter(name__in=names)}
    states = []
    for name in names:
        row, run = rows.get(name), runs.get(name)
        succeeded_at = run.succeeded_at if run else None
        since = [t for t in (succeeded_at, run and run.scheduled_at) if t]
        states.append(
            PeriodicState(
                name=name,
                scheduled=row is not None,
                enabled=row is not None and row.enabled,
                every=row.interval.schedule.run_every.total_seconds()
                if row is not None and row.interval is not None
                else every[name],
                succeeded_at=succeeded_at,
                waiting_since=max(since, default=None),
            )
        )
    return states
