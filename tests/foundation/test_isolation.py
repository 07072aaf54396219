"""Projects isolate tenants, shown on networks as the sample resource."""

import pytest

NETWORKS = "/networking/v2.0/networks"


@pytest.fixture
def alpha_net(caller):
    alice = caller("alpha", "member")
    return alice, alice.post(NETWORKS, {"network": {"name": "alpha-net"}}).json()["network"]


def test_other_project_sees_nothing(caller, alpha_net):
    _, net = alpha_net
    bob = caller("beta", "member")
    assert bob.get(NETWORKS).json() == {"networks": []}
    url = f"{NETWORKS}/{net['id']}"
    for response in (bob.get(url), bob.put(url, {"network": {"name": "x"}}), bob.delete(url)):
        assert response.status_code == 404
        assert response.json()["NeutronError"]["type"] == "NetworkNotFound"


def test_owner_and_admin_see_it(caller, admin, alpha_net):
    alice, net = alpha_net
    assert [n["id"] for n in alice.get(NETWORKS).json()["networks"]] == [net["id"]]
    assert net["project_id"] == alice.project.id.hex
    assert [n["id"] for n in admin.get(NETWORKS).json()["networks"]] == [net["id"]]
    assert (
        admin.get(NETWORKS, project_id=alice.project.id.hex).json()["networks"][0]["id"]
        == net["id"]
    )


def test_shared_network_is_visible_but_read_only_to_others(caller, admin):
    alice = caller("alpha", "member")
    shared = admin.post(
        NETWORKS,
        {"network": {"name": "public", "shared": True, "project_id": alice.project.id.hex}},
    ).json()["network"]
    bob = caller("beta", "member")
    assert [n["id"] for n in bob.get(NETWORKS).json()["networks"]] == [shared["id"]]
    response = bob.put(f"{NETWORKS}/{shared['id']}", {"network": {"name": "mine"}})
    assert response.status_code == 403
    assert alice.put(f"{NETWORKS}/{shared['id']}", {"network": {"name": "ours"}}).status_code == 200


def test_only_admin_creates_shared_or_for_another_project(caller, admin):
    alice = caller("alpha", "member")
    assert alice.post(NETWORKS, {"network": {"shared": True}}).status_code == 403
    response = alice.post(NETWORKS, {"network": {"project_id": admin.project.id.hex}})
    assert response.status_code == 403
