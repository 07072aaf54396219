"""python-blazarclient against a live server: create, show, list, extend
with prolong_for, delete (the calls openstack_wire.md §5 lists)."""

from datetime import UTC, datetime, timedelta

import pytest
from blazarclient import client as blazar_client
from blazarclient import exception as blazar_exception
from keystoneauth1 import session, token_endpoint

from config.services import token_create


@pytest.fixture
def bz(transactional_db, live_server, pool):
    token = token_create(project_name="lab", username="lab-user", role="member")[1]
    auth = token_endpoint.Token(live_server.url, token)
    return blazar_client.Client(
        version="1",
        session=session.Session(auth=auth),
        endpoint_override=live_server.url + "/reservation/v1",
    )


def later(minutes: int) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M")


HOST_RESERVATION = {
    "resource_type": "physical:host",
    "min": 1,
    "max": 1,
    "hypervisor_properties": "",
    "resource_properties": '["==", "$node_type", "compute"]',
    "before_end": "default",
}


def test_lease_lifecycle_through_blazarclient(bz):
    lease = bz.lease.create("cap-lease", later(60), later(120), [HOST_RESERVATION], [])
    assert lease["status"] == "PENDING"
    assert bz.lease.get(lease["id"])["name"] == "cap-lease"
    assert [item["id"] for item in bz.lease.list()] == [lease["id"]]
    prolonged = bz.lease.update(lease["id"], prolong_for="1h")
    old_end = datetime.strptime(lease["end_date"], "%Y-%m-%dT%H:%M:%S.%f")
    new_end = datetime.strptime(prolonged["end_date"], "%Y-%m-%dT%H:%M:%S.%f")
    assert new_end - old_end == timedelta(hours=1)
    deferred = bz.lease.update(lease["id"], defer_by="30m")
    assert deferred["start_date"] > lease["start_date"]
    bz.lease.delete(lease["id"])
    assert bz.lease.list() == []


def test_errors_reach_the_client_with_blazars_message(bz):
    bz.lease.create("all", later(60), later(120), [{**HOST_RESERVATION, "min": 2, "max": 2}], [])
    with pytest.raises(blazar_exception.BlazarClientException) as raised:
        bz.lease.create("more", later(90), later(150), [HOST_RESERVATION], [])
    assert raised.value.kwargs["code"] == 409
    assert "Not enough hosts available" in str(raised.value)
    with pytest.raises(blazar_exception.BlazarClientException) as raised:
        bz.lease.create("bad", "soon", later(150), [HOST_RESERVATION], [])
    assert raised.value.kwargs["code"] == 400
