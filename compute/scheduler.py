"""The network-aware scheduler: set-based filters in SQL, then weighers.

Filters are one query over all hosts (never a Python loop over hosts):
enabled and alive, free capacity under the allocation ratios, reaches a
segment with a free IP for every NIC, supports every NIC's vnic type,
baremetal flavors on free baremetal hosts, lease constraints. Hosts are
weighed by free RAM (spread), the best is claimed with a conditional UPDATE,
and alternates are kept, spread over segments where possible.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import F, QuerySet
from django.utils import timezone

from compute.models import Host, Instance
from networking import selectors as net_selectors
from networking.models import Network


@dataclass(frozen=True)
class NicNeed:
    """What one NIC requires of a host."""

    network: Network
    vnic_type: str = "normal"
    # A port with a fixed IP on a routed network is pinned to its segment.
    segment_ids: tuple | None = None


@dataclass
class Constraints:
    """Placement rules from outside compute (leases): ``only_hosts`` if the
    instance must land in a reserved set, ``exclude_hosts`` it must avoid."""

    only_hosts: set[str] | None = None
    exclude_hosts: set[str] = field(default_factory=set)
    reason: str = ""


# Reservations registers a provider at start-up; compute never imports it.
ConstraintProvider = Callable[[Instance], Constraints]
constraint_providers: list[ConstraintProvider] = []


def constraints_for(instance: Instance) -> Constraints:
    merged = Constraints()
    for provider in constraint_providers:
        found = provider(instance)
        if found.only_hosts is not None:
            merged.only_hosts = (
                found.only_hosts
                if merged.only_hosts is None
                else merged.only_hosts & found.only_hosts
            )
        merged.exclude_hosts |= found.exclude_hosts
        merged.reason = merged.reason or found.reason
    return merged


def alive_since():
    return timezone.now() - timedelta(seconds=settings.BERTH_HOST_DOWN_AFTER)


def free_capacity(hosts: QuerySet[Host]) -> QuerySet[Host]:
    return hosts.annotate(
        free_vcpus=F("vcpus") * F("cpu_allocation_ratio") - F("vcpus_used"),
        free_ram=F("memory_mb") * F("ram_allocation_ratio") - F("memory_mb_used"),
        free_disk=F("disk_gb") * F("disk_allocation_ratio") - F("disk_gb_used"),
    )


def filters(instance: Instance, needs: list[NicNeed], constraints: Constraints):
    """The filter chain as (why it leaves no host, queryset transform) pairs,
    in order, so an empty result is explained by the first that emptied it."""
    excluded = set(instance.excluded_hosts) | constraints.exclude_hosts
    if instance.baremetal:
        kind = (
            "no baremetal host is free",
            lambda q: q.filter(baremetal=True, running_instances=0),
        )
    else:
        kind = ("no virtual host is enabled", lambda q: q.filter(baremetal=False))
    chain = [
        (
            "no enabled host is alive",
            lambda q: q.filter(enabled=True, last_heartbeat__gte=alive_since()),
        ),
        kind,
        (
            f"no host has {instance.vcpus} vCPUs, {instance.memory_mb} MB RAM and "
            f"{instance.disk_gb} GB disk free",
            lambda q: q.filter(
                free_vcpus__gte=instance.vcpus,
                free_ram__gte=instance.memory_mb,
                free_disk__gte=instance.disk_gb,
            ),
        ),
    ]
    for need in needs:
        why = f"no host reaches a segment of network {need.network.pk} with a free IP"
        if need.vnic_type != "normal":
            why += f" and supports vnic {need.vnic_type}"
        reaching = net_selectors.hosts_reaching(
            network=need.network, vnic_type=need.vnic_type, segment_ids=need.segment_ids
        )
        chain.append((why, lambda q, r=reaching: q.filter(name__in=r)))
    if constraints.only_hosts is not None:
        hosts = constraints.only_hosts
        why = constraints.reason or "no host reserved for this instance fits"
        chain.append((why, lambda q: q.filter(name__in=hosts)))
    if excluded:
        why = f"every eligible host was tried: {', '.join(sorted(instance.excluded_hosts))}"
        chain.append((why, lambda q: q.exclude(name__in=excluded)))
    return chain


def candidates(instance: Instance, needs: list[NicNeed], constraints: Constraints):
    hosts = free_capacity(Host.objects.all())
    for _, transform in filters(instance, needs, constraints):
        hosts = transform(hosts)
    return hosts


def explain_no_host(instance: Instance, needs: list[NicNeed], constraints: Constraints) -> str:
    """Why no host fits: the first filter that left none."""
    hosts = free_capacity(Host.objects.all())
    for why, transform in filters(instance, needs, constraints):
        hosts = transform(hosts)
        if not hosts.exists():
            return why
    return "every candidate host was claimed by other builds meanwhile"


def select_hosts(
    instance: Instance, needs: list[NicNeed], constraints: Constraints, *, alternates: int = 3
) -> list[Host]:
    """The best host first, then up to ``alternates`` others; among the top
    candidates, alternates on segments the earlier picks do not reach come
    first, so a segment running dry does not sink every retry."""
    ranked = list(candidates(instance, needs, constraints).order_by("-free_ram", "name")[:50])
    routed = [n.network for n in needs if n.network.subnets.filter(segment__isnull=False).exists()]
    if not ranked or not routed:
        return ranked[: alternates + 1]
    names = [h.name for h in ranked]
    reach = [net_selectors.host_segments(hosts=names, network=net) for net in routed]
    picked, seen = [ranked[0]], [frozenset().union(*(r[ranked[0].name] for r in reach))]
    rest = ranked[1:]
    while rest and len(picked) <= alternates:
        fresh = [h for h in rest if frozenset().union(*(r[h.name] for r in reach)) not in seen]
        host = (fresh or rest)[0]
        rest.remove(host)
        picked.append(host)
        seen.append(frozenset().union(*(r[host.name] for r in reach)))
    return picked


def claim(*, host: Host, instance: Instance) -> bool:
    """Take the instance's resources on the host if they still fit: one
    conditional UPDATE whose conditions are on the row itself, so
    PostgreSQL re-checks them on the latest version after waiting for a
    concurrent claim. The check constraints on Host are the backstop."""
    fits = Host.objects.filter(
        pk=host.pk,
        enabled=True,
        vcpus_used__lte=F("vcpus") * F("cpu_allocation_ratio") - instance.vcpus,
        memory_mb_used__lte=F("memory_mb") * F("ram_allocation_ratio") - instance.memory_mb,
        disk_gb_used__lte=F("disk_gb") * F("disk_allocation_ratio") - instance.disk_gb,
    )
    if instance.baremetal:
        fits = fits.filter(running_instances=0)
    updated = fits.update(
        vcpus_used=F("vcpus_used") + instance.vcpus,
        memory_mb_used=F("memory_mb_used") + instance.memory_mb,
        disk_gb_used=F("disk_gb_used") + instance.disk_gb,
        running_instances=F("running_instances") + 1,
    )
    return updated == 1


def release(*, host_id, instance: Instance) -> None:
    Host.objects.filter(pk=host_id).update(
        vcpus_used=F("vcpus_used") - instance.vcpus,
        memory_mb_used=F("memory_mb_used") - instance.memory_mb,
        disk_gb_used=F("disk_gb_used") - instance.disk_gb,
        running_instances=F("running_instances") - 1,
    )
