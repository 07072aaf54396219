"""Each API answers errors in its own shape, from one handler."""

import uuid

import pytest

from config.errors import Conflict, Invalid, NotFound, OverQuota, error_body
from identity.quotas import quota_set

NETWORKS = "/networking/v2.0/networks"


def test_neutron_400_404_409(caller):
    alice = caller("alpha", "member")
    bad = alice.post(NETWORKS, {"network": {"mtu": "huge"}})
    assert bad.status_code == 400
    assert bad.json()["NeutronError"]["type"] == "InvalidInput"
    assert "mtu" in bad.json()["NeutronError"]["message"]

    no_envelope = alice.post(NETWORKS, {"name": "x"})
    assert no_envelope.status_code == 400
    assert "'network' object" in no_envelope.json()["NeutronError"]["message"]

    missing = alice.get(f"{NETWORKS}/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.json()["NeutronError"]["type"] == "NetworkNotFound"

    quota_set(project=alice.project, resource="network", limit=1)
    assert alice.post(NETWORKS, {"network": {}}).status_code == 201
    over = alice.post(NETWORKS, {"network": {}})
    assert over.status_code == 409
    assert over.json() == {
        "NeutronError": {
            "type": "OverQuota",
            "detail": "",
            "message": "Quota exceeded for network: requested 1, but already used 1 of 1 network.",
        }
    }


def test_malformed_json_is_400_not_500(caller):
    alice = caller("alpha", "member")
    response = alice.client.post(NETWORKS, data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["NeutronError"]["type"] == "MalformedRequestBody"


def test_non_uuid_id_is_404_so_find_by_name_falls_through(caller):
    response = caller("alpha", "member").get(f"{NETWORKS}/my-network-name")
    assert response.status_code == 404
    assert (
        response.json()["NeutronError"]["message"] == "Network my-network-name could not be found."
    )


@pytest.mark.parametrize(
    ("url", "shape"),
    [
        (
            "/networking/v2.0/nothing-here",
            {
                "NeutronError": {
                    "type": "NotFound",
                    "detail": "",
                    "message": "The resource could not be found.",
                }
            },
        ),
        (
            "/compute/v2.1/nothing-here",
            {"itemNotFound": {"code": 404, "message": "The resource could not be found."}},
        ),
        (
            "/reservation/v1/nothing-here",
            {
                "error_code": 404,
                "error_name": 404,
                "error_message": "The resource could not be found.",
            },
        ),
    ],
)
def test_unknown_urls_answer_404_in_the_api_shape(caller, url, shape):
    response = caller("alpha", "reader").get(url)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == shape


@pytest.mark.parametrize(
    ("exc", "api", "status", "body"),
    [
        (Invalid("bad"), "compute", 400, {"badRequest": {"code": 400, "message": "bad"}}),
        (
            Conflict("busy"),
            "compute",
            409,
            {"conflictingRequest": {"code": 409, "message": "busy"}},
        ),
        (OverQuota("full"), "compute", 403, {"forbidden": {"code": 403, "message": "full"}}),
        (NotFound("gone"), "compute", 404, {"itemNotFound": {"code": 404, "message": "gone"}}),
        (
            Invalid("bad"),
            "reservation",
            400,
            {"error_code": 400, "error_message": "bad", "error_name": 400},
        ),
        (
            Conflict("Not enough hosts available"),
            "reservation",
            409,
            {"error_code": 409, "error_message": "Not enough hosts available", "error_name": 409},
        ),
        (
            Conflict("in use", type="MacAddressInUse"),
            "networking",
            409,
            {"NeutronError": {"type": "MacAddressInUse", "message": "in use", "detail": ""}},
        ),
    ],
)
def test_domain_errors_render_in_each_api_shape(rf, exc, api, status, body):
    from config.errors import api_exception_handler

    prefix = {
        "compute": "/compute/v2.1/x",
        "reservation": "/reservation/v1/x",
        "networking": "/networking/v2.0/x",
    }[api]
    response = api_exception_handler(exc, {"request": rf.get(prefix)})
    assert response.status_code == status
    assert response.data == body


def test_401_is_keystone_shaped_in_every_api():
    assert error_body("compute", 401, "Unauthorized", "no") == {
        "error": {"code": 401, "title": "Unauthorized", "message": "no"}
    }


# --- wording: wire values, never Python's --------------------------------------------


def neutron_message(response) -> str:
    assert response.status_code == 400, response.json()
    return response.json()["NeutronError"]["message"]


def test_neutron_choices_are_listed_as_wire_values(caller):
    alice = caller("alpha", "member")
    unknown = alice.post(NETWORKS, {"network": {"provider:network_type": "geneve"}})
    assert neutron_message(unknown) == (
        'provider:network_type: "geneve" is not one of: flat, vlan, vxlan.'
    )
    network = alice.post(NETWORKS, {"network": {"name": "n"}}).json()["network"]
    port = {"network_id": network["id"], "binding:vnic_type": True}
    assert neutron_message(alice.post("/networking/v2.0/ports", {"port": port})) == (
        "binding:vnic_type: true is not one of: normal, direct, macvtap, baremetal."
    )
    subnet = {"network_id": network["id"], "cidr": "10.0.0.0/24", "ip_version": {"v": 4}}
    assert neutron_message(alice.post("/networking/v2.0/subnets", {"subnet": subnet})) == (
        'ip_version: {"v": 4} is not one of: 4, 6.'
    )
    # Each bad value of a repeated filter, not a Python list of them all.
    availability = caller("alpha", "admin").get(
        "/networking/v2.0/network-ip-availabilities", network_id=[network["id"], "nope"]
    )
    assert neutron_message(availability) == "Invalid value for network_id: 'nope'."


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ({"datapath_type": "dpdk"}, 'datapath_type: "dpdk" is not one of: system, netdev.'),
        (
            {"vnic_types": ["normal", "smartnic"]},
            "Unknown vnic types smartnic; use one of: normal, direct, macvtap, baremetal.",
        ),
    ],
)
def test_host_report_choices_are_listed_as_wire_values(admin, report, message):
    body = {"host_report": {"name": "h1", "vcpus": 1, "memory_mb": 1, "disk_gb": 1, **report}}
    response = admin.post("/compute/v2.1/os-host-reports", body)
    assert response.status_code == 400
    assert response.json() == {"badRequest": {"code": 400, "message": message}}


def test_a_value_of_the_wrong_json_type_is_named_in_json(caller):
    """DRF says 'got type "dict"'; the client sent a JSON object."""
    alice = caller("alpha", "member")
    network = alice.post(NETWORKS, {"network": {"name": "n"}}).json()["network"]
    for fixed_ips, message in [
        ({"ip_address": "10.0.0.5"}, "fixed_ips: Expected an array, not an object."),
        ([True], "fixed_ips: Expected an object, not a boolean."),
    ]:
        port = {"network_id": network["id"], "fixed_ips": fixed_ips}
        assert neutron_message(alice.post("/networking/v2.0/ports", {"port": port})) == message
    server = {"name": "s", "flavorRef": "f", "networks": [7]}
    response = alice.post("/compute/v2.1/servers", {"server": server})
    assert response.json() == {
        "badRequest": {"code": 400, "message": "networks: Expected an object, not a number."}
    }
