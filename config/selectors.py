"""Reads for the health check: how beat's periodic tasks are doing."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from django_celery_beat.models import PeriodicTask

from config.models import PeriodicRun


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
