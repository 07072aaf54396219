"""Factories for berth's worlds, each made by the service that makes the real
thing: a host by its report, a network by network_create and its subnets by
subnet_create, a reservable host by reservable_host_create. What a test gets
is what berth itself would have stored.

Traits name the shapes the tests need: ``HostFactory(dpdk=True)``,
``HostFactory(baremetal=True)``, ``HostFactory(reservable=True)``,
``NetworkFactory(two_racks=True, rack2_pool=2)``."""

import dataclasses

import factory

from compute import services as compute
from compute.models import Flavor, Host
from identity.auth import RequestContext
from identity.models import Project, Role
from networking import services as networking
from networking.models import HostAgent, Network, Segment, Subnet
from networking.services import HostNetworkReport
from reservations import services as reservations
from reservations.models import ReservableHost


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"project-{n}")


class ContextFactory(factory.Factory):
    """Who calls a service: an admin of a new project unless told otherwise."""

    class Meta:
        model = RequestContext

    user_id = "admin"
    project = factory.SubFactory(ProjectFactory)
    role = Role.ADMIN


# --- networks ---------------------------------------------------------------------


def vlan_segment(physnet: str, vlan: int, name: str = "") -> dict:
    return {
        "network_type": "vlan",
        "physical_network": physnet,
        "segmentation_id": vlan,
        "name": name,
    }


def _rack_subnet(rack: int, pool_size: int | None) -> dict:
    """Rack N's subnet 10.N.0.0/24; with a pool size, only that many
    addresses from 10.N.0.10 are allocatable."""
    subnet = {"segment": f"rack{rack}", "cidr": f"10.{rack}.0.0/24"}
    if pool_size is not None:
        end = f"10.{rack}.0.{10 + pool_size - 1}"
        subnet["allocation_pools"] = [{"start": f"10.{rack}.0.10", "end": end}]
    return subnet


class NetworkFactory(factory.Factory):
    """A network through network_create (one VXLAN segment unless
    ``segments`` says otherwise), then its ``subnets`` through subnet_create:
    each a dict of subnet_create's arguments, with the name of its segment
    under "segment"."""

    class Meta:
        model = Network

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"net-{n}")
    segments = None
    subnets = factory.LazyFunction(list)
    # Who creates it: an admin of its project (segments are an admin's to set).
    context = factory.LazyAttribute(lambda o: ContextFactory.build(project=o.project))

    class Params:
        # Addresses allocatable on each rack of a two_racks network, from
        # .10 up; None leaves the whole subnet to the allocator.
        rack1_pool = None
        rack2_pool = None
        # A routed network "routed" on two racks: segment rack1 (physnet1,
        # VLAN 101, 10.1.0.0/24) and rack2 (physnet2, VLAN 102, 10.2.0.0/24).
        two_racks = factory.Trait(
            name="routed",
            segments=[
                vlan_segment("physnet1", 101, "rack1"),
                vlan_segment("physnet2", 102, "rack2"),
            ],
            subnets=factory.LazyAttribute(
                lambda o: [_rack_subnet(1, o.rack1_pool), _rack_subnet(2, o.rack2_pool)]
            ),
        )
        # One VLAN segment (physnet1, VLAN 7) with 10.7.0.0/24.
        vlan = factory.Trait(
            segments=[vlan_segment("physnet1", 7)],
            subnets=[{"cidr": "10.7.0.0/24"}],
        )

    @classmethod
    def _create(cls, model_class, *, context, project, segments, subnets, **fields):
        network = networking.network_create(
            context=context, project=project, segments=segments, **fields
        )
        by_name = segments_by_name(network)
        for spec in subnets:
            spec = dict(spec)
            segment = by_name[spec.pop("segment")] if "segment" in spec else None
            networking.subnet_create(project=project, network=network, segment=segment, **spec)
        return network


def segments_by_name(network: Network) -> dict[str, Segment]:
    return {segment.name: segment for segment in network.segments.all()}


def subnets_by_segment(network: Network) -> dict[str, Subnet]:
    """The network's subnets by the name of their segment (one each)."""
    return {subnet.segment.name: subnet for subnet in network.subnets.select_related("segment")}


# --- hosts --------------------------------------------------------------------------


# A HostNetworkReport's fields as the host factories name them: its
# physnets are their ``links``.
NETWORK_REPORT_FIELDS = {
    "links" if f.name == "physnets" else f.name for f in dataclasses.fields(HostNetworkReport)
}


def _network_report(*, links: dict, **fields) -> HostNetworkReport:
    return HostNetworkReport(physnets=links, **fields)


class HostNetworkFactory(factory.Factory):
    """What a host reports it can plug (a HostNetworkReport); the base of
    HostAgentFactory and HostFactory. ``physnets`` lists the physical
    networks the host is cabled to, each on ``bridge`` (br-ex); ``links``
    gives the links outright instead. Traits:
    ``dpdk``: OVS on a netdev datapath with vhost-user interfaces;
    ``sriov``: vnic direct, with an SR-IOV function (ens1) on each physnet;
    ``baremetal``: vnic baremetal only, one NIC of MAC ``nic_mac`` (fixed,
    by default one of its own) on physnet1."""

    class Meta:
        abstract = True

    host = factory.Sequence(lambda n: f"host-{n}")
    links = factory.LazyAttribute(
        lambda o: {
            physnet: {"bridge": o.bridge}
            | ({"sriov_interface": o.sriov_interface} if o.sriov_interface else {})
            for physnet in o.physnets
        }
    )

    class Params:
        physnets = ["physnet1"]
        bridge = "br-ex"
        sriov_interface = ""
        nic_mac = factory.Sequence(lambda n: f"52:54:00:fa:{n // 256 % 256:02x}:{n % 256:02x}")
        dpdk = factory.Trait(
            datapath_type="netdev",
            interface_types=["dpdkvhostuser", "dpdkvhostuserclient"],
        )
        sriov = factory.Trait(vnic_types=["normal", "direct"], sriov_interface="ens1")
        baremetal = factory.Trait(
            physnets=[],
            vnic_types=["baremetal"],
            baremetal_nics=factory.LazyAttribute(
                lambda o: [{"mac_address": o.nic_mac, "physical_network": "physnet1"}]
            ),
        )


class HostAgentFactory(HostNetworkFactory):
    """A host's network agent as its report makes it, for networking alone
    (no compute host); ``now`` is when it reported (by default now)."""

    class Meta:
        model = HostAgent

    now = None

    @classmethod
    def _create(cls, model_class, *, now, **fields):
        return networking.host_agent_report(report=_network_report(**fields), now=now)


class ReservableHostFactory(factory.Factory):
    class Meta:
        model = ReservableHost

    host = factory.SubFactory("tests.factories.HostFactory")
    capabilities = factory.LazyFunction(dict)

    @classmethod
    def _create(cls, model_class, *, host, capabilities):
        return reservations.reservable_host_create(name=host.name, capabilities=capabilities)


class HostFactory(HostNetworkFactory):
    """A compute host as its report makes it (compute.services.host_report),
    8 vCPUs, 16 GB RAM, 200 GB disk on physnet1. Reporting a name again is
    the host's next report (a heartbeat that may change what it says).
    Besides the network traits: ``baremetal`` is also a whole node, and
    ``reservable`` puts the host in the reservable pool, with
    ``extra_capabilities``."""

    class Meta:
        model = Host

    name = factory.Sequence(lambda n: f"host-{n}")
    host = factory.SelfAttribute("name")
    vcpus = 8
    memory_mb = 16384
    disk_gb = 200
    # HostReport.baremetal, which the trait of that name sets.
    whole_node = factory.SelfAttribute("baremetal", default=False)

    class Params:
        extra_capabilities = factory.LazyFunction(dict)
        reservable = factory.Trait(
            reservable_host=factory.RelatedFactory(
                ReservableHostFactory,
                factory_related_name="host",
                capabilities=factory.SelfAttribute("..extra_capabilities"),
            )
        )

    @classmethod
    def _create(cls, model_class, *, whole_node, **fields):
        network = {k: fields.pop(k) for k in NETWORK_REPORT_FIELDS if k in fields}
        report = compute.HostReport(
            baremetal=whole_node,
            network=_network_report(**network),
            **fields,
        )
        return compute.host_report(report=report)


class FlavorFactory(factory.Factory):
    """A flavor through flavor_create; its id is its name."""

    class Meta:
        model = Flavor

    name = factory.Sequence(lambda n: f"flavor-{n}")
    id = factory.SelfAttribute("name")
    vcpus = 1
    ram = 1024
    disk = 10

    @classmethod
    def _create(cls, model_class, **fields):
        return compute.flavor_create(**fields)
