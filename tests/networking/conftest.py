import pytest

from networking.services import HostNetworkReport, host_agent_report

V2 = "/networking/v2.0"


def report(host: str, physnets: dict, **kwargs):
    return host_agent_report(report=HostNetworkReport(host=host, physnets=physnets, **kwargs))


@pytest.fixture
def routed(admin):
    """A routed network: segment rack1 (physnet1, VLAN 101, 10.1.0.0/24) and
    rack2 (physnet2, VLAN 102, 10.2.0.0/24 with a 3-address pool); hosts h1
    on physnet1 and h2 on physnet2."""
    net = admin.post(f"{V2}/networks", {"network": {"name": "routed"}}).json()["network"]
    # Drop the VXLAN segment a network gets by default: this one is routed.
    for seg in admin.get(f"{V2}/segments", network_id=net["id"]).json()["segments"]:
        assert admin.delete(f"{V2}/segments/{seg['id']}").status_code == 204
    segs = {}
    for name, physnet, vlan in (("rack1", "physnet1", 101), ("rack2", "physnet2", 102)):
        body = {
            "network_id": net["id"],
            "name": name,
            "network_type": "vlan",
            "physical_network": physnet,
            "segmentation_id": vlan,
        }
        segs[name] = admin.post(f"{V2}/segments", {"segment": body}).json()["segment"]
    subnets = {
        "rack1": admin.post(
            f"{V2}/subnets",
            {
                "subnet": {
                    "network_id": net["id"],
                    "segment_id": segs["rack1"]["id"],
                    "ip_version": 4,
                    "cidr": "10.1.0.0/24",
                }
            },
        ).json()["subnet"],
        "rack2": admin.post(
            f"{V2}/subnets",
            {
                "subnet": {
                    "network_id": net["id"],
                    "segment_id": segs["rack2"]["id"],
                    "ip_version": 4,
                    "cidr": "10.2.0.0/24",
                    "allocation_pools": [{"start": "10.2.0.10", "end": "10.2.0.12"}],
                }
            },
        ).json()["subnet"],
    }
    report("h1", {"physnet1": {"bridge": "br-ex"}})
    report("h2", {"physnet2": {"bridge": "br-ex"}})
    return {"network": net, "segments": segs, "subnets": subnets}
