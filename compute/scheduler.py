"""The network-aware scheduler: set-based filters in SQL, then weighers.

Filters are one query over all hosts (never a Python loop over hosts):
enabled and alive, free capacity under the allocation ratios, reaches a
segment with a free IP for every NIC, supports every NIC's vnic type,
baremetal flavors on free baremetal hosts, lease constraints. Hosts are
weighed by free RAM (spread) less a penalty for each recent build failure
(Nova's BuildFailureWeigher), the best is claimed with a conditional UPDATE,
and alternates are kept, spread over segments where possible.

Every build schedules, so the filters are written as SQL conditions on
``compute_host h`` rather than built by the ORM (config.sql says why).
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import connection
from django.db.models import Case, F, Value, When
from django.utils import timezone

from compute.models import Host, Instance
from config import sql
from networking import selectors as net_selectors
from networking.models import Network


@dataclass(frozen=True)
class NicNeed:
    """What one NIC requires of a host."""

    network_id: object
    vnic_type: str = "normal"
    # A port with a fixed IP on a routed network is pinned to its segment.
    segment_ids: tuple | None = None


@dataclass(frozen=True)
class Condition:
    """An SQL condition on a host row ``h`` (of compute_host), with its
    parameters."""

    where: str
    params: tuple = ()

    def __or__(self, other: "Condition") -> "Condition":
        return Condition(f"({self.where}) OR ({other.where})", self.params + other.params)

    def __invert__(self) -> "Condition":
        return Condition(f"NOT ({self.where})", self.params)


@dataclass
class Constraints:
    """Placement rules from outside compute (leases): ``only_hosts`` if the
    instance must land in a reserved set, ``avoid`` a condition true for
    the hosts it must not land on (a subquery, so a pool of thousands of
    reserved hosts stays one clause)."""

    only_hosts: set[str] | None = None
    avoid: Condition | None = None
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
        if found.avoid is not None:
            merged.avoid = found.avoid if merged.avoid is None else merged.avoid | found.avoid
        merged.reason = merged.reason or found.reason
    return merged


# One liveness rule for a host's compute and network reports.
alive_since = net_selectors.agents_alive_since


def reaches_of(needs: list[NicNeed]) -> list:
    reaches = net_selectors.network_reaches(wanted=[(n.network_id, n.segment_ids) for n in needs])
    return list(zip(needs, reaches, strict=True))


@dataclass(frozen=True)
class Filter:
    """One link of the filter chain: the condition, what it means when it
    leaves no host, and whether it looks beyond the host row. ``detail``
    says more about an empty result, at the cost of a few queries, so it
    runs only for the link that left no host."""

    why: str
    condition: Condition
    wide: bool = False
    detail: Callable[[], str] | None = None


def _segment_label(segment) -> str:
    where = segment.physical_network or segment.network_type
    name = f"{segment.name} " if segment.name else ""
    return f"segment {name}({segment.pk}, {where})"


def _segments_detail(need: NicNeed) -> str:
    """Which segments of the NIC's network are out of addresses, and which
    have addresses that none of the hosts left reaches."""
    # segment_usage reads the network itself; its id is all it needs here.
    usage = net_selectors.segment_usage(network=Network(pk=need.network_id))
    rows = [
        row
        for row in usage.segments
        if need.segment_ids is None or row.segment.pk in need.segment_ids
    ]
    # A plain network without subnets gives ports no address to run out of.
    addressless = not usage.routed and not any(row.subnets for row in rows)
    dry = [row for row in rows if row.availability.free_ips <= 0 and not addressless]
    left = [row for row in rows if row not in dry]
    parts = []
    if dry:
        parts.append("out of addresses: " + ", ".join(_segment_label(r.segment) for r in dry))
    if left:
        vnic = f" with vnic {need.vnic_type}" if need.vnic_type != "normal" else ""
        reach = f"no host left{vnic} reaches"
        parts.append(
            f"{reach}: "
            + ", ".join(
                _segment_label(r.segment)
                + ("" if addressless else f" ({r.availability.free_ips} free)")
                for r in left
            )
        )
    return "; ".join(parts) or "the network has no segment"


def _in(column: str, values) -> Condition:
    values = sorted(values)
    if not values:
        return Condition("1 = 0")
    return Condition(f"{column} IN ({sql.marks(values)})", tuple(values))


def filters(instance: Instance, reaches: list, constraints: Constraints) -> list[Filter]:
    """The filter chain, in order, so an empty result is explained by the
    first link that emptied it. ``reaches`` pairs each NIC's need with its
    network's reach."""
    if instance.baremetal:
        kind = Filter(
            "no baremetal host is free", Condition("h.baremetal AND h.running_instances = 0")
        )
    else:
        kind = Filter("no virtual host is enabled", Condition("NOT h.baremetal"))
    chain = [
        Filter(
            "no enabled host is alive",
            Condition(
                "h.enabled AND h.last_heartbeat >= %s",
                (sql.param(Host, "last_heartbeat", alive_since()),),
            ),
        ),
        kind,
        Filter(
            f"no host has {instance.vcpus} vCPUs, {instance.memory_mb} MB RAM and "
            f"{instance.disk_gb} GB disk free",
            Condition(
                "h.free_vcpus >= %s AND h.free_ram >= %s AND h.free_disk >= %s",
                (instance.vcpus, instance.memory_mb, instance.disk_gb),
            ),
        ),
    ]
    for need, reach in reaches:
        why = f"no host reaches a segment of network {need.network_id} with a free IP"
        if need.vnic_type != "normal":
            why += f" and supports vnic {need.vnic_type}"
        where, params = net_selectors.hosts_reaching(
            reach=reach, vnic_type=need.vnic_type, host_name="h.name"
        )
        chain.append(
            Filter(
                why,
                Condition(where, tuple(params)),
                wide=True,
                detail=partial(_segments_detail, need),
            )
        )
    if constraints.only_hosts is not None:
        why = constraints.reason or "no host reserved for this instance fits"
        chain.append(Filter(why, _in("h.name", constraints.only_hosts)))
    if constraints.avoid is not None:
        why = constraints.reason or "every host that fits is reserved by a lease"
        chain.append(Filter(why, ~constraints.avoid))
    if instance.excluded_hosts:
        why = f"every eligible host was tried: {', '.join(sorted(instance.excluded_hosts))}"
        chain.append(Filter(why, ~_in("h.name", instance.excluded_hosts)))
    return chain


def _all(chain: list[Filter]) -> Condition:
    if not chain:
        return Condition("1 = 1")
    return Condition(
        " AND ".join(f"({f.condition.where})" for f in chain),
        tuple(p for f in chain for p in f.condition.params),
    )


# Hosts by free RAM that the network filters look at first. The planner
# cannot estimate the network filters (correlated EXISTS over agents), so it
# would check them on every host and sort; applied to the best WINDOW hosts
# by their own row's filters, they cost a few index probes (host_by_free_ram).
WINDOW = 200
BY_RAM = "h.free_ram DESC, h.name"
# A host's build failures while its last one is recent: on the host row
# itself, so weighing costs no join and no round trip. SQL text like the
# filters it is weighed with: the candidates query is one hand-written
# statement an ORM annotation cannot join.
RECENT_FAILURES = "CASE WHEN h.last_build_failure >= %s THEN h.failed_builds ELSE 0 END"


def _failures_since() -> datetime:
    """Failures before this no longer count, unless a later one followed."""
    return timezone.now() - timedelta(seconds=settings.BERTH_SCHEDULER_BUILD_FAILURE_WINDOW)


@dataclass(frozen=True)
class Candidate:
    """A host that passed the filters: claimed by id, named in the log
    (later steps load the host they need in full), with what it was
    weighed by."""

    pk: object
    name: str
    free_ram: float
    failures: int

    @property
    def weight(self) -> float:
        return self.free_ram - settings.BERTH_SCHEDULER_BUILD_FAILURE_WEIGHT * self.failures

    def __str__(self) -> str:
        return (
            f"{self.name} (weight {self.weight:.10g}: {self.free_ram:.10g} MB RAM free, "
            f"recent build failures: {self.failures})"
        )


def _hosts(where: str, params: tuple, top: int) -> list[Candidate]:
    """The best ``top`` hosts where ``where`` holds, by free RAM less the
    penalty for their recent build failures."""
    found = sql.rows(
        f"SELECT id, name, free_ram, failures FROM (SELECT h.id, h.name, h.free_ram, "
        f"{RECENT_FAILURES} AS failures FROM compute_host h WHERE {where}) c "
        "ORDER BY c.free_ram - %s * c.failures DESC, c.name LIMIT %s",
        [
            sql.param(Host, "last_build_failure", _failures_since()),
            *params,
            settings.BERTH_SCHEDULER_BUILD_FAILURE_WEIGHT,
            top,
        ],
    )
    return [
        Candidate(Host._meta.pk.to_python(pk), name, free_ram, failures)
        for pk, name, free_ram, failures in found
    ]


def candidates(
    instance: Instance, reaches: list, constraints: Constraints, *, top: int, enough: int
) -> list[Candidate]:
    """Up to ``top`` of the best hosts passing every filter, best first; from
    the window of the hosts with most free RAM alone when it yields
    ``enough`` without a recent build failure."""
    chain = filters(instance, reaches, constraints)
    local = _all([f for f in chain if not f.wide])
    wide = _all([f for f in chain if f.wide])
    window = f"SELECT h.id FROM compute_host h WHERE {local.where} ORDER BY {BY_RAM} LIMIT %s"
    best = _hosts(
        f"h.id IN ({window}) AND {wide.where}", (*local.params, WINDOW, *wide.params), top
    )
    # A host outside the window has less free RAM than any inside, so it
    # can outweigh only the ones a build failure weighs down.
    sound = (
        [h for h in best if not h.failures]
        if settings.BERTH_SCHEDULER_BUILD_FAILURE_WEIGHT
        else best
    )
    if len(sound) < enough and sql.rows(
        f"SELECT 1 FROM compute_host h WHERE {local.where} ORDER BY {BY_RAM} LIMIT 1 OFFSET %s",
        [*local.params, WINDOW],
    ):
        # The window was not enough.
        best = _hosts(f"{local.where} AND {wide.where}", local.params + wide.params, top)
    return best


def explain_choice(host: Candidate, picked: list[Candidate]) -> str:
    """The chosen host and the alternates with their weights, for the log."""
    others = ", ".join(str(h) for h in picked if h != host) or "none"
    return f"chose {host}; alternates: {others}"


@dataclass(frozen=True)
class NoHost:
    """Why no host fits: the first filter that left none (``why``), and what
    it found there (``detail``: names of segments and physical networks,
    which only admins see)."""

    why: str
    detail: str = ""


def explain_no_host(instance: Instance, needs: list[NicNeed], constraints: Constraints) -> NoHost:
    chain = filters(instance, reaches_of(needs), constraints)
    for upto, link in enumerate(chain, start=1):
        applied = _all(chain[:upto])
        where = f"SELECT 1 FROM compute_host h WHERE {applied.where} LIMIT 1"
        if not sql.rows(where, applied.params):
            return NoHost(link.why, link.detail() if link.detail else "")
    return NoHost("every candidate host was claimed by other builds meanwhile")


def select_hosts(
    instance: Instance, needs: list[NicNeed], constraints: Constraints, *, alternates: int = 3
) -> list[Candidate]:
    """The best host first, then up to ``alternates`` others; among the top
    candidates, alternates on segments the earlier picks do not reach come
    first, so a segment running dry does not sink every retry."""
    reaches = reaches_of(needs)
    ranked = candidates(instance, reaches, constraints, top=50, enough=alternates + 1)
    routed = [reach for _, reach in reaches if reach.routed]
    if not ranked or not routed:
        return ranked[: alternates + 1]
    physnets = net_selectors.host_physnets(hosts=[h.name for h in ranked])

    def segments(host: Candidate) -> frozenset:
        return frozenset(
            reach.segment_of_physnet[p]
            for reach in routed
            for p in physnets[host.name]
            if p in reach.segment_of_physnet
        )

    picked, seen = [ranked[0]], [segments(ranked[0])]
    rest = ranked[1:]
    while rest and len(picked) <= alternates:
        fresh = [h for h in rest if segments(h) not in seen]
        host = (fresh or rest)[0]
        rest.remove(host)
        picked.append(host)
        seen.append(segments(host))
    return picked


# Hand-written (config.sql says why): every build claims. The conditions are
# on the row itself, so PostgreSQL re-checks them on the latest version
# after waiting for a concurrent claim.
CLAIM = (
    "UPDATE compute_host SET vcpus_used = vcpus_used + %(vcpus)s, "
    "memory_mb_used = memory_mb_used + %(ram)s, disk_gb_used = disk_gb_used + %(disk)s, "
    "running_instances = running_instances + 1 "
    "WHERE id = %(id)s AND enabled AND free_vcpus >= %(vcpus)s AND free_ram >= %(ram)s "
    "AND free_disk >= %(disk)s"
)
CLAIM_BAREMETAL = " AND running_instances = 0"
# Still one statement: the row is updated only if nobody holds it.
CLAIM_NO_WAIT = " AND id IN (SELECT id FROM compute_host WHERE id = %(id)s FOR UPDATE SKIP LOCKED)"


def claim(*, host: Candidate, instance: Instance, wait: bool = True) -> bool:
    """Take the instance's resources on the host if they still fit, in one
    conditional UPDATE. The check constraints on Host are the backstop.

    ``wait=False`` gives up at once if another build holds the host's row
    (SKIP LOCKED), so concurrent builds spread over the candidates instead
    of queueing on the best one."""
    statement = CLAIM + (CLAIM_BAREMETAL if instance.baremetal else "")
    if not wait and connection.features.has_select_for_update_skip_locked:
        statement += CLAIM_NO_WAIT
    params = {
        "id": sql.param(Host, "id", host.pk),
        "vcpus": instance.vcpus,
        "ram": instance.memory_mb,
        "disk": instance.disk_gb,
    }
    return sql.execute(statement, params) == 1


def claim_first(*, hosts: list[Candidate], instance: Instance) -> Candidate | None:
    """The first of ``hosts`` (best first) whose resources could be taken:
    hosts nobody else is claiming right now first, then waiting in turn."""
    for wait in (False, True):
        for host in hosts:
            if claim(host=host, instance=instance, wait=wait):
                return host
    return None


def release(*, host_id, instance: Instance, failed: bool = False) -> None:
    """Give the instance's resources back; ``failed`` when the host failed
    the build, which counts against it in the same UPDATE (atomic under
    concurrent failures, and no round trip more). A failure after a quiet
    window starts the count again."""
    changes = {
        "vcpus_used": F("vcpus_used") - instance.vcpus,
        "memory_mb_used": F("memory_mb_used") - instance.memory_mb,
        "disk_gb_used": F("disk_gb_used") - instance.disk_gb,
        "running_instances": F("running_instances") - 1,
    }
    if failed:
        changes["failed_builds"] = Case(
            When(last_build_failure__gte=_failures_since(), then=F("failed_builds") + 1),
            default=Value(1),
        )
        changes["last_build_failure"] = timezone.now()
    Host.objects.filter(pk=host_id).update(**changes)


def clear_failures(*, host_id, before: datetime) -> None:
    """A build succeeded on the host: its failures no longer count, unless
    one came after ``before`` (when that build's step began)."""
    Host.objects.filter(pk=host_id, failed_builds__gt=0, last_build_failure__lt=before).update(
        failed_builds=0
    )
