"""An extension blocked by a following lease on the same host: berth names
the swap of that lease's hold to an equivalent free host, and performs it
when asked."""

from datetime import timedelta

from django.utils import timezone

from reservations.models import HostAllocation, Lease, LeaseStatus, Notification
from tests.conftest import Caller
from tests.reservations.test_api import V1, lease_body
from tests.reservations.test_healing import COMPUTE, started_lease


def held(lease_id: str) -> list[str]:
    rows = HostAllocation.objects.filter(
        reservation__lease_id=lease_id, replaced_by=None, end_at__gt=timezone.now()
    )
    return sorted(rows.values_list("host__name", flat=True))


def at(minutes: float) -> str:
    return (timezone.now() + timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M")


def following(caller, name: str, on_host: str) -> dict:
    """A pending lease of any one host, right after the started one's end,
    that takes the started lease's host (the lowest name free then)."""
    body = {**lease_body(name=name), "start_date": at(120), "end_date": at(180)}
    lease = caller.post(f"{V1}/leases", body).json()["lease"]
    assert held(lease["id"]) == [on_host]
    return lease


def test_a_blocked_extension_names_the_swap_and_performs_it_when_asked(lab_member):
    mine = started_lease(lab_member)
    (host,) = held(mine["id"])
    assert host == "r1"
    neighbour = Caller("next-door", "member")
    theirs = following(neighbour, "theirs", host)
    url = f"{V1}/leases/{mine['id']}"

    refused = lab_member.put(url, {"end_date": at(150)})
    assert refused.status_code == 409
    answers = refused.json()["answers"]
    (swap,) = answers["swaps"]
    assert (swap["lease_name"], swap["host"]) == ("theirs", host)
    assert swap["replacement"] != host
    (alternative,) = answers["alternatives"]
    assert alternative["request"] == {"end_date": at(150), "swap": True}
    assert held(theirs["id"]) == [host]  # nothing moved on a refusal

    extended = lab_member.put(url, alternative["request"])
    assert extended.status_code == 200, extended.json()
    assert held(mine["id"]) == [host]
    assert held(theirs["id"]) == [swap["replacement"]]
    assert Lease.objects.get(pk=mine["id"]).end_at.strftime("%Y-%m-%d %H:%M") == at(150)
    # The neighbour's history says why its host changed.
    (told,) = Notification.objects.filter(lease_id=theirs["id"], event_type="lease.host_replaced")
    assert told.payload["new_host"] == swap["replacement"]
    assert mine["id"] in told.payload["reason"]


def test_no_swap_is_offered_for_a_lease_that_has_started(lab_member):
    mine = started_lease(lab_member)
    (host,) = held(mine["id"])
    neighbour = Caller("next-door", "member")
    theirs = following(neighbour, "theirs", host)
    Lease.objects.filter(pk=theirs["id"]).update(status=LeaseStatus.ACTIVE)
    refused = lab_member.put(f"{V1}/leases/{mine['id']}", {"end_date": at(150), "swap": True})
    assert refused.status_code == 409
    assert refused.json()["answers"] == {"swaps": [], "alternatives": []}
    assert held(theirs["id"]) == [host]


def test_no_swap_without_an_equivalent_free_host(lab_member):
    mine = started_lease(lab_member)
    (host,) = held(mine["id"])
    neighbour = Caller("next-door", "member")
    # Only compute hosts will do for it, and the other one is taken then.
    body = {**lease_body(name="theirs", resource_properties=COMPUTE)}
    body |= {"start_date": at(120), "end_date": at(180)}
    lease = neighbour.post(f"{V1}/leases", body).json()["lease"]
    other = {**body, "name": "other"}
    assert neighbour.post(f"{V1}/leases", other).status_code == 201
    assert host in held(lease["id"]) + held(Lease.objects.get(name="other").pk)
    refused = lab_member.put(f"{V1}/leases/{mine['id']}", {"end_date": at(150)})
    assert refused.status_code == 409 and refused.json()["answers"]["swaps"] == []


def test_swap_must_be_a_boolean(lab_member):
    mine = started_lease(lab_member)
    refused = lab_member.put(f"{V1}/leases/{mine['id']}", {"end_date": at(150), "swap": "yes"})
    assert refused.status_code == 400 and "'swap'" in refused.json()["error_message"]
