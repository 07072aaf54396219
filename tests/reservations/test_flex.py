"""Flexible leases: N hosts for a duration, as soon as possible within a
window; moved earlier while pending when capacity frees up."""

from datetime import timedelta

from django.utils import timezone

from reservations import services
from reservations.models import HostAllocation, Lease, LeaseEvent
from tests.reservations.test_api import V1, lease_body, minutes
from tests.reservations.test_healing import COMPUTE

HOUR = 3600


def both_compute(name: str, start: int, end: int) -> dict:
    return lease_body(name=name, start=start, end=end, resource_properties=COMPUTE, min=2, max=2)


def flexible(start=60, end=600, seconds=HOUR, **fields) -> dict:
    return {**both_compute("flex", start, end), "flex_duration": seconds, **fields}


def test_a_flexible_lease_takes_the_earliest_start_that_fits(lab_member):
    taken = lab_member.post(f"{V1}/leases", both_compute("first", 60, 180))
    assert taken.status_code == 201
    created = lab_member.post(f"{V1}/leases", flexible())
    assert created.status_code == 201, created.json()
    lease = created.json()["lease"]
    first_end = HostAllocation.objects.filter(reservation__lease__name="first").first().end_at
    shown = Lease.objects.get(pk=lease["id"])
    # At the first lease's end (its cleaning buffer included), for an hour.
    assert shown.start_at == first_end
    assert shown.end_at - shown.start_at == timedelta(hours=1)
    assert lease["flexible"]["latest_end"].startswith(minutes(600).replace(" ", "T"))
    assert sorted(lease["reservations"][0]["hosts"]) == ["r1", "r2"]


def test_bad_flexible_requests_name_the_field_and_write_nothing(lab_member):
    cases = [
        (flexible(start=60, end=90), "flex_duration"),  # 30 minutes for an hour
        (flexible(seconds=10), "flex_duration"),
        (flexible(seconds="long"), "flex_duration"),
        (flexible(before_end_date=minutes(100)), "before_end_date"),
    ]
    for body, field in cases:
        refused = lab_member.post(f"{V1}/leases", body)
        assert refused.status_code == 400, (body, refused.json())
        assert field in refused.json()["error_message"]
    assert not Lease.objects.exists()


def test_a_flexible_lease_that_fits_nowhere_in_its_window_is_refused(lab_member):
    assert lab_member.post(f"{V1}/leases", both_compute("first", 60, 600)).status_code == 201
    refused = lab_member.post(f"{V1}/leases", flexible(start=60, end=300))
    assert refused.status_code == 409, refused.json()
    assert refused.json()["answers"]["hosts_fit_now"] == 0
    assert Lease.objects.count() == 1


def test_a_pending_flexible_lease_moves_earlier_when_capacity_frees_up(lab_member):
    first = lab_member.post(f"{V1}/leases", both_compute("first", 60, 180)).json()["lease"]
    lease = lab_member.post(f"{V1}/leases", flexible(start=30)).json()["lease"]
    pushed = Lease.objects.get(pk=lease["id"]).start_at
    assert services.flex_advance() == 0  # nothing freed yet
    assert lab_member.delete(f"{V1}/leases/{first['id']}").status_code == 204
    assert services.flex_advance() == 1
    moved = Lease.objects.get(pk=lease["id"])
    asked = moved.flex_earliest_start
    assert moved.start_at == asked < pushed
    assert moved.end_at - moved.start_at == timedelta(hours=1)
    held = HostAllocation.objects.filter(reservation__lease=moved)
    assert {a.start_at for a in held} == {asked}
    heads_up = LeaseEvent.objects.get(lease=moved, event_type="heads_up")
    assert heads_up.time <= asked
    assert services.flex_advance() == 0  # at its earliest already


def test_a_flexible_lease_is_not_moved_once_its_heads_up_fired(lab_member):
    first = lab_member.post(f"{V1}/leases", both_compute("first", 60, 180)).json()["lease"]
    lease = lab_member.post(f"{V1}/leases", flexible(start=30)).json()["lease"]
    was = Lease.objects.get(pk=lease["id"]).start_at
    LeaseEvent.objects.filter(lease_id=lease["id"], event_type="heads_up").update(
        status="DONE", fired_at=timezone.now()
    )
    lab_member.delete(f"{V1}/leases/{first['id']}")
    assert services.flex_advance() == 0
    assert Lease.objects.get(pk=lease["id"]).start_at == was
