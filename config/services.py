"""Writes for health probes and beat's periodic runs."""

from collections.abc import Collection

from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from config.models import HealthProbe, PeriodicRun

# Beat's rows for berth's own tasks start so; the others are the operator's.
PERIODIC_PREFIX = "berth: "


def health_probe_answer(*, probe_id, worker: str, request_id: str) -> None:
    # Idempotent: a redelivered probe keeps the first answer.
    HealthProbe.objects.filter(pk=probe_id, answered_at__isnull=True).update(
        answered_at=timezone.now(), worker=worker, request_id=request_id
    )


@transaction.atomic
def periodic_tasks_register(*, names: Collection[str]) -> None:
    """As beat starts: each of berth's periodic tasks scheduled from now (a
    PeriodicRun, made if missing), and berth's PeriodicTask rows and runs
    for names no longer among ``names`` deleted."""
    now = timezone.now()
    PeriodicRun.objects.filter(name__in=names).update(scheduled_at=now)
    PeriodicRun.objects.bulk_create(
        [PeriodicRun(name=n, scheduled_at=now) for n in names], ignore_conflicts=True
    )
    PeriodicRun.objects.exclude(name__in=names).delete()
    PeriodicTask.objects.filter(name__startswith=PERIODIC_PREFIX).exclude(name__in=names).delete()


def periodic_run_record(*, name: str) -> None:
    PeriodicRun.objects.filter(name=name).update(succeeded_at=timezone.now())
