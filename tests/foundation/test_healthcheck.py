"""`manage.py healthcheck`: the worker round trip and beat's periodic tasks."""

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from config import services
from config.beat import Scheduler
from config.celery import PERIODIC_TASKS, app
from config.models import PeriodicRun

SWEEP = "berth: fire due lease events"


@pytest.fixture
def scheduled(worker, transactional_db):
    """Berth's periodic tasks as beat installs them at its start (the
    scheduler made in this process, as `celery beat` makes it), each just
    run by a worker."""
    Scheduler(app=app)
    for name in PERIODIC_TASKS:
        services.periodic_run_record(name=name)


def healthcheck(timeout: float = 30) -> str:
    out = io.StringIO()
    call_command("healthcheck", "--timeout", str(timeout), stdout=out)
    return out.getvalue()


@pytest.mark.worker
def test_healthy_when_every_periodic_task_is_scheduled_and_ran(scheduled):
    output = healthcheck()
    assert "worker: ok" in output
    for name in PERIODIC_TASKS:
        assert f"periodic: {name}: ok (last ran" in output


def _missing():
    PeriodicTask.objects.filter(name=SWEEP).delete()


def _disabled():
    PeriodicTask.objects.filter(name=SWEEP).update(enabled=False)


def _stale():
    # 4 s without a success, for a task due every second.
    PeriodicRun.objects.filter(name=SWEEP).update(
        succeeded_at=timezone.now() - timedelta(seconds=4),
        scheduled_at=timezone.now() - timedelta(hours=1),
    )


def _never_ran():
    PeriodicRun.objects.filter(name=SWEEP).update(
        succeeded_at=None, scheduled_at=timezone.now() - timedelta(seconds=4)
    )


@pytest.mark.worker
@pytest.mark.parametrize(
    ("breakage", "says"),
    [
        (_missing, "not scheduled (beat installs it when it starts: is beat running?)"),
        (_disabled, "disabled"),
        (_stale, "has not run for 3 of its intervals of 1 s (last ran "),
        (_never_ran, "has not run for 3 of its intervals of 1 s (never ran)"),
    ],
)
def test_fails_naming_the_periodic_task_that_is_not_scheduled_or_not_running(
    scheduled, breakage, says
):
    breakage()
    with pytest.raises(CommandError) as failed:
        healthcheck(timeout=5)
    message = str(failed.value)
    assert f"periodic task '{SWEEP}' (reservations.events.sweep): {says}" in message
    # Only the broken task is named; the worker and the others are fine.
    assert "worker:" not in message
    assert all(name not in message for name in PERIODIC_TASKS if name != SWEEP)
