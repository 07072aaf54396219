"""Messages name things as the client writes them: wire values, never a
Python enum member, a model's repr or a Python literal."""

import json

import pytest

from compute import services as compute
from compute.models import Instance
from reservations.models import Lease
from tests.compute.conftest import run_pipeline
from tests.conftest import Caller
from tests.reservations.test_api import V1, lease_body


@pytest.mark.parametrize(
    ("reservation", "message"),
    [
        (
            {"resource_type": "physical:toaster"},
            'Invalid resource type "physical:toaster"; '
            "use one of: physical:host, virtual:instance, virtual:floatingip.",
        ),
        (
            {"resource_type": None},
            "Invalid resource type null; use one of: physical:host, virtual:instance, "
            "virtual:floatingip.",
        ),
        ({"min": None}, "min must be an integer, not null."),
        ({"min": {"n": 1}}, 'min must be an integer, not {"n": 1}.'),
        (
            {
                "resource_type": "virtual:instance",
                "amount": 1,
                "vcpus": 1,
                "memory_mb": 1,
                "affinity": [True],
            },
            "affinity must be true, false or none, not [true].",
        ),
        (
            {"resource_properties": json.dumps(["==", "$gpus", {"min": 4}])},
            'Malformed resource_properties: the value in ["==", "$gpus", {"min": 4}] '
            "must be a string or a number.",
        ),
    ],
)
def test_lease_errors_name_wire_values(lab_member, reservation, message):
    response = lab_member.post(f"{V1}/leases", lease_body(**reservation))
    assert (response.status_code, response.json()["error_message"]) == (400, message)
    assert not Lease.objects.exists()


def test_a_date_that_is_not_text_is_shown_as_sent(lab_member):
    response = lab_member.post(f"{V1}/leases", {**lease_body(), "start_date": True})
    assert response.json()["error_message"] == (
        "true is an invalid date. Required format: %Y-%m-%d %H:%M (start_date)."
    )


def test_another_projects_reservation_is_named_by_its_id_in_the_fault(lab_member):
    """A scheduler hint naming another project's reservation fails the build;
    the fault names the id the caller gave, not the owner's lease."""
    lease = lab_member.post(f"{V1}/leases", lease_body(name="secret-plan")).json()["lease"]
    reservation_id = lease["reservations"][0]["id"]
    compute.flavor_create(id="small", name="small", vcpus=1, ram=512, disk=1)
    other = Caller("other", "member", username="o")
    created = other.post(
        "/compute/v2.1/servers",
        {
            "server": {"name": "hinted", "flavorRef": "small", "networks": "none"},
            "os:scheduler_hints": {"reservation": reservation_id},
        },
    )
    assert created.status_code == 202, created.json()
    run_pipeline(Instance.objects.get(pk=created.json()["server"]["id"]))
    fault = other.get(f"/compute/v2.1/servers/{created.json()['server']['id']}").json()["server"][
        "fault"
    ]
    assert f"reservation {reservation_id} not found" in fault["message"]
    assert "secret-plan" not in fault["message"] and "physical:host" not in fault["message"]
