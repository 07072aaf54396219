"""Finding and taking reservable hosts over a time window.

Intervals are half-open, [start, end): a lease ending at 12:00 and one
starting at 12:00 fit back to back. An allocation's stored end includes the
operator's cleaning buffer (BERTH_LEASE_CLEANING_SECONDS), so the next
lease on that host starts after the host was cleaned.

Candidate search is one query (hosts matching the filters with no
overlapping allocation). Taking hosts locks their ReservableHost rows, then
checks again under the locks: concurrent allocators on PostgreSQL and
SQLite alike never double-book; on PostgreSQL an exclusion constraint makes
a double booking impossible whatever the code does.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet

from config.errors import Conflict
from reservations.models import HostAllocation, ReservableHost, Reservation


class NoCapacity(Conflict):
    """A reservation does not fit its window: too few free hosts or slots
    (not a name taken or a quota: those have no alternatives to offer)."""


def buffer() -> timedelta:
    return timedelta(seconds=settings.BERTH_LEASE_CLEANING_SECONDS)


def overlapping(start: datetime, end: datetime) -> Q:
    """Allocations that overlap [start, end + buffer)."""
    return Q(start_at__lt=end + buffer(), end_at__gt=start)


def host_candidates(
    *, start: datetime, end: datetime, where: Q, ignore: Reservation | None = None
) -> QuerySet[ReservableHost]:
    """Reservable, enabled hosts matching ``where`` that nothing holds during
    the window (``ignore``: a reservation being changed, whose own
    allocations do not count)."""
    busy = HostAllocation.objects.filter(overlapping(start, end), host=OuterRef("host"))
    if ignore is not None:
        busy = busy.exclude(reservation=ignore)
    return (
        ReservableHost.objects.filter(where, host__enabled=True)
        .filter(~Exists(busy))
        .select_related("host")
        .order_by("host__name")
    )


def lock_hosts(host_ids: list) -> None:
    """The reservable rows of these hosts locked, in id order so that two
    lockers never wait on each other in a cycle: by allocators before they
    check again, and by a lease keeping its hosts over new dates, so that it
    checks and writes with no allocator in between."""
    rows = ReservableHost.objects.select_for_update().filter(host_id__in=host_ids)
    list(rows.order_by("pk").values("pk"))


def allocate_hosts(
    *,
    reservation: Reservation,
    start: datetime,
    end: datetime,
    where: Q,
    count_min: int,
    count_max: int,
) -> list[HostAllocation]:
    """Hold between count_min and count_max whole hosts for the reservation,
    as many as are free; Conflict if fewer than count_min are."""
    with transaction.atomic():
        for _ in range(3):
            # A few spares beyond max, in case a concurrent allocator takes
            # some of them while this one waits for their locks. Unordered:
            # sorting by name would make PostgreSQL find every free host
            # first; the re-check below orders the few it found.
            seen = list(
                host_candidates(start=start, end=end, where=where).order_by()[: count_max + 8]
            )
            if len(seen) < count_min:
                break
            lock_hosts([r.host_id for r in seen])
            free = list(
                host_candidates(start=start, end=end, where=where).filter(
                    pk__in=[r.pk for r in seen]
                )[:count_max]
            )
            if len(free) >= count_min:
                return _create(reservation, [(r.host_id, 0) for r in free], start, end)
        raise NoCapacity(
            f"Not enough hosts available: {count_min} needed from {start:%Y-%m-%d %H:%M} to "
            f"{end:%Y-%m-%d %H:%M}, {len(seen)} free."
        )


def _create(
    reservation, hosts: list[tuple], start: datetime, end: datetime
) -> list[HostAllocation]:
    try:
        with transaction.atomic():
            return HostAllocation.objects.bulk_create(
                HostAllocation(
                    reservation=reservation,
                    host_id=host_id,
                    start_at=start,
                    end_at=end + buffer(),
                    slots=slots,
                )
                for host_id, slots in hosts
            )
    except IntegrityError:
        # The exclusion constraint caught an overlap the locks should have
        # prevented (e.g. a row written outside the service).
        raise NoCapacity("Not enough hosts available: a host was taken meanwhile.") from None


# --- instance reservations -------------------------------------------------------


@dataclass(frozen=True)
class SlotSize:
    vcpus: int
    memory_mb: int
    disk_gb: int


def _peak(usages: list[tuple[datetime, datetime, SlotSize, int]], start, end) -> tuple:
    """The highest (vcpus, memory, disk) in use at any instant of [start,
    end), from the overlapping allocations: capacity over time is what is
    left at the peak, not what is left on average."""
    points = sorted({start, *(max(s, start) for s, _, _, _ in usages)})
    peak = (0, 0, 0)
    for instant in points:
        if instant >= end:
            continue
        active = [(size, n) for s, e, size, n in usages if s <= instant < e]
        here = (
            sum(size.vcpus * n for size, n in active),
            sum(size.memory_mb * n for size, n in active),
            sum(size.disk_gb * n for size, n in active),
        )
        peak = tuple(max(a, b) for a, b in zip(peak, here, strict=True))
    return peak


def free_slots(
    *, start: datetime, end: datetime, where: Q, size: SlotSize
) -> dict[ReservableHost, int]:
    """How many instances of ``size`` each matching host can still promise
    over the whole window, with its allocation ratios."""
    whole = HostAllocation.objects.filter(overlapping(start, end), slots=0, host=OuterRef("host"))
    hosts = list(
        ReservableHost.objects.filter(where, host__enabled=True, host__baremetal=False)
        .filter(~Exists(whole))
        .select_related("host")
        .order_by("host__name")
    )
    usages = defaultdict(list)
    shared = HostAllocation.objects.filter(
        overlapping(start, end), slots__gt=0, host__in=[r.host_id for r in hosts]
    ).select_related("reservation")
    for a in shared:
        r = a.reservation
        usages[a.host_id].append(
            (a.start_at, a.end_at, SlotSize(r.vcpus, r.memory_mb, r.disk_gb), a.slots)
        )
    result = {}
    for reservable in hosts:
        host = reservable.host
        used = _peak(usages[host.pk], start, end + buffer())
        room = (
            int(host.vcpus * host.cpu_allocation_ratio) - used[0],
            int(host.memory_mb * host.ram_allocation_ratio) - used[1],
            int(host.disk_gb * host.disk_allocation_ratio) - used[2],
        )
        per = (size.vcpus, size.memory_mb, size.disk_gb)
        result[reservable] = max(0, min(r // p for r, p in zip(room, per, strict=True) if p > 0))
    return result


def allocate_slots(
    *,
    reservation: Reservation,
    start: datetime,
    end: datetime,
    where: Q,
    amount: int,
    affinity: bool | None,
) -> list[HostAllocation]:
    """Promise ``amount`` instances of the reservation's size: all on one
    host (affinity true), each on its own host (false), or packed anywhere."""
    size = SlotSize(reservation.vcpus, reservation.memory_mb, reservation.disk_gb)
    with transaction.atomic():
        candidates = free_slots(start=start, end=end, where=where, size=size)
        lock_hosts([r.host_id for r in candidates])
        free = free_slots(start=start, end=end, where=where, size=size)
        plan = _plan(free, amount, affinity)
        if plan is None:
            where_to = {True: "on one host", False: "on distinct hosts"}.get(affinity, "in all")
            raise NoCapacity(
                f"Not enough capacity available: {amount} instances of {size.vcpus} vCPUs, "
                f"{size.memory_mb} MB, {size.disk_gb} GB needed {where_to}, "
                f"{sum(free.values())} free."
            )
        return _create(reservation, plan, start, end)


def _plan(free: dict[ReservableHost, int], amount: int, affinity: bool | None):
    ranked = sorted(free.items(), key=lambda item: (-item[1], item[0].host.name))
    if affinity:
        host = next((r for r, n in ranked if n >= amount), None)
        return [(host.host_id, amount)] if host else None
    if affinity is False:
        hosts = [r for r, n in ranked if n >= 1][:amount]
        return [(r.host_id, 1) for r in hosts] if len(hosts) == amount else None
    plan, left = [], amount
    for reservable, n in ranked:
        if left == 0:
            break
        take = min(n, left)
        if take:
            plan.append((reservable.host_id, take))
            left -= take
    return plan if left == 0 else None


def release(*, reservation: Reservation, at: datetime) -> None:
    """End the reservation's hold at ``at`` (plus the cleaning buffer);
    allocations that had not started yet are dropped."""
    allocations = HostAllocation.objects.filter(reservation=reservation)
    allocations.filter(start_at__gte=at).delete()
    allocations.filter(end_at__gt=at + buffer()).update(end_at=at + buffer())
