"""Reads for networking."""

from dataclasses import dataclass, field
from datetime import timedelta
from typing import NamedTuple

from django.conf import settings
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Value
from django.utils import timezone

from identity.auth import RequestContext
from networking import ipam
from networking.binding import HostView, Nic, PhysnetLink, SegmentView
from networking.models import (
    AddressHold,
    BaremetalNic,
    HostAgent,
    HostPhysnet,
    HostVnicType,
    IPAllocation,
    Network,
    NetworkType,
    Port,
    Segment,
    Subnet,
    VifType,
)


def network_list(*, context: RequestContext) -> QuerySet[Network]:
    """Networks the caller may see: its project's and shared ones (all for admins)."""
    networks = Network.objects.select_related("project").prefetch_related("segments", "subnets")
    if context.is_admin:
        return networks
    return networks.filter(Q(project=context.project) | Q(shared=True))


def segment_list(*, context: RequestContext) -> QuerySet[Segment]:
    return Segment.objects.filter(network__in=network_list(context=context).values("pk"))


def subnet_list(*, context: RequestContext) -> QuerySet[Subnet]:
    subnets = Subnet.objects.select_related("project")
    if context.is_admin:
        return subnets
    return subnets.filter(Q(project=context.project) | Q(network__shared=True))


def port_list(*, context: RequestContext) -> QuerySet[Port]:
    ports = Port.objects.prefetch_related("fixed_ips")
    if context.is_admin:
        return ports
    return ports.filter(project=context.project)


def segment_view(segment: Segment) -> SegmentView:
    return SegmentView(
        segment.id, segment.network_type, segment.physical_network, segment.segmentation_id
    )


def agents_alive_since():
    return timezone.now() - timedelta(seconds=settings.BERTH_HOST_DOWN_AFTER)


def agent_list() -> QuerySet[HostAgent]:
    return HostAgent.objects.prefetch_related("physnets", "vnic_types", "baremetal_nics")


# What a host's agent row says of it; every reported row carries these.
AGENT_COLUMNS = (
    "datapath_type",
    "interface_types",
    "ovs_hybrid_plug",
    "bridge_name",
    "tunnel_types",
)


def _reported(model, kind: str, *columns: str, agent: str = "agent__"):
    """The hosts' rows of ``model`` as (kind, host, key, ``columns``, the
    agent's AGENT_COLUMNS through ``agent``), ``columns`` padded to five
    text columns, so that the agents and their three kinds of rows read as
    one UNION ALL. An agent's own row (``agent`` empty) has key 0: its uuid
    would not fit the others' integer keys."""
    padding = {f"pad{n}": Value("") for n in range(5 - len(columns))}
    return (
        model.objects.annotate(kind=Value(kind), key=F("id") if agent else Value(0), **padding)
        .values_list(
            "kind",
            agent + "host",
            "key",
            *columns,
            *padding,
            *(agent + c for c in AGENT_COLUMNS),
        )
        .order_by()
    )


def host_views(*, hosts) -> dict[str, HostView]:
    """What each of ``hosts`` reported, by name (a host that never did is
    not there), in one statement: the agents' rows, then their three kinds
    of child rows, each kind in report order."""
    hosts = list(hosts)
    physnets = _reported(
        HostPhysnet, "physnet", "physical_network", "bridge", "sriov_interface", "macvtap_interface"
    )
    vnics = _reported(HostVnicType, "vnic", "vnic_type")
    nics = _reported(
        BaremetalNic,
        "nic",
        "mac_address",
        "physical_network",
        "switch_id",
        "switch_port",
        "switch_info",
    )
    agents = _reported(HostAgent, "agent", agent="").filter(host__in=hosts)
    reported = (
        physnets.filter(agent__host__in=hosts)
        .union(
            vnics.filter(agent__host__in=hosts),
            nics.filter(agent__host__in=hosts),
            agents,
            all=True,
        )
        .order_by("kind", "key")
    )
    rows: dict[str, dict[str, list]] = {}
    for kind, host, _, *row in reported:
        rows.setdefault(host, {"agent": [], "physnet": [], "vnic": [], "nic": []})[kind].append(row)
    return {host: _host_view(host, found) for host, found in rows.items() if found["agent"]}


def _host_view(host: str, rows: dict[str, list]) -> HostView:
    datapath, interfaces, hybrid_plug, bridge, tunnels = rows["agent"][0][5:]
    return HostView(
        host=host,
        datapath_type=datapath,
        interface_types=frozenset(interfaces),
        ovs_hybrid_plug=hybrid_plug,
        bridge_name=bridge,
        tunnel_types=frozenset(tunnels),
        physnets={name: PhysnetLink(*links[:3]) for name, *links in rows["physnet"]},
        vnic_types=frozenset(vnic for vnic, *_ in rows["vnic"]),
        baremetal_nics=tuple(Nic(*nic[:5]) for nic in rows["nic"]),
    )


def host_view(*, host: str) -> HostView | None:
    """What the host reported, or None if it never did."""
    return host_views(hosts=[host]).get(host)


def network_subnets(*, network_id, bound_port=None) -> list[Subnet]:
    """Oldest first (the model's order): every port create and bind reads
    them. For a bind, of ``bound_port``: with their segments, and whether
    that port holds an address in each (``port_holds``; most ports being
    bound hold none yet)."""
    subnets = Subnet.objects.filter(network_id=network_id)
    if bound_port is None:
        return list(subnets)
    holds = Exists(IPAllocation.objects.filter(subnet=OuterRef("pk"), port=bound_port))
    return list(subnets.select_related("segment").annotate(port_holds=holds))


def network_segments(*, network_id) -> list[Segment]:
    return list(Segment.objects.filter(network_id=network_id))


def port_addresses(*, port_id) -> list[IPAllocation]:
    """The port's fixed IPs with their subnets."""
    return list(IPAllocation.objects.filter(port_id=port_id).select_related("subnet"))


def free_ports_by_mac(*, network_id, macs: list[str]) -> QuerySet[Port]:
    """Unused ports on the network with one of these MACs (seed 003: a
    baremetal node's NIC is found by its MAC)."""
    return Port.objects.filter(
        network_id=network_id, mac_address__in=[ipam.parse_mac(m) for m in macs], device_id=""
    )


def ports_bound_through(*, segment: Segment) -> list:
    """Ids of the ports of the segment's network bound on a host through
    this segment, as far as it can be told. A port's segment is not stored:
    on a routed network it is the segment of its addresses (whose subnets
    the caller checks); on any other a bound port counts when its host
    reaches the segment, or no longer reports what it reaches."""
    if Subnet.objects.filter(network_id=segment.network_id, segment__isnull=False).exists():
        return []
    bound = (
        Port.objects.filter(network_id=segment.network_id)
        .exclude(binding_host="")
        .exclude(binding_vif_type__in=[VifType.UNBOUND, VifType.BINDING_FAILED])
        .order_by("pk")
        .values_list("pk", "binding_host")
    )
    bound = list(bound)
    views = host_views(hosts={host for _, host in bound})
    found = []
    for port_id, host in bound:
        view = views.get(host)
        if view is None or view.reaches(segment.network_type, segment.physical_network):
            found.append(port_id)
    return found


def baremetal_macs(*, host: str) -> list[str]:
    return list(BaremetalNic.objects.filter(agent__host=host).values_list("mac_address", flat=True))


@dataclass(frozen=True)
class Availability:
    total_ips: int
    used_ips: int

    @property
    def free_ips(self) -> int:
        return self.total_ips - self.used_ips


def subnet_availability(*, subnets: list[Subnet]) -> dict:
    """{subnet id: Availability}: pool sizes from the pools, used addresses
    counted in the database (addresses outside the pools count as used)."""
    used = dict(
        IPAllocation.objects.filter(subnet__in=subnets)
        .values("subnet")
        .annotate(n=Count("id"))
        .values_list("subnet", "n")
    )
    return {
        s.id: Availability(ipam.pool_size(s.allocation_pools), used.get(s.id, 0)) for s in subnets
    }


def ip_availability(*, networks: list[Network]) -> tuple[dict, dict]:
    """({subnet id: Availability}, {segment id: Availability}) for the
    networks (with subnets and segments prefetched), in one query."""
    subnets = [s for network in networks for s in network.subnets.all()]
    per_subnet = subnet_availability(subnets=subnets)
    per_segment = {seg.id: Availability(0, 0) for n in networks for seg in n.segments.all()}
    for subnet in subnets:
        if subnet.segment_id is None:
            continue
        here, add = per_segment[subnet.segment_id], per_subnet[subnet.id]
        per_segment[subnet.segment_id] = Availability(
            here.total_ips + add.total_ips, here.used_ips + add.used_ips
        )
    return per_subnet, per_segment


@dataclass(frozen=True)
class NetworkReach:
    """Where a port of the network can still get an address: the physical
    networks of its usable segments, whether a usable one is an overlay, and
    which segment each physical network carries (for spreading alternates)."""

    network_id: object
    routed: bool
    physnets: frozenset[str]
    overlay: bool
    segment_of_physnet: dict
    # Free addresses on each usable segment of a routed network, as read.
    free_ips: dict = field(default_factory=dict)


class SegmentRow(NamedTuple):
    id: object
    network_id: object
    network_type: str
    physical_network: str


def network_reaches(*, wanted: list[tuple]) -> list[NetworkReach]:
    """For each (network id, segment ids or None): where a port can still
    get an address. On a routed network that is the segments with a subnet
    that has a free IP, or the segments given (a port's fixed IPs pin it to
    the segments it already holds addresses on); on a plain network every
    segment, unless its subnets are all exhausted. Two queries for all of
    them, whatever the number of hosts (one where every network is routed):
    the scheduler asks this for every build."""
    network_ids = list(dict.fromkeys(network_id for network_id, _ in wanted))
    if not network_ids:
        return []
    # Rows, not model instances: the columns below are all it reads. The
    # subnets come with their segments: on a routed network only segments
    # with subnets can give an address, so those are all there is to know;
    # a plain network's segments (its subnets have none) are read after.
    subnets: dict = {network_id: [] for network_id in network_ids}
    with_usage = (
        Subnet.objects.filter(network_id__in=network_ids)
        .annotate(used_ips=Count("allocations"))
        .values_list(
            "network_id",
            "segment_id",
            "allocation_pools",
            "used_ips",
            "segment__network_type",
            "segment__physical_network",
            named=True,
        )
        .order_by("segment__created_at", "segment_id")
    )
    found: dict = {network_id: {} for network_id in network_ids}  # segments, by id
    for subnet in with_usage:
        subnets[subnet.network_id].append(subnet)
        if subnet.segment_id:
            found[subnet.network_id].setdefault(
                subnet.segment_id,
                SegmentRow(
                    subnet.segment_id,
                    subnet.network_id,
                    subnet.segment__network_type,
                    subnet.segment__physical_network,
                ),
            )
    segments = {network_id: list(rows.values()) for network_id, rows in found.items()}
    plain = [n for n in network_ids if not segments[n]]
    if plain:
        for segment in Segment.objects.filter(network_id__in=plain).values_list(
            "id", "network_id", "network_type", "physical_network", named=True
        ):
            segments[segment.network_id].append(segment)
    reaches = []
    for network_id, segment_ids in wanted:
        free_on = [
            (s, Availability(ipam.pool_size(s.allocation_pools), s.used_ips).free_ips)
            for s in subnets[network_id]
        ]
        free = [s for s, left in free_on if left > 0]
        routed = any(s.segment_id for s in subnets[network_id])
        usable = segments[network_id]
        if routed:
            with_free = {s.segment_id for s in free}
            usable = [s for s in usable if s.id in with_free]
        elif subnets[network_id] and not free:
            usable = []
        if segment_ids is not None:
            # The port already holds its addresses on these segments, so
            # whether they have any left to give does not matter.
            usable = [s for s in segments[network_id] if s.id in segment_ids]
        flat = [s for s in usable if s.network_type != "vxlan"]
        free_ips: dict = {}
        for subnet, left in free_on:
            if routed and subnet.segment_id and left > 0:
                free_ips[subnet.segment_id] = free_ips.get(subnet.segment_id, 0) + left
        reaches.append(
            NetworkReach(
                network_id=network_id,
                routed=routed,
                physnets=frozenset(s.physical_network for s in flat),
                overlay=len(flat) < len(usable),
                segment_of_physnet={s.physical_network: s.id for s in flat},
                free_ips=free_ips,
            )
        )
    return reaches


def hosts_reaching(*, reach: NetworkReach, vnic_type: str, host_field: str) -> Exists:
    """A condition on the model being filtered, true where its field
    ``host_field`` names a host that reaches a usable segment of ``reach``
    and supports the vnic type. One EXISTS per row, which PostgreSQL answers
    from the agent indexes without building the set of such hosts."""
    wired = Q(physnets__physical_network__in=sorted(reach.physnets))
    if reach.overlay:
        wired |= ~Q(tunnel_types=[])
    return Exists(
        HostAgent.objects.filter(
            wired, host=OuterRef(host_field), admin_state_up=True, vnic_types__vnic_type=vnic_type
        )
    )


def host_physnets(*, hosts: list[str]) -> dict[str, set[str]]:
    """{host: the physical networks it is wired to}, in one query."""
    found: dict[str, set[str]] = {host: set() for host in hosts}
    links = HostPhysnet.objects.filter(agent__host__in=hosts).values_list(
        "agent__host", "physical_network"
    )
    for host, physnet in links:
        found[host].add(physnet)
    return found


@dataclass(frozen=True)
class HostReach:
    agent_id: object
    host: str
    alive: bool
    admin_state_up: bool


@dataclass(frozen=True)
class SubnetUsage:
    subnet: Subnet
    availability: Availability


@dataclass(frozen=True)
class SegmentUsage:
    """One segment of a network: the subnets its ports draw addresses from,
    how full they are, and the hosts that can plug a port into it."""

    segment: Segment
    subnets: list[SubnetUsage]
    availability: Availability
    hosts: list[HostReach]
    # Addresses leases hold on it now or later (no other port may take them).
    held: int = 0

    @property
    def fill(self) -> float | None:
        """Used share of the addresses; None when the segment has none."""
        total = self.availability.total_ips
        return self.availability.used_ips / total if total else None

    @property
    def level(self) -> str:
        if self.fill is None:
            return "none"
        if self.fill >= 1:
            return "danger"
        return "warning" if self.fill > 0.8 else "ok"

    @property
    def bar_width(self) -> float:
        # Addresses outside the pools count as used, so used can pass total.
        return round(min(self.fill or 0.0, 1.0) * 100, 1)


@dataclass(frozen=True)
class NetworkUsage:
    routed: bool
    # Fullest first: what an operator looks for is the segment running dry.
    segments: list[SegmentUsage]
    # Subnets no segment row accounts for: those of a network without
    # segments, or one left on no segment of a routed network.
    unplaced: list[SubnetUsage]


def segment_usage(*, network: Network) -> NetworkUsage:
    """Per segment of the network: its subnets and their IP usage, and the
    hosts that reach it (a flat or VLAN segment through its physical
    network, an overlay through a tunnel). On a plain network every segment
    draws on all the subnets. Six queries at most, whatever the number of
    segments, subnets, addresses and hosts."""
    network = Network.objects.prefetch_related("segments", "subnets").get(pk=network.pk)
    per_subnet, per_segment = ip_availability(networks=[network])
    segments = list(network.segments.all())
    subnets = [SubnetUsage(s, per_subnet[s.id]) for s in network.subnets.all()]
    routed = any(s.subnet.segment_id for s in subnets)
    if not routed:
        shared = Availability(
            sum(s.availability.total_ips for s in subnets),
            sum(s.availability.used_ips for s in subnets),
        )
        per_segment = dict.fromkeys(per_segment, shared)

    since = agents_alive_since()
    on_physnet: dict[str, list[HostReach]] = {}
    physnets = {s.physical_network for s in segments if s.network_type != "vxlan"}
    links = (
        HostPhysnet.objects.filter(physical_network__in=physnets)
        .select_related("agent")
        .order_by("agent__host")
    )
    for link in links:
        agent = link.agent
        on_physnet.setdefault(link.physical_network, []).append(
            HostReach(agent.pk, agent.host, agent.heartbeat_at >= since, agent.admin_state_up)
        )
    tunnelled = []
    if any(s.network_type == "vxlan" for s in segments):
        tunnelled = [
            HostReach(a.pk, a.host, a.heartbeat_at >= since, a.admin_state_up)
            for a in HostAgent.objects.exclude(tunnel_types=[])
        ]

    held = holds_per_segment(network_ids=[network.pk], start=timezone.now())
    rows = [
        SegmentUsage(
            held=held.get(segment.pk, {}).get("held", 0),
            segment=segment,
            subnets=[s for s in subnets if not routed or s.subnet.segment_id == segment.id],
            availability=per_segment[segment.id],
            hosts=(
                tunnelled
                if segment.network_type == "vxlan"
                else on_physnet.get(segment.physical_network, [])
            ),
        )
        for segment in segments
    ]
    rows.sort(key=lambda row: 1 if row.fill is None else -row.fill)
    unplaced = [s for s in subnets if s.subnet.segment_id is None] if routed or not segments else []
    return NetworkUsage(routed=routed, segments=rows, unplaced=unplaced)


# --- address holds ---------------------------------------------------------------


def addresses_held_now(*, holder, subnet_id, project_id) -> list[str]:
    """The holder's addresses of the subnet it holds now for the project
    and no port has."""
    now = timezone.now()
    given = IPAllocation.objects.filter(subnet_id=subnet_id, address=OuterRef("address"))
    held = (
        AddressHold.objects.filter(
            holder=holder, subnet_id=subnet_id, project_id=project_id, start_at__lte=now
        )
        .filter(end_at__gt=now)
        .exclude(Exists(given))
    )
    return [str(a) for a in held.values_list("address", flat=True)[:8]]


def address_holder_now(*, subnet_id, address: str, project_id):
    """The holder that holds the address now for the project, or None."""
    now = timezone.now()
    held = AddressHold.objects.filter(
        subnet_id=subnet_id, address=address, project_id=project_id, start_at__lte=now
    )
    return held.filter(end_at__gt=now).values_list("holder", flat=True).first()


def address_holds(*, holders: list) -> list[AddressHold]:
    """The holds of these holders, with their subnets, by address."""
    holds = AddressHold.objects.filter(holder__in=holders).select_related("subnet")
    return list(holds.order_by("subnet__segment_id", "subnet_id", "address"))


def free_addresses(*, subnets: list[Subnet], start, end) -> dict:
    """{subnet id: addresses of its pools a new hold over [start, end) could
    take}: its pool size less the addresses ports have and those held then
    that no port has. Two queries, whatever the number of subnets."""
    used = dict(
        IPAllocation.objects.filter(subnet__in=subnets)
        .values("subnet")
        .annotate(n=Count("id"))
        .values_list("subnet", "n")
    )
    given = IPAllocation.objects.filter(subnet=OuterRef("subnet"), address=OuterRef("address"))
    held = dict(
        AddressHold.objects.filter(subnet__in=subnets, start_at__lt=end, end_at__gt=start)
        .exclude(Exists(given))
        .values("subnet")
        .annotate(n=Count("address", distinct=True))
        .values_list("subnet", "n")
    )
    return {
        s.id: max(0, ipam.pool_size(s.allocation_pools) - used.get(s.id, 0) - held.get(s.id, 0))
        for s in subnets
    }


@dataclass(frozen=True)
class PlacementSegment:
    """A segment of a network and the subnets a port on it draws from."""

    segment: Segment
    subnets: list[Subnet]


def placement_segments(*, network_id) -> list[PlacementSegment]:
    """The network's segments with the subnets their ports draw addresses
    from: on a routed network each its own, on a plain one all of them.
    IPv4 first: a host's addresses are counted in its first version."""
    network_subnets = sorted(
        Subnet.objects.filter(network_id=network_id), key=lambda s: (s.ip_version, s.created_at)
    )
    routed = any(s.segment_id for s in network_subnets)
    return [
        PlacementSegment(
            segment, [s for s in network_subnets if not routed or s.segment_id == segment.pk]
        )
        for segment in Segment.objects.filter(network_id=network_id).order_by("created_at", "id")
    ]


def hosts_on_segment(*, segment: Segment, host_field: str) -> Exists:
    """A condition true where ``host_field`` names a host whose agent is up
    administratively and plugs into the segment: through its physical
    network, or for an overlay through a tunnel."""
    if segment.network_type == NetworkType.VXLAN:
        wired = ~Q(tunnel_types=[])
    else:
        wired = Q(physnets__physical_network=segment.physical_network)
    return Exists(HostAgent.objects.filter(wired, host=OuterRef(host_field), admin_state_up=True))


def holds_per_segment(*, network_ids: list | None = None, start, end=None) -> dict:
    """{segment id: {network and segment names, "held": distinct addresses
    held, "holders": how many hold them}} for holds running after ``start`` (and before ``end``), on
    the networks given or all; one query."""
    holds = AddressHold.objects.filter(end_at__gt=start, subnet__segment__isnull=False)
    if end is not None:
        holds = holds.filter(start_at__lt=end)
    if network_ids is not None:
        holds = holds.filter(subnet__network_id__in=network_ids)
    counted = holds.values(
        "subnet__segment", "subnet__segment__name", "subnet__network__name"
    ).annotate(held=Count("address", distinct=True), holders=Count("holder", distinct=True))
    return {
        row["subnet__segment"]: {
            "network": row["subnet__network__name"],
            "segment": row["subnet__segment__name"] or str(row["subnet__segment"]),
            "held": row["held"],
            "holders": row["holders"],
        }
        for row in counted.order_by("subnet__network__name", "subnet__segment__name")
    }
