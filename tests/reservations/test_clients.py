"""python-blazarclient against a live server: create, show, list, extend
with prolong_for, delete (the calls openstack_wire.md §5 lists)."""

from datetime import UTC, datetime, timedelta

import pytest
from blazarclient import client as blazar_client
from blazarclient import exception as blazar_exception
from keystoneauth1 import session, token_endpoint

from identity.services import token_create
from reservations.models import Lease, Reservation
from tests.factories import HostFactory
from tests.networking.test_clients import OpenStackCLI, command


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


# --- the openstack CLI (the blazarclient plugin) -------------------------------------

COMPUTE_HOST = (
    'resource_type=physical:host,min=1,max=1,resource_properties=["==","$node_type","compute"]'
)
INSTANCES = (
    "resource_type=virtual:instance,amount=1,vcpus=1,memory_mb=512,disk_gb=10,affinity=False"
)


@pytest.fixture
def cli(transactional_db, live_server, pool, tmp_path):
    token = token_create(project_name="ops", username="operator", role="admin")[1]
    return OpenStackCLI(live_server.url, token, tmp_path)


def lease_create(cli, name: str, reservation: str, start: int = 60, end: int = 120) -> dict:
    return cli(
        *("reservation", "lease", "create", "--reservation", reservation),
        *("--start-date", later(start), "--end-date", later(end), name, "-f", "json"),
    )


def test_openstack_cli_reservation_hosts_and_allocations(cli):
    hosts = {h["hypervisor_hostname"]: h for h in cli(*command("reservation host list"))}
    assert sorted(hosts) == ["r1", "r2", "r3", "r4"]
    assert cli(*command("reservation host show r1"))["node_type"] == "compute"
    assert cli(*["reservation", "host", "set", "--extra", "rack=a7", "r1"]) == "Updated host: r1"
    assert cli(*command("reservation host show r1"))["rack"] == "a7"
    properties = {p["property"] for p in cli(*command("reservation host property list"))}
    assert {"node_type", "gpus", "rack"} <= properties
    assert cli(*["reservation", "host", "delete", "r4"]) == "Deleted host: r4"
    HostFactory(name="r5")
    assert cli(*command("reservation host create r5"))["hypervisor_hostname"] == "r5"

    lease_create(cli, "x", COMPUTE_HOST)
    allocations = cli(*command("reservation allocation list host"))
    assert sum(len(a["reservations"]) for a in allocations) == 1
    # By name: blazarclient takes only Blazar's numeric host ids as ids.
    shown = cli(*command("reservation allocation show host r1"))
    assert shown["resource_id"] == hosts["r1"]["id"]


def test_openstack_cli_lease_lifecycle(cli):
    created = lease_create(cli, "cli-lease", COMPUTE_HOST)
    assert created["status"] == "PENDING"
    assert [x["name"] for x in cli(*command("reservation lease list"))] == ["cli-lease"]
    assert cli(*command("reservation lease show cli-lease"))["id"] == created["id"]

    def dates() -> tuple[datetime, ...]:
        shown = cli(*command("reservation lease show cli-lease"))
        return tuple(
            datetime.strptime(shown[key], "%Y-%m-%dT%H:%M:%S.%f")
            for key in ("start_date", "end_date")
        )

    start, end = dates()
    minutes = timedelta(minutes=1)
    for flag, expected in [
        ("--prolong-for 1h", (start, end + 60 * minutes)),
        ("--reduce-by 30m", (start, end + 30 * minutes)),
        ("--defer-by 20m", (start + 20 * minutes, end + 30 * minutes)),
        ("--advance-by 10m", (start + 10 * minutes, end + 30 * minutes)),
    ]:
        assert cli(*f"reservation lease set {flag} cli-lease".split()) is not None
        assert dates() == expected
    # One value for both: a slow CLI call may cross a minute boundary.
    new_end = later(240)
    cli("reservation", "lease", "set", "--end-date", new_end, "cli-lease")
    assert dates()[1].strftime("%Y-%m-%d %H:%M") == new_end
    (reservation,) = Reservation.objects.filter(lease_id=created["id"])
    cli(*f"reservation lease set --reservation id={reservation.pk},max=2 cli-lease".split())
    reservation.refresh_from_db()
    assert reservation.max == 2
    cli(*["reservation", "lease", "set", "--name", "renamed", "cli-lease"])

    assert lease_create(cli, "vms", INSTANCES)["status"] == "PENDING"
    for name in ("renamed", "vms"):
        assert cli(*f"reservation lease delete {name}".split()) == f"Deleted lease: {name}"
    assert not Lease.objects.exists()


def test_addresses_alone_through_blazarclient(bz):
    """Blazar's floating IP reservation (virtual:floatingip): the client
    sends network_id, amount and required_floatingips as they are."""
    from tests.factories import NetworkFactory

    project = Lease._meta.get_field("project").related_model.objects.get(name="lab")
    network = NetworkFactory(project=project, vlan=True)
    wanted = {
        "resource_type": "virtual:floatingip",
        "network_id": str(network.pk),
        "amount": 2,
        "required_floatingips": ["10.7.0.50"],
    }
    lease = bz.lease.create("ips", later(60), later(120), [wanted], [])
    (reservation,) = lease["reservations"]
    assert reservation["resource_type"] == "virtual:floatingip" and reservation["amount"] == 2
    held = [a["address"] for a in bz.lease.get(lease["id"])["reservations"][0]["addresses"]]
    assert len(held) == 2 and "10.7.0.50" in held
    with pytest.raises(blazar_exception.BlazarClientException) as raised:
        bz.lease.create("again", later(90), later(150), [wanted], [])
    assert "10.7.0.50" in str(raised.value)
    bz.lease.delete(lease["id"])
    assert not Reservation.objects.exists()
