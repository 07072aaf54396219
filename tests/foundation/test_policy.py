"""OpenStack's admin-only reads stay the admin's: segments (Neutron), the
binding filters on ports (Neutron), os-hosts properties and free capacity
(Blazar). Members get what the peer answers; admins still get the data."""

import pytest

from tests.conftest import Caller
from tests.factories import HostFactory

N2 = "/networking/v2.0"
R1 = "/reservation/v1"


@pytest.fixture
def callers(db):
    return Caller("admin-project", "admin"), Caller("alpha", "member")


def test_segments_are_not_found_for_members(callers):
    admin, alice = callers
    network = alice.post(f"{N2}/networks", {"network": {"name": "n"}}).json()["network"]
    [segment] = admin.get(f"{N2}/segments", network_id=network["id"]).json()["segments"]
    assert isinstance(segment["segmentation_id"], int)

    # Not even the segment of its own network: Neutron drops what its
    # policy hides from a list and answers 404 for one.
    assert alice.get(f"{N2}/segments").json() == {"segments": []}
    assert alice.get(f"{N2}/segments", segmentation_id=segment["segmentation_id"]).json() == {
        "segments": []
    }
    shown = alice.get(f"{N2}/segments/{segment['id']}")
    assert shown.status_code == 404
    assert shown.json()["NeutronError"]["type"] == "SegmentNotFound"
    assert (
        "provider:segmentation_id"
        not in alice.get(f"{N2}/networks/{network['id']}").json()["network"]
    )

    assert admin.get(f"{N2}/segments/{segment['id']}").json()["segment"] == segment


@pytest.mark.parametrize("name", ["binding:host_id", "binding:vif_type"])
def test_members_cannot_filter_ports_on_binding_attributes(callers, name):
    admin, alice = callers
    network = alice.post(f"{N2}/networks", {"network": {"name": "n"}}).json()["network"]
    # Bound to h1 by the admin (a binding that failed: h1 never reported).
    body = {"network_id": network["id"], "tenant_id": alice.project.id.hex, "binding:host_id": "h1"}
    bound = admin.post(f"{N2}/ports", {"port": body}).json()["port"]
    other = alice.post(f"{N2}/ports", {"port": {"network_id": network["id"]}}).json()["port"]
    value = bound[name]

    def ids(caller, **params):
        return sorted(p["id"] for p in caller.get(f"{N2}/ports", **params).json()["ports"])

    # Ignored for a member, as a filter it does not know: the answer is the
    # same whichever value it guesses, so it learns nothing about hosts.
    everything = sorted([bound["id"], other["id"]])
    assert ids(alice, **{name: value}) == everything
    assert ids(alice, **{name: "no-such-value"}) == everything
    assert ids(admin, **{name: value}) == [bound["id"]]


@pytest.mark.parametrize("path", ["os-hosts/properties", "os-hosts/free-capacity"])
def test_os_hosts_aggregates_are_the_admins(callers, path):
    admin, alice = callers
    HostFactory(name="r1", reservable=True, extra_capabilities={"node_type": "compute"})

    refused = alice.get(f"{R1}/{path}")
    assert refused.status_code == 403
    assert refused.json()["error_code"] == 403

    shown = admin.get(f"{R1}/{path}")
    assert shown.status_code == 200
    if path.endswith("properties"):
        assert {"property": "node_type"} in shown.json()["resource_properties"]
    else:
        assert [step["free_hosts"] for step in shown.json()["free_capacity"]] == [1]
