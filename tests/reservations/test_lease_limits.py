"""The bounds on a lease's dates through the Blazar API: no start in the
past (on update as on create), the operator's longest lease and farthest
start, and a project's override of them."""

import pytest

from identity.quotas import quota_set
from reservations.models import Lease
from tests.conftest import Caller
from tests.reservations.test_api import V1, lease_body, minutes

DAY = 24 * 60  # minutes


@pytest.fixture
def bounds(settings):
    """A week's lease at most, starting at most 90 days ahead."""
    settings.BERTH_QUOTA_DEFAULTS = {
        **settings.BERTH_QUOTA_DEFAULTS,
        "lease_duration": 7 * DAY * 60,
        "lease_start_ahead": 90 * DAY * 60,
    }


def refused(response, text: str) -> None:
    assert response.status_code == 400, response.json()
    assert response.json()["error_code"] == 400
    assert text in response.json()["error_message"], response.json()


def test_a_pending_lease_cannot_move_its_start_into_the_past(lab_member):
    lease = lab_member.post(f"{V1}/leases", lease_body()).json()["lease"]
    url = f"{V1}/leases/{lease['id']}"
    for past in (minutes(-10), "2020-01-01 10:00"):
        response = lab_member.put(url, {"start_date": past})
        refused(response, f"Start date {past} must be later than current date.")
        assert lab_member.get(url).json()["lease"]["start_date"] == lease["start_date"]
    # "now" is the present, as on create.
    moved = lab_member.put(url, {"start_date": "now"})
    assert moved.status_code == 200, moved.json()
    assert moved.json()["lease"]["start_date"] < lease["start_date"]


def test_the_longest_lease_is_the_operators(lab_member, bounds):
    week = lease_body(name="week", start=60, end=60 + 7 * DAY)
    over = lease_body(name="over", start=60, end=60 + 7 * DAY + 1)
    message = (
        "Lease duration of 604860 seconds must be less than or equal to the "
        "maximum lease duration of 604800 seconds."
    )
    refused(lab_member.post(f"{V1}/leases", over), message)
    refused(lab_member.post(f"{V1}/leases", {**over, "dry_run": True}), message)
    assert not Lease.objects.exists()
    lease = lab_member.post(f"{V1}/leases", week)
    assert lease.status_code == 201, lease.json()
    url = f"{V1}/leases/{lease.json()['lease']['id']}"
    # Extending past the bound, or pulling the start earlier, is refused too.
    refused(lab_member.put(url, {"end_date": minutes(60 + 7 * DAY + 1)}), message)
    refused(lab_member.put(url, {"start_date": minutes(59)}), message)
    assert lab_member.get(url).json()["lease"] == lease.json()["lease"]
    # No role is exempt: an admin's own lease is bounded as well.
    ops = Caller("ops", "admin", username="operator")
    refused(ops.post(f"{V1}/leases", over), message)


def test_the_farthest_start_is_the_operators(lab_member, bounds):
    message = "seconds ahead; a lease may start at most 7776000 seconds ahead."
    # Two minutes past the bound: request dates are whole minutes, and the
    # request is served a moment after its dates were written.
    far = lease_body(name="far", start=90 * DAY + 2, end=90 * DAY + 60)
    refused(lab_member.post(f"{V1}/leases", far), message)
    refused(lab_member.post(f"{V1}/leases", {**far, "dry_run": True}), message)
    lease = lab_member.post(f"{V1}/leases", lease_body(start=89 * DAY, end=89 * DAY + 60))
    assert lease.status_code == 201, lease.json()
    url = f"{V1}/leases/{lease.json()['lease']['id']}"
    deferred = {"start_date": minutes(91 * DAY), "end_date": minutes(91 * DAY + 60)}
    refused(lab_member.put(url, deferred), message)
    assert lab_member.get(url).json()["lease"] == lease.json()["lease"]


def test_years_long_leases_are_refused_by_default(lab_member):
    """The report's case: the only host of its kind held for eight years."""
    for end in ("2034-12-01 10:00", "2999-12-31 23:59"):
        body = {**lease_body(), "start_date": "now", "end_date": end}
        refused(lab_member.post(f"{V1}/leases", body), "maximum lease duration")
    body = {**lease_body(), "start_date": "2999-01-01 10:00", "end_date": "2999-01-01 12:00"}
    refused(lab_member.post(f"{V1}/leases", body), "seconds ahead")
    assert not Lease.objects.exists()


def test_a_project_override_lifts_the_bounds(lab_member, bounds):
    long = {**lease_body(name="long"), "start_date": minutes(120 * DAY)}
    long["end_date"] = minutes(120 * DAY + 30 * DAY)
    refused(lab_member.post(f"{V1}/leases", long), "maximum lease duration")
    quota_set(project=lab_member.project, resource="lease_duration", limit=-1)
    refused(lab_member.post(f"{V1}/leases", long), "seconds ahead")
    quota_set(project=lab_member.project, resource="lease_start_ahead", limit=200 * DAY * 60)
    lease = lab_member.post(f"{V1}/leases", long)
    assert lease.status_code == 201, lease.json()
    # Another project keeps the operator's bounds.
    other = Caller("other", "member", username="o")
    refused(other.post(f"{V1}/leases", {**long, "name": "mine"}), "maximum lease duration")
    # The bound lowered again: the lease may still shrink and be renamed,
    # not grow.
    quota_set(project=lab_member.project, resource="lease_duration", limit=7 * DAY * 60)
    url = f"{V1}/leases/{lease.json()['lease']['id']}"
    shrunk = lab_member.put(url, {"name": "shorter", "end_date": minutes(120 * DAY + 20 * DAY)})
    assert shrunk.status_code == 200, shrunk.json()
    refused(lab_member.put(url, {"end_date": minutes(120 * DAY + 21 * DAY)}), "maximum lease")


def test_a_dry_run_offers_no_start_beyond_the_farthest(lab_member, settings):
    settings.BERTH_QUOTA_DEFAULTS = {**settings.BERTH_QUOTA_DEFAULTS, "lease_start_ahead": 3 * 3600}
    busy = lease_body(name="busy", min=4, max=4, start=60, end=240)
    assert lab_member.post(f"{V1}/leases", busy).status_code == 201
    probe = {**lease_body(name="probe", start=90, end=150), "dry_run": True}
    response = lab_member.post(f"{V1}/leases", probe)
    assert response.status_code == 200, response.json()
    # The hosts free up 4 hours ahead, past the 3 the project may ask for.
    assert response.json()["dry_run"]["feasible"] is False
    assert response.json()["dry_run"]["earliest_start"] is None
