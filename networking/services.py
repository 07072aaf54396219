"""Writes for networking. Keyword-only, typed, named <entity>_<verb>.

Locks are narrow: the subnet row to allocate an address in it, the port row
to change a port, the network row to add a subnet (overlap and
routed-or-not checks). Unique constraints are the backstop of each.
"""

import itertools
import os
import random
from dataclasses import dataclass, field
from datetime import datetime

import netaddr
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, Min, OuterRef
from django.db.models.deletion import ProtectedError
from django.utils import timezone

from config.errors import Conflict, Forbidden, Invalid, NotFound, in_use_by, one_of, shown
from identity.auth import RequestContext
from identity.models import Project
from identity.quotas import quota_enforce
from networking import binding, ipam, queries, selectors
from networking.models import (
    AddressHold,
    BaremetalNic,
    HostAgent,
    HostPhysnet,
    HostVnicType,
    IPAllocation,
    IpAllocationMode,
    Network,
    NetworkType,
    Port,
    PortStatus,
    Segment,
    Subnet,
    VifType,
    VnicType,
)

# Candidate addresses need to be spread, not unpredictable: a seeded PRNG
# spares a system call per pick.
_rng = random.Random()
# Forked worker processes would otherwise all draw the same sequence.
os.register_at_fork(after_in_child=_rng.seed)


def _check_shared_allowed(context: RequestContext, fields: dict) -> None:
    # Neutron policy: only an admin makes a network visible to all projects.
    if fields.get("shared") and not context.is_admin:
        raise Forbidden("Only an admin can create or update a shared network.")


# --- networks -----------------------------------------------------------------


@transaction.atomic
def network_create(
    *, context: RequestContext, project: Project, segments: list[dict] | None = None, **fields
) -> Network:
    """A network with the given segments (provider attributes; admin only),
    or with one VXLAN segment from the VNI range if none are given."""
    _check_shared_allowed(context, fields)
    if segments and not context.is_admin:
        raise Forbidden("Only an admin can set provider attributes or segments.")
    quota_enforce(project=project, requested={"network": 1})
    network = Network.objects.create(project=project, **fields)
    for spec in segments or [{"network_type": NetworkType.VXLAN}]:
        segment_create(network=network, **spec)
    return network


@transaction.atomic
def network_update(*, context: RequestContext, network: Network, **fields) -> Network:
    _check_shared_allowed(context, fields)
    network = Network.objects.select_for_update().get(pk=network.pk)
    for name, value in fields.items():
        setattr(network, name, value)
    network.revision_number += 1
    network.save()
    return network


@transaction.atomic
def network_delete(*, network: Network) -> None:
    """The network with its subnets and segments. Refused (NetworkInUse)
    while ports are on it, or while a row of another app that protects it
    refers to it (a live server asked for it: compute's rule); the network
    row's lock makes the check hold until the delete commits."""
    network = Network.objects.select_for_update().get(pk=network.pk)
    if network.ports.exists():
        raise Conflict(
            f"Unable to complete operation on network {network.pk}. "
            "There are one or more ports still in use on the network.",
            type="NetworkInUse",
        )
    _refuse_held([network.pk], f"Unable to complete operation on network {network.pk}", "Network")
    try:
        Subnet.objects.filter(network=network).delete()
        network.delete()
    except ProtectedError as error:
        # Raised before any row is deleted; the subnets come back with the
        # rollback this exception causes.
        raise Conflict(
            f"Unable to complete operation on network {network.pk}. It is still in use by "
            f"{in_use_by(error)}.",
            type="NetworkInUse",
        ) from None


# --- segments -----------------------------------------------------------------


def _parse_ranges(specs: list[str]) -> dict[str, list[range]]:
    ranges: dict[str, list[range]] = {}
    for spec in specs:
        physnet, low, high = spec.split(":")
        ranges.setdefault(physnet, []).append(range(int(low), int(high) + 1))
    return ranges


# Concurrent creates read the same free ids: each takes a random one of
# the first few (as Neutron's allocator does), so they rarely pick alike,
# and the one that loses on the unique constraint picks again.
SEGMENT_CANDIDATES = 64
SEGMENT_ATTEMPTS = 8


def _free_ids(ranges: list[range], used: set[int], count: int) -> list[int]:
    return list(itertools.islice((n for r in ranges for n in r if n not in used), count))


def _free_segmentation_id(network_type: str, physical_network: str, lost: set[int]) -> int:
    """A free id of the type's range, other than ``lost`` (ids another
    create took while this one was picking)."""
    if network_type == NetworkType.VLAN:
        ranges = _parse_ranges(settings.BERTH_VLAN_RANGES).get(physical_network, [])
        used = Segment.objects.filter(network_type="vlan", physical_network=physical_network)
        where = f"physical network {physical_network}"
    else:
        low, high = settings.BERTH_VNI_RANGE.split(":")
        ranges = [range(int(low), int(high) + 1)]
        used = Segment.objects.filter(network_type="vxlan")
        where = "the VXLAN VNI range"
    taken = set(used.values_list("segmentation_id", flat=True)) | lost
    free = _free_ids(ranges, taken, SEGMENT_CANDIDATES)
    if not free:
        raise Conflict(
            f"Unable to create the network. No tenant network is available in {where}.",
            type="NoNetworkAvailable",
        )
    return _rng.choice(free)


def _validate_segment(network_type: str, physical_network: str, segmentation_id: int | None):
    if network_type not in NetworkType.values:
        raise Invalid(
            f"Invalid input for network_type: {shown(network_type)} is not {one_of(NetworkType)}."
        )
    if network_type == NetworkType.VXLAN:
        if physical_network:
            raise Invalid("Invalid input: a vxlan segment has no physical_network.")
        if segmentation_id is not None and not 1 <= segmentation_id < 2**24:
            raise Invalid(f"Invalid input: VNI {segmentation_id} is outside 1..16777215.")
        return
    if not physical_network:
        raise Invalid(f"Invalid input: a {network_type} segment needs a physical_network.")
    if network_type == NetworkType.FLAT and segmentation_id is not None:
        raise Invalid("Invalid input: a flat segment has no segmentation_id.")
    if (
        network_type == NetworkType.VLAN
        and segmentation_id is not None
        and not (1 <= segmentation_id <= 4094)
    ):
        raise Invalid(f"Invalid input: VLAN id {segmentation_id} is outside 1..4094.")


def segment_create(
    *,
    network: Network,
    network_type: str,
    physical_network: str = "",
    segmentation_id: int | None = None,
    name: str = "",
    description: str = "",
) -> Segment:
    physical_network = physical_network or ""
    _validate_segment(network_type, physical_network, segmentation_id)
    # Only an id berth picks is picked again after losing a race: an id the
    # caller asked for that is taken is the caller's conflict.
    picks = segmentation_id is None and network_type != NetworkType.FLAT
    lost: set[int] = set()
    for _ in range(SEGMENT_ATTEMPTS if picks else 1):
        if picks:
            segmentation_id = _free_segmentation_id(network_type, physical_network, lost)
        try:
            with transaction.atomic():
                return Segment.objects.create(
                    network=network,
                    network_type=network_type,
                    physical_network=physical_network,
                    segmentation_id=segmentation_id,
                    name=name,
                    description=description,
                )
        except IntegrityError:
            lost.add(segmentation_id)
    raise _segmentation_id_in_use(network_type, physical_network, segmentation_id)


def _segmentation_id_in_use(network_type: str, physical_network: str, segmentation_id) -> Conflict:
    if network_type == NetworkType.VLAN:
        return Conflict(
            f"Unable to create the network. The VLAN {segmentation_id} on physical "
            f"network {physical_network} is in use.",
            type="VlanIdInUse",
        )
    if network_type == NetworkType.FLAT:
        return Conflict(
            f"Unable to create the flat network. Physical network {physical_network} is in use.",
            type="FlatNetworkInUse",
        )
    return Conflict(
        f"Unable to create the network. The VNI {segmentation_id} is in use.",
        type="TunnelIdInUse",
    )


@transaction.atomic
def segment_update(
    *, segment: Segment, name: str | None = None, description: str | None = None
) -> Segment:
    """Only the labels change: what a segment is stays as it was created."""
    segment = Segment.objects.select_for_update().get(pk=segment.pk)
    if name is not None:
        segment.name = name
    if description is not None:
        segment.description = description
    segment.save()
    return segment


def _segment_in_use(segment: Segment, reason: str, ids) -> Conflict:
    return Conflict(
        f"Segment '{segment.pk}' cannot be deleted: {reason} {', '.join(map(str, ids))}.",
        type="SegmentInUse",
    )


@transaction.atomic
def segment_delete(*, segment: Segment) -> None:
    """Refused (SegmentInUse, as Neutron) while subnets are on the segment
    or ports are bound through it. The network's row lock is the one
    subnet_create takes before it puts a subnet on a segment."""
    Network.objects.select_for_update().filter(pk=segment.network_id).first()
    subnets = list(segment.subnets.values_list("pk", flat=True))
    if subnets:
        raise _segment_in_use(segment, "The segment is still associated with subnet(s)", subnets)
    bound = selectors.ports_bound_through(segment=segment)
    if bound:
        raise _segment_in_use(segment, "The segment is still bound with port(s)", bound)
    segment.delete()


# --- subnets ------------------------------------------------------------------

UNSET = object()


@transaction.atomic
def subnet_create(
    *,
    project: Project,
    network: Network,
    cidr: str,
    ip_version: int | None = None,
    segment: Segment | None = None,
    gateway_ip=UNSET,
    allocation_pools: list[dict] | None = None,
    **fields,
) -> Subnet:
    prefix = ipam.parse_cidr(cidr, ip_version)
    if segment is not None and segment.network_id != network.pk:
        raise Invalid(f"Segment {segment.pk} is not a segment of network {network.pk}.")
    # The network row serialises subnet creation on it: the overlap and the
    # all-or-none-on-segments rules read the sibling subnets.
    Network.objects.select_for_update().filter(pk=network.pk).first()
    siblings = list(network.subnets.all())
    if siblings and any(s.segment_id is None for s in siblings) != (segment is None):
        raise Invalid(
            "Invalid input: the subnets of a network are either all on segments or none are "
            f"(network {network.pk})."
        )
    for sibling in siblings:
        if netaddr.IPNetwork(sibling.cidr) in prefix or prefix in netaddr.IPNetwork(sibling.cidr):
            raise Invalid(
                f"Invalid input: {prefix} overlaps with subnet {sibling.pk} ({sibling.cidr})."
            )
    gateway = _parse_gateway(prefix, gateway_ip)
    pools = (
        ipam.parse_pools(allocation_pools, prefix, gateway)
        if allocation_pools
        else ipam.default_pools(prefix, gateway)
    )
    quota_enforce(project=project, requested={"subnet": 1})
    return Subnet.objects.create(
        project=project,
        network=network,
        segment=segment,
        cidr=str(prefix),
        ip_version=prefix.version,
        gateway_ip=str(gateway) if gateway is not None else None,
        allocation_pools=pools,
        **fields,
    )


def _parse_gateway(prefix: netaddr.IPNetwork, raw) -> netaddr.IPAddress | None:
    if raw is UNSET:
        return ipam.default_gateway(prefix)
    if raw in (None, ""):
        return None
    gateway = ipam.parse_ip(raw, field="gateway_ip")
    if gateway not in prefix or gateway in ipam.reserved_addresses(prefix):
        raise Invalid(f"Invalid input: gateway {gateway} is not a usable address of {prefix}.")
    return gateway


@transaction.atomic
def subnet_update(*, subnet: Subnet, gateway_ip=UNSET, allocation_pools=None, **fields) -> Subnet:
    subnet = Subnet.objects.select_for_update().get(pk=subnet.pk)
    prefix = netaddr.IPNetwork(subnet.cidr)
    if gateway_ip is not UNSET:
        gateway = _parse_gateway(prefix, gateway_ip)
        subnet.gateway_ip = str(gateway) if gateway is not None else None
    gateway = netaddr.IPAddress(subnet.gateway_ip) if subnet.gateway_ip else None
    if allocation_pools is not None:
        subnet.allocation_pools = ipam.parse_pools(allocation_pools, prefix, gateway)
    elif gateway_ip is not UNSET:
        ipam.parse_pools(subnet.allocation_pools, prefix, gateway)
    for name, value in fields.items():
        setattr(subnet, name, value)
    subnet.revision_number += 1
    subnet.save()
    return subnet


@transaction.atomic
def subnet_delete(*, subnet: Subnet) -> None:
    # FOR UPDATE waits for allocations in flight (they share the row).
    subnet = Subnet.objects.select_for_update().get(pk=subnet.pk)
    if subnet.allocations.exists():
        raise Conflict(
            f"Unable to complete operation on subnet {subnet.pk}: one or more ports have an IP "
            "allocation from this subnet.",
            type="SubnetInUse",
        )
    _refuse_held(
        [subnet.network_id],
        f"Unable to complete operation on subnet {subnet.pk}",
        "Subnet",
        subnet=subnet,
    )
    subnet.delete()


def _refuse_held(network_ids: list, what: str, kind: str, subnet: Subnet | None = None) -> None:
    """A network or subnet with addresses a lease holds now or later stays."""
    holds = AddressHold.objects.filter(subnet__network_id__in=network_ids)
    if subnet is not None:
        holds = holds.filter(subnet=subnet)
    if holds.filter(end_at__gt=timezone.now()).exists():
        raise Conflict(
            f"{what}: one or more of its IP addresses are held by a lease.", type=f"{kind}InUse"
        )


# --- IP allocation --------------------------------------------------------------


def _exhausted(subnets: list[Subnet]) -> Conflict:
    network_id = subnets[0].network_id
    segments = sorted({str(s.segment_id) for s in subnets if s.segment_id})
    where = f" segment {', '.join(segments)}" if segments else ""
    return Conflict(
        f"No more IP addresses available on network {network_id}{where}.",
        type="IpAddressGenerationFailure",
    )


def _taken(subnet_id, addresses: list[str]) -> set[str]:
    """Of ``addresses``, those a port has or a lease holds from now on."""
    if not addresses:
        return set()
    found = IPAllocation.objects.filter(subnet_id=subnet_id, address__in=addresses)
    held = AddressHold.objects.filter(
        subnet_id=subnet_id, address__in=addresses, end_at__gt=timezone.now()
    )
    return {
        str(address)
        for address in found.order_by()
        .values_list("address", flat=True)
        .union(held.order_by().values_list("address", flat=True))
    }


def _pick_free_address(subnet_id, pools: list[dict], skip: set[str]) -> str | None:
    """A free address of the pools, other than ``skip`` (lost races).

    Random candidates first: one query nearly always finds a free address
    and concurrent allocators rarely collide. A pool too full for that is
    walked in order, which also proves exhaustion."""
    candidates = [c for c in ipam.random_candidates(pools, 16, _rng) if c not in skip]
    taken = _taken(subnet_id, candidates)
    free = [c for c in candidates if c not in taken]
    if free:
        return free[0]
    for chunk in ipam.addresses_in_order(pools, 1024):
        taken = _taken(subnet_id, chunk) | skip
        free = [c for c in chunk if c not in taken]
        if free:
            return free[0]
    return None


def _check_fixed_address(subnet: Subnet, address: netaddr.IPAddress) -> None:
    prefix = netaddr.IPNetwork(subnet.cidr)
    if address not in prefix:
        raise Invalid(f"IP address {address} is not a valid IP for subnet {subnet.pk} ({prefix}).")
    if address in ipam.reserved_addresses(prefix) or str(address) == subnet.gateway_ip:
        raise Invalid(f"IP address {address} is reserved in subnet {subnet.pk}.")


def _allocate(
    *, port: Port, subnet: Subnet, address: str | None, holder=None
) -> IPAllocation | None:
    """The requested address, or a free one from the pools; None when the
    pools are exhausted (no exception: callers may try another subnet in the
    same transaction). A port of ``holder`` (a lease's reservation) takes
    an address the holder holds now first; no port takes one another
    holder holds."""
    with transaction.atomic(savepoint=False):
        if address is not None:
            locked = Subnet.objects.select_for_update().get(pk=subnet.pk)
            wanted = ipam.parse_ip(address)
            _check_fixed_address(locked, wanted)
            inserted = queries.address_insert(
                port=port, subnet_id=subnet.pk, address=str(wanted), holder=holder
            )
            own = selectors.address_holder_now(
                subnet_id=subnet.pk, address=str(wanted), project_id=port.project_id
            )
            if inserted is None and own is not None and own != holder:
                # An address its project's lease holds now: the port takes
                # it for that lease (how a held floating-style address is used).
                inserted = queries.address_insert(
                    port=port, subnet_id=subnet.pk, address=str(wanted), holder=own
                )
            if inserted is None:
                used = IPAllocation.objects.filter(subnet=subnet, address=str(wanted)).exists()
                raise Conflict(
                    f"Unable to complete operation for network {locked.network_id}. The IP "
                    f"address {wanted} is " + ("in use." if used else "held by a lease."),
                    type="IpAddressAlreadyAllocated",
                )
            return IPAllocation(pk=inserted, port=port, subnet=locked, address=str(wanted))
        # Automatic picks share the subnet's row: they run side by side,
        # and the unique constraint settles two picking one address (the
        # loser picks again). Straight to the insert: in a pool that is not
        # nearly full a random address is almost always free, and the
        # unique constraint says when it is not. The first pick takes the
        # share lock in its insert and counts only while the pools are
        # those read with the subnet: one statement in all.
        held = (
            selectors.addresses_held_now(
                holder=holder, subnet_id=subnet.pk, project_id=port.project_id
            )
            if holder
            else []
        )
        first = (held + ipam.random_candidates(subnet.allocation_pools, 1, _rng))[:1]
        for picked in first:
            inserted = queries.address_insert(
                port=port,
                subnet_id=subnet.pk,
                address=picked,
                holder=holder,
                pools=subnet.allocation_pools,
            )
            if inserted is not None:
                return IPAllocation(pk=inserted, port=port, subnet=subnet, address=picked)
        # Taken, or the pools changed: the pools as they are, under the lock.
        pools = queries.subnet_pools_shared(subnet_id=subnet.pk)
        if pools is None:  # the subnet was deleted meanwhile: no address here
            return None
        lost: set[str] = set(first) if pools == subnet.allocation_pools else set()
        for picked in held + ipam.random_candidates(pools, 3, _rng):
            if picked in lost:
                continue
            inserted = queries.address_insert(
                port=port, subnet_id=subnet.pk, address=picked, holder=holder
            )
            if inserted is not None:
                return IPAllocation(pk=inserted, port=port, subnet=subnet, address=picked)
            lost.add(picked)
        # A pool that full: check candidates in bulk, then walk it in order,
        # which also proves exhaustion.
        while (picked := _pick_free_address(subnet.pk, pools, lost)) is not None:
            inserted = queries.address_insert(
                port=port, subnet_id=subnet.pk, address=picked, holder=holder
            )
            if inserted is not None:
                return IPAllocation(pk=inserted, port=port, subnet=subnet, address=picked)
            lost.add(picked)
        return None


def ip_allocate(*, port: Port, subnet: Subnet, address: str | None = None) -> IPAllocation:
    """One address of the subnet for the port: the requested one if free,
    else a free one from the pools. Raises Conflict when none is left."""
    allocation = _allocate(port=port, subnet=subnet, address=address)
    if allocation is None:
        raise _exhausted([subnet])
    return allocation


def _allocate_from_any(*, port: Port, subnets: list[Subnet], holder=None) -> IPAllocation:
    """An address from the first of ``subnets`` that has one left."""
    for subnet in subnets:
        allocation = _allocate(port=port, subnet=subnet, address=None, holder=holder)
        if allocation is not None:
            return allocation
    raise _exhausted(subnets)


def _allocate_per_version(*, port: Port, subnets: list[Subnet], holder=None) -> None:
    """One address of each IP version the subnets offer."""
    for version in (4, 6):
        candidates = [s for s in subnets if s.ip_version == version]
        if candidates:
            _allocate_from_any(port=port, subnets=candidates, holder=holder)


def _check_fixed_ips_count(fixed_ips: list[dict] | None) -> None:
    """Neutron's max_fixed_ips_per_port, checked before anything is written.
    It is the only bound on addresses: there is no address quota (as in
    Neutron), the port quota times this limit caps what a project holds."""
    if fixed_ips is not None and len(fixed_ips) > settings.BERTH_MAX_FIXED_IPS_PER_PORT:
        raise Invalid("Invalid input for operation: Exceeded maximum amount of fixed ips per port.")


def port_fixed_ips_authorize(
    *, context: RequestContext, network: Network, fixed_ips: list[dict] | None
) -> None:
    """Neutron's policy create_port:fixed_ips:ip_address (and update_port's):
    only an admin or the network's owner picks an address. Anyone else on a
    shared network gets one from the pool, so a member cannot squat the
    addresses others' ports or the owner's plan rely on; naming only the
    subnet (rule:shared) stays allowed."""
    if context.is_admin or network.project_id == context.project_id:
        return
    if any(request.get("ip_address") is not None for request in fixed_ips or []):
        raise Forbidden(
            f"Only an admin or the owner of network {network.pk} can choose a fixed IP "
            "address on it; leave ip_address out to get one from the pool."
        )


def _assign_fixed_ips(*, port: Port, requests: list[dict]) -> None:
    subnets = {s.id: s for s in port.network.subnets.all()}
    for request in requests:
        subnet_id, address = request.get("subnet_id"), request.get("ip_address")
        if subnet_id is not None:
            subnet = subnets.get(subnet_id)
            if subnet is None:
                raise Invalid(f"Subnet {subnet_id} is not a subnet of network {port.network_id}.")
        elif address is not None:
            wanted = ipam.parse_ip(address)
            subnet = next(
                (s for s in subnets.values() if wanted in netaddr.IPNetwork(s.cidr)), None
            )
            if subnet is None:
                raise Invalid(
                    f"IP address {address} is not in any subnet of network {port.network_id}."
                )
        else:
            raise Invalid("Invalid input for fixed_ips: each needs subnet_id or ip_address.")
        ip_allocate(port=port, subnet=subnet, address=address)


# --- address holds ------------------------------------------------------------
#
# A lease holds addresses with its hosts (reservations.allocation). The
# subnets' rows are locked FOR UPDATE while holds are taken or moved: that
# waits for the ports picking addresses there (FOR SHARE) and makes them
# wait, so a hold never takes an address a port is being given.


def _lock_subnets(subnet_ids) -> None:
    rows = Subnet.objects.select_for_update().filter(pk__in=list(subnet_ids))
    list(rows.order_by("pk").values("pk"))


def _out_of_addresses(count: int, found: int, subnets: list[Subnet]) -> Conflict:
    where = ", ".join(sorted({str(s.segment_id or s.pk) for s in subnets}))
    return Conflict(
        f"Not enough IP addresses available: {count} needed on {where}, {found} free.",
        type="IpAddressGenerationFailure",
    )


def _free_over(subnet: Subnet, start: datetime, end: datetime, count: int) -> list[str]:
    """Up to ``count`` addresses of the subnet's pools, lowest first, that
    no port has and no hold takes during [start, end). One query: the
    taken addresses of the subnet, the few a pool's walk must skip."""
    used = IPAllocation.objects.filter(subnet=subnet).order_by()
    held = AddressHold.objects.filter(subnet=subnet, start_at__lt=end, end_at__gt=start)
    taken = {
        str(a)
        for a in used.values_list("address", flat=True).union(
            held.order_by().values_list("address", flat=True)
        )
    }
    found: list[str] = []
    for chunk in ipam.addresses_in_order(subnet.allocation_pools, 256):
        found += [a for a in chunk if a not in taken][: count - len(found)]
        if len(found) == count:
            break
    return found


def _requested_addresses(subnets: list[Subnet], addresses: list[str], start, end) -> list:
    """(subnet, address) for each address asked for by name: in one of the
    subnets, neither reserved nor a port's nor held during [start, end)."""
    picked = []
    for text in addresses:
        wanted = ipam.parse_ip(text, field="required_floatingips")
        subnet = next((s for s in subnets if wanted in netaddr.IPNetwork(s.cidr)), None)
        if subnet is None:
            raise Invalid(
                f"Invalid input for field 'required_floatingips': {wanted} is in no subnet "
                "of the network."
            )
        _check_fixed_address(subnet, wanted)
        if not _free_over_one(subnet, str(wanted), start, end):
            raise Conflict(f"IP address {wanted} is in use or held during the lease.")
        picked.append((subnet, str(wanted)))
    return picked


def _free_over_one(subnet: Subnet, address: str, start, end) -> bool:
    used = IPAllocation.objects.filter(subnet=subnet, address=address)
    held = AddressHold.objects.filter(
        subnet=subnet, address=address, start_at__lt=end, end_at__gt=start
    )
    return not used.exists() and not held.exists()


def address_holds_take(
    *,
    holder,
    project: Project,
    subnets: list[Subnet],
    start: datetime,
    end: datetime,
    count: int = 0,
    addresses: list[str] | None = None,
) -> list[AddressHold]:
    """Hold for ``holder`` over [start, end) the ``addresses`` named, or
    ``count`` free ones of the subnets (the first subnets first): all of
    them or none (Conflict IpAddressGenerationFailure)."""
    with transaction.atomic():
        _lock_subnets(s.pk for s in subnets)
        if addresses is not None:
            picked = _requested_addresses(subnets, addresses, start, end)
        else:
            picked = []
            for subnet in subnets:
                if len(picked) == count:
                    break
                free = _free_over(subnet, start, end, count - len(picked))
                picked += [(subnet, address) for address in free]
            if len(picked) < count:
                raise _out_of_addresses(count, len(picked), subnets)
        try:
            with transaction.atomic():
                return AddressHold.objects.bulk_create(
                    AddressHold(
                        subnet=subnet,
                        address=address,
                        holder=holder,
                        project=project,
                        start_at=start,
                        end_at=end,
                    )
                    for subnet, address in picked
                )
        except IntegrityError:
            # The exclusion constraint caught an overlap the lock should
            # have prevented (a row written outside this service).
            raise _out_of_addresses(len(picked), 0, subnets) from None


def address_holds_move(*, holder, end: datetime, start: datetime | None = None) -> bool:
    """The holder's holds over a new window (the start kept if None): False,
    with nothing changed, when another hold takes one of them then."""
    with transaction.atomic():
        holds = AddressHold.objects.filter(holder=holder)
        _lock_subnets(set(holds.values_list("subnet_id", flat=True)))
        window_start = start if start is not None else holds.aggregate(m=Min("start_at"))["m"]
        if window_start is None:
            return True
        clash = AddressHold.objects.filter(
            subnet=OuterRef("subnet"),
            address=OuterRef("address"),
            start_at__lt=end,
            end_at__gt=window_start,
        ).exclude(holder=holder)
        if holds.filter(Exists(clash)).exists():
            return False
        changes = {"end_at": end} if start is None else {"start_at": start, "end_at": end}
        holds.update(**changes)
        return True


def address_holds_release(*, holder, at: datetime) -> None:
    """End the holder's holds at ``at``; those that had not started go."""
    holds = AddressHold.objects.filter(holder=holder)
    holds.filter(start_at__gte=at).delete()
    holds.filter(end_at__gt=at).update(end_at=at)


def address_holds_drop(*, holder) -> None:
    AddressHold.objects.filter(holder=holder).delete()


# --- ports --------------------------------------------------------------------


def _mac_in_use(network: Network, mac: str) -> Conflict:
    return Conflict(
        f"Unable to complete operation for network {network.pk}. The mac address {mac} is in use.",
        type="MacAddressInUse",
    )


def _mac_taken(network_id, mac: str) -> bool:
    return Port.objects.filter(network_id=network_id, mac_address=mac).exists()


# Random MACs tried before giving up (Neutron's mac_generation_retries).
MAC_TRIES = 16


def port_create(
    *,
    project: Project,
    network: Network,
    mac_address: str | None = None,
    fixed_ips: list[dict] | None = None,
    binding_host: str = "",
    holder=None,
    **fields,
) -> Port:
    """A port on the network. Without fixed_ips it gets one address per IP
    version at once, or none until it is bound if the network is routed
    (the address must come from the segment of the host it lands on);
    one ``holder`` (a lease's reservation) holds, if any.

    The MAC is the user's or a random one; the unique constraint on
    (network, MAC) says whether it is free, so a port costs no lookup of
    its MAC: only a refused one is looked up, to tell a taken MAC from
    another integrity error, and a random one is then drawn again."""
    _check_fixed_ips_count(fixed_ips)
    given = ipam.parse_mac(mac_address) if mac_address else None
    for _ in range(1 if given else MAC_TRIES):
        mac = given or ipam.random_mac(settings.BERTH_MAC_BASE, _rng)
        try:
            return _port_create(
                project=project,
                network=network,
                mac=mac,
                fixed_ips=fixed_ips,
                binding_host=binding_host,
                holder=holder,
                **fields,
            )
        except IntegrityError:
            if not _mac_taken(network.pk, mac):
                raise
            if given:
                raise _mac_in_use(network, mac) from None
    raise Conflict(
        f"Unable to generate a unique MAC address on network {network.pk}.",
        type="MacAddressGenerationFailure",
    )


@transaction.atomic
def _port_create(
    *, project: Project, network: Network, mac: str, fixed_ips, binding_host: str, holder, **fields
) -> Port:
    """port_create with its MAC, all or nothing (a savepoint inside the
    caller's transaction, which a refused MAC rolls back to)."""
    quota_enforce(project=project, requested={"port": 1})
    subnets = selectors.network_subnets(network_id=network.pk)
    mode = _allocation_mode(subnets, fixed_ips)
    port = Port.objects.create(
        project=project, network=network, mac_address=mac, ip_allocation=mode, **fields
    )
    if fixed_ips:
        _assign_fixed_ips(port=port, requests=fixed_ips)
    elif mode == IpAllocationMode.IMMEDIATE:
        _allocate_per_version(port=port, subnets=subnets, holder=holder)
    if binding_host:
        port = port_bind(port=port, host=binding_host, holder=holder)
    return port


def _allocation_mode(subnets: list[Subnet], fixed_ips) -> str:
    """When a new port gets its addresses: never (``fixed_ips`` empty), at
    bind (a routed network, nothing asked), or now."""
    if fixed_ips == []:
        return IpAllocationMode.NONE
    if fixed_ips is None and any(s.segment_id for s in subnets):
        return IpAllocationMode.DEFERRED
    return IpAllocationMode.IMMEDIATE


@transaction.atomic
def ports_create(*, project: Project, network: Network, ports: list[dict], holder=None) -> list:
    """Ports on the network, all or none (a savepoint), each as port_create
    makes one with a random MAC and no fixed IPs asked; ``ports`` gives
    each one's other fields. What a batch of builds asks for: the quota,
    the subnets and the insert are one statement each, whatever their
    number (each port's addresses, if it gets them now, are its own). A
    MAC drawn twice on the network raises IntegrityError: the caller then
    makes them one by one, with port_create."""
    quota_enforce(project=project, requested={"port": len(ports)})
    subnets = selectors.network_subnets(network_id=network.pk)
    mode = _allocation_mode(subnets, None)
    made = Port.objects.bulk_create(
        Port(
            project=project,
            network=network,
            mac_address=ipam.random_mac(settings.BERTH_MAC_BASE, _rng),
            ip_allocation=mode,
            **fields,
        )
        for fields in ports
    )
    if mode == IpAllocationMode.IMMEDIATE:
        for port in made:
            _allocate_per_version(port=port, subnets=subnets, holder=holder)
    return made


@transaction.atomic
def port_update(
    *,
    port: Port,
    fixed_ips: list[dict] | None = None,
    mac_address: str | None = None,
    binding_host: str | None = None,
    **fields,
) -> Port:
    _check_fixed_ips_count(fixed_ips)
    port = Port.objects.select_for_update().get(pk=port.pk)
    if mac_address is not None:
        mac = ipam.parse_mac(mac_address)
        if mac != port.mac_address:
            if port.binding_host:
                raise Conflict(
                    f"Unable to complete operation on port {port.pk}: the MAC address of a "
                    "bound port cannot change.",
                    type="PortBound",
                )
            if _mac_taken(port.network_id, mac):
                raise _mac_in_use(port.network, mac)
            port.mac_address = mac
    rebind = "binding_vnic_type" in fields and fields["binding_vnic_type"] != port.binding_vnic_type
    for name, value in fields.items():
        setattr(port, name, value)
    port.revision_number += 1
    port.save()
    if fixed_ips is not None:
        port.fixed_ips.all().delete()
        port.ip_allocation = IpAllocationMode.IMMEDIATE if fixed_ips else IpAllocationMode.NONE
        port.save(update_fields=["ip_allocation"])
        _assign_fixed_ips(port=port, requests=fixed_ips)
    if binding_host == "":
        return port_unbind(port=port)
    # As ML2: a new host, a new vnic type or a binding that failed before
    # (the host may have reported since) is bound again.
    failed = port.binding_vif_type == VifType.BINDING_FAILED
    if binding_host is not None and (binding_host != port.binding_host or rebind or failed):
        return port_bind(port=port, host=binding_host)
    if (rebind or failed) and port.binding_host:
        return port_bind(port=port, host=port.binding_host)
    return port


@transaction.atomic
def port_delete(*, port: Port) -> None:
    # Its IP allocations go with it (cascade), freeing the addresses.
    Port.objects.filter(pk=port.pk).delete()


def _addresses_on(
    port: Port, segment: Segment, subnets: list[Subnet], current: list, holder
) -> bool:
    """Give a routed-network port its addresses from ``segment`` (whose
    ``subnets`` are given): keep ones already there, re-request ones on
    another segment (the port moved). False, with nothing changed, when the
    segment has no address left; a fixed IP the user asked for cannot move
    (Conflict). The new addresses are taken before the old ones are let go,
    so a failure needs no savepoint to undo."""
    if current and all(a.subnet.segment_id == segment.pk for a in current):
        return True
    if current and port.ip_allocation != IpAllocationMode.DEFERRED:
        address = current[0]
        raise Conflict(
            f"Fixed IP {address.address} of port {port.pk} is on segment "
            f"{address.subnet.segment_id}, which the host does not reach.",
            type="HostNotCompatibleWithFixedIps",
        )
    taken = []
    for version in (4, 6):
        candidates = [s for s in subnets if s.segment_id == segment.pk and s.ip_version == version]
        found = next(
            (
                a
                for a in (
                    _allocate(port=port, subnet=s, address=None, holder=holder) for s in candidates
                )
                if a
            ),
            None,
        )
        if candidates and found is None:
            IPAllocation.objects.filter(pk__in=[a.pk for a in taken]).delete()
            return False
        taken += [found] if found else []
    IPAllocation.objects.filter(pk__in=[a.pk for a in current]).delete()
    return True


def _segments_for(
    port: Port, host: binding.HostView | None, subnets: list[Subnet], current: list
) -> list[Segment]:
    """The network's segments the host reaches, in order. On a routed
    network only segments with subnets can give the port an address: those
    come with the subnets (read with their segments), the port's current
    one first (no needless re-addressing)."""
    with_subnets = {s.segment_id: s.segment for s in subnets if s.segment_id}
    if with_subnets:  # in the segments' own order (their model's)
        segments = sorted(with_subnets.values(), key=lambda s: (s.created_at, s.pk))
    else:
        segments = selectors.network_segments(network_id=port.network_id)
    if host is None:
        return segments
    reachable = [s for s in segments if host.reaches(s.network_type, s.physical_network)]
    here = {a.subnet.segment_id for a in current}
    reachable.sort(key=lambda s: s.pk not in here)
    return reachable


# What a bind changes on a port: its UPDATE leaves the rest alone.
BINDING_FIELDS = [
    "mac_address",
    "binding_host",
    "binding_vif_type",
    "binding_vif_details",
    "binding_profile",
    "binding_failure",
    "revision_number",
    "updated_at",
]


def port_bind(*, port: Port, host: str, holder=None, views: dict | None = None) -> Port:
    """Bind the port on the host: choose a segment the host reaches, give the
    port an address there if the network is routed (one ``holder``, a
    lease's reservation, holds there if any), and ask the drivers how to
    plug it. No driver fits -> vif_type binding_failed with the reason.

    Raises Conflict HostNotConnectedToAnySegment (routed network the host
    does not reach), MacAddressInUse (a baremetal NIC's MAC is taken) or
    IpAddressGenerationFailure (every reachable segment is out of
    addresses); the port is then left as it was. It runs in the caller's
    transaction, in which the caller locked the port's row or created it
    (port_update and port_attach lock it; the build pipeline locks its
    ports with the instance, in one statement). Nothing is written before
    the last check passed, so a caller that goes on after a Conflict needs
    no savepoint (two round trips on every build). ``views`` are hosts'
    reports as selectors.host_views read them, for callers that bind on
    several hosts (read here if not given)."""
    view = selectors.host_view(host=host) if views is None else views.get(host)
    subnets = selectors.network_subnets(network_id=port.network_id, bound_port=port.pk)
    routed = any(s.segment_id for s in subnets)
    current = (
        selectors.port_addresses(port_id=port.pk) if any(s.port_holds for s in subnets) else []
    )
    segments = _segments_for(port, view, subnets, current)
    if routed and (view is None or not segments):
        raise Conflict(
            f"Host {host} is not connected to any segments on routed provider network "
            f"{port.network_id}. It should be connected to one.",
            type="HostNotConnectedToAnySegment",
        )
    failures: list[str] = []
    exhausted = None
    chosen = None
    for segment in segments if view is not None else []:
        result = binding.bind(
            port_id=str(port.pk),
            mac=port.mac_address,
            vnic_type=port.binding_vnic_type,
            host=view,
            segment=selectors.segment_view(segment),
        )
        if isinstance(result, str):
            failures.append(result)
            continue
        # A baremetal NIC's MAC is checked before any address is taken.
        moves_mac = result.mac_address and result.mac_address != port.mac_address
        if moves_mac and _mac_taken(port.network_id, result.mac_address):
            raise _mac_in_use(port.network, result.mac_address)
        if routed and not _addresses_on(port, segment, subnets, current, holder):
            exhausted = _exhausted([s for s in subnets if s.segment_id == segment.pk])
            continue
        chosen = result
        break
    port.binding_host = host
    port.revision_number += 1
    if chosen is None:
        if exhausted is not None:
            raise exhausted
        reason = "; ".join(dict.fromkeys(failures)) or f"host {host} has not reported its networks"
        port.binding_vif_type = VifType.BINDING_FAILED
        port.binding_vif_details = {}
        port.binding_failure = f"binding failed on {host}: {reason}"
        port.save(update_fields=BINDING_FIELDS)
        return port
    port.mac_address = chosen.mac_address or port.mac_address
    port.binding_vif_type = chosen.vif_type
    port.binding_vif_details = chosen.vif_details
    port.binding_profile = {**port.binding_profile, **chosen.profile}
    port.binding_failure = ""
    port.save(update_fields=BINDING_FIELDS)
    return port


@transaction.atomic
def port_unbind(*, port: Port) -> Port:
    """Clear the binding, the device and the profile; keep the addresses."""
    Port.objects.filter(pk=port.pk).update(
        binding_host="",
        binding_vif_type=VifType.UNBOUND,
        binding_vif_details={},
        binding_profile={},
        binding_failure="",
        device_id="",
        device_owner="",
        status=PortStatus.DOWN,
        revision_number=F("revision_number") + 1,
        updated_at=timezone.now(),
    )
    return Port.objects.get(pk=port.pk)


# --- host agents ----------------------------------------------------------------


@dataclass
class HostNetworkReport:
    """What a host says it can plug."""

    host: str
    physnets: dict[str, dict] = field(default_factory=dict)  # name -> links
    vnic_types: list[str] = field(default_factory=lambda: [VnicType.NORMAL])
    datapath_type: str = "system"
    interface_types: list[str] = field(default_factory=list)
    ovs_hybrid_plug: bool = False
    bridge_name: str = "br-int"
    tunnel_types: list[str] = field(default_factory=lambda: [NetworkType.VXLAN])
    baremetal_nics: list[dict] = field(default_factory=list)


NIC_DEFAULTS = {"switch_id": "", "switch_port": "", "switch_info": ""}


@transaction.atomic
def host_agent_report(*, report: HostNetworkReport, now: datetime | None = None) -> HostAgent:
    """Upsert the host's capabilities; a repeated report is a heartbeat.
    Child rows are rewritten only when what they say changed."""
    unknown = set(report.vnic_types) - set(VnicType.values)
    if unknown:
        raise Invalid(f"Unknown vnic types {', '.join(sorted(unknown))}; use {one_of(VnicType)}.")
    nics = [
        {**NIC_DEFAULTS, **nic, "mac_address": ipam.parse_mac(nic["mac_address"])}
        for nic in report.baremetal_nics
    ]
    physnets = dict(report.physnets)
    for nic in nics:  # a baremetal NIC cabled to a physnet makes the host reach it
        physnets.setdefault(nic["physical_network"], {})
    agent, _ = HostAgent.objects.select_for_update().update_or_create(
        host=report.host,
        defaults={
            "datapath_type": report.datapath_type,
            "interface_types": sorted(report.interface_types),
            "ovs_hybrid_plug": report.ovs_hybrid_plug,
            "bridge_name": report.bridge_name,
            "tunnel_types": sorted(report.tunnel_types),
            "heartbeat_at": now or timezone.now(),
        },
    )
    wanted_physnets = {
        (
            name,
            links.get("bridge", ""),
            links.get("sriov_interface", ""),
            links.get("macvtap_interface", ""),
        )
        for name, links in physnets.items()
    }
    have_physnets = set(
        agent.physnets.values_list(
            "physical_network", "bridge", "sriov_interface", "macvtap_interface"
        )
    )
    if wanted_physnets != have_physnets:
        agent.physnets.all().delete()
        HostPhysnet.objects.bulk_create(
            HostPhysnet(
                agent=agent, physical_network=n, bridge=b, sriov_interface=s, macvtap_interface=m
            )
            for n, b, s, m in wanted_physnets
        )
    if set(report.vnic_types) != set(agent.vnic_types.values_list("vnic_type", flat=True)):
        agent.vnic_types.all().delete()
        HostVnicType.objects.bulk_create(
            HostVnicType(agent=agent, vnic_type=v) for v in set(report.vnic_types)
        )
    wanted_nics = {tuple(sorted(nic.items())) for nic in nics}
    have_nics = {
        tuple(sorted(nic.items()))
        for nic in agent.baremetal_nics.values(
            "mac_address", "physical_network", "switch_id", "switch_port", "switch_info"
        )
    }
    if wanted_nics != have_nics:
        agent.baremetal_nics.all().delete()
        try:
            with transaction.atomic():
                BaremetalNic.objects.bulk_create(BaremetalNic(agent=agent, **nic) for nic in nics)
        except IntegrityError:
            raise Conflict("A baremetal NIC MAC is already reported by another host.") from None
    return agent


@transaction.atomic
def host_agent_update(*, agent: HostAgent, admin_state_up: bool) -> HostAgent:
    """What an operator may change on an agent; the rest is the host's own
    report, which its next heartbeat would write again."""
    agent = HostAgent.objects.select_for_update().get(pk=agent.pk)
    agent.admin_state_up = admin_state_up
    agent.save(update_fields=["admin_state_up"])
    return agent


@transaction.atomic
def host_agent_delete(*, host: str) -> None:
    deleted, _ = HostAgent.objects.filter(host=host).delete()
    if not deleted:
        raise NotFound(f"Agent for host {host} could not be found.", type="AgentNotFound")


# --- for compute ------------------------------------------------------------------


def _in_use(port: Port) -> Conflict:
    return Conflict(f"Port {port.pk} is still in use.", type="PortInUse")


@transaction.atomic
def port_attach(*, port: Port, device_id: str, device_owner: str) -> Port:
    """Reserve the port for a device (an instance). Idempotent for the same
    device; Conflict if another device holds it."""
    port = Port.objects.select_for_update().get(pk=port.pk)
    if port.device_id == device_id:
        return port
    if port.device_id or port.binding_host:
        raise _in_use(port)
    port.device_id, port.device_owner = device_id, device_owner
    port.revision_number += 1
    port.save(update_fields=["device_id", "device_owner", "revision_number", "updated_at"])
    return port


def device_ports_set_status(*, device_id: str, host: str, status: str) -> None:
    """The status of the ports of a device bound on ``host`` (a server's,
    once its host plugged them)."""
    # One UPDATE: atomic on its own, no savepoint needed.
    Port.objects.filter(device_id=device_id, binding_host=host).update(
        status=status, updated_at=timezone.now()
    )
