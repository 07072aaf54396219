"""Mechanism drivers: how a port is plugged on a given host and segment.

Pure functions over what the host reported. Drivers are tried in a fixed
order and the first that can bind wins; each answers a Binding with an
explicit vif_type and vif_details (seed 004: the virt layer is told what to
do, it does not guess), or the reason it cannot.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from networking.models import Datapath, NetworkType, VifType, VnicType

VHOSTUSER_TYPES = {"dpdkvhostuser", "dpdkvhostuserclient"}
VHOSTUSER_SOCKET_DIR = "/var/run/openvswitch"


@dataclass(frozen=True)
class PhysnetLink:
    bridge: str = ""
    sriov_interface: str = ""
    macvtap_interface: str = ""


@dataclass(frozen=True)
class Nic:
    mac_address: str
    physical_network: str
    switch_id: str = ""
    switch_port: str = ""
    switch_info: str = ""


@dataclass(frozen=True)
class HostView:
    """A host's network capabilities, as reported."""

    host: str
    datapath_type: str = Datapath.SYSTEM
    interface_types: frozenset[str] = frozenset()
    ovs_hybrid_plug: bool = False
    bridge_name: str = "br-int"
    tunnel_types: frozenset[str] = frozenset()
    physnets: dict[str, PhysnetLink] = field(default_factory=dict)
    vnic_types: frozenset[str] = frozenset()
    baremetal_nics: tuple[Nic, ...] = ()

    def reaches(self, network_type: str, physical_network: str) -> bool:
        if network_type == NetworkType.VXLAN:
            return NetworkType.VXLAN in self.tunnel_types
        return physical_network in self.physnets


@dataclass(frozen=True)
class SegmentView:
    id: object
    network_type: str
    physical_network: str
    segmentation_id: int | None


@dataclass(frozen=True)
class Binding:
    driver: str
    vif_type: str
    vif_details: dict
    profile: dict = field(default_factory=dict)
    # Baremetal: the port takes the MAC of the host's NIC.
    mac_address: str | None = None


Driver = Callable[[str, str, HostView, SegmentView], Binding | str]


def _ovs(port_id: str, mac: str, host: HostView, segment: SegmentView) -> Binding | str:
    if (
        segment.network_type != NetworkType.VXLAN
        and not host.physnets.get(segment.physical_network, PhysnetLink()).bridge
    ):
        return f"no OVS bridge for physical network {segment.physical_network}"
    if host.datapath_type == Datapath.NETDEV and host.interface_types & VHOSTUSER_TYPES:
        # With the client type OVS connects to a socket QEMU serves, so the
        # guest survives an OVS restart.
        server = "dpdkvhostuserclient" in host.interface_types
        return Binding(
            "openvswitch",
            VifType.VHOSTUSER,
            {
                "port_filter": False,
                "vhostuser_socket": f"{VHOSTUSER_SOCKET_DIR}/vhu{port_id[:11]}",
                "vhostuser_mode": "server" if server else "client",
                "vhostuser_ovs_plug": True,
                "datapath_type": Datapath.NETDEV,
                "bridge_name": host.bridge_name,
                "connectivity": "l2",
            },
        )
    return Binding(
        "openvswitch",
        VifType.OVS,
        {
            "port_filter": True,
            "ovs_hybrid_plug": host.ovs_hybrid_plug,
            "datapath_type": host.datapath_type,
            "bridge_name": host.bridge_name,
            "connectivity": "l2",
        },
    )


def _vlan_tag(segment: SegmentView) -> int:
    return segment.segmentation_id if segment.network_type == NetworkType.VLAN else 0


def _sriov(port_id: str, mac: str, host: HostView, segment: SegmentView) -> Binding | str:
    link = host.physnets.get(segment.physical_network)
    if segment.network_type == NetworkType.VXLAN or link is None or not link.sriov_interface:
        return f"no SR-IOV physical function on physical network {segment.physical_network or '-'}"
    return Binding(
        "sriovnicswitch",
        VifType.HW_VEB,
        {
            "port_filter": False,
            "vlan": str(_vlan_tag(segment)),
            "physical_network": segment.physical_network,
            "physical_interface": link.sriov_interface,
            "connectivity": "l2",
        },
        profile={"physical_network": segment.physical_network},
    )


def _macvtap(port_id: str, mac: str, host: HostView, segment: SegmentView) -> Binding | str:
    link = host.physnets.get(segment.physical_network)
    if segment.network_type == NetworkType.VXLAN or link is None or not link.macvtap_interface:
        return f"no macvtap interface on physical network {segment.physical_network or '-'}"
    tag = _vlan_tag(segment)
    source = f"{link.macvtap_interface}.{tag}" if tag else link.macvtap_interface
    return Binding(
        "macvtap",
        VifType.MACVTAP,
        {
            "port_filter": False,
            "physical_interface": link.macvtap_interface,
            "physical_network": segment.physical_network,
            "macvtap_source": source,
            "macvtap_mode": "bridge",
            "vlan": str(tag),
        },
    )


def _baremetal(port_id: str, mac: str, host: HostView, segment: SegmentView) -> Binding | str:
    nics = [n for n in host.baremetal_nics if n.physical_network == segment.physical_network]
    if segment.network_type == NetworkType.VXLAN or not nics:
        return f"no baremetal NIC on physical network {segment.physical_network or '-'}"
    # A port pre-created for one of the node's NICs keeps that NIC.
    nic = next((n for n in nics if n.mac_address == mac), nics[0])
    return Binding(
        "baremetal",
        VifType.OTHER,
        {"connectivity": "l2"},
        profile={
            "local_link_information": [
                {
                    "switch_id": nic.switch_id,
                    "port_id": nic.switch_port,
                    "switch_info": nic.switch_info,
                }
            ]
        },
        mac_address=nic.mac_address,
    )


# Tried in this order; the first driver for the port's vnic type that can
# bind wins. (driver name, vnic types it handles, driver)
DRIVERS: list[tuple[str, set[str], Driver]] = [
    ("openvswitch", {VnicType.NORMAL}, _ovs),
    ("sriovnicswitch", {VnicType.DIRECT}, _sriov),
    ("macvtap", {VnicType.MACVTAP}, _macvtap),
    ("baremetal", {VnicType.BAREMETAL}, _baremetal),
]


def bind(
    *, port_id: str, mac: str, vnic_type: str, host: HostView, segment: SegmentView
) -> Binding | str:
    """The first driver's binding of the port on this host and segment, or
    why none could bind."""
    if vnic_type not in host.vnic_types:
        return f"host {host.host} does not support vnic {vnic_type}"
    if not host.reaches(segment.network_type, segment.physical_network):
        return f"host {host.host} does not reach segment {segment.id}"
    reasons = []
    for name, vnic_types, driver in DRIVERS:
        if vnic_type not in vnic_types:
            continue
        result = driver(port_id, mac, host, segment)
        if isinstance(result, Binding):
            return result
        reasons.append(f"{name}: {result}")
    if not reasons:
        return f"no driver supports vnic {vnic_type}"
    return "; ".join(reasons)
