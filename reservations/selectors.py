"""Reads for reservations."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import QuerySet

from compute.models import Host
from identity.auth import RequestContext, scope_to_project
from networking import selectors as net_selectors
from reservations import allocation, properties
from reservations.models import (
    Delivery,
    HostAllocation,
    HostProperty,
    Lease,
    Notification,
    ReservableHost,
    Subscription,
)


def lease_list(*, context: RequestContext) -> QuerySet[Lease]:
    leases = Lease.objects.select_related("project").prefetch_related("reservations", "events")
    return scope_to_project(leases, context)


def current_allocations() -> QuerySet[HostAllocation]:
    """Allocations that are their reservation's hosts: all but the history
    of hosts that healing replaced."""
    return HostAllocation.objects.filter(replaced_by=None)


@dataclass
class Replaced:
    host: str
    replaced_by: str
    replaced_at: datetime


@dataclass
class ReservationHosts:
    current: list[str] = field(default_factory=list)
    replaced: list[Replaced] = field(default_factory=list)  # oldest first


def reservation_hosts(*, lease: Lease) -> dict[uuid.UUID, ReservationHosts]:
    """Per reservation of the lease: the hosts it holds, and the ones
    healing replaced (with their replacement and when)."""
    found: dict[uuid.UUID, ReservationHosts] = {}
    rows = (
        HostAllocation.objects.filter(reservation__lease=lease)
        .select_related("host", "replaced_by__host")
        .order_by("end_at", "host__name")
    )
    for a in rows:
        hosts = found.setdefault(a.reservation_id, ReservationHosts())
        if a.replaced_by is None:
            hosts.current.append(a.host.name)
        else:
            hosts.replaced.append(Replaced(a.host.name, a.replaced_by.host.name, a.end_at))
    for hosts in found.values():
        hosts.current.sort()
    return found


def notification_list(*, context: RequestContext) -> QuerySet[Notification]:
    return scope_to_project(Notification.objects.all(), context)


def subscription_list(*, context: RequestContext) -> QuerySet[Subscription]:
    return scope_to_project(Subscription.objects.all(), context)


def deliveries(*, subscription: Subscription, limit: int = 100) -> list[dict]:
    rows = Delivery.objects.filter(subscription=subscription).select_related("notification")
    return [
        {
            "seq": d.notification.seq,
            "event_type": d.notification.event_type,
            "status": d.status,
            "attempts": d.attempts,
            "response_status": d.response_status,
            "last_error": d.last_error,
            "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
        }
        for d in rows.order_by("-notification__seq")[:limit]
    ]


def host_allocations(*, host: Host | None = None) -> list[dict]:
    """Blazar's allocation view: per reservable host, the reservations that
    hold it now or later."""
    reservables = ReservableHost.objects.select_related("host")
    if host is not None:
        reservables = reservables.filter(host=host)
    held: dict = {}
    allocations = HostAllocation.objects.select_related("reservation").order_by("start_at")
    if host is not None:
        allocations = allocations.filter(host=host)
    for a in allocations:
        held.setdefault(a.host_id, []).append(
            {
                "id": str(a.reservation_id),
                "lease_id": str(a.reservation.lease_id),
                "start_date": a.start_at.isoformat(),
                "end_date": a.end_at.isoformat(),
            }
        )
    return [
        {"resource_id": str(r.pk), "reservations": held.get(r.host_id, [])} for r in reservables
    ]


def host_properties(*, detail: bool) -> list[dict]:
    rows = HostProperty.objects.values_list("key", "text").order_by("key", "text").distinct()
    values: dict[str, list] = {}
    for key, text in rows:
        values.setdefault(key, []).append(text)
    if not detail:
        return [{"property": key} for key in values]
    return [{"property": key, "private": False, "values": v} for key, v in values.items()]


def free_capacity(
    *, start: datetime, end: datetime, resource_properties: str, hypervisor_properties: str
) -> list[tuple[datetime, int]]:
    """How many matching reservable hosts are free, as a step function over
    [start, end): (time, free hosts) at every change."""
    where = properties.resource_filter(
        properties.parse(resource_properties, field="resource_properties")
    ) & properties.hypervisor_filter(
        properties.parse(hypervisor_properties, field="hypervisor_properties")
    )
    hosts = set(
        ReservableHost.objects.filter(where, host__enabled=True).values_list("host_id", flat=True)
    )
    busy = list(
        HostAllocation.objects.filter(
            allocation.overlapping(start, end), host_id__in=hosts
        ).values_list("host_id", "start_at", "end_at")
    )
    points = sorted({start, *(t for _, s, e in busy for t in (s, e) if start < t < end)})
    steps = []
    for instant in points:
        taken = {h for h, s, e in busy if s <= instant < e}
        free = len(hosts) - len(taken)
        if not steps or steps[-1][1] != free:
            steps.append((instant, free))
    return steps


def reservation_addresses(*, lease: Lease) -> dict:
    """{reservation id: the address holds for it, with their subnets}, in
    one query."""
    ids = list(lease.reservations.values_list("pk", flat=True))
    found: dict = {}
    for hold in net_selectors.address_holds(holders=ids):
        found.setdefault(hold.holder, []).append(hold)
    return found
