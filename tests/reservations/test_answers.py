"""A lease that does not fit gets answers, not just "not enough hosts":
why per constraint, how many hosts fit now, the earliest start, and
alternatives that fit now, each a request body to send as is."""

import json

from reservations.models import Lease
from tests.reservations.test_api import V1, lease_body
from tests.reservations.test_healing import COMPUTE

BIG_GPU = json.dumps(["and", ["==", "$node_type", "compute"], [">=", "$gpus", 8]])


def test_a_refused_lease_says_why_and_what_would_fit(lab_member):
    taken = lab_member.post(f"{V1}/leases", lease_body(name="first", resource_properties=COMPUTE))
    assert taken.status_code == 201
    wanted = lease_body(name="second", resource_properties=COMPUTE, min=2, max=2)
    refused = lab_member.post(f"{V1}/leases", wanted)
    assert refused.status_code == 409
    body = refused.json()
    # Blazar's error, as its clients read it, with berth's answers beside it.
    assert body["error_code"] == 409 and "Not enough hosts" in body["error_message"]
    answers = body["answers"]
    (constraint,) = answers["constraints"]
    assert {k: constraint[k] for k in ("needed", "reservable", "with_properties", "free")} == {
        "needed": 2,
        "reservable": 4,
        "with_properties": 2,
        "free": 1,
    }
    assert answers["hosts_fit_now"] == 1
    assert answers["earliest_start"] is not None
    why = [a["why"] for a in answers["alternatives"]]
    assert why[0].startswith("1 hosts instead of 2")
    assert why[1].startswith(f"without the property {COMPUTE}: 3 hosts free")
    assert why[2].startswith("the earliest start")
    fewer, other_kind, later = (a["request"] for a in answers["alternatives"])
    assert fewer["reservations"][0] | {"min": 2, "max": 2} == wanted["reservations"][0]
    assert (fewer["reservations"][0]["min"], fewer["reservations"][0]["max"]) == (1, 1)
    assert other_kind["reservations"][0]["resource_properties"] == ""
    assert later["start_date"] == answers["earliest_start"]
    # Each fits now, sent as is (one at a time: they compete for hosts).
    for alternative in (fewer, other_kind, later):
        tried = lab_member.post(f"{V1}/leases", {**alternative, "dry_run": True}).json()
        assert tried["dry_run"]["feasible"] is True, alternative
    assert lab_member.post(f"{V1}/leases", later).status_code == 201
    assert Lease.objects.filter(name="second").count() == 1


def test_a_dry_run_drops_one_property_at_a_time(lab_member):
    assert (
        lab_member.post(f"{V1}/leases", lease_body(resource_properties=BIG_GPU)).status_code == 201
    )
    probe = {**lease_body(name="probe", resource_properties=BIG_GPU), "dry_run": True}
    result = lab_member.post(f"{V1}/leases", probe).json()["dry_run"]
    assert result["feasible"] is False and result["hosts_fit_now"] == 0
    (constraint,) = result["constraints"]
    assert (constraint["with_properties"], constraint["free"]) == (1, 0)
    relaxed = [a for a in result["alternatives"] if a["why"].startswith("without")]
    # Without the gpus term r1 (compute) is free; without the node type
    # only r2 has 8 gpus, and the first lease holds it: not offered.
    (only,) = relaxed
    assert only["request"]["reservations"][0]["resource_properties"] == COMPUTE
    assert "dry_run" not in only["request"]


def test_a_refusal_that_is_no_capacity_offers_nothing(lab_member):
    """A name taken is a conflict with no alternative to offer."""
    assert lab_member.post(f"{V1}/leases", lease_body()).status_code == 201
    again = lab_member.post(f"{V1}/leases", lease_body())
    assert again.status_code == 409 and "answers" not in again.json()
