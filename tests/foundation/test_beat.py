"""Beat after `migrate` alone: real beat and worker processes, on the
configured broker and database."""

import io
import re
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from config.celery import PERIODIC_TASKS, app
from config.models import PeriodicRun
from tests.conftest import beat_start, beat_stop
from tests.factories import ContextFactory, HostFactory

SWEEP = "berth: fire due lease events"


def wait_for(condition, timeout: float, what: str, log=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log else ""
            pytest.fail(f"no {what} within {timeout:.0f} s\n{tail}")
        time.sleep(0.2)


def lease_starting_soon():
    """A one-hour lease of a reservable host, starting in 2 s."""
    from reservations import services

    HostFactory(name="r1", memory_mb=8192, disk_gb=80, physnets=[], reservable=True)
    start = timezone.now() + timedelta(seconds=2)
    return services.lease_create(
        context=ContextFactory(user_id="u", project__name="lab"),
        request=services.LeaseRequest(
            name="soon",
            start=start,
            end=start + timedelta(hours=1),
            reservations=[services.HostRequest(min=1, max=1)],
        ),
    )


@pytest.mark.worker
def test_beat_after_migrate_alone_starts_a_lease_and_the_healthcheck_passes(
    worker, transactional_db, tmp_path
):
    from reservations.models import LeaseStatus

    assert not PeriodicTask.objects.exists(), "migrate alone installs nothing"
    lease = lease_starting_soon()
    log = tmp_path / "beat.log"
    beat = beat_start(log)
    try:
        wait_for(
            lambda: type(lease).objects.get(pk=lease.pk).status == LeaseStatus.ACTIVE,
            60,
            "lease start",
            log,
        )
        out = io.StringIO()
        call_command("healthcheck", "--timeout", "60", stdout=out)
    finally:
        beat_stop(beat)
    installed = PeriodicTask.objects.filter(name__in=PERIODIC_TASKS, enabled=True)
    assert installed.count() == len(PERIODIC_TASKS)
    for name in PERIODIC_TASKS:
        assert re.search(rf"periodic: {name}: ok", out.getvalue())
    # The worker recorded the sweep's run: what the healthcheck went by.
    assert PeriodicRun.objects.get(name=SWEEP).succeeded_at is not None


@pytest.mark.worker
def test_periodic_messages_expire_instead_of_piling_up(worker, transactional_db, tmp_path):
    """Beat sends sweeps while no worker takes the events queue; by the time
    one does, each has expired and is discarded unrun."""
    with app.connection_for_write() as connection:
        app.control.purge(connection=connection)
    # To the build worker: the session's notify worker does not take events.
    only = {"destination": [worker.node], "reply": True, "timeout": 10}
    assert app.control.cancel_consumer("events", **only)
    try:
        beat = beat_start(tmp_path / "beat.log")
        try:
            wait_for(lambda: events_waiting() >= 3, 60, "sweeps sent", tmp_path / "beat.log")
        finally:
            beat_stop(beat)
        sent = events_waiting()
        assert sent >= 3
        # What beat installed carries the expiry, one interval for each entry.
        for name, spec in PERIODIC_TASKS.items():
            assert PeriodicTask.objects.get(name=name).expire_seconds == spec["every"]
        time.sleep(PERIODIC_TASKS[SWEEP]["every"] + 0.5)
    finally:
        seen = len(worker.log.read_text())
        assert app.control.add_consumer("events", **only)
    wait_for(lambda: events_waiting() == 0, 30, "events queue drained", worker.log)
    log = worker.log.read_text()[seen:]
    received = set(re.findall(r"reservations\.events\.sweep\[([0-9a-f-]+)\] received", log))
    discarded = set(
        re.findall(r"Discarding revoked task: reservations\.events\.sweep\[(.+?)\]", log)
    )
    assert len(received) >= sent
    assert received <= discarded
    assert PeriodicRun.objects.get(name=SWEEP).succeeded_at is None


def events_waiting() -> int:
    with app.connection_for_write() as connection:
        return connection.default_channel.queue_declare("events").message_count
