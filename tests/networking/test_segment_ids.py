"""Segmentation ids: picked ids fill the range, a taken id asked for is 409."""

from tests.networking.conftest import V2


def test_picked_ids_fill_the_range_and_a_taken_id_asked_for_is_409(admin, settings):
    settings.BERTH_VLAN_RANGES = ["physnet9:10:12"]
    net = admin.post(f"{V2}/networks", {"network": {}}).json()["network"]

    def segment(**fields):
        body = {"segment": {"network_id": net["id"], **fields}}
        return admin.post(f"{V2}/segments", body)

    vlan = {"network_type": "vlan", "physical_network": "physnet9"}
    picked = {segment(**vlan).json()["segment"]["segmentation_id"] for _ in range(3)}
    assert picked == {10, 11, 12}
    response = segment(**vlan)
    assert response.status_code == 409
    assert response.json()["NeutronError"]["type"] == "NoNetworkAvailable"
    response = segment(**vlan, segmentation_id=11)
    assert response.status_code == 409
    assert response.json()["NeutronError"]["type"] == "VlanIdInUse"
    vni = net["provider:segmentation_id"]
    response = segment(network_type="vxlan", segmentation_id=vni)
    assert response.status_code == 409
    assert response.json()["NeutronError"]["type"] == "TunnelIdInUse"
    assert f"The VNI {vni} is in use." in response.json()["NeutronError"]["message"]
