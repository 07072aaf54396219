"""The network-aware scheduler: set-based filters in SQL, then weighers.

Filters are one query over all hosts (never a Python loop over hosts):
enabled and alive, free capacity under the allocation ratios, reaches a
segment with a free IP for every NIC, supports every NIC's vnic type,
baremetal flavors on free baremetal hosts, lease constraints. Hosts are
weighed by free RAM (spread) less a penalty for each recent build failure
(Nova's BuildFailureWeigher), the best is claimed with a conditional UPDATE,
and alternates are kept, spread over segments where possible.

The filters are ``Q`` conditions on Host; networking and reservations give
theirs as ORM expressions on Host, never as SQL text.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import connection
from django.db.models import Case, F, IntegerField, Q, Value, When
from django.utils import timezone

from compute.models import Host, Instance
from networking import selectors as net_selectors
from networking.models import Network


@dataclass(frozen=True)
class NicNeed:
    """What one NIC requires of a host."""

    network_id: object
    vnic_type: str = "normal"
    # A port with a fixed IP on a routed network is pinned to its segment.
    segment_ids: tuple | None = None


@dataclass
class Constraints:
    """Placement rules from outside compute (leases): ``only_hosts`` if the
    instance must land in a reserved set, ``avoid`` a condition on Host true
    for the hosts it must not land on (an ``Exists``, so a pool of thousands
    of reserved hosts stays one clause)."""

    only_hosts: set[str] | None = None
    avoid: Q | None = None
    reason: str = ""
    # True when the rules depend on where other instances are (a lease's
    # slots per host): each build of a batch is then ranked on its own,
    # after the ones before it claimed their hosts.
    per_instance: bool = False


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
        merged.per_instance = merged.per_instance or found.per_instance
    return merged


# One liveness rule for a host's compute and network reports.
alive_since = net_selectors.agents_alive_since


def host_up(prefix: str = "") -> Q:
    """Hosts that are up: heard from within BERTH_HOST_DOWN_AFTER, and not
    declared down by the liveness sweep (which clears that once their
    heartbeats are back), so every process agrees with the sweep's edge.
    ``prefix`` is the path to the host, e.g. "host__"."""
    return Q(**{f"{prefix}last_heartbeat__gte": alive_since(), f"{prefix}down_since": None})


def is_up(host) -> bool:
    """host_up for one host read already."""
    return host.down_since is None and host.last_heartbeat >= alive_since()


def reaches_of(needs: list[NicNeed]) -> list:
    reaches = net_selectors.network_reaches(wanted=[(n.network_id, n.segment_ids) for n in needs])
    return list(zip(needs, reaches, strict=True))


@dataclass(frozen=True)
class Filter:
    """One link of the filter chain: the condition on Host, what it means
    when it leaves no host, and whether it looks beyond the host row.
    ``detail`` says more about an empty result, at the cost of a few
    queries, so it runs only for the link that left no host."""

    why: str
    condition: Q
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


def filters(instance: Instance, reaches: list, constraints: Constraints) -> list[Filter]:
    """The filter chain, in order, so an empty result is explained by the
    first link that emptied it. ``reaches`` pairs each NIC's need with its
    network's reach."""
    if instance.baremetal:
        kind = Filter("no baremetal host is free", Q(baremetal=True, running_instances=0))
    else:
        kind = Filter("no virtual host is enabled", Q(baremetal=False))
    chain = [
        Filter("no enabled host is alive", Q(enabled=True) & host_up()),
        kind,
        Filter(
            f"no host has {instance.vcpus} vCPUs, {instance.memory_mb} MB RAM and "
            f"{instance.disk_gb} GB disk free",
            Q(
                free_vcpus__gte=instance.vcpus,
                free_ram__gte=instance.memory_mb,
                free_disk__gte=instance.disk_gb,
            ),
        ),
    ]
    for need, reach in reaches:
        why = f"no host reaches a segment of network {need.network_id} with a free IP"
        if need.vnic_type != "normal":
            why += f" and supports vnic {need.vnic_type}"
        reaching = net_selectors.hosts_reaching(
            reach=reach, vnic_type=need.vnic_type, host_field="name"
        )
        chain.append(
            Filter(
                why,
                Q(reaching),
                wide=True,
                detail=partial(_segments_detail, need),
            )
        )
    if constraints.only_hosts is not None:
        why = constraints.reason or "no host reserved for this instance fits"
        chain.append(Filter(why, Q(name__in=sorted(constraints.only_hosts))))
    if constraints.avoid is not None:
        why = constraints.reason or "every host that fits is reserved by a lease"
        chain.append(Filter(why, ~constraints.avoid))
    if instance.excluded_hosts:
        why = f"every eligible host was tried: {', '.join(sorted(instance.excluded_hosts))}"
        chain.append(Filter(why, ~Q(name__in=sorted(instance.excluded_hosts))))
    return chain


def _all(chain: list[Filter]) -> Q:
    return Q(*(f.condition for f in chain))


# Hosts by free RAM that the network filters look at first. The planner
# cannot estimate the network filters (correlated EXISTS over agents), so it
# would check them on every host and sort; applied to the best WINDOW hosts
# by their own row's filters, they cost a few index probes (host_by_free_ram).
# The ORM writes the LIMIT as a literal, so a plan for unknown values (a
# prepared statement's generic plan) expects fewer matching hosts than the
# window and sorts them all: PostgreSQL keeps it on small fleets, where that
# is cheap, and plans with the values on large ones (about 1 ms).
WINDOW = 200
BY_RAM = ("-free_ram", "name")


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


def _hosts(condition: Q, top: int) -> list[Candidate]:
    """The best ``top`` hosts where ``condition`` holds, by free RAM less
    the penalty for their recent build failures. A host's failures count
    while its last one is recent: on the host row itself, so weighing costs
    no join and no round trip."""
    failures = Case(
        When(last_build_failure__gte=_failures_since(), then=F("failed_builds")),
        default=Value(0),
        output_field=IntegerField(),
    )
    penalty = Value(settings.BERTH_SCHEDULER_BUILD_FAILURE_WEIGHT) * F("failures")
    found = (
        Host.objects.filter(condition)
        .annotate(failures=failures)
        .annotate(weight=F("free_ram") - penalty)
        .order_by("-weight", "name")
        .values_list("pk", "name", "free_ram", "failures")[:top]
    )
    return [Candidate(*row) for row in found]


def candidates(
    instance: Instance, reaches: list, constraints: Constraints, *, top: int, enough: int
) -> list[Candidate]:
    """Up to ``top`` of the best hosts passing every filter, best first; from
    the window of the hosts with most free RAM alone when it yields
    ``enough`` without a recent build failure."""
    chain = filters(instance, reaches, constraints)
    local = _all([f for f in chain if not f.wide])
    wide = _all([f for f in chain if f.wide])
    window = Host.objects.filter(local).order_by(*BY_RAM).values("pk")[:WINDOW]
    best = _hosts(Q(pk__in=window) & wide, top)
    # A host outside the window has less free RAM than any inside, so it
    # can outweigh only the ones a build failure weighs down.
    sound = (
        [h for h in best if not h.failures]
        if settings.BERTH_SCHEDULER_BUILD_FAILURE_WEIGHT
        else best
    )
    if len(sound) < enough and Host.objects.filter(local)[WINDOW:].exists():
        # The window was not enough.
        best = _hosts(local & wide, top)
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
        if not Host.objects.filter(_all(chain[:upto])).exists():
            return NoHost(link.why, link.detail() if link.detail else "")
    return NoHost("every candidate host was claimed by other builds meanwhile")


class Ranking:
    """The hosts that fit builds alike (same request, same needs), best
    first, found by one search for all of them: each pick sees the hosts
    as they are after the builds picked before it took their share, so a
    batch lands as builds scheduled one after another do. A claim lowers
    its host's free RAM, and takes an address on the segment its bind will
    use for each NIC that gets one there (the first segment in order the
    host reaches that has one left): a host whose segments have none left
    for some NIC drops out, as the reach filter would drop it. ``builds``
    says how many will pick."""

    def __init__(
        self,
        instance: Instance,
        needs: list[NicNeed],
        constraints: Constraints,
        *,
        alternates: int = 3,
        builds: int = 1,
    ):
        self.alternates = alternates
        reaches = reaches_of(needs)
        self.hosts = candidates(
            instance, reaches, constraints, top=50 + builds - 1, enough=alternates + builds
        )
        self.routed = [reach for _, reach in reaches if reach.routed]
        self.physnets = (
            net_selectors.host_physnets(hosts=[h.name for h in self.hosts])
            if self.hosts and self.routed
            else {}
        )
        # The segments each host reaches, of the routed networks the NICs need.
        self.segments = {
            name: frozenset(
                reach.segment_of_physnet[p]
                for reach in self.routed
                for p in reached
                if p in reach.segment_of_physnet
            )
            for name, reached in self.physnets.items()
        }
        # The NICs whose port takes an address at bind on a segment of a
        # physical network (not pinned to the segments of addresses it holds,
        # no overlay segment in reach), and what their segments have left.
        self.addressed = [
            reach
            for need, reach in reaches
            if reach.routed and not reach.overlay and need.segment_ids is None
        ]
        self.free_ips = {k: v for reach in self.addressed for k, v in reach.free_ips.items()}

    def pick(self) -> list[Candidate]:
        """The best host first, then up to ``alternates`` others; among the
        top candidates, alternates on segments the earlier picks do not
        reach come first, so a segment running dry does not sink every
        retry."""
        ranked = sorted(self.hosts, key=lambda h: (-h.weight, h.name))
        if not ranked or not self.routed:
            return ranked[: self.alternates + 1]
        picked, seen = [ranked[0]], [self.segments[ranked[0].name]]
        rest = ranked[1:]
        while rest and len(picked) <= self.alternates:
            fresh = [h for h in rest if self.segments[h.name] not in seen]
            host = (fresh or rest)[0]
            rest.remove(host)
            picked.append(host)
            seen.append(self.segments[host.name])
        return picked

    def took(self, host: Candidate, instance: Instance) -> None:
        """``instance`` claimed ``host``: the next pick sees it fuller, and
        its segments with an address less for each NIC."""
        for reach in self.addressed:
            segment = self._address_segment(host, reach)
            if segment is not None:
                self.free_ips[segment] -= 1
        self.hosts = [
            replace(h, free_ram=h.free_ram - instance.memory_mb) if h.pk == host.pk else h
            for h in self.hosts
            if all(self._address_segment(h, reach) is not None for reach in self.addressed)
        ]

    def _address_segment(self, host: Candidate, reach) -> object | None:
        """The segment of ``reach`` where a port bound on ``host`` gets its
        address: the first in order the host reaches with one left."""
        reached = self.physnets.get(host.name, ())
        for physnet, segment in reach.segment_of_physnet.items():
            if physnet in reached and self.free_ips.get(segment, 0) > 0:
                return segment
        return None


def select_hosts(
    instance: Instance, needs: list[NicNeed], constraints: Constraints, *, alternates: int = 3
) -> list[Candidate]:
    """The best host for one build, then up to ``alternates`` others."""
    return Ranking(instance, needs, constraints, alternates=alternates).pick()


def claim(*, host: Candidate, instance: Instance, wait: bool = True) -> bool:
    """Take the instance's resources on the host if they still fit, in one
    conditional UPDATE (its row count says whether the claim won). The
    conditions are on the row itself, so PostgreSQL re-checks them on the
    latest version after waiting for a concurrent claim; the check
    constraints on Host are the backstop.

    ``wait=False`` gives up at once if another build holds the host's row
    (SKIP LOCKED, still in the one statement), so concurrent builds spread
    over the candidates instead of queueing on the best one."""
    fits = Host.objects.filter(
        pk=host.pk,
        enabled=True,
        free_vcpus__gte=instance.vcpus,
        free_ram__gte=instance.memory_mb,
        free_disk__gte=instance.disk_gb,
    )
    if instance.baremetal:
        fits = fits.filter(running_instances=0)
    if not wait and connection.features.has_select_for_update_skip_locked:
        free = Host.objects.filter(pk=host.pk).order_by().select_for_update(skip_locked=True)
        fits = fits.filter(pk__in=free.values("pk"))
    claimed = fits.update(
        vcpus_used=F("vcpus_used") + instance.vcpus,
        memory_mb_used=F("memory_mb_used") + instance.memory_mb,
        disk_gb_used=F("disk_gb_used") + instance.disk_gb,
        running_instances=F("running_instances") + 1,
    )
    return claimed == 1


def claim_first(
    *, hosts: list[Candidate], instance: Instance, wait: bool = True
) -> Candidate | None:
    """The first of ``hosts`` (best first) whose resources could be taken:
    hosts nobody else is claiming right now first, then (if ``wait``)
    waiting in turn."""
    for waiting in (False, True)[: 1 + wait]:
        for host in hosts:
            if claim(host=host, instance=instance, wait=waiting):
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
