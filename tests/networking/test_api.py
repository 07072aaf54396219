"""The Neutron API through DRF's client: routed networks, IPAM, ports, binding."""

import uuid

import netaddr
import pytest

from networking.models import IPAllocation, Network, Port, Segment, Subnet
from tests.factories import HostAgentFactory
from tests.networking.conftest import V2


def port_body(network_id, **fields):
    return {"port": {"network_id": network_id, **fields}}


def test_network_without_provider_attributes_gets_a_vxlan_segment(admin):
    net = admin.post(f"{V2}/networks", {"network": {"name": "n"}}).json()["network"]
    assert net["provider:network_type"] == "vxlan"
    assert 1000 <= net["provider:segmentation_id"] <= 1999999
    assert net["l2_adjacency"] is True and net["subnets"] == []


def test_provider_network_and_multi_segment_view(admin):
    body = {
        "name": "p",
        "provider:network_type": "vlan",
        "provider:physical_network": "physnet1",
        "provider:segmentation_id": 200,
    }
    net = admin.post(f"{V2}/networks", {"network": body}).json()["network"]
    assert (net["provider:physical_network"], net["provider:segmentation_id"]) == ("physnet1", 200)
    admin.post(
        f"{V2}/segments",
        {
            "segment": {
                "network_id": net["id"],
                "network_type": "vlan",
                "physical_network": "physnet2",
                "segmentation_id": 201,
            }
        },
    )
    shown = admin.get(f"{V2}/networks/{net['id']}").json()["network"]
    assert shown["provider:network_type"] is None
    assert [s["provider:segmentation_id"] for s in shown["segments"]] == [200, 201]
    assert shown["l2_adjacency"] is False


def test_members_cannot_set_provider_attributes_or_create_segments(caller, admin):
    alice = caller("alpha", "member")
    body = {"provider:network_type": "flat", "provider:physical_network": "physnet1"}
    assert alice.post(f"{V2}/networks", {"network": body}).status_code == 403
    net = alice.post(f"{V2}/networks", {"network": {}}).json()["network"]
    assert "provider:network_type" not in net
    seg = {"network_id": net["id"], "network_type": "flat", "physical_network": "physnet1"}
    assert alice.post(f"{V2}/segments", {"segment": seg}).status_code == 403


def test_routed_port_is_deferred_until_bound_then_gets_the_segment_ip(admin, routed):
    net, subnets = routed.network, routed.subnets
    port = admin.post(f"{V2}/ports", port_body(net.pk, name="p")).json()["port"]
    assert port["fixed_ips"] == [] and port["ip_allocation"] == "deferred"
    assert port["binding:host_id"] == "" and port["binding:vif_type"] == "unbound"

    bound = admin.put(f"{V2}/ports/{port['id']}", {"port": {"binding:host_id": "h2"}}).json()
    ip = bound["port"]["fixed_ips"][0]
    assert ip["subnet_id"] == str(subnets["rack2"].pk)
    assert netaddr.IPAddress(ip["ip_address"]) in netaddr.IPRange("10.2.0.10", "10.2.0.12")
    assert bound["port"]["binding:vif_type"] == "ovs"
    assert bound["port"]["binding:vif_details"]["bridge_name"] == "br-int"

    # Moving the port to a host in the other segment re-requests its IP there.
    moved = admin.put(f"{V2}/ports/{port['id']}", {"port": {"binding:host_id": "h1"}}).json()
    assert [i["subnet_id"] for i in moved["port"]["fixed_ips"]] == [str(subnets["rack1"].pk)]
    assert IPAllocation.objects.filter(port_id=port["id"]).count() == 1


def test_host_reaching_no_segment_is_409_and_the_port_is_untouched(admin, routed):
    HostAgentFactory(host="h9", physnets=["physnet9"])
    port = admin.post(f"{V2}/ports", port_body(routed.network.pk)).json()["port"]
    response = admin.put(f"{V2}/ports/{port['id']}", {"port": {"binding:host_id": "h9"}})
    assert response.status_code == 409
    assert response.json()["NeutronError"]["type"] == "HostNotConnectedToAnySegment"
    assert Port.objects.get(pk=port["id"]).binding_host == ""


def test_segment_exhaustion_names_network_and_segment(admin, routed):
    net, seg = routed.network, routed.segments["rack2"]
    for _ in range(3):
        p = admin.post(f"{V2}/ports", port_body(net.pk, **{"binding:host_id": "h2"}))
        assert p.status_code == 201
    p = admin.post(f"{V2}/ports", port_body(net.pk)).json()["port"]
    response = admin.put(f"{V2}/ports/{p['id']}", {"port": {"binding:host_id": "h2"}})
    assert response.status_code == 409
    error = response.json()["NeutronError"]
    assert error["type"] == "IpAddressGenerationFailure"
    assert str(net.pk) in error["message"] and str(seg.pk) in error["message"]


def test_binding_failure_is_recorded_for_admins(admin, caller, routed):
    net = routed.network
    port = admin.post(f"{V2}/ports", port_body(net.pk, **{"binding:vnic_type": "direct"})).json()[
        "port"
    ]
    bound = admin.put(f"{V2}/ports/{port['id']}", {"port": {"binding:host_id": "h1"}}).json()
    assert bound["port"]["binding:vif_type"] == "binding_failed"
    assert bound["port"]["binding:failure_reason"] == (
        "binding failed on h1: host h1 does not support vnic direct"
    )


def test_unbind_clears_host_device_and_profile_keeps_ips(admin, routed):
    net = routed.network
    port = admin.post(
        f"{V2}/ports",
        port_body(
            net.pk,
            device_id="vm-1",
            device_owner="compute:nova",
            **{"binding:host_id": "h1", "binding:profile": {"k": "v"}},
        ),
    ).json()["port"]
    assert port["binding:host_id"] == "h1" and port["fixed_ips"]
    body = admin.put(f"{V2}/ports/{port['id']}", {"port": {"binding:host_id": ""}}).json()["port"]
    assert (body["binding:host_id"], body["device_id"], body["device_owner"]) == ("", "", "")
    assert body["binding:profile"] == {} and body["binding:vif_type"] == "unbound"
    assert body["fixed_ips"] == port["fixed_ips"]


def test_baremetal_port_takes_the_nic_mac(admin):
    net = admin.post(
        f"{V2}/networks",
        {"network": {"provider:network_type": "flat", "provider:physical_network": "provision"}},
    ).json()
    admin.post(
        f"{V2}/subnets",
        {
            "subnet": {
                "network_id": net["network"]["id"],
                "cidr": "192.168.50.0/24",
                "ip_version": 4,
            }
        },
    )
    HostAgentFactory(
        host="bm-1",
        baremetal=True,
        baremetal_nics=[
            {
                "mac_address": "52:54:00:AB:CD:01",
                "physical_network": "provision",
                "switch_id": "aa:bb:cc:dd:ee:ff",
                "switch_port": "Gi0/1",
            }
        ],
    )
    port = admin.post(
        f"{V2}/ports", port_body(net["network"]["id"], **{"binding:vnic_type": "baremetal"})
    ).json()["port"]
    bound = admin.put(f"{V2}/ports/{port['id']}", {"port": {"binding:host_id": "bm-1"}}).json()
    assert bound["port"]["mac_address"] == "52:54:00:ab:cd:01"
    assert bound["port"]["binding:vif_type"] == "other"
    link = bound["port"]["binding:profile"]["local_link_information"][0]
    assert (link["switch_id"], link["port_id"]) == ("aa:bb:cc:dd:ee:ff", "Gi0/1")
    found = admin.get(f"{V2}/ports", mac_address="52-54-00-AB-CD-01").json()["ports"]
    assert [p["id"] for p in found] == [port["id"]]


def test_port_filters(admin, routed):
    net = routed.network
    a = admin.post(
        f"{V2}/ports", port_body(net.pk, name="a", device_id="d1", **{"binding:host_id": "h1"})
    ).json()["port"]
    b = admin.post(
        f"{V2}/ports",
        port_body(net.pk, name="b", device_owner="compute:nova", **{"binding:host_id": "h2"}),
    ).json()["port"]

    def ids(**params):
        return sorted(p["id"] for p in admin.get(f"{V2}/ports", **params).json()["ports"])

    assert ids(mac_address=[a["mac_address"], b["mac_address"].upper()]) == sorted(
        [a["id"], b["id"]]
    )
    assert ids(**{"binding:host_id": "h2"}) == [b["id"]]
    assert ids(device_id="d1") == [a["id"]]
    assert ids(device_owner="compute:nova") == [b["id"]]
    assert ids(fixed_ips=f"ip_address={b['fixed_ips'][0]['ip_address']}") == [b["id"]]
    assert ids(fixed_ips=f"subnet_id={routed.subnets['rack1'].pk}") == [a["id"]]
    assert ids(name="a", network_id=net.pk) == [a["id"]]
    assert admin.get(f"{V2}/ports", mac_address="nope").status_code == 400


def test_binding_fields_are_admin_only(caller):
    alice = caller("alpha", "member")
    net = alice.post(f"{V2}/networks", {"network": {}}).json()["network"]
    alice.post(f"{V2}/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.9.0.0/24"}})
    port = alice.post(f"{V2}/ports", port_body(net["id"])).json()["port"]
    assert "binding:host_id" not in port and port["binding:vnic_type"] == "normal"
    response = alice.put(f"{V2}/ports/{port['id']}", {"port": {"binding:host_id": "h1"}})
    assert response.status_code == 403
    # ...but the owner of the network may choose the MAC
    created = alice.post(f"{V2}/ports", port_body(net["id"], mac_address="FA:16:3E:01:02:03"))
    assert created.json()["port"]["mac_address"] == "fa:16:3e:01:02:03"


def test_fixed_ips_on_a_plain_network(admin):
    net = admin.post(f"{V2}/networks", {"network": {}}).json()["network"]
    v4 = admin.post(
        f"{V2}/subnets",
        {"subnet": {"network_id": net["id"], "cidr": "10.5.0.0/24", "gateway_ip": "10.5.0.254"}},
    ).json()["subnet"]
    v6 = admin.post(
        f"{V2}/subnets",
        {"subnet": {"network_id": net["id"], "ip_version": 6, "cidr": "2001:db8:5::/64"}},
    ).json()["subnet"]
    assert v4["allocation_pools"] == [{"start": "10.5.0.1", "end": "10.5.0.253"}]
    fixed = admin.post(
        f"{V2}/ports", port_body(net["id"], fixed_ips=[{"ip_address": "10.5.0.50"}])
    ).json()["port"]
    assert fixed["fixed_ips"] == [{"subnet_id": v4["id"], "ip_address": "10.5.0.50"}]
    # Fixed first: a random pick of the allocator could otherwise take .50.
    auto = admin.post(f"{V2}/ports", port_body(net["id"])).json()["port"]
    assert sorted(i["subnet_id"] for i in auto["fixed_ips"]) == sorted([v4["id"], v6["id"]])
    taken = {i["ip_address"] for i in auto["fixed_ips"]}
    target = next(f"10.5.0.{n}" for n in (51, 52) if f"10.5.0.{n}" not in taken)
    moved = admin.put(
        f"{V2}/ports/{fixed['id']}",
        {"port": {"fixed_ips": [{"subnet_id": v4["id"], "ip_address": target}]}},
    ).json()["port"]
    assert moved["fixed_ips"][0]["ip_address"] == target
    assert not IPAllocation.objects.filter(address="10.5.0.50").exists()


def test_ip_availability_per_subnet_and_segment(admin, routed):
    net, segs = routed.network, routed.segments
    admin.post(f"{V2}/ports", port_body(net.pk, **{"binding:host_id": "h2"}))
    body = admin.get(f"{V2}/network-ip-availabilities/{net.pk}").json()
    avail = body["network_ip_availability"]
    assert (avail["total_ips"], avail["used_ips"]) == (253 + 3, 1)
    per_segment = {
        s["segment_id"]: (s["total_ips"], s["used_ips"]) for s in avail["segment_ip_availability"]
    }
    assert per_segment == {str(segs["rack1"].pk): (253, 0), str(segs["rack2"].pk): (3, 1)}
    listed = admin.get(f"{V2}/network-ip-availabilities", network_id=net.pk).json()
    assert listed["network_ip_availabilities"][0]["used_ips"] == 1
    assert admin.get(f"{V2}/network-ip-availabilities", ip_version=6).json() == {
        "network_ip_availabilities": []
    }


def test_ip_availability_is_admin_only(caller, routed):
    alice = caller("alpha", "member")
    url = f"{V2}/network-ip-availabilities/{routed.network.pk}"
    assert alice.get(url).status_code == 403


def test_agents_show_what_hosts_reported(admin, routed):
    HostAgentFactory(host="h3", sriov=True, sriov_interface="ens1f0", dpdk=True)
    agents = admin.get(f"{V2}/agents", host="h3").json()["agents"]
    assert len(agents) == 1 and agents[0]["alive"] is True
    conf = agents[0]["configurations"]
    assert conf["bridge_mappings"] == {"physnet1": "br-ex"}
    assert conf["device_mappings"] == {"physnet1": ["ens1f0"]}
    assert conf["vnic_types"] == ["direct", "normal"]
    assert conf["datapath_type"] == "netdev"
    url = f"{V2}/agents/{agents[0]['id']}"
    assert (
        admin.put(url, {"agent": {"admin_state_up": False}}).json()["agent"]["admin_state_up"]
        is False
    )
    assert admin.delete(url).status_code == 204
    assert admin.get(url).status_code == 404


def test_extensions(client, caller):
    alice = caller("alpha", "reader")
    aliases = {e["alias"] for e in alice.get(f"{V2}/extensions").json()["extensions"]}
    assert {"segment", "binding", "network-ip-availability", "ip_allocation"} <= aliases
    assert alice.get(f"{V2}/extensions/segment").json()["extension"]["alias"] == "segment"
    assert alice.get(f"{V2}/extensions/tag-ports-during-bulk-creation").status_code == 404


# --- bad input: a clear 4xx in NeutronError shape, and nothing written -----------


def unchanged(fn):
    counts = lambda: [m.objects.count() for m in (Network, Segment, Subnet, Port, IPAllocation)]  # noqa: E731
    before = counts()
    response = fn()
    assert counts() == before
    return response


@pytest.mark.parametrize(
    ("body", "status", "error_type"),
    [
        ({"cidr": "10.0.0.0/33"}, 400, "InvalidInput"),
        ({"cidr": "10.0.0.7/24"}, 400, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "ip_version": 6}, 400, "InvalidInput"),
        ({"cidr": "10.0.0.0/24", "gateway_ip": "10.9.9.9"}, 400, "InvalidInput"),
        (
            {"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.1.1", "end": "10.0.1.9"}]},
            400,
            "InvalidInput",
        ),
        (
            {
                "cidr": "10.0.0.0/24",
                "allocation_pools": [
                    {"start": "10.0.0.5", "end": "10.0.0.9"},
                    {"start": "10.0.0.8", "end": "10.0.0.20"},
                ],
            },
            400,
            "InvalidInput",
        ),
        ({"cidr": "10.0.0.0/24", "segment_id": str(uuid.uuid4())}, 404, "SegmentNotFound"),
    ],
)
def test_bad_subnets(admin, body, status, error_type):
    net = admin.post(f"{V2}/networks", {"network": {}}).json()["network"]
    response = unchanged(
        lambda: admin.post(f"{V2}/subnets", {"subnet": {"network_id": net["id"], **body}})
    )
    assert response.status_code == status, response.json()
    assert response.json()["NeutronError"]["type"] == error_type


def test_overlapping_subnet_segment_of_another_network_and_mixing(admin, routed):
    net = routed.network
    overlap = {
        "network_id": str(net.pk),
        "segment_id": str(routed.segments["rack1"].pk),
        "cidr": "10.1.0.128/25",
    }
    assert unchanged(lambda: admin.post(f"{V2}/subnets", {"subnet": overlap})).status_code == 400
    other = admin.post(f"{V2}/networks", {"network": {}}).json()["network"]
    foreign = {
        "network_id": other["id"],
        "segment_id": str(routed.segments["rack1"].pk),
        "cidr": "10.7.0.0/24",
    }
    response = unchanged(lambda: admin.post(f"{V2}/subnets", {"subnet": foreign}))
    assert (
        response.status_code == 400
        and "not a segment of network" in response.json()["NeutronError"]["message"]
    )
    no_segment = {"network_id": str(net.pk), "cidr": "10.8.0.0/24"}
    response = unchanged(lambda: admin.post(f"{V2}/subnets", {"subnet": no_segment}))
    assert (
        response.status_code == 400
        and "all on segments or none" in response.json()["NeutronError"]["message"]
    )


@pytest.mark.parametrize(
    ("segment", "status", "error_type"),
    [
        (
            {"network_type": "vlan", "physical_network": "physnet1", "segmentation_id": 4095},
            400,
            "InvalidInput",
        ),
        (
            {"network_type": "vlan", "physical_network": "physnet1", "segmentation_id": 101},
            409,
            "VlanIdInUse",
        ),
        ({"network_type": "vlan", "segmentation_id": 300}, 400, "InvalidInput"),
        ({"network_type": "gre"}, 400, "InvalidInput"),
        (
            {"network_type": "flat", "physical_network": "physnet1", "segmentation_id": 5},
            400,
            "InvalidInput",
        ),
    ],
)
def test_bad_segments(admin, routed, segment, status, error_type):
    body = {"segment": {"network_id": str(routed.network.pk), **segment}}
    response = unchanged(lambda: admin.post(f"{V2}/segments", body))
    assert response.status_code == status, response.json()
    assert response.json()["NeutronError"]["type"] == error_type


def test_bad_ports(admin, routed):
    net = routed.network
    first = admin.post(f"{V2}/ports", port_body(net.pk, mac_address="fa:16:3e:00:00:09"))
    assert first.status_code == 201
    cases = [
        (port_body(net.pk, mac_address="FA:16:3E:00:00:09"), 409, "MacAddressInUse"),
        (port_body(net.pk, mac_address="fa:16:3e:00:00"), 400, "InvalidInput"),
        (port_body(str(uuid.uuid4())), 404, "NetworkNotFound"),
        (port_body(net.pk, fixed_ips=[{"ip_address": "10.1.0.300"}]), 400, "InvalidInput"),
        (port_body(net.pk, fixed_ips=[{"ip_address": "192.168.0.5"}]), 400, "InvalidInput"),
        (port_body(net.pk, fixed_ips=[{"subnet_id": str(uuid.uuid4())}]), 400, "InvalidInput"),
    ]
    for body, status, error_type in cases:
        response = unchanged(lambda b=body: admin.post(f"{V2}/ports", b))
        assert response.status_code == status, (body, response.json())
        assert response.json()["NeutronError"]["type"] == error_type
    taken = port_body(net.pk, fixed_ips=[{"ip_address": "10.1.0.77"}])
    assert admin.post(f"{V2}/ports", taken).status_code == 201
    response = unchanged(lambda: admin.post(f"{V2}/ports", taken))
    assert (response.status_code, response.json()["NeutronError"]["type"]) == (
        409,
        "IpAddressAlreadyAllocated",
    )


def test_mac_change_on_a_bound_port_is_refused(admin, routed):
    port = admin.post(
        f"{V2}/ports", port_body(routed.network.pk, **{"binding:host_id": "h1"})
    ).json()["port"]
    response = admin.put(f"{V2}/ports/{port['id']}", {"port": {"mac_address": "fa:16:3e:12:34:56"}})
    assert (response.status_code, response.json()["NeutronError"]["type"]) == (409, "PortBound")


def test_deleting_what_is_in_use(admin, routed):
    net = routed.network
    port = admin.post(
        f"{V2}/ports",
        port_body(net.pk, **{"binding:host_id": "h1", "device_owner": "compute:nova"}),
    )
    port = port.json()["port"]
    subnet = routed.subnets["rack1"]
    response = admin.delete(f"{V2}/subnets/{subnet.pk}")
    assert (response.status_code, response.json()["NeutronError"]["type"]) == (409, "SubnetInUse")
    response = admin.delete(f"{V2}/networks/{net.pk}")
    assert (response.status_code, response.json()["NeutronError"]["type"]) == (409, "NetworkInUse")
    response = admin.delete(f"{V2}/segments/{routed.segments['rack1'].pk}")
    assert (response.status_code, response.json()["NeutronError"]["type"]) == (409, "SegmentInUse")
    assert admin.delete(f"{V2}/ports/{port['id']}").status_code == 204
    assert admin.delete(f"{V2}/subnets/{subnet.pk}").status_code == 204
    assert admin.delete(f"{V2}/networks/{net.pk}").status_code == 204
    assert not Segment.objects.filter(network=net).exists()


# --- hostile input: each of these answered 500 ------------------------------------


@pytest.mark.parametrize(
    ("collection", "query"),
    [
        ("networks", {"id": "not-a-uuid"}),
        ("ports", {"network_id": "x"}),
        ("subnets", {"ip_version": "null"}),
        ("subnets", {"gateway_ip": "null"}),
        ("subnets", {"project_id": "7"}),
        ("segments", {"segmentation_id": str(2**63)}),
        ("segments", {"segmentation_id": "-1"}),
    ],
)
def test_filter_values_the_column_cannot_hold_are_400(admin, collection, query):
    # The value reached the database query unconverted (ValidationError,
    # ValueError, OverflowError there); now the filter converts it first.
    response = admin.get(f"{V2}/{collection}", **query)
    assert response.status_code == 400
    assert response.json()["NeutronError"]["type"] == "InvalidInput"


def test_ip_availability_filters_are_checked_and_it_has_no_delete(admin, routed):
    url = f"{V2}/network-ip-availabilities"
    assert admin.get(url, network_id="x").status_code == 400
    assert admin.get(url, ip_version="x").status_code == 400
    assert admin.get(url, network_id=routed.network.pk, ip_version="4").status_code == 200
    # DELETE was routed to a viewset without perform_destroy.
    response = admin.delete(f"{url}/{routed.network.pk}")
    assert response.status_code == 405
    assert response.json()["NeutronError"]["type"] == "HTTPMethodNotAllowed"


def test_a_huge_limit_is_capped_not_sent_to_the_database(admin):
    admin.post(f"{V2}/networks", {"network": {"name": "n"}})
    response = admin.get(f"{V2}/networks", limit=str(10**26))
    assert response.status_code == 200 and len(response.json()["networks"]) == 1
