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

import operator
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import reduce

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet

from config.errors import Conflict, Invalid
from networking import ipam
from networking import selectors as net_selectors
from networking import services as net_services
from networking.selectors import PlacementSegment
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


# --- hosts on a network, with their addresses ---------------------------------------


def reaching(segment) -> Q:
    """Reservable hosts whose agent plugs into the segment."""
    return Q(net_selectors.hosts_on_segment(segment=segment, host_field="host__name"))


def address_subnets(place: PlacementSegment) -> list:
    """The subnets a host's addresses are held in on this segment: those of
    its first IP version (IPv4 where it has any)."""
    versions = sorted({s.ip_version for s in place.subnets})
    return [s for s in place.subnets if versions and s.ip_version == versions[0]]


@dataclass(frozen=True, eq=False)
class SegmentRoom:
    """A segment of the reservation's network and for how many hosts it
    has addresses free over the window (None: no addresses asked for)."""

    place: PlacementSegment
    hosts: int | None

    def fits(self, count: int) -> bool:
        return self.hosts is None or self.hosts >= count

    @property
    def label(self) -> str:
        segment = self.place.segment
        return f"segment {segment.name or segment.pk}"


def segment_rooms(reservation: Reservation, start: datetime, end: datetime) -> list[SegmentRoom]:
    """The network's segments, roomiest first. Refuses (400, naming the
    field) addresses_per_host more than any segment could ever hold for
    the reservation's min hosts."""
    per_host = reservation.addresses_per_host
    places = net_selectors.placement_segments(network_id=reservation.network_id)
    if not per_host:
        return [SegmentRoom(place, None) for place in places]
    subnets = {s.pk: s for place in places for s in address_subnets(place)}
    free = net_selectors.free_addresses(subnets=list(subnets.values()), start=start, end=end)
    ever = max(
        (
            sum(ipam.pool_size(s.allocation_pools) for s in address_subnets(place))
            for place in places
        ),
        default=0,
    )
    if ever < per_host * reservation.min:
        raise Invalid(
            f"Invalid input for field 'addresses_per_host': {per_host} addresses for each of "
            f"{reservation.min} hosts is more than any segment of network "
            f"{reservation.network_id} holds ({ever} at most)."
        )
    rooms = [
        SegmentRoom(place, sum(free[s.pk] for s in address_subnets(place)) // per_host)
        for place in places
    ]
    return sorted(rooms, key=lambda room: -room.hosts)


def _hold_addresses(reservation: Reservation, room: SegmentRoom, hosts: int, start, end) -> None:
    if reservation.addresses_per_host and hosts:
        net_services.address_holds_take(
            holder=reservation.pk,
            project=reservation.lease.project,
            subnets=address_subnets(room.place),
            start=start,
            end=end,
            count=hosts * reservation.addresses_per_host,
        )


def allocate_hosts_on_network(
    *,
    reservation: Reservation,
    start: datetime,
    end: datetime,
    where: Q,
    count_min: int,
    count_max: int,
) -> list[HostAllocation]:
    """Hold hosts that reach the reservation's network, and on the segment
    each reaches addresses_per_host addresses for it: all on one segment
    (same_segment; the roomiest that fits is taken and recorded), or spread
    over the segments, round robin. Hosts and addresses together, or
    neither (NoCapacity)."""
    rooms = segment_rooms(reservation, start, end)
    if reservation.same_segment:
        return _on_one_segment(reservation, rooms, start, end, where, count_min, count_max)
    return _spread(reservation, rooms, start, end, where, count_min, count_max)


def _on_one_segment(reservation, rooms, start, end, where, count_min, count_max):
    refusals = []
    for room in rooms:
        if not room.fits(count_min):
            refusals.append(f"{room.label} has addresses for {room.hosts} hosts")
            continue
        most = count_max if room.hosts is None else min(count_max, room.hosts)
        try:
            with transaction.atomic():
                taken = allocate_hosts(
                    reservation=reservation,
                    start=start,
                    end=end,
                    where=where & reaching(room.place.segment),
                    count_min=count_min,
                    count_max=most,
                )
                _hold_addresses(reservation, room, len(taken), start, end)
        except Conflict as refused:
            refusals.append(f"{room.label}: {refused.message}")
            continue
        Reservation.objects.filter(pk=reservation.pk).update(segment=room.place.segment)
        reservation.segment = room.place.segment
        return taken
    _check_one_segment_can_fit(reservation, rooms, where, count_min)
    raise NoCapacity(
        f"Not enough hosts with addresses available on one segment of network "
        f"{reservation.network_id}: {count_min} needed from {start:%Y-%m-%d %H:%M} to "
        f"{end:%Y-%m-%d %H:%M}. " + ("; ".join(refusals) or "It has no segment.")
    )


def _check_one_segment_can_fit(reservation, rooms, where, count_min) -> None:
    """A refusal that no wait would lift is bad input (400, naming the
    field): no segment of the network is reached by enough matching
    reservable hosts, whatever they hold."""
    reached = [
        ReservableHost.objects.filter(where & reaching(room.place.segment)).count()
        for room in rooms
    ]
    if max(reached, default=0) < count_min:
        raise Invalid(
            f"Invalid input for field 'same_segment': no segment of network "
            f"{reservation.network_id} is reached by {count_min} reservable hosts with these "
            f"properties ({max(reached, default=0)} at most)."
        )


def network_reach(reservation: Reservation) -> Q | None:
    """Where a host of the reservation must plug in: its segment if it
    holds one; spread, a segment it holds addresses on (any of the
    network's if it holds none); None without a network."""
    if reservation.network_id is None:
        return None
    if reservation.segment_id is not None:
        return reaching(reservation.segment)
    places = net_selectors.placement_segments(network_id=reservation.network_id)
    holding = {h.subnet.segment_id for h in net_selectors.address_holds(holders=[reservation.pk])}
    segments = [p.segment for p in places if not holding or p.segment.pk in holding]
    return reduce(operator.or_, (reaching(segment) for segment in segments), Q(pk__in=[]))


def _spread(reservation, rooms, start, end, where, count_min, count_max):
    """Free hosts of each segment with room, taken one segment at a time in
    turn, so that the hosts spread over the segments."""
    queues = [
        (
            room,
            list(
                host_candidates(start=start, end=end, where=where & reaching(room.place.segment))
                .order_by()
                .values_list("host_id", flat=True)[: count_max + 8]
            ),
        )
        for room in rooms
        if room.fits(1)
    ]
    placed: dict = {}  # host id -> its segment's room
    load: Counter = Counter()
    while len(placed) < count_max:
        progress = False
        for room, queue in queues:
            while queue and queue[0] in placed:
                queue.pop(0)
            if queue and room.fits(load[room] + 1) and len(placed) < count_max:
                placed[queue.pop(0)] = room
                load[room] += 1
                progress = True
        if not progress:
            break
    if len(placed) < count_min:
        raise NoCapacity(
            f"Not enough hosts with addresses available on network {reservation.network_id}: "
            f"{count_min} needed from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}, "
            f"{len(placed)} free."
        )
    taken = allocate_hosts(
        reservation=reservation,
        start=start,
        end=end,
        where=Q(host_id__in=list(placed)),
        count_min=count_min,
        count_max=len(placed),
    )
    per_room = Counter(placed[a.host_id] for a in taken)
    try:
        for room, hosts in per_room.items():
            _hold_addresses(reservation, room, hosts, start, end)
    except Conflict as refused:
        raise NoCapacity(refused.message) from None
    return taken


def hold_addresses(*, reservation: Reservation, start: datetime, end: datetime) -> None:
    """A reservation of addresses alone: those named, then as many more free
    ones of the network as its amount asks for."""
    subnets = [
        s
        for place in net_selectors.placement_segments(network_id=reservation.network_id)
        for s in place.subnets
    ]
    subnets = list({s.pk: s for s in sorted(subnets, key=lambda s: s.ip_version)}.values())
    named = reservation.required_floatingips
    try:
        with transaction.atomic():
            if named:
                net_services.address_holds_take(
                    holder=reservation.pk,
                    project=reservation.lease.project,
                    subnets=subnets,
                    start=start,
                    end=end,
                    addresses=named,
                )
            if reservation.amount > len(named):
                net_services.address_holds_take(
                    holder=reservation.pk,
                    project=reservation.lease.project,
                    subnets=subnets,
                    start=start,
                    end=end,
                    count=reservation.amount - len(named),
                )
    except Conflict as refused:
        raise NoCapacity(f"Not enough addresses available: {refused.message}") from None


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
    net_services.address_holds_release(holder=reservation.pk, at=at)
