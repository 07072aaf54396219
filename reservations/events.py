"""Lease lifecycle events: rows with a due time, fired by one sweep.

Beat runs ``reservations.events.sweep`` every second. It claims due rows
with SELECT ... FOR UPDATE SKIP LOCKED and fires them in the same
transaction, so two sweepers (two beats, or a sweep that overran its
second) never fire one event twice: the second skips what the first holds
and finds it DONE afterwards. Never one beat entry per event (beat reloads
every entry on each change and stalls at 10^4 entries).
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from compute import selectors as compute_selectors
from compute import services as compute
from compute.models import Instance, InstanceStatus, TaskState
from config.errors import BerthError
from identity.auth import RequestContext
from identity.models import Role
from reservations import allocation, placement
from reservations.models import (
    EVENT_ORDER,
    EventStatus,
    EventType,
    Lease,
    LeaseEvent,
    LeaseStatus,
    ReservationStatus,
)
from reservations.notifications import notify


def plan(lease: Lease, now: datetime) -> dict[str, datetime]:
    """When each of the lease's events is due."""
    times = {
        EventType.HEADS_UP: max(now, lease.start_at - timedelta(seconds=lease.heads_up_seconds)),
        EventType.START: lease.start_at,
        EventType.END: lease.end_at,
    }
    before_end = lease.before_end_at
    if before_end is None and settings.BERTH_LEASE_BEFORE_END:
        default = lease.end_at - timedelta(seconds=settings.BERTH_LEASE_BEFORE_END)
        before_end = default if default > lease.start_at else None
    if before_end is not None:
        times[EventType.BEFORE_END] = before_end
    return times


def events_sync(*, lease: Lease, now: datetime | None = None) -> None:
    """Create the lease's events, or move the ones not fired yet to the
    lease's current dates."""
    wanted = plan(lease, now or timezone.now())
    existing = {e.event_type: e for e in lease.events.all()}
    LeaseEvent.objects.bulk_create(
        LeaseEvent(lease=lease, event_type=t, time=time, rank=EVENT_ORDER[t])
        for t, time in wanted.items()
        if t not in existing
    )
    for event_type, time in wanted.items():
        event = existing.get(event_type)
        if event is not None and event.status == EventStatus.UNDONE and event.time != time:
            LeaseEvent.objects.filter(pk=event.pk).update(time=time)
    stale = [t for t, e in existing.items() if t not in wanted and e.status == EventStatus.UNDONE]
    LeaseEvent.objects.filter(lease=lease, event_type__in=stale).delete()


def due(now: datetime):
    return LeaseEvent.objects.filter(status=EventStatus.UNDONE, time__lte=now)


def sweep(*, now: datetime | None = None, batch: int = 200) -> int:
    """Fire every due event; returns how many fired. Events whose lease a
    lease operation holds are left for the next sweep."""
    fired = 0
    busy: set = set()
    while True:
        with transaction.atomic():
            claimed = list(
                due(now or timezone.now())
                .exclude(lease_id__in=busy)
                .select_for_update(skip_locked=True)
                .order_by("time", "rank")[:batch]
            )
            for event in claimed:
                if event.lease_id in busy:
                    continue
                count = fire(event, now=now)
                fired += count
                if not count:
                    busy.add(event.lease_id)
        if len(claimed) < batch:
            return fired


def fire_now(*, event: LeaseEvent) -> None:
    """Fire one event at once (admin action), whatever its due time."""
    with transaction.atomic():
        # The lease first, then the event: the order lease operations lock in.
        Lease.objects.select_for_update(of=("self",)).filter(pk=event.lease_id).first()
        claimed = LeaseEvent.objects.select_for_update().filter(
            pk=event.pk, status=EventStatus.UNDONE
        )
        for found in claimed:
            fire(found)


def fire(event: LeaseEvent, now: datetime | None = None) -> int:
    """Fire a claimed (locked, UNDONE) event, and first the earlier events
    of its lease, so a lease never ends before it started; returns how many
    fired, 0 (nothing done) when a lease operation holds the lease. A
    failure leaves the event ERROR and the reason on the lease."""
    now = now or timezone.now()
    # Lease operations lock the lease, then its events; this holds an event
    # already, so it must not wait for the lease (the two would deadlock).
    lease = (
        Lease.objects.select_for_update(of=("self",), skip_locked=True)
        .select_related("project")
        .filter(pk=event.lease_id)
        .first()
    )
    if lease is None:
        return 0
    earlier = (
        LeaseEvent.objects.select_for_update()
        .filter(lease_id=event.lease_id, status=EventStatus.UNDONE)
        .filter(Q(time__lt=event.time) | Q(time=event.time, rank__lt=event.rank))
        .order_by("time", "rank")
    )
    previous_events = list(earlier)
    fired = sum(fire(previous, now=now) for previous in previous_events)
    if previous_events:
        lease.refresh_from_db()  # firing them changed it
    try:
        with transaction.atomic():
            # What the handler checked or changed goes into the notification.
            found = HANDLERS[event.event_type](lease, now) or {}
            notify(
                project=lease.project,
                event_type=f"lease.event.{event.event_type}",
                lease=lease,
                event_id=str(event.pk),
                time=event.time.isoformat(),
                status=lease.status,
                **found,
            )
        event.status = EventStatus.DONE
    except BerthError as error:
        event.status, event.error = EventStatus.ERROR, error.message
        lease.status, lease.status_reason = (
            LeaseStatus.ERROR,
            f"{event.event_type} failed: {error.message}",
        )
        lease.save(update_fields=["status", "status_reason", "updated_at"])
        notify(
            project=lease.project, event_type="lease.error", lease=lease, reason=lease.status_reason
        )
    event.fired_at = now
    event.save(update_fields=["status", "error", "fired_at"])
    return fired + 1


def _heads_up(lease: Lease, now: datetime) -> dict:
    """The lease's hosts checked, and a failed one swapped, before the
    start; the notification says what was checked and swapped (seed 002:
    tools that prepare hosts listen for it)."""
    return placement.lease_readiness(lease=lease, now=now)


def _start(lease: Lease, now: datetime) -> dict:
    """Checked again (a host may have failed since the heads-up): the lease
    starts on no host known to be down or disabled, degraded if one could
    not be swapped."""
    readiness = placement.lease_readiness(lease=lease, now=now)
    lease.status = LeaseStatus.STARTING
    lease.reservations.update(status=ReservationStatus.ACTIVE)
    for reservation in lease.reservations.exclude(server_template=None):
        _boot_template(lease, reservation)
    lease.status = LeaseStatus.ACTIVE
    lease.save(update_fields=["status", "updated_at"])
    return readiness


def _boot_template(lease: Lease, reservation) -> None:
    """Boot the servers the reservation asked for (seed 002: start and
    delete actions for virtual reservations), through the build pipeline."""
    template = reservation.server_template
    context = RequestContext(user_id=lease.user_id, project=lease.project, role=Role.MEMBER)
    # Resolved again now, as when the lease was made: what the lease's
    # project may use may have changed since (a network deleted, unshared).
    nics = compute_selectors.nic_requests(context=context, requested=template.get("networks", []))
    count = template.get("count", reservation.amount)
    compute.server_create(
        context=context,
        name=template.get("name") or f"{lease.name}-{reservation.pk.hex[:6]}",
        flavor=reservation.flavor,
        nics=nics,
        reservation_id=str(reservation.pk),
        min_count=count,
        max_count=count,
    )


def _before_end(lease: Lease, now: datetime) -> None:
    """Only the notification: the lease's users may save their work."""


def lease_servers(lease: Lease):
    ids = [str(pk) for pk in lease.reservations.values_list("pk", flat=True)]
    # The hint is whatever id a caller typed: another project's server may
    # name this reservation (and fail to build); it is not this lease's.
    servers = Instance.objects.filter(reservation_id__in=ids, project_id=lease.project_id)
    return servers.exclude(status=InstanceStatus.DELETED)


def _end(lease: Lease, now: datetime) -> None:
    lease.status = LeaseStatus.TERMINATING
    if settings.BERTH_LEASE_END_DELETES_SERVERS:
        context = RequestContext(user_id=lease.user_id, project=lease.project, role=Role.MEMBER)
        for instance in lease_servers(lease).exclude(task_state=TaskState.DELETING):
            compute.server_delete(context=context, instance=instance)
    for reservation in lease.reservations.all():
        allocation.release(reservation=reservation, at=now)
    lease.reservations.update(status=ReservationStatus.DELETED)
    lease.status = LeaseStatus.TERMINATED
    lease.save(update_fields=["status", "updated_at"])


HANDLERS = {
    EventType.HEADS_UP: _heads_up,
    EventType.START: _start,
    EventType.BEFORE_END: _before_end,
    EventType.END: _end,
}
