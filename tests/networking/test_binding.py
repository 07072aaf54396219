"""Mechanism drivers: explicit vif_type and vif_details per host, or why not."""

import pytest

from networking import selectors, services
from networking.binding import HostView, Nic, PhysnetLink, SegmentView, bind
from networking.models import Port
from tests.factories import HostAgentFactory, HostFactory, NetworkFactory

VLAN = SegmentView("seg-1", "vlan", "physnet1", 101)
FLAT = SegmentView("seg-2", "flat", "physnet1", None)
VXLAN = SegmentView("seg-3", "vxlan", "", 5001)


def host(**kwargs) -> HostView:
    defaults = {
        "host": "h1",
        "physnets": {"physnet1": PhysnetLink(bridge="br-ex")},
        "vnic_types": frozenset({"normal"}),
        "tunnel_types": frozenset({"vxlan"}),
    }
    return HostView(**{**defaults, **kwargs})


def do_bind(h, segment=VLAN, vnic="normal", mac="fa:16:3e:00:00:01"):
    return bind(port_id="0123456789abcdef", mac=mac, vnic_type=vnic, host=h, segment=segment)


def test_ovs_gives_explicit_details():
    result = do_bind(host(ovs_hybrid_plug=True))
    assert result.vif_type == "ovs"
    assert result.vif_details == {
        "port_filter": True,
        "ovs_hybrid_plug": True,
        "datapath_type": "system",
        "bridge_name": "br-int",
        "connectivity": "l2",
    }


def test_ovs_on_a_dpdk_host_is_vhostuser():
    result = do_bind(
        host(datapath_type="netdev", interface_types=frozenset({"dpdkvhostuserclient"}))
    )
    assert result.vif_type == "vhostuser"
    assert result.vif_details["vhostuser_mode"] == "server"
    assert result.vif_details["vhostuser_socket"] == "/var/run/openvswitch/vhu0123456789a"
    assert result.vif_details["datapath_type"] == "netdev"
    # netdev without the DPDK interface types is still plain ovs
    assert do_bind(host(datapath_type="netdev")).vif_type == "ovs"


def test_vxlan_needs_no_physnet_but_a_tunnel():
    assert do_bind(host(physnets={}), segment=VXLAN).vif_type == "ovs"
    assert "does not reach" in do_bind(host(tunnel_types=frozenset()), segment=VXLAN)


def test_sriov_direct_is_hw_veb_with_the_vlan():
    h = host(
        physnets={"physnet1": PhysnetLink(sriov_interface="ens1f0")},
        vnic_types=frozenset({"normal", "direct"}),
    )
    result = do_bind(h, vnic="direct")
    assert result.vif_type == "hw_veb"
    assert result.vif_details["vlan"] == "101"
    assert result.vif_details["physical_network"] == "physnet1"
    assert do_bind(h, segment=FLAT, vnic="direct").vif_details["vlan"] == "0"


def test_macvtap_uses_the_vlan_subinterface():
    h = host(
        physnets={"physnet1": PhysnetLink(macvtap_interface="eth1")},
        vnic_types=frozenset({"macvtap"}),
    )
    result = do_bind(h, vnic="macvtap")
    assert (result.vif_type, result.vif_details["macvtap_source"]) == ("macvtap", "eth1.101")


def test_baremetal_takes_the_nic_mac_and_link_information():
    nics = (
        Nic("52:54:00:00:00:01", "physnet2"),
        Nic("52:54:00:00:00:02", "physnet1", "sw1", "Eth1/2", "tor-a"),
    )
    h = host(baremetal_nics=nics, vnic_types=frozenset({"baremetal"}))
    result = do_bind(h, vnic="baremetal")
    assert result.vif_type == "other"
    assert result.mac_address == "52:54:00:00:00:02"
    assert result.profile["local_link_information"] == [
        {"switch_id": "sw1", "port_id": "Eth1/2", "switch_info": "tor-a"}
    ]


def test_failures_say_why():
    assert do_bind(host(), vnic="direct") == "host h1 does not support vnic direct"
    assert do_bind(host(physnets={"physnet9": PhysnetLink(bridge="x")})) == (
        "host h1 does not reach segment seg-1"
    )
    direct_only_ovs = host(vnic_types=frozenset({"direct"}))
    assert "sriovnicswitch: no SR-IOV physical function" in do_bind(direct_only_ovs, vnic="direct")
    no_bridge = host(physnets={"physnet1": PhysnetLink(sriov_interface="ens1")})
    assert do_bind(no_bridge) == "openvswitch: no OVS bridge for physical network physnet1"


# --- through the binding service, on hosts as their reports make them ---------------


def test_a_dpdk_hosts_ports_are_bound_as_vhost_user(db):
    network = NetworkFactory(two_racks=True)
    HostFactory(name="dpdk-1", physnets=["physnet1"], dpdk=True)
    port = services.port_create(project=network.project, network=network)
    services.port_bind(port=port, host="dpdk-1")
    bound = Port.objects.get(pk=port.pk)
    assert (bound.binding_host, bound.binding_vif_type) == ("dpdk-1", "vhostuser")
    assert bound.binding_vif_details == {
        "port_filter": False,
        "vhostuser_socket": f"/var/run/openvswitch/vhu{str(port.pk)[:11]}",
        # The host offers dpdkvhostuserclient: QEMU serves the socket.
        "vhostuser_mode": "server",
        "vhostuser_ovs_plug": True,
        "datapath_type": "netdev",
        "bridge_name": "br-int",
        "connectivity": "l2",
    }
    assert str(bound.fixed_ips.get().subnet.cidr) == "10.1.0.0/24"  # rack1, where it is cabled


@pytest.mark.django_db
def test_a_hosts_report_reads_back_as_reported():
    """What every bind reads of a host: nothing for a host that never
    reported; an agent's own settings even when it reports nothing to
    plug; each kind of reported row, in report order."""
    assert selectors.host_view(host="nowhere") is None
    HostAgentFactory(host="empty", physnets=[], vnic_types=[], tunnel_types=[])
    assert selectors.host_view(host="empty") == HostView(host="empty")
    HostAgentFactory(
        host="fast", dpdk=True, sriov=True, physnets=["physnet2", "physnet1"], ovs_hybrid_plug=True
    )
    assert selectors.host_view(host="fast") == HostView(
        host="fast",
        datapath_type="netdev",
        interface_types=frozenset({"dpdkvhostuser", "dpdkvhostuserclient"}),
        ovs_hybrid_plug=True,
        tunnel_types=frozenset({"vxlan"}),
        physnets={name: PhysnetLink("br-ex", "ens1") for name in ("physnet2", "physnet1")},
        vnic_types=frozenset({"normal", "direct"}),
    )
    HostAgentFactory(host="metal", baremetal=True, nic_mac="52:54:00:fa:10:01", tunnel_types=[])
    metal = selectors.host_view(host="metal")
    assert metal.baremetal_nics == (Nic("52:54:00:fa:10:01", "physnet1"),)
    assert (metal.physnets, metal.vnic_types) == (
        {"physnet1": PhysnetLink()},
        frozenset({"baremetal"}),
    )
    # Several hosts in one read, each as alone; one that never reported is
    # not there.
    views = selectors.host_views(hosts=["fast", "metal", "empty", "nowhere"])
    assert views == {h: selectors.host_view(host=h) for h in ("fast", "metal", "empty")}
