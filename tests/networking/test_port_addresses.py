"""Who may choose a port's addresses, and how many one port may hold."""

import pytest

from networking.models import IPAllocation, Port
from tests.networking.conftest import V2


def network_with_subnet(owner, cidr="10.7.0.0/24", **fields):
    net = owner.post(f"{V2}/networks", {"network": fields}).json()["network"]
    subnet = owner.post(
        f"{V2}/subnets", {"subnet": {"network_id": net["id"], "cidr": cidr}}
    ).json()["subnet"]
    return net, subnet


def addresses(n):
    return [{"ip_address": f"10.7.0.{10 + i}"} for i in range(n)]


def test_a_port_holds_at_most_the_configured_number_of_addresses(admin, settings):
    settings.BERTH_MAX_FIXED_IPS_PER_PORT = 3
    net, _ = network_with_subnet(admin)
    response = admin.post(
        f"{V2}/ports", {"port": {"network_id": net["id"], "fixed_ips": addresses(4)}}
    )
    assert response.status_code == 400
    assert response.json()["NeutronError"] == {
        "type": "InvalidInput",
        "message": "Invalid input for operation: Exceeded maximum amount of fixed ips per port.",
        "detail": "",
    }
    # Refused before anything was written.
    assert not Port.objects.exists() and not IPAllocation.objects.exists()
    port = admin.post(
        f"{V2}/ports", {"port": {"network_id": net["id"], "fixed_ips": addresses(3)}}
    ).json()["port"]
    assert len(port["fixed_ips"]) == 3
    # An update that would exceed it leaves the port's addresses as they were.
    wider = [{"ip_address": f"10.7.0.{20 + i}"} for i in range(4)]
    response = admin.put(f"{V2}/ports/{port['id']}", {"port": {"fixed_ips": wider}})
    assert response.status_code == 400
    assert response.json()["NeutronError"]["type"] == "InvalidInput"
    kept = sorted(IPAllocation.objects.values_list("address", flat=True))
    assert kept == ["10.7.0.10", "10.7.0.11", "10.7.0.12"]


def test_the_default_limit_is_neutrons_five(admin):
    net, _ = network_with_subnet(admin)
    body = {"port": {"network_id": net["id"], "fixed_ips": addresses(6)}}
    assert admin.post(f"{V2}/ports", body).status_code == 400
    body = {"port": {"network_id": net["id"], "fixed_ips": addresses(5)}}
    assert admin.post(f"{V2}/ports", body).status_code == 201


@pytest.fixture
def shared(admin):
    """A shared network of the admin's project with a /29 (five addresses
    in the pool)."""
    return network_with_subnet(admin, cidr="10.7.0.0/29", shared=True)


def test_a_member_cannot_choose_an_address_on_a_shared_network(caller, admin, shared):
    net, subnet = shared
    member = caller("beta", "member")
    chosen = {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.7.0.3"}]}
    response = member.post(f"{V2}/ports", {"port": chosen})
    assert response.status_code == 403
    assert response.json()["NeutronError"]["type"] == "PolicyNotAuthorized"
    both = [{"subnet_id": subnet["id"], "ip_address": "10.7.0.3"}]
    response = member.post(f"{V2}/ports", {"port": {"network_id": net["id"], "fixed_ips": both}})
    assert response.status_code == 403
    assert not Port.objects.exists()
    # From the pool: naming the subnet, or nothing.
    by_subnet = [{"subnet_id": subnet["id"]}]
    port = member.post(
        f"{V2}/ports", {"port": {"network_id": net["id"], "fixed_ips": by_subnet}}
    ).json()["port"]
    assert port["fixed_ips"][0]["subnet_id"] == subnet["id"]
    assert member.post(f"{V2}/ports", {"port": {"network_id": net["id"]}}).status_code == 201
    # Nor on update: the member's own port cannot take a chosen address.
    response = member.put(
        f"{V2}/ports/{port['id']}", {"port": {"fixed_ips": [{"ip_address": "10.7.0.3"}]}}
    )
    assert response.status_code == 403
    assert (
        IPAllocation.objects.get(port_id=port["id"]).address == port["fixed_ips"][0]["ip_address"]
    )
    moved = member.put(f"{V2}/ports/{port['id']}", {"port": {"fixed_ips": by_subnet}})
    assert moved.status_code == 200


def test_the_owner_and_an_admin_choose_addresses_on_a_shared_network(caller, admin):
    owner = caller("gamma", "member")
    net, _ = network_with_subnet(owner, cidr="10.7.0.0/29")
    # The owner cannot share it (admin only); an admin does.
    assert admin.put(f"{V2}/networks/{net['id']}", {"network": {"shared": True}}).status_code == 200
    for who, address in ((owner, "10.7.0.3"), (admin, "10.7.0.4")):
        body = {"port": {"network_id": net["id"], "fixed_ips": [{"ip_address": address}]}}
        port = who.post(f"{V2}/ports", body).json()["port"]
        assert port["fixed_ips"][0]["ip_address"] == address
