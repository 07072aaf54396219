"""How leases constrain compute's scheduler, and how a lease heals when one
of its hosts goes away. Compute never imports this module: the provider is
registered with compute.scheduler at start-up."""

import uuid
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from compute import services as compute
from compute.models import Host, Instance, InstanceStatus
from compute.scheduler import Constraints, host_up, is_up
from config.celery import enqueue_after_commit
from config.errors import Conflict, Invalid
from identity.services import project_get_or_create
from reservations import allocation, properties
from reservations.models import (
    RESERVATION_FLAVOR,
    HostAllocation,
    Lease,
    LeaseStatus,
    ReservableHost,
    Reservation,
    ReservationStatus,
    ResourceType,
)
from reservations.notifications import notify


def reservation_of(instance: Instance) -> Reservation | None | str:
    """The reservation the instance asked for (scheduler hint or the
    reservation's flavor); the hint as given if it names none."""
    hint = instance.reservation_id
    matches = []
    if instance.flavor_id and instance.flavor_id.startswith(RESERVATION_FLAVOR):
        matches.append(Q(flavor_id=instance.flavor_id))
    if hint:
        try:
            matches.append(Q(pk=uuid.UUID(hint)))
        except ValueError:
            return hint
    if not matches:
        return None
    found = (
        Reservation.objects.select_related("lease")
        .filter(Q(*matches, _connector=Q.OR))
        .order_by("created_at", "id")
        .first()
    )
    return found or hint or None


def lease_constraints(instance: Instance) -> Constraints:
    """Reserved hosts take only instances of the lease that holds them; an
    instance of a reservation lands only on its hosts, within its amount."""
    reservation = reservation_of(instance)
    if reservation is None:
        return Constraints(
            avoid=Q(Exists(ReservableHost.objects.filter(host=OuterRef("pk")))),
            reason="every host that fits is reservable and takes only lease instances",
        )
    if isinstance(reservation, str):
        return Constraints(only_hosts=set(), reason=f"reservation {reservation} not found")
    if reservation.lease.project_id != instance.project_id:
        # As if there were none: named as the caller wrote it (the id in
        # canonical form would tell it exists), never by the owner's lease.
        return Constraints(
            only_hosts=set(),
            reason=f"reservation {instance.reservation_id or reservation.pk} not found",
        )
    lease = reservation.lease
    if reservation.status != ReservationStatus.ACTIVE or lease.status != LeaseStatus.ACTIVE:
        return Constraints(only_hosts=set(), reason=f"reservation {reservation.pk} is not active")
    now = timezone.now()
    held = HostAllocation.objects.filter(reservation=reservation, start_at__lte=now, end_at__gt=now)
    hosts = set(held.values_list("host__name", flat=True))
    if reservation.resource_type == ResourceType.INSTANCE:
        running = (
            Instance.objects.filter(reservation_id=str(reservation.pk))
            .exclude(status__in=[InstanceStatus.DELETED, InstanceStatus.ERROR])
            .exclude(pk=instance.pk)
        )
        if running.count() >= reservation.amount:
            return Constraints(
                only_hosts=set(),
                reason=f"reservation {reservation.pk} has no free slot "
                f"(amount {reservation.amount})",
            )
        per_host = {}
        for name in running.values_list("host__name", flat=True):
            per_host[name] = per_host.get(name, 0) + 1
        hosts = {
            a.host.name
            for a in held.select_related("host")
            if per_host.get(a.host.name, 0) < a.slots
        }
    return Constraints(
        only_hosts=hosts,
        reason=f"no host of reservation {reservation.pk} can take the instance",
        # An instance reservation's free slots change as its instances land.
        per_instance=reservation.resource_type == ResourceType.INSTANCE,
    )


def host_liveness_changed(*, host: str, up: bool, failed_over: list[str], **signal) -> None:
    """compute.signals.host_liveness: tell the operator's project,
    and heal the leases that hold a host that went down now rather than at
    the next periodic heal."""
    operator = project_get_or_create(name=settings.BERTH_OPERATOR_PROJECT)
    if up:
        notify(project=operator, event_type="host.up", host=host)
        return
    notify(project=operator, event_type="host.down", host=host, builds_failed_over=failed_over)
    from reservations.tasks import heal as heal_task  # the Celery side imports this module

    enqueue_after_commit(heal_task.delay)


def _held_hosts():
    """Host allocations of pending or active host reservations, not
    replaced yet (the history rows are ended, so not among these)."""
    return HostAllocation.objects.filter(
        slots=0,
        reservation__status__in=[ReservationStatus.PENDING, ReservationStatus.ACTIVE],
        reservation__resource_type=ResourceType.HOST,
    )


def heal(*, now: datetime | None = None) -> int:
    """Replace reserved hosts that went down or were disabled by free
    matching hosts for the rest of the lease; mark the lease degraded when
    none is free. Returns how many allocations were handled."""
    now = now or timezone.now()
    lost = (
        _held_hosts()
        .filter(end_at__gt=now)
        .filter(Q(host__enabled=False) | ~host_up("host__"))
        .values_list("pk", "reservation__lease_id")
    )
    handled = 0
    for allocation_id, lease_id in list(lost[:100]):
        with transaction.atomic():
            # The lease, then its allocation: the order lease operations
            # lock in. Again under the lock: a heal running at the same
            # time may have replaced it since it was listed.
            lease = Lease.objects.select_for_update(of=("self",)).filter(pk=lease_id).first()
            found = (
                HostAllocation.objects.select_for_update()
                .filter(pk=allocation_id, replaced_by=None)
                .first()
            )
            if lease is None or found is None:
                continue
            _replace(found, lease, now)
            handled += 1
    return handled


def host_problems(host: Host) -> list[str]:
    """Why a reserved host cannot serve its lease: down (no heartbeat from
    it or its agent), or disabled (with the operator's reason)."""
    problems = [] if is_up(host) else ["down"]
    if not host.enabled:
        reason = f": {host.disabled_reason}" if host.disabled_reason else ""
        problems.append(f"disabled{reason}")
    return problems


def _readiness_held(now: datetime):
    """The allocations a readiness check goes through: held from now on,
    locked, by host name."""
    return (
        _held_hosts()
        .filter(replaced_by=None, end_at__gt=now)
        .select_related("host", "reservation__segment")
        .select_for_update(of=("self",))
        .order_by("host__name")
    )


def held_by_lease(*, lease_ids, now: datetime) -> dict:
    """What lease_readiness checks, for many leases (locked by the caller)
    in one query: lease id -> its allocations, locked (every id, [] for a
    lease that holds none)."""
    held = {lease_id: [] for lease_id in lease_ids}
    if not held:
        return held
    listed = _readiness_held(now).filter(reservation__lease_id__in=held)
    for reserved in listed.annotate(held_for=F("reservation__lease_id")):
        held[reserved.held_for].append(reserved)
    return held


def lease_readiness(*, lease: Lease, now: datetime, held: dict | None = None) -> dict:
    """Each host the lease (locked by the caller) holds from now on, checked;
    a failed one swapped for a free matching host (its reservation's
    properties kept), or left missing with the lease degraded. Run by the
    heads-up and the start, so a lease starts on no host known to be down
    or disabled. Returns what the notification says: checked, swapped,
    missing.

    ``held``: held_by_lease's answer for a batch of leases, this one among
    them, read instead of the database. A check that found a problem drops
    the lease from it: a swap changed the lease's allocations."""
    listed = held.get(lease.pk) if held is not None else None
    if listed is None:
        listed = _readiness_held(now).filter(reservation__lease=lease)
    checked, swapped, missing = [], [], []
    for reserved in listed:
        problems = host_problems(reserved.host) + _network_problems(reserved)
        checked.append({"host": reserved.host.name, "problems": problems})
        if not problems:
            continue
        new_host = _replace(reserved, lease, now)
        if new_host is None:
            missing.append(reserved.host.name)
        else:
            swapped.append({"host": reserved.host.name, "replaced_by": new_host})
    if held is not None and (swapped or missing):
        held.pop(lease.pk, None)
    return {"checked": checked, "swapped": swapped, "missing": missing}


def _network_problems(reserved: HostAllocation) -> list[str]:
    """A host of a reservation on a network that no longer plugs into the
    reservation's segment (its agent reported other wiring, or was set
    down) cannot give its servers their addresses."""
    reservation = reserved.reservation
    reach = allocation.network_reach(reservation)
    if reach is None or ReservableHost.objects.filter(reach, host=reserved.host).exists():
        return []
    where = f"segment {reservation.segment_id}" if reservation.segment_id else "its network"
    return [f"not reaching {where}"]


# How a host drained by a member's report starts its disabled reason.
FAULTY_PREFIX = "reported faulty by"


def host_report_faulty(*, lease: Lease, host_name: str, reporter: str, reason: str, now) -> dict:
    """A member's report that a host of their active lease (locked by the
    caller) is faulty: the host is drained from scheduling (disabled, the
    report as its reason), swapped within the lease if a free matching host
    exists, and the operator told. Returns the report."""
    reserved = (
        _held_hosts()
        .filter(reservation__lease=lease, replaced_by=None, start_at__lte=now, end_at__gt=now)
        .filter(host__name=host_name)
        .select_related("host")
        .select_for_update(of=("self",))
        .first()
    )
    if reserved is None:
        raise Invalid(f"Invalid input for field 'host': {host_name} is not a host of this lease.")
    drained = f"{FAULTY_PREFIX} {reporter} (lease {lease.pk}): {reason}"[:255]
    compute.host_set_enabled(host=reserved.host, enabled=False, reason=drained)
    new_host = _replace(reserved, lease, now)
    report = {"host": host_name, "reason": reason, "replaced_by": new_host}
    operator = project_get_or_create(name=settings.BERTH_OPERATOR_PROJECT)
    notify(
        project=operator,
        event_type="host.faulty",
        lease_id=str(lease.pk),
        reported_by=reporter,
        **report,
    )
    notify(
        project=lease.project,
        event_type="lease.host_reported_faulty",
        lease=lease,
        reported_by=reporter,
        **report,
    )
    return report


def _replace(lost: HostAllocation, lease: Lease, now: datetime) -> str | None:
    """The lost host's allocation handed to a free matching host for the
    rest of the lease (locked by the caller); the new host's name, or None
    with the lease degraded when no host is free."""
    reservation = Reservation.objects.get(pk=lost.reservation_id)
    start = max(now, lost.start_at)
    where = properties.reservation_filter(reservation)
    where &= host_up("host__") & ~Q(host=lost.host)
    # Its topology kept: the replacement plugs in where the lost host did
    # (the addresses held for it stay where they are).
    reach = allocation.network_reach(reservation)
    if reach is not None:
        where &= reach
    old_host = Host.objects.get(pk=lost.host_id).name
    try:
        with transaction.atomic():
            (new,) = allocation.allocate_hosts(
                reservation=reservation,
                start=start,
                end=lease.end_at,
                where=where,
                count_min=1,
                count_max=1,
            )
    except Conflict:
        if not lease.degraded:
            lease.degraded = True
            lease.save(update_fields=["degraded", "updated_at"])
            notify(
                project=lease.project,
                event_type="lease.degraded",
                lease=lease,
                lost_host=old_host,
                reason="no free matching host to replace it",
            )
        return None
    if lost.start_at >= now:
        lost.delete()
    else:
        # Held until now: kept as history, no longer one of the reservation's hosts.
        HostAllocation.objects.filter(pk=lost.pk).update(end_at=now, replaced_by=new)
    new_host = Host.objects.get(pk=new.host_id).name
    notify(
        project=lease.project,
        event_type="lease.host_replaced",
        lease=lease,
        reservation_id=str(reservation.pk),
        lost_host=old_host,
        new_host=new_host,
        at=now.isoformat(),
    )
    return new_host
