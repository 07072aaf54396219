"""A started lease whose host goes away, healed for real, seen through the
API: its hosts are the ones it holds now; the replaced one is history."""

from datetime import UTC, datetime, timedelta

from django.utils import timezone

from reservations import events, placement
from reservations.models import HostAllocation
from tests.reservations.test_api import V1, lease_body

COMPUTE = '["==", "$node_type", "compute"]'


def disable(ops, host: str) -> None:
    body = {"host": host, "binary": "nova-compute"}
    assert ops.put("/compute/v2.1/os-services/disable", body).status_code == 200


def started_lease(caller) -> dict:
    body = {**lease_body(resource_properties=COMPUTE), "start_date": "now"}
    lease = caller.post(f"{V1}/leases", body).json()["lease"]
    events.sweep()
    shown = caller.get(f"{V1}/leases/{lease['id']}").json()["lease"]
    assert shown["status"] == "ACTIVE"
    return shown


def test_a_healed_lease_shows_its_current_host_and_the_replaced_one_as_history(lab_member, ops):
    lease = started_lease(lab_member)
    url = f"{V1}/leases/{lease['id']}"
    (lost,) = lease["reservations"][0]["hosts"]
    disable(ops, lost)
    assert placement.heal() == 1

    reservation = lab_member.get(url).json()["lease"]["reservations"][0]
    (replacement,) = reservation["hosts"]
    assert replacement != lost and replacement in ("r1", "r2")
    (replaced,) = reservation["replaced_hosts"]
    assert (replaced["host"], replaced["replaced_by"]) == (lost, replacement)
    replaced_at = datetime.strptime(replaced["replaced_at"], "%Y-%m-%dT%H:%M:%S.%f")
    assert abs(replaced_at.replace(tzinfo=UTC) - timezone.now()) < timedelta(minutes=1)

    # The lease's history: its notifications, with the replacement in the payload.
    feed = lab_member.get(f"{V1}/notifications", lease_id=lease["id"]).json()["notifications"]
    (healed,) = [n for n in feed if n["event_type"] == "lease.host_replaced"]
    assert healed["payload"]["lost_host"] == lost
    assert healed["payload"]["new_host"] == replacement
    assert healed["payload"]["reservation_id"] == reservation["id"]
    assert {n["lease_id"] for n in feed} == {lease["id"]}


def test_a_healed_lease_can_be_extended_without_taking_its_lost_host_back(lab_member, ops):
    lease = started_lease(lab_member)
    url = f"{V1}/leases/{lease['id']}"
    (lost,) = lease["reservations"][0]["hosts"]
    disable(ops, lost)
    placement.heal()
    healed_at = timezone.now()

    later = (timezone.now() + timedelta(hours=3)).strftime("%Y-%m-%d %H:%M")
    extended = lab_member.put(url, {"end_date": later})
    assert extended.status_code == 200, extended.json()
    (reservation,) = extended.json()["lease"]["reservations"]
    assert reservation["hosts"] != [lost] and len(reservation["hosts"]) == 1
    assert [r["host"] for r in reservation["replaced_hosts"]] == [lost]
    # The lost host is free again from the heal on; the lease's hold on it stays history.
    assert not HostAllocation.objects.filter(host__name=lost, end_at__gt=healed_at).exists()


def test_a_host_is_replaced_once_when_two_heals_overlap(lab_member, ops):
    """Two sweeps list the same lost host; the one that locks it second
    (here: one whose clock read earlier) finds it replaced already."""
    lease = started_lease(lab_member)
    (lost,) = lease["reservations"][0]["hosts"]
    disable(ops, lost)
    now = timezone.now()
    assert placement.heal(now=now) == 1
    assert placement.heal(now=now - timedelta(seconds=1)) == 0
    shown = lab_member.get(f"{V1}/leases/{lease['id']}").json()["lease"]
    assert shown["degraded"] is False
    (reservation,) = shown["reservations"]
    assert len(reservation["hosts"]) == 1 and len(reservation["replaced_hosts"]) == 1
