"""Lease lifecycle events: rows with a due time, fired by one sweep.

Beat runs ``reservations.events.sweep`` every second. It claims due rows
with SELECT ... FOR UPDATE SKIP LOCKED and fires them in the same
transaction, so two sweepers (two beats, or a sweep that overran its
second) never fire one event twice: the second skips what the first holds
and finds it DONE afterwards. Never one beat entry per event (beat reloads
every entry on each change and stalls at 10^4 entries).

Firing is done a batch at a time (fire_claimed): what every event needs
(its lease locked, with the claim; its reservations and the hosts to check;
the event's row, its lease's new state and its notification) is read or
written for the whole batch in one statement each, so that an event costs
only what its handler must do. The batch runs in one savepoint; when a
handler fails, the batch is undone and fired again with each event in a
savepoint of its own, so that only the failed one is rolled back.
"""

from collections import defaultdict
from dataclasses import dataclass
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
from reservations import allocation, notifications, placement
from reservations.models import (
    EVENT_ORDER,
    EventStatus,
    EventType,
    Lease,
    LeaseEvent,
    LeaseStatus,
    Reservation,
    ReservationStatus,
)
from reservations.notifications import notifications_batched, notify


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


def sweep(*, now: datetime | None = None, batch: int = 500) -> int:
    """Fire every due event; returns how many fired. Events whose lease a
    lease operation holds are left for the next sweep."""
    fired = 0
    busy: set = set()
    while True:
        with transaction.atomic():
            # The events and their leases locked in one statement; an event
            # whose lease a lease operation holds is not claimed.
            claimed = list(
                due(now or timezone.now())
                .exclude(lease_id__in=busy)
                .select_related("lease")
                .select_for_update(of=("self", "lease"), skip_locked=True)
                .order_by("time", "rank")[:batch]
            )
            leases = {event.lease_id: event.lease for event in claimed}
            count, held = fire_claimed(claimed, now=now, leases=leases)
            fired += count
            busy |= held
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
    fired, 0 (nothing done) when another transaction holds the lease. An
    earlier event another transaction holds is waited for: the caller
    (fire_now) locked the lease before any event, as lease operations do."""
    return fire_claimed([event], now=now, wait=True)[0]


def fire_claimed(
    claimed: list[LeaseEvent],
    now: datetime | None = None,
    *,
    wait: bool = False,
    leases: dict | None = None,
) -> tuple[int, set]:
    """Fire claimed (locked, UNDONE) events, each after the earlier events
    of its lease, in (time, rank) order. The leases, their earlier events,
    the hosts the readiness checks read, the events' rows and their
    notifications take a few statements for the whole batch, not several
    for each event. Returns how many fired and the leases left alone
    because another transaction holds them or (unless ``wait``) one of
    their earlier events: a lease operation, or a second sweeper. A
    failure leaves the event ERROR and the reason on the lease. fired_at
    is when the batch's rows are written, just before its commit.

    ``leases``: the events' leases by id, locked with them; else they are
    locked here."""
    wanted = {event.lease_id for event in claimed}
    if leases is None:
        # Lease operations lock the lease, then its events; this holds
        # events already, so it must not wait for a lease (the two would
        # deadlock).
        leases = {
            lease.pk: lease
            for lease in Lease.objects.select_for_update(skip_locked=True).filter(pk__in=wanted)
        }
    # The batch writes the states the handlers leave, once, at its end.
    was = {pk: (lease.status, lease.status_reason) for pk, lease in leases.items()}
    mine = [event for event in claimed if event.lease_id in leases]
    earlier, held = _earlier_events(mine, wait=wait)
    busy = wanted - leases.keys() | held
    ordered = sorted(
        (event for event in mine + earlier if event.lease_id not in busy),
        key=lambda event: (event.time, event.rank),
    )
    if not ordered:
        return 0, busy
    firing = {event.lease_id: leases[event.lease_id] for event in ordered}
    with notifications_batched():
        try:
            # Nearly always every handler succeeds: one savepoint for the
            # batch, not one per event (two statements each).
            with notifications.atomic():
                _fire_batch(ordered, firing, now, apart=False)
        except BerthError:
            # One failed: the batch is undone and fired again from what the
            # database holds, each event in a savepoint of its own, so that
            # only the failed ones are rolled back.
            firing = Lease.objects.in_bulk(firing)
            _fire_batch(ordered, firing, now, apart=True)
    # One write per outcome (nearly always one: DONE), not one per event;
    # the same for the leases' new states.
    fired_at = now or timezone.now()
    outcomes = defaultdict(list)
    for event in ordered:
        outcomes[event.status, event.error].append(event.pk)
    for (status, error), ids in outcomes.items():
        LeaseEvent.objects.filter(pk__in=ids).update(status=status, error=error, fired_at=fired_at)
    states = defaultdict(list)
    for lease in firing.values():
        if (lease.status, lease.status_reason) != was[lease.pk]:
            states[lease.status, lease.status_reason].append(lease.pk)
    for (status, reason), ids in states.items():
        Lease.objects.filter(pk__in=ids).update(
            status=status, status_reason=reason, updated_at=timezone.now()
        )
    return len(ordered), busy


def _earlier_events(claimed: list[LeaseEvent], *, wait: bool) -> tuple[list[LeaseEvent], set]:
    """The UNDONE events of the claimed events' leases (locked by the
    caller) that come before one of them and were not claimed with them:
    another sweeper claimed them, or a lease operation moved them earlier
    since the claim. Those this locks, and the leases for which one was
    held elsewhere (left whole, so that their events keep their order).
    Unless ``wait``, a held one is passed by, not waited for: two sweepers
    each holding a lease and an earlier event of the other's would
    deadlock."""
    last: dict = {}
    for event in claimed:
        at = (event.time, event.rank)
        last[event.lease_id] = max(last.get(event.lease_id, at), at)
    if not last:
        return [], set()
    # Only those before the latest claimed are candidates: in a batch of
    # events due together (a heads-up and a start at one instant) that is
    # nearly always none.
    latest_time, latest_rank = max(last.values())
    candidates = LeaseEvent.objects.filter(
        Q(time__lt=latest_time) | Q(time=latest_time, rank__lt=latest_rank),
        lease_id__in=last,
        status=EventStatus.UNDONE,
    ).values_list("pk", "lease_id", "time", "rank")
    mine = {event.pk for event in claimed}
    before = {
        pk: lease_id
        for pk, lease_id, *at in candidates
        if tuple(at) < last[lease_id] and pk not in mine
    }
    if not before:
        return [], set()
    locked = list(
        LeaseEvent.objects.select_for_update(skip_locked=not wait).filter(
            pk__in=before, status=EventStatus.UNDONE
        )
    )
    taken = {event.pk for event in locked}
    return locked, {lease_id for pk, lease_id in before.items() if pk not in taken}


@dataclass
class BatchReads:
    """What the handlers read, for the whole batch: each lease's
    reservations (start and end go through them), and the hosts the
    heads-up and the start check (placement.held_by_lease)."""

    reservations: dict
    hosts: dict


def _batch_reads(ordered: list[LeaseEvent], leases: dict, now: datetime) -> BatchReads:
    reservations = defaultdict(list)
    for reservation in Reservation.objects.filter(lease_id__in=leases):
        reservation.lease = leases[reservation.lease_id]
        reservations[reservation.lease_id].append(reservation)
    # A lease without reservations holds no host.
    checking = {EventType.HEADS_UP, EventType.START}
    hosts = {lease_id: [] for lease_id in leases if lease_id not in reservations}
    hosts |= placement.held_by_lease(
        lease_ids={
            event.lease_id
            for event in ordered
            if event.event_type in checking and event.lease_id in reservations
        },
        now=now,
    )
    return BatchReads(reservations=reservations, hosts=hosts)


def _fire_batch(ordered: list[LeaseEvent], leases: dict, now: datetime | None, *, apart: bool):
    """Run each event's handler on its lease (locked) and write its
    notification. ``apart``: each event in a savepoint of its own, a failed
    one left ERROR with the reason on its lease; else a failure raises."""
    reads = _batch_reads(ordered, leases, now or timezone.now())
    for event in ordered:
        lease = leases[event.lease_id]
        if not apart:
            _fire_one(event, lease, now or timezone.now(), reads)
            continue
        try:
            with notifications.atomic():
                _fire_one(event, lease, now or timezone.now(), reads)
        except BerthError as error:
            event.status, event.error = EventStatus.ERROR, error.message
            lease.status, lease.status_reason = (
                LeaseStatus.ERROR,
                f"{event.event_type} failed: {error.message}",
            )
            notify(
                event_type="lease.error",
                lease=lease,
                reason=lease.status_reason,
            )


def _fire_one(event: LeaseEvent, lease: Lease, now: datetime, reads: BatchReads) -> None:
    # What the handler checked or changed goes into the notification.
    found = HANDLERS[event.event_type](lease, now, reads) or {}
    notify(
        event_type=f"lease.event.{event.event_type}",
        lease=lease,
        event_id=str(event.pk),
        time=event.time.isoformat(),
        status=lease.status,
        **found,
    )
    event.status = EventStatus.DONE


def _heads_up(lease: Lease, now: datetime, reads: BatchReads) -> dict:
    """The lease's hosts checked, and a failed one swapped, before the
    start; the notification says what was checked and swapped (seed 002:
    tools that prepare hosts listen for it)."""
    return placement.lease_readiness(lease=lease, now=now, held=reads.hosts)


def _start(lease: Lease, now: datetime, reads: BatchReads) -> dict:
    """Checked again (a host may have failed since the heads-up): the lease
    starts on no host known to be down or disabled, degraded if one could
    not be swapped."""
    readiness = placement.lease_readiness(lease=lease, now=now, held=reads.hosts)
    lease.status = LeaseStatus.STARTING
    reservations = reads.reservations.get(lease.pk, [])
    if reservations:
        Reservation.objects.filter(pk__in=[r.pk for r in reservations]).update(
            status=ReservationStatus.ACTIVE
        )
    for reservation in reservations:
        if reservation.server_template is not None:
            _boot_template(lease, reservation)
    lease.status = LeaseStatus.ACTIVE
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


def _before_end(lease: Lease, now: datetime, reads: BatchReads) -> None:
    """Only the notification: the lease's users may save their work."""


def lease_servers(lease: Lease):
    ids = [str(pk) for pk in lease.reservations.values_list("pk", flat=True)]
    # The hint is whatever id a caller typed: another project's server may
    # name this reservation (and fail to build); it is not this lease's.
    servers = Instance.objects.filter(reservation_id__in=ids, project_id=lease.project_id)
    return servers.exclude(status=InstanceStatus.DELETED)


def _end(lease: Lease, now: datetime, reads: BatchReads) -> None:
    lease.status = LeaseStatus.TERMINATED
    reservations = reads.reservations.get(lease.pk, [])
    if not reservations:
        return
    if settings.BERTH_LEASE_END_DELETES_SERVERS:
        context = RequestContext(user_id=lease.user_id, project=lease.project, role=Role.MEMBER)
        for instance in lease_servers(lease).exclude(task_state=TaskState.DELETING):
            compute.server_delete(context=context, instance=instance)
    for reservation in reservations:
        allocation.release(reservation=reservation, at=now)
    Reservation.objects.filter(pk__in=[r.pk for r in reservations]).update(
        status=ReservationStatus.DELETED
    )


def end_at_once(*, lease: Lease, now: datetime) -> None:
    """What the end does, for a lease (locked by the caller) ended outside
    the sweep: its servers deleted, its hosts and addresses released. The
    caller writes the lease's state (lease_delete deletes it)."""
    reads = BatchReads(reservations={lease.pk: list(lease.reservations.all())}, hosts={})
    _end(lease, now, reads)


HANDLERS = {
    EventType.HEADS_UP: _heads_up,
    EventType.START: _start,
    EventType.BEFORE_END: _before_end,
    EventType.END: _end,
}
