"""Event firing: 100,000 pending events, 10,000 due at once: lateness p50/p99
(all, and the heads-ups alone) and events/s with two sweepers and one worker.

As deployed with beat: one Celery worker (prefork, concurrency 2) on Redis
and PostgreSQL, and two processes standing in for two beats, each sending
the task "reservations.events.sweep" every 0.5 s, by name, as beat does.
25,000 leases have 4 pending events each; 5,000 of them (heads_up 0) are set
to start at one instant T a few seconds after the sweepers run, so their
heads-up and start, 10,000 events, fall due at T together. Lateness is
fired_at - T per event (fired_at is when the event's batch of up to 500
writes its rows, just before it commits; the time all are visible as
fired is shown too). The heads-ups' lateness is shown apart: it is what
users wait for. Every one must fire exactly once.

The broker's Redis database is flushed before and after the run: give the
benchmark one of its own (the default is database 12).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/berth_bench \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/12 \\
        .venv/bin/python bench/event_firing.py
"""

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from datetime import timedelta

import benchdb

PROJECT = "bench-event-firing"
DEFAULT_BROKER = "redis://127.0.0.1:6379/12"
LEASES = 25_000
DUE_LEASES = 5_000
SWEEPERS = 2
SEND_EVERY = 0.5
# Long enough after the update that the due events are committed well
# before they are due.
DUE_IN = 3.0
TASK = "reservations.events.sweep"
BATCH = 5000

# Children before parents, as benchdb.CLEANUP. No subscription is made, so
# no deliveries.
CLEANUP = [
    "DELETE FROM reservations_notification WHERE project_id = %(p)s",
    "DELETE FROM reservations_leaseevent WHERE lease_id IN "
    "(SELECT id FROM reservations_lease WHERE project_id = %(p)s)",
    "DELETE FROM reservations_lease WHERE project_id = %(p)s",
    "DELETE FROM identity_project WHERE id = %(p)s",
]


def cleanup() -> None:
    """Delete every row this benchmark makes, also those an interrupted run left."""
    from django.db import connection, transaction

    from identity.models import Project

    with transaction.atomic(), connection.cursor() as cursor:
        for project_id in Project.objects.filter(name=PROJECT).values_list("pk", flat=True):
            for statement in CLEANUP:
                cursor.execute(statement, {"p": project_id})


def broker_url() -> str:
    url = os.environ.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER)
    if not url.startswith("redis://"):
        sys.exit(f"CELERY_BROKER_URL must name a Redis database, not {url!r}")
    return url


def broker_flush() -> None:
    # Sweeps an interrupted run left queued would run against deleted rows.
    import redis

    redis.Redis.from_url(broker_url()).flushdb()


def setup():
    """The leases (no reservations: events fire for those too) and their
    events, in bulk, all far in the future; returns the project."""
    from django.db import transaction
    from django.utils import timezone

    from identity.models import Project
    from reservations.events import plan
    from reservations.models import EVENT_ORDER, Lease, LeaseEvent

    now = timezone.now()
    far = now + timedelta(days=30)
    with transaction.atomic():
        project = Project.objects.create(name=PROJECT)
        leases = Lease.objects.bulk_create(
            (
                Lease(
                    project=project,
                    name=f"due-{n}" if n < DUE_LEASES else f"later-{n}",
                    # The due ones are moved to T when the measurement starts.
                    start_at=far + timedelta(minutes=n),
                    end_at=far + timedelta(minutes=n, days=1),
                    heads_up_seconds=0 if n < DUE_LEASES else 300,
                )
                for n in range(LEASES)
            ),
            batch_size=BATCH,
        )
        LeaseEvent.objects.bulk_create(
            (
                LeaseEvent(lease=lease, event_type=t, time=at, rank=EVENT_ORDER[t])
                for lease in leases
                for t, at in plan(lease, now).items()
            ),
            batch_size=BATCH,
        )
    return project


def vacuum() -> None:
    # Statistics as autovacuum would have them; right after a bulk insert
    # the planner would still plan the sweep's query for empty tables.
    benchdb.vacuum_analyze("reservations_lease", "reservations_leaseevent")


def due_at(project, when) -> None:
    """Move the due leases to start at `when`: with heads_up 0 both their
    heads-up and start are then due at that instant."""
    from django.db import transaction

    from reservations.models import EventType, Lease, LeaseEvent

    due = Lease.objects.filter(project=project, name__startswith="due-")
    with transaction.atomic():
        due.update(start_at=when)
        LeaseEvent.objects.filter(
            lease__in=due, event_type__in=[EventType.HEADS_UP, EventType.START]
        ).update(time=when)


def sweeper(stop) -> None:
    """One beat's sending of the sweep task, twice as often as beat's 1 s."""
    benchdb.django_setup()
    from config.celery import app

    while not stop.wait(SEND_EVERY):
        app.send_task(TASK)


def wait_fired(project, deadline: float) -> None:
    from reservations.models import EventStatus, EventType, LeaseEvent

    due = LeaseEvent.objects.filter(
        lease__project=project,
        lease__name__startswith="due-",
        event_type__in=[EventType.HEADS_UP, EventType.START],
    )
    with benchdb.progress("due events fired", 2 * DUE_LEASES) as advance:
        while (left := due.filter(status=EventStatus.UNDONE).count()) > 0:
            advance(2 * DUE_LEASES - left)
            if time.monotonic() > deadline:
                sys.exit(f"time limit reached: {left} of {2 * DUE_LEASES} due events not fired")
            time.sleep(0.1)


def results(project, when) -> dict:
    """Lateness (s) of the due events, all and the heads-ups alone, and the
    counts that prove each fired once."""
    from reservations.models import EventStatus, EventType, LeaseEvent, Notification

    events = LeaseEvent.objects.filter(lease__project=project)
    fired = list(
        events.exclude(status=EventStatus.UNDONE).values_list(
            "event_type", "status", "time", "fired_at"
        )
    )
    notes = Notification.objects.filter(project=project, event_type__startswith="lease.event.")
    return {
        "lateness": [(f - t).total_seconds() for _, _, t, f in fired if t == when],
        "heads_up": [
            (f - t).total_seconds()
            for kind, _, t, f in fired
            if t == when and kind == EventType.HEADS_UP
        ],
        "not_due": sum(1 for _, _, t, _ in fired if t != when),
        "done": sum(1 for _, s, _, _ in fired if s == EventStatus.DONE),
        "last": max(f for _, _, _, f in fired),
        "pending": events.filter(status=EventStatus.UNDONE).count(),
        "notifications": notes.count(),
        "distinct": notes.values("payload__event_id").distinct().count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--time-limit", type=float, default=300, help="seconds for the firing (default: 300)"
    )
    args = parser.parse_args()
    load = os.getloadavg()[0]

    broker_url()
    benchdb.database_prepare()
    from django.db import connection
    from django.utils import timezone

    from reservations.models import LeaseEvent

    cleanup()
    broker_flush()
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    with tempfile.TemporaryFile() as log:
        proc = benchdb.worker_start(log)
        sweepers = []
        try:
            t0 = time.monotonic()
            project = setup()
            total = LeaseEvent.objects.filter(lease__project=project).count()
            vacuum()
            built = time.monotonic() - t0
            benchdb.worker_wait_ready(proc)
            for _ in range(SWEEPERS):
                sweepers.append(ctx.Process(target=sweeper, args=(stop,)))
                sweepers[-1].start()
            # The worker's pool processes connect on the sweeps that find
            # nothing yet, not on the measured ones.
            when = timezone.now() + timedelta(seconds=DUE_IN)
            due_at(project, when)
            wait_fired(project, time.monotonic() + DUE_IN + args.time_limit)
            seen = timezone.now()
            out = results(project, when)
        except BaseException:
            # With -l warning, what the worker said is what went wrong.
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-5000:])
            raise
        finally:
            stop.set()
            for p in sweepers:
                p.join(timeout=10)
                if p.is_alive():
                    p.terminate()
            benchdb.worker_stop(proc)
            broker_flush()
            cleanup()

    lateness, expected = out["lateness"], 2 * DUE_LEASES
    span = (out["last"] - when).total_seconds()
    print(
        f"Event firing: {total} pending events, {expected} due at once; one Celery worker "
        f"(prefork, concurrency 2), {SWEEPERS} senders of {TASK} every {SEND_EVERY} s; Redis, "
        f"PostgreSQL {connection.pg_version // 10000}, {os.cpu_count()} CPUs, "
        f"load average {load:.1f} at start; fixture {built:.1f} s"
    )
    print(
        f"lateness (fired_at - due) first {min(lateness):.2f} s, "
        f"p50 {benchdb.percentile(lateness, 50):.2f} s, "
        f"p99 {benchdb.percentile(lateness, 99):.2f} s, max {max(lateness):.2f} s"
    )
    heads_up = out["heads_up"]
    print(
        f"heads-up lateness ({len(heads_up)}) p50 {benchdb.percentile(heads_up, 50):.2f} s, "
        f"p99 {benchdb.percentile(heads_up, 99):.2f} s, max {max(heads_up):.2f} s"
    )
    print(
        f"events/s: {len(lateness) / span:.0f} ({len(lateness)} from due to last fired_at, "
        f"{span:.2f} s); all visible as fired {(seen - when).total_seconds():.2f} s after due"
    )
    print(
        f"fired {len(lateness)} of {expected} due, DONE {out['done']}, fired though not due "
        f"{out['not_due']}, still pending {out['pending']} (expected "
        f"{total - expected}); notifications lease.event.* {out['notifications']}, "
        f"distinct event ids {out['distinct']}"
    )
    once = (
        len(lateness) == out["done"] == out["notifications"] == out["distinct"] == expected
        and out["not_due"] == 0
        and out["pending"] == total - expected
    )
    print("every due event fired exactly once" if once else "FAILED: missing or doubled events")
    return 0 if once else 1


if __name__ == "__main__":
    sys.exit(main())
