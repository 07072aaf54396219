"""Leases keep their promise: the heads-up checks each reserved host and
swaps a failed one before the start; the start never counts on a host known
to be down or disabled; a member reports a faulty host and gets another."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from compute.models import Host
from reservations import events
from reservations.models import HostAllocation, Lease, LeaseEvent, Notification
from tests.conftest import Caller
from tests.reservations.test_api import V1, lease_body
from tests.reservations.test_healing import COMPUTE, disable, started_lease


def compute_lease(name="l1", start=60, end=120, **reservation) -> dict:
    """A lease of compute hosts (r1, r2 of the pool) from ``start`` minutes
    on, with a heads-up 10 minutes before."""
    body = lease_body(name, start, end, resource_properties=COMPUTE, **reservation)
    return {**body, "heads_up": 600}


def feed(caller, lease_id: str) -> list[dict]:
    return caller.get(f"{V1}/notifications", lease_id=lease_id).json()["notifications"]


def fire(lease_id: str, event_type: str) -> None:
    """Fire the lease's event now (the sweep does at its due time)."""
    event = LeaseEvent.objects.get(lease_id=lease_id, event_type=event_type)
    events.fire_now(event=event)


def reserved(lease_id: str) -> list[str]:
    held = HostAllocation.objects.filter(
        reservation__lease_id=lease_id, replaced_by=None, end_at__gt=timezone.now()
    )
    return sorted(held.values_list("host__name", flat=True))


def down(name: str) -> None:
    Host.objects.filter(name=name).update(down_since=timezone.now())


def test_the_heads_up_swaps_a_down_host_and_says_what_it_checked(lab_member):
    lease = lab_member.post(f"{V1}/leases", compute_lease())
    lease_id = lease.json()["lease"]["id"]
    (lost,) = reserved(lease_id)
    down(lost)
    fire(lease_id, "heads_up")

    (now_held,) = reserved(lease_id)
    assert now_held != lost and now_held in ("r1", "r2")
    (heads_up,) = [n for n in feed(lab_member, lease_id) if n["event_type"].endswith("heads_up")]
    assert heads_up["payload"]["checked"] == [{"host": lost, "problems": ["down"]}]
    assert heads_up["payload"]["swapped"] == [{"host": lost, "replaced_by": now_held}]
    assert heads_up["payload"]["missing"] == []
    # Before the start, the lost host's hold is gone, not history.
    assert not HostAllocation.objects.filter(reservation__lease_id=lease_id, host__name=lost)
    assert Lease.objects.get(pk=lease_id).degraded is False


def test_a_lease_starts_degraded_naming_the_host_no_swap_could_replace(lab_member, ops):
    lease_id = lab_member.post(f"{V1}/leases", compute_lease(min=2, max=2)).json()["lease"]["id"]
    assert reserved(lease_id) == ["r1", "r2"]
    disable(ops, "r2")  # the only other compute host is the lease's own r1
    fire(lease_id, "start_lease")

    lease = lab_member.get(f"{V1}/leases/{lease_id}").json()["lease"]
    assert (lease["status"], lease["degraded"]) == ("ACTIVE", True)
    notices = {n["event_type"]: n["payload"] for n in feed(lab_member, lease_id)}
    assert notices["lease.degraded"]["lost_host"] == "r2"
    start = notices["lease.event.start_lease"]
    assert start["missing"] == ["r2"] and start["swapped"] == []
    assert {c["host"]: c["problems"] for c in start["checked"]} == {"r1": [], "r2": ["disabled"]}


def test_a_member_reports_a_faulty_host_and_gets_another(lab_member):
    lease = started_lease(lab_member)
    (faulty,) = lease["reservations"][0]["hosts"]
    url = f"{V1}/leases/{lease['id']}/faulty_hosts"
    reported = lab_member.post(url, {"host": faulty, "reason": "disk errors"})
    assert reported.status_code == 200, reported.json()
    report = reported.json()["faulty_host"]
    assert report["host"] == faulty and report["reason"] == "disk errors"
    assert report["replaced_by"] in ("r1", "r2") and report["replaced_by"] != faulty
    assert reserved(lease["id"]) == [report["replaced_by"]]
    # Drained from scheduling, the report as the reason.
    host = Host.objects.get(name=faulty)
    assert not host.enabled and "disk errors" in host.disabled_reason
    assert "lab-member" in host.disabled_reason
    # In the lease's history, and told to the operator.
    kinds = [n["event_type"] for n in feed(lab_member, lease["id"])]
    assert "lease.host_reported_faulty" in kinds and "lease.host_replaced" in kinds
    (told,) = Notification.objects.filter(event_type="host.faulty")
    assert told.project.name == settings.BERTH_OPERATOR_PROJECT
    assert told.payload["host"] == faulty and told.payload["lease_id"] == lease["id"]


def test_faulty_host_reports_refused_without_writing_anything(lab_member, ops, pool):
    lease = started_lease(lab_member)
    (held,) = lease["reservations"][0]["hosts"]
    url = f"{V1}/leases/{lease['id']}/faulty_hosts"
    other = "r1" if held == "r2" else "r2"
    cases = [
        ({"host": other}, 400, "host"),
        ({"host": ""}, 400, "host"),
        ({"reason": "no host named"}, 400, "host"),
        ({"host": held, "reason": "x" * 256}, 400, "reason"),
    ]
    for body, status, field in cases:
        refused = lab_member.post(url, body)
        assert refused.status_code == status, (body, refused.json())
        assert f"'{field}'" in refused.json()["error_message"], body
    pending = lab_member.post(f"{V1}/leases", compute_lease(name="later")).json()
    refused = lab_member.post(f"{V1}/leases/{pending['lease']['id']}/faulty_hosts", {"host": held})
    assert refused.status_code == 409
    stranger = Caller("elsewhere", "member")
    assert stranger.post(url, {"host": held}).status_code == 404
    reader = Caller("lab", "reader", username="lab-reader")
    assert reader.post(url, {"host": held}).status_code == 403
    assert Host.objects.filter(enabled=False).count() == 0
    assert reserved(lease["id"]) == [held]


def test_the_lease_event_sweep_fires_the_checked_heads_up_at_its_time(lab_member):
    lease_id = lab_member.post(f"{V1}/leases", compute_lease(start=1, end=60)).json()["lease"]["id"]
    assert events.sweep(now=timezone.now() + timedelta(seconds=1)) >= 1
    (heads_up,) = [n for n in feed(lab_member, lease_id) if n["event_type"].endswith("heads_up")]
    assert heads_up["payload"]["missing"] == []
    assert [c["problems"] for c in heads_up["payload"]["checked"]] == [[]]


def test_the_calendar_marks_the_faulty_host_and_the_swapped_hold(lab_member, admin_client):
    lease = started_lease(lab_member)
    (faulty,) = lease["reservations"][0]["hosts"]
    url = f"{V1}/leases/{lease['id']}/faulty_hosts"
    new = lab_member.post(url, {"host": faulty, "reason": "fans"}).json()["faulty_host"]
    data = admin_client.get("/admin/reservations/calendar/data", {"zoom": "day"}).json()
    hosts = {h["name"]: h for h in data["hosts"]}
    assert hosts[faulty]["faulty"] and not hosts[new["replaced_by"]]["faulty"]
    held = {b["host"]: b["replaced_by"] for b in data["bars"] if b["lease_id"] == lease["id"]}
    assert held == {faulty: new["replaced_by"], new["replaced_by"]: None}
    page = admin_client.get("/admin/reservations/calendar/", {"zoom": "day"}).content.decode()
    assert f'data-replaced-by="{new["replaced_by"]}"' in page
    assert f"{faulty} (faulty)" in page
