"""Writes for reservations: reservable hosts, leases and their changes.

A lease change is all or nothing: its reservations are re-allocated inside
one transaction, and if any no longer fits the whole change rolls back and
the caller gets a 409 with the lease untouched.
"""

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from compute import selectors as compute_selectors
from compute import services as compute
from compute.models import Host
from config.errors import Conflict, Invalid, NotFound, shown
from identity.auth import RequestContext
from identity.models import Project
from identity.quotas import quota_enforce, quota_limits
from networking import selectors as net_selectors
from networking import services as net_services
from networking.models import Network
from reservations import allocation, events, placement, properties, selectors
from reservations.models import (
    RESERVATION_FLAVOR,
    EventStatus,
    EventType,
    HostAllocation,
    HostProperty,
    Lease,
    LeaseStatus,
    ReservableHost,
    Reservation,
    ResourceType,
)
from reservations.notifications import notify

# --- reservable hosts -------------------------------------------------------------


def _write_properties(reservable: ReservableHost) -> None:
    HostProperty.objects.filter(reservable=reservable).delete()
    HostProperty.objects.bulk_create(
        HostProperty(reservable=reservable, key=k, text=t, number=n)
        for k, t, n in properties.property_rows(reservable.capabilities)
    )


@transaction.atomic
def reservable_host_create(*, name: str, capabilities: dict) -> ReservableHost:
    host = Host.objects.filter(name=name).first()
    if host is None:
        raise NotFound(f"Host '{name}' not found!")
    if ReservableHost.objects.filter(host=host).exists():
        raise Conflict(f"Host '{name}' is already reservable.")
    reservable = ReservableHost.objects.create(host=host, capabilities=capabilities)
    _write_properties(reservable)
    return reservable


@transaction.atomic
def reservable_host_update(*, reservable: ReservableHost, capabilities: dict) -> ReservableHost:
    reservable = ReservableHost.objects.select_for_update().get(pk=reservable.pk)
    reservable.capabilities = {**reservable.capabilities, **capabilities}
    reservable.capabilities = {k: v for k, v in reservable.capabilities.items() if v is not None}
    reservable.save()
    _write_properties(reservable)
    return reservable


@transaction.atomic
def reservable_host_delete(*, reservable: ReservableHost) -> None:
    reservable = ReservableHost.objects.select_for_update().get(pk=reservable.pk)
    if HostAllocation.objects.filter(host=reservable.host, end_at__gt=timezone.now()).exists():
        raise Conflict(f"Can't delete host {reservable.pk}. The host is reserved.")
    reservable.delete()


# --- leases -------------------------------------------------------------------------


@dataclass
class HostRequest:
    min: int
    max: int
    hypervisor_properties: str = ""
    resource_properties: str = ""
    before_end: str = "default"
    # berth's network-aware hosts (see Reservation).
    network_id: str | None = None
    same_segment: bool = False
    addresses_per_host: int = 0


@dataclass
class FloatingIpRequest:
    """Addresses alone (Blazar's virtual:floatingip): ``amount`` of the
    network's, the ``required_floatingips`` among them."""

    network_id: str
    amount: int
    required_floatingips: list = field(default_factory=list)


@dataclass
class InstanceRequest:
    amount: int
    vcpus: int
    memory_mb: int
    disk_gb: int
    affinity: bool | None = None
    resource_properties: str = ""
    server_template: dict | None = None


@dataclass
class LeaseRequest:
    name: str
    start: datetime
    end: datetime
    reservations: list = field(default_factory=list)
    before_end: datetime | None = None
    heads_up_seconds: int | None = None
    # A flexible lease: [start, end) is its earliest window, and it may
    # start later as long as it ends by this.
    flex_latest_end: datetime | None = None


def heads_up_checked(seconds: int | None) -> int:
    if seconds is None:
        return settings.BERTH_LEASE_HEADS_UP
    low, high = settings.BERTH_LEASE_HEADS_UP_MIN, settings.BERTH_LEASE_HEADS_UP_MAX
    if not low <= seconds <= high:
        raise Invalid(f"heads_up must be between {low} and {high} seconds, not {seconds}.")
    return seconds


def _check_window(start: datetime, end: datetime, before_end: datetime | None) -> None:
    if end <= start:
        raise Invalid("The lease end date must be after its start date.")
    if before_end is not None and not start <= before_end <= end:
        raise Invalid("before_end_date must be between the start and the end of the lease.")


def start_checked(start: datetime, *, now: datetime) -> datetime:
    """A new start date is not in the past. Request dates have minute
    resolution: "12:00" asked at 12:00:30 is now."""
    if start < now.replace(second=0, microsecond=0):
        raise Invalid(f"Start date {start:%Y-%m-%d %H:%M} must be later than current date.")
    return start


def _check_bounds(
    *,
    project: Project,
    start: datetime,
    end: datetime,
    now: datetime,
    duration: bool = True,
    ahead: bool = True,
) -> None:
    """The operator's bounds (quota resources, so a project's Quota row
    overrides them and -1 lifts them): how long a lease may hold its
    resources, and how far ahead it may start. Without them one member can
    hold the only host of its kind for years."""
    limits = quota_limits(project=project)
    longest, farthest = limits.get("lease_duration", -1), limits.get("lease_start_ahead", -1)
    seconds = int((end - start).total_seconds())
    if duration and 0 <= longest < seconds:
        # Blazar's MaxLeaseDurationException, word for word.
        raise Invalid(
            f"Lease duration of {seconds} seconds must be less than or equal to the "
            f"maximum lease duration of {longest} seconds."
        )
    seconds = int((start - now).total_seconds())
    if ahead and 0 <= farthest < seconds:
        raise Invalid(
            f"Start date {start:%Y-%m-%d %H:%M} is {seconds} seconds ahead; a lease may "
            f"start at most {farthest} seconds ahead."
        )


def _allocate(reservation: Reservation, lease: Lease) -> None:
    """Hold what the reservation asks for over the lease's window (Conflict
    if it does not fit)."""
    if reservation.resource_type == ResourceType.FLOATINGIP:
        allocation.hold_addresses(reservation=reservation, start=lease.start_at, end=lease.end_at)
        return
    where = properties.reservation_filter(reservation)
    if reservation.resource_type == ResourceType.HOST:
        on_network = reservation.network_id is not None
        allocate = allocation.allocate_hosts_on_network if on_network else allocation.allocate_hosts
        allocate(
            reservation=reservation,
            start=lease.start_at,
            end=lease.end_at,
            where=where,
            count_min=reservation.min,
            count_max=reservation.max,
        )
    else:
        allocation.allocate_slots(
            reservation=reservation,
            start=lease.start_at,
            end=lease.end_at,
            where=where,
            amount=reservation.amount,
            affinity=reservation.affinity,
        )


def _network(context: RequestContext, network_id) -> Network:
    """The network a reservation names, if the caller may use it: another
    project's unshared network is an unknown one, as in Neutron."""
    found = net_selectors.network_list(context=context).filter(pk=_uuid_or_none(network_id))
    network = found.first()
    if network is None:
        raise Invalid(
            f"Invalid input for field 'network_id': network {shown(network_id)} not found."
        )
    return network


def _uuid_or_none(value):
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _host_network(request: HostRequest, context: RequestContext) -> Network | None:
    if request.network_id is None:
        for name, value in (
            ("same_segment", request.same_segment),
            ("addresses_per_host", request.addresses_per_host),
        ):
            if value:
                raise Invalid(f"Invalid input for field '{name}': it needs a network_id.")
        return None
    return _network(context, request.network_id)


def _reserve(lease: Lease, request, context: RequestContext) -> Reservation:
    if isinstance(request, HostRequest):
        if request.min < 1 or request.min > request.max:
            raise Invalid("Invalid values for min/max of hosts.")
        reservation = Reservation.objects.create(
            lease=lease,
            resource_type=ResourceType.HOST,
            min=request.min,
            max=request.max,
            hypervisor_properties=request.hypervisor_properties,
            resource_properties=request.resource_properties,
            before_end=request.before_end,
            network=_host_network(request, context),
            same_segment=request.same_segment,
            addresses_per_host=request.addresses_per_host,
        )
    elif isinstance(request, FloatingIpRequest):
        if request.amount < max(1, len(request.required_floatingips)):
            raise Invalid(
                "Invalid input for field 'amount': at least 1, and at least as many as "
                "required_floatingips."
            )
        reservation = Reservation.objects.create(
            lease=lease,
            resource_type=ResourceType.FLOATINGIP,
            network=_network(context, request.network_id),
            amount=request.amount,
            required_floatingips=request.required_floatingips,
        )
    else:
        if request.amount < 1 or min(request.vcpus, request.memory_mb) < 1 or request.disk_gb < 0:
            raise Invalid(
                "An instance reservation needs amount, vcpus and memory_mb of at least 1."
            )
        template = request.server_template
        if template is not None:
            if template.get("count", request.amount) > request.amount:
                raise Invalid("The server template's count cannot exceed the reservation's amount.")
            # Resolved now as POST /servers resolves its networks (another
            # project's network or port is an unknown one, 400), not only
            # at the start, where it would fail the lease instead.
            compute_selectors.nic_requests(context=context, requested=template.get("networks", []))
        reservation = Reservation.objects.create(
            lease=lease,
            resource_type=ResourceType.INSTANCE,
            amount=request.amount,
            vcpus=request.vcpus,
            memory_mb=request.memory_mb,
            disk_gb=request.disk_gb,
            affinity=request.affinity,
            resource_properties=request.resource_properties,
            server_template=template,
        )
        # Instances of the reservation boot with its own private flavor.
        reservation.flavor = compute.flavor_create(
            id=f"{RESERVATION_FLAVOR}{reservation.pk}",
            name=f"{RESERVATION_FLAVOR}{reservation.pk}",
            vcpus=request.vcpus,
            ram=request.memory_mb,
            disk=request.disk_gb,
            is_public=False,
        )
        reservation.save(update_fields=["flavor"])
    _allocate(reservation, lease)
    return reservation


def lease_create(
    *, context: RequestContext, request: LeaseRequest, now: datetime | None = None
) -> Lease:
    """Admit the lease: every reservation fits, or nothing is written (409)."""
    now = now or timezone.now()
    _check_window(request.start, request.end, request.before_end)
    _check_bounds(project=context.project, start=request.start, end=request.end, now=now)
    heads_up = heads_up_checked(request.heads_up_seconds)
    if not request.reservations:
        raise Invalid("A lease needs at least one reservation.")
    flexible = request.flex_latest_end is not None
    if flexible and request.flex_latest_end < request.end:
        raise Invalid(
            "Invalid input for field 'flex_duration': the window from start_date to end_date "
            "is shorter than the duration."
        )
    with transaction.atomic():
        quota_enforce(project=context.project, requested={"leases": 1})
        if Lease.objects.filter(project=context.project, name=request.name).exists():
            raise Conflict(f"The lease with name: {request.name} already exists")
        try:
            with transaction.atomic():
                lease = Lease.objects.create(
                    project=context.project,
                    user_id=context.user_id,
                    name=request.name,
                    start_at=request.start,
                    end_at=request.end,
                    before_end_at=request.before_end,
                    heads_up_seconds=heads_up,
                    flex_earliest_start=request.start if flexible else None,
                    flex_latest_end=request.flex_latest_end,
                )
        except IntegrityError:
            raise Conflict(f"The lease with name: {request.name} already exists") from None
        starts = _flex_starts(request) if flexible else [request.start]
        for n, start in enumerate(starts):
            try:
                with transaction.atomic():
                    _move(lease, start)
                    for wanted in request.reservations:
                        _reserve(lease, wanted, context)
                break
            except allocation.NoCapacity:
                if n == len(starts) - 1:
                    raise
        _lease_changed(lease, "lease.create", now)
    return lease


def _flex_starts(request: LeaseRequest) -> list[datetime]:
    """Where a flexible lease may start, earliest first: its earliest
    start, then each end of an allocation (only those free capacity) that
    leaves it time to end by its latest end."""
    duration = request.end - request.start
    ends = HostAllocation.objects.filter(
        end_at__gt=request.start, end_at__lte=request.flex_latest_end - duration
    )
    ends = ends.order_by("end_at").values_list("end_at", flat=True).distinct()[:50]
    return [request.start, *ends]


def _move(lease: Lease, start: datetime) -> None:
    """The lease's window, same length, from ``start`` (before it holds anything)."""
    if start != lease.start_at:
        lease.end_at, lease.start_at = start + (lease.end_at - lease.start_at), start
        lease.save(update_fields=["start_at", "end_at", "updated_at"])


def _lease_changed(lease: Lease, event_type: str, now: datetime) -> None:
    """Move the lease's events to its dates and tell subscribers."""
    events.events_sync(lease=lease, now=now)
    notify(
        project=lease.project,
        event_type=event_type,
        lease=lease,
        start=lease.start_at.isoformat(),
        end=lease.end_at.isoformat(),
    )


@dataclass(frozen=True)
class Alternative:
    """A change to a refused request that fits now (a dry run says so)."""

    why: str
    request: LeaseRequest


@dataclass
class DryRun:
    feasible: bool
    hosts: list[str]
    reason: str = ""
    earliest_start: datetime | None = None
    # Refused: per host reservation, how many hosts each constraint leaves.
    constraints: list[dict] = field(default_factory=list)
    # Distinct hosts free over the whole window that some host reservation
    # of the request could take (its properties).
    hosts_fit_now: int | None = None
    alternatives: list[Alternative] = field(default_factory=list)


def lease_dry_run(
    *, context: RequestContext, request: LeaseRequest, now: datetime | None = None
) -> DryRun:
    """Would the lease fit? Which hosts would it take; if not, why (per
    constraint), how many hosts fit now, the earliest start (same duration)
    that would fit, and alternatives that fit now. Writes nothing."""
    now = now or timezone.now()

    def attempt(req: LeaseRequest) -> DryRun:
        with transaction.atomic():
            try:
                lease = lease_create(context=context, request=req, now=now)
                hosts = sorted(
                    HostAllocation.objects.filter(reservation__lease=lease)
                    .values_list("host__name", flat=True)
                    .distinct()
                )
                result = DryRun(True, hosts)
            except Conflict as error:
                result = DryRun(False, [], error.message)
            transaction.set_rollback(True)
        return result

    named = LeaseRequest(**{**request.__dict__, "name": f"dry-run-{uuid.uuid4().hex}"})
    result = attempt(named)
    if result.feasible:
        return result
    result.earliest_start = _earliest_start(context, named, now, attempt)
    result.constraints, result.hosts_fit_now = _host_constraints(request)
    candidates = _relaxations(request, result.constraints)
    if result.earliest_start is not None:
        duration = request.end - request.start
        later = {
            "start": result.earliest_start,
            "end": result.earliest_start + duration,
            "flex_latest_end": None,
        }
        candidates.append(
            (
                "the earliest start at which everything asked for is free",
                LeaseRequest(**{**request.__dict__, **later, "before_end": None}),
            )
        )
    result.alternatives = [
        Alternative(why, changed)
        for why, changed in candidates
        if attempt(LeaseRequest(**{**changed.__dict__, "name": named.name})).feasible
    ]
    return result


def _earliest_start(context, request: LeaseRequest, now: datetime, attempt) -> datetime | None:
    duration = request.end - request.start
    # Only the ends of allocations can free capacity: try starting at each.
    ends = HostAllocation.objects.filter(end_at__gt=request.start)
    farthest = quota_limits(project=context.project).get("lease_start_ahead", -1)
    if farthest >= 0:
        # A start the project may not ask for is no answer.
        ends = ends.filter(end_at__lte=now + timedelta(seconds=farthest))
    ends = ends.order_by("end_at").values_list("end_at", flat=True).distinct()[:50]
    for start in ends:
        # A fixed window there (a flexible one would look further itself).
        later = LeaseRequest(
            **{
                **request.__dict__,
                "start": start,
                "end": start + duration,
                "before_end": None,
                "flex_latest_end": None,
            }
        )
        if attempt(later).feasible:
            return start
    return None


def _host_filter(wanted: HostRequest) -> Q:
    where = properties.resource_filter(
        properties.parse(wanted.resource_properties, field="resource_properties")
    )
    return where & properties.hypervisor_filter(
        properties.parse(wanted.hypervisor_properties, field="hypervisor_properties")
    )


def _host_constraints(request: LeaseRequest) -> tuple[list[dict], int]:
    """For each host reservation: the reservable hosts, those with its
    properties, of those the enabled ones, of those the ones free over the
    window; and the distinct free hosts any of them could take."""
    window = f"from {request.start:%Y-%m-%d %H:%M} to {request.end:%Y-%m-%d %H:%M}"
    reservable = ReservableHost.objects.count()
    constraints, fitting = [], Q(pk__in=[])
    for index, wanted in enumerate(request.reservations):
        if not isinstance(wanted, HostRequest):
            continue
        where = _host_filter(wanted)
        fitting |= where
        matching = ReservableHost.objects.filter(where)
        free = allocation.host_candidates(start=request.start, end=request.end, where=where)
        found = {
            "reservation": index,
            "needed": wanted.min,
            "reservable": reservable,
            "with_properties": matching.count(),
            "enabled": matching.filter(host__enabled=True).count(),
            "free": free.count(),
        }
        found["reason"] = (
            f"{found['free']} of the {found['with_properties']} reservable hosts with these "
            f"properties ({found['enabled']} enabled) are free {window}; {wanted.min} needed."
        )
        constraints.append(found)
    fit_now = allocation.host_candidates(start=request.start, end=request.end, where=fitting)
    return constraints, fit_now.count()


def _with_reservation(request: LeaseRequest, index: int, **changes) -> LeaseRequest:
    reservations = list(request.reservations)
    reservations[index] = HostRequest(**{**reservations[index].__dict__, **changes})
    return LeaseRequest(**{**request.__dict__, "reservations": reservations})


def _relaxations(request: LeaseRequest, constraints: list[dict]) -> list[tuple]:
    """Changes to try, each to one host reservation short of hosts: its
    hosts on several segments rather than one, as many hosts as are free
    now, or one of its resource properties dropped."""
    found = []
    for constraint in constraints:
        index, free = constraint["reservation"], constraint["free"]
        wanted = request.reservations[index]
        if wanted.same_segment:
            found.append(
                (
                    "hosts spread over the network's segments instead of all on one",
                    _with_reservation(request, index, same_segment=False),
                )
            )
        if free >= wanted.min:
            continue
        if free:
            found.append(
                (
                    f"{free} hosts instead of {wanted.min}: as many as are free over the window",
                    _with_reservation(request, index, min=free, max=free),
                )
            )
        query = properties.parse(wanted.resource_properties, field="resource_properties")
        terms = query[1:] if query and query[0] == "and" else [query] if query else []
        for n, dropped in enumerate(terms):
            rest = terms[:n] + terms[n + 1 :]
            relaxed = "" if not rest else json.dumps(rest[0] if len(rest) == 1 else ["and", *rest])
            changed = _with_reservation(request, index, resource_properties=relaxed)
            where = _host_filter(changed.reservations[index])
            free = allocation.host_candidates(start=request.start, end=request.end, where=where)
            found.append(
                (
                    f"without the property {json.dumps(dropped)}: {free.count()} hosts free "
                    "over the window",
                    changed,
                )
            )
    return found


@dataclass(frozen=True)
class Swap:
    """A pending lease's hold on a host this lease needs to extend, and an
    equivalent free host (its reservation's properties) it could take."""

    lease_id: str
    lease_name: str
    host: str
    replacement: str


class ExtensionBlocked(Conflict):
    """A started lease cannot keep its hosts over its new dates: pending
    leases hold them. ``swaps`` moves each hold to an equivalent free host
    (empty when some hold has none)."""

    def __init__(self, message: str, swaps: list[Swap]):
        super().__init__(message)
        self.swaps = swaps


def _reallocate(lease: Lease, started: bool, swap: bool = False) -> None:
    """Fit every reservation to the lease's new window. A started lease keeps
    its hosts (its servers run there) and when each was taken; a pending one
    may move. A started lease blocked by pending leases on its hosts moves
    their holds to equivalent free hosts if ``swap``."""
    for reservation in lease.reservations.all():
        if reservation.resource_type == ResourceType.FLOATINGIP:
            _reallocate_addresses(reservation, lease, started)
            continue
        # The hosts healing replaced stay as they were: history, not held.
        mine = selectors.current_allocations().filter(reservation=reservation)
        if reservation.resource_type == ResourceType.HOST:
            hosts = list(mine.values_list("host_id", flat=True))
            # A replacement holds its host only from when it took over.
            since = mine.aggregate(since=Max("start_at"))["since"] if started else None
            window = (since or lease.start_at, lease.end_at)
            # The allocators' locks on these hosts, so that none takes them
            # between the check below and the write.
            allocation.lock_hosts(hosts)
            if started and _still_free(reservation, hosts, *window) < len(hosts):
                swaps = _extension_swaps(reservation, hosts, *window)
                if not swap or not swaps:
                    raise ExtensionBlocked(
                        "Not enough hosts available: a host of this lease is reserved by "
                        "another lease during the new dates.",
                        swaps,
                    )
                _swap(lease, swaps)
            free = _still_free(reservation, hosts, *window)
            if (
                free == len(hosts)
                and reservation.min <= len(hosts) <= reservation.max
                and _addresses_follow(reservation, lease, started)
            ):
                held = {"end_at": lease.end_at + allocation.buffer()}
                if not started:
                    held["start_at"] = lease.start_at
                mine.update(**held)
                continue
            if started:
                raise Conflict(
                    "Not enough hosts available: a host or an address of this lease is reserved "
                    "by another lease during the new dates."
                )
        net_services.address_holds_drop(holder=reservation.pk)
        mine.delete()
        _allocate(reservation, lease)


def _addresses_follow(reservation: Reservation, lease: Lease, started: bool) -> bool:
    """The reservation's addresses held over the lease's new window (a
    started lease keeps when it took them); False, nothing changed, when
    another lease holds one of them then."""
    return net_services.address_holds_move(
        holder=reservation.pk, end=lease.end_at, start=None if started else lease.start_at
    )


def _reallocate_addresses(reservation: Reservation, lease: Lease, started: bool) -> None:
    """A reservation of addresses over the lease's new window: the same
    addresses if they are free then, others if it has not started."""
    held = len(net_selectors.address_holds(holders=[reservation.pk]))
    if held == reservation.amount and _addresses_follow(reservation, lease, started):
        return
    if started:
        raise Conflict(
            "Not enough addresses available: an address of this lease is held by another "
            "lease during the new dates, or its amount changed after it started."
        )
    net_services.address_holds_drop(holder=reservation.pk)
    _allocate(reservation, lease)


def _still_free(reservation, hosts: list, start: datetime, end: datetime) -> int:
    """How many of the reservation's ``hosts`` nothing else holds in the window."""
    return allocation.host_candidates(
        start=start, end=end, where=Q(host_id__in=hosts), ignore=reservation
    ).count()


def _extension_swaps(reservation, hosts: list, start: datetime, end: datetime) -> list[Swap]:
    """For each other hold on ``hosts`` during [start, end): an equivalent
    free host for its whole window, if it belongs to a lease that has not
    started; [] if some hold cannot move."""
    blocking = (
        HostAllocation.objects.filter(allocation.overlapping(start, end), host_id__in=hosts)
        .exclude(reservation=reservation)
        .select_related("host", "reservation__lease")
    )
    swaps, taken = [], set(hosts)
    for hold in blocking:
        other = hold.reservation.lease
        if (
            other.status != LeaseStatus.PENDING
            or hold.reservation.resource_type != ResourceType.HOST
        ):
            return []
        free = (
            allocation.host_candidates(
                start=hold.start_at,
                end=hold.end_at - allocation.buffer(),
                where=properties.reservation_filter(hold.reservation),
            )
            .exclude(host_id__in=taken)
            .first()
        )
        if free is None:
            return []
        taken.add(free.host_id)
        swaps.append(Swap(str(other.pk), other.name, hold.host.name, free.host.name))
    return swaps


def _swap(lease: Lease, swaps: list[Swap]) -> None:
    """Each pending lease's hold moved to its equivalent host, under its
    lease's lock (taken without waiting: a lease busy elsewhere is a
    Conflict to retry, not a wait that could deadlock), and its project told."""
    for swap in sorted(swaps, key=lambda s: s.lease_id):
        try:
            with transaction.atomic():
                locked = Lease.objects.select_for_update(nowait=True).filter(pk=swap.lease_id)
                other = locked.select_related("project").first()
        except OperationalError:
            raise Conflict(f"Lease {swap.lease_id} is being changed; try again.") from None
        if other is None or other.status != LeaseStatus.PENDING:
            raise Conflict(f"Lease {swap.lease_id} changed meanwhile; try again.")
        replacement = Host.objects.get(name=swap.replacement)
        moved = HostAllocation.objects.filter(
            reservation__lease=other, host__name=swap.host, replaced_by=None
        ).update(host=replacement)
        if not moved:
            raise Conflict(f"Lease {swap.lease_id} changed meanwhile; try again.")
        notify(
            project=other.project,
            event_type="lease.host_replaced",
            lease=other,
            lost_host=swap.host,
            new_host=swap.replacement,
            reason=f"an equivalent host, so that lease {lease.pk} could extend",
        )


UNSET = object()


def lease_update(
    *,
    lease: Lease,
    name: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    before_end=UNSET,
    heads_up_seconds: int | None = None,
    reservations: list[dict] | None = None,
    swap: bool = False,
    now: datetime | None = None,
) -> Lease:
    """Extend, shrink, defer, rename, change min/max or amount: the whole
    change fits, or the lease is left as it was (409). An extension that
    pending leases block on its hosts moves their holds to equivalent free
    hosts if ``swap`` (ExtensionBlocked names those swaps otherwise)."""
    now = now or timezone.now()
    with transaction.atomic():
        lease = Lease.objects.select_for_update().get(pk=lease.pk)
        if lease.status in (LeaseStatus.TERMINATED, LeaseStatus.TERMINATING, LeaseStatus.ERROR):
            raise Conflict(f"Lease {lease.pk} is {lease.status} and cannot be changed.")
        started = lease.status != LeaseStatus.PENDING
        was = lease.start_at, lease.end_at
        if start is not None and start != lease.start_at:
            if started:
                raise Invalid("The start date of a lease that has started cannot change.")
            lease.start_at = start_checked(start, now=now)
        if end is not None:
            lease.end_at = max(end, now) if started else end
        if before_end is not UNSET:
            lease.before_end_at = before_end
        if heads_up_seconds is not None:
            lease.heads_up_seconds = heads_up_checked(heads_up_seconds)
        _check_window(lease.start_at, lease.end_at, lease.before_end_at)
        # Only a change that goes further is refused: a lease over a bound
        # lowered since it was made may still shrink, end now or be renamed.
        _check_bounds(
            project=lease.project,
            start=lease.start_at,
            end=lease.end_at,
            now=now,
            duration=lease.end_at - lease.start_at > was[1] - was[0],
            ahead=lease.start_at > was[0],
        )
        if name is not None and name != lease.name:
            if Lease.objects.filter(project=lease.project, name=name).exclude(pk=lease.pk).exists():
                raise Conflict(f"The lease with name: {name} already exists")
            lease.name = name
        for change in reservations or []:
            _change_reservation(lease, change)
        lease.save()
        _reallocate(lease, started, swap=swap)
        _lease_changed(lease, "lease.update", now)
    return lease


def flex_advance(*, now: datetime | None = None) -> int:
    """Pending flexible leases whose heads-up has not fired, each moved to
    the earliest start that fits now (no earlier than it asked for, not in
    the past), its hosts moved with it or nothing changed. Returns how many
    moved."""
    now = now or timezone.now()
    waiting = Lease.objects.filter(
        status=LeaseStatus.PENDING,
        flex_latest_end__isnull=False,
        start_at__gt=now,
        events__event_type=EventType.HEADS_UP,
        events__status=EventStatus.UNDONE,
    ).order_by("start_at")
    moved = 0
    for lease in waiting[:100]:
        earliest = max(lease.flex_earliest_start, now)
        ends = HostAllocation.objects.filter(end_at__gt=earliest, end_at__lt=lease.start_at)
        ends = ends.order_by("end_at").values_list("end_at", flat=True).distinct()[:50]
        duration = lease.end_at - lease.start_at
        for start in [earliest, *ends]:
            if start >= lease.start_at:
                break
            try:
                lease_update(lease=lease, start=start, end=start + duration, now=now)
            except Conflict:
                continue
            moved += 1
            break
    return moved


def _change_reservation(lease: Lease, change: dict) -> None:
    reservation = lease.reservations.filter(pk=change.get("id")).first()
    if reservation is None:
        # Blazar's answer too: bad input, not a missing lease.
        raise Invalid(f"Reservation {change.get('id')} is not part of lease {lease.pk}.")
    if reservation.resource_type == ResourceType.HOST:
        for key in ("min", "max", "hypervisor_properties", "resource_properties"):
            if key in change:
                setattr(reservation, key, change[key])
        if reservation.min < 1 or reservation.min > reservation.max:
            raise Invalid("Invalid values for min/max of hosts.")
    elif reservation.resource_type == ResourceType.FLOATINGIP:
        if "amount" in change:
            if change["amount"] < max(1, len(reservation.required_floatingips)):
                raise Invalid(
                    "Invalid input for field 'amount': at least 1, and at least as many as "
                    "required_floatingips."
                )
            reservation.amount = change["amount"]
    else:
        if "amount" in change:
            if change["amount"] < 1:
                raise Invalid("amount must be at least 1.")
            reservation.amount = change["amount"]
        if "resource_properties" in change:
            reservation.resource_properties = change["resource_properties"]
    reservation.save()


def lease_delete(*, lease: Lease, now: datetime | None = None) -> None:
    """End the lease now if it started and did not end (its servers are
    deleted, its hosts released; an ERROR lease may have servers too), then
    remove it, and after it the private flavors of its reservations, which
    protect their flavors while they exist."""
    now = now or timezone.now()
    with transaction.atomic():
        lease = Lease.objects.select_for_update().get(pk=lease.pk)
        if lease.status not in (LeaseStatus.PENDING, LeaseStatus.TERMINATED):
            events.end_at_once(lease=lease, now=now)
        notify(project=lease.project, event_type="lease.delete", lease=lease)
        flavors = [
            r.flavor for r in lease.reservations.exclude(flavor=None).select_related("flavor")
        ]
        for reservation_id in lease.reservations.values_list("pk", flat=True):
            net_services.address_holds_drop(holder=reservation_id)
        lease.delete()
        for flavor in flavors:
            compute.flavor_delete(flavor=flavor)


def lease_end_now(*, lease: Lease) -> None:
    """End a running lease at once (its end event fires now); a lease that
    has not started is simply deleted."""
    if lease.status == LeaseStatus.PENDING:
        lease_delete(lease=lease)
        return
    now = timezone.now()
    lease = lease_update(lease=lease, end=now, now=now)
    for event in lease.events.filter(event_type=events.EventType.END):
        events.fire_now(event=event)


def lease_host_report_faulty(
    *, context: RequestContext, lease: Lease, host: str, reason: str, now: datetime | None = None
) -> dict:
    """A member reports a host of their active lease as faulty: it is
    drained, swapped within the lease when a matching host is free, and the
    operator is told; the report is in the lease's history."""
    now = now or timezone.now()
    with transaction.atomic():
        lease = (
            Lease.objects.select_for_update(of=("self",)).select_related("project").get(pk=lease.pk)
        )
        if lease.status != LeaseStatus.ACTIVE:
            raise Conflict(
                f"Lease {lease.pk} is {lease.status}: only a host of an active lease can be "
                "reported faulty."
            )
        return placement.host_report_faulty(
            lease=lease, host_name=host, reporter=context.user_id, reason=reason, now=now
        )
