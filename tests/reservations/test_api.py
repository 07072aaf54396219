"""The Blazar API through DRF's client: shapes, dates, errors, isolation."""

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from reservations.models import Lease
from tests.conftest import Caller

V1 = "/reservation/v1"


def minutes(n: int) -> str:
    return (timezone.now() + timedelta(minutes=n)).strftime("%Y-%m-%d %H:%M")


def lease_body(name="l1", start=60, end=120, **reservation):
    host = {
        "resource_type": "physical:host",
        "min": 1,
        "max": 1,
        "hypervisor_properties": "",
        "resource_properties": "",
        "before_end": "default",
    }
    return {
        "name": name,
        "start_date": minutes(start),
        "end_date": minutes(end),
        "reservations": [{**host, **reservation}],
        "events": [],
        "before_end_date": None,
    }


def test_create_show_list_in_blazars_shapes(lab_member):
    created = lab_member.post(f"{V1}/leases", lease_body())
    assert created.status_code == 201
    lease = created.json()["lease"]
    assert lease["status"] == "PENDING"
    timezone.datetime.strptime(lease["start_date"], "%Y-%m-%dT%H:%M:%S.%f")
    timezone.datetime.strptime(lease["created_at"], "%Y-%m-%d %H:%M:%S")
    (reservation,) = lease["reservations"]
    assert (reservation["resource_type"], reservation["status"]) == ("physical:host", "pending")
    assert len(reservation["hosts"]) == 1
    assert {e["event_type"] for e in lease["events"]} >= {"start_lease", "end_lease", "heads_up"}
    assert lab_member.get(f"{V1}/leases/{lease['id']}").json()["lease"]["id"] == lease["id"]
    assert [x["id"] for x in lab_member.get(f"{V1}/leases").json()["leases"]] == [lease["id"]]
    assert lab_member.get(f"{V1}/leases", status="active").json() == {"leases": []}


def test_instance_reservation_accepts_the_clis_string_affinity(lab_member):
    body = lease_body(
        resource_type="virtual:instance",
        amount=2,
        vcpus=1,
        memory_mb=1024,
        disk_gb=10,
        affinity="False",
    )
    for key in ("min", "max", "hypervisor_properties", "before_end"):
        body["reservations"][0].pop(key)
    lease = lab_member.post(f"{V1}/leases", body).json()["lease"]
    (reservation,) = lease["reservations"]
    assert reservation["affinity"] is False and reservation["flavor_id"].startswith("reservation:")
    assert len(reservation["hosts"]) == 2


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"start_date": "tomorrow"}, 400, "is an invalid date. Required format: %Y-%m-%d %H:%M"),
        ({"start_date": "2020-01-01 10:00"}, 400, "must be later than current date"),
        ({"end_date": minutes(30)}, 400, "after its start date"),
        ({"name": None}, 400, "name is required"),
        ({"reservations": [{"resource_type": "physical:toaster"}]}, 400, "Invalid resource type"),
        (
            {"reservations": [{"resource_type": "physical:host", "min": 3, "max": 1}]},
            400,
            "Invalid values for min/max of hosts",
        ),
        (
            {"reservations": [{"resource_type": "physical:host", "min": "lots"}]},
            400,
            "must be an integer",
        ),
        (
            {
                "reservations": [
                    {
                        "resource_type": "physical:host",
                        "min": 1,
                        "max": 1,
                        "resource_properties": '["==", "$x"',
                    }
                ]
            },
            400,
            "Malformed",
        ),
        (
            {"reservations": [{"resource_type": "physical:host", "min": 5, "max": 5}]},
            409,
            "Not enough hosts available",
        ),
    ],
)
def test_bad_input_is_blazar_shaped_and_writes_nothing(lab_member, body, status, text):
    response = lab_member.post(f"{V1}/leases", {**lease_body(), **body})
    assert response.status_code == status, response.json()
    assert response.json()["error_code"] == status
    assert text in response.json()["error_message"]
    assert not Lease.objects.exists()


def test_name_taken_in_the_project_is_409_but_free_in_another(lab_member, pool):
    assert lab_member.post(f"{V1}/leases", lease_body(name="x")).status_code == 201
    again = lab_member.post(f"{V1}/leases", lease_body(name="x", start=200, end=300))
    assert again.status_code == 409
    assert again.json()["error_message"] == "The lease with name: x already exists"
    other = Caller("other", "member", username="o")
    assert other.post(f"{V1}/leases", lease_body(name="x", start=200, end=300)).status_code == 201


def test_nobody_touches_another_projects_lease(lab_member):
    lease = lab_member.post(f"{V1}/leases", lease_body()).json()["lease"]
    intruder = Caller("other", "member", username="o")
    url = f"{V1}/leases/{lease['id']}"
    for response in (intruder.get(url), intruder.put(url, {"name": "mine"}), intruder.delete(url)):
        assert response.status_code == 404
    assert intruder.get(f"{V1}/leases").json() == {"leases": []}
    reader = Caller("lab", "reader", username="r")
    assert reader.get(url).status_code == 200
    assert reader.delete(url).status_code == 403


def test_update_extend_and_conflict(lab_member):
    lease = lab_member.post(f"{V1}/leases", lease_body(max=4, min=4)).json()["lease"]
    url = f"{V1}/leases/{lease['id']}"
    extended = lab_member.put(url, {"end_date": minutes(180)})
    assert extended.status_code == 200
    assert extended.json()["lease"]["end_date"].startswith(minutes(180).replace(" ", "T"))
    lab_member.post(f"{V1}/leases", lease_body(name="later", start=200, end=260))
    conflict = lab_member.put(url, {"end_date": minutes(240)})
    assert conflict.status_code == 409
    assert lab_member.get(url).json()["lease"]["end_date"] == extended.json()["lease"]["end_date"]


def test_dry_run(lab_member):
    busy = lab_member.post(
        f"{V1}/leases", lease_body(name="busy", min=4, max=4, start=60, end=120)
    ).json()["lease"]
    response = lab_member.post(
        f"{V1}/leases", {**lease_body(name="probe", start=90, end=150), "dry_run": True}
    )
    assert response.status_code == 200
    result = response.json()["dry_run"]
    assert result["feasible"] is False and "Not enough hosts" in result["reason"]
    # The hosts are free again when the busy lease ends (read back, not
    # computed again: the clock may have turned a minute since).
    assert result["earliest_start"][:16] == busy["end_date"][:16]
    assert Lease.objects.count() == 1


def test_os_hosts_for_the_operator(ops, lab_member):
    hosts = ops.get(f"{V1}/os-hosts").json()["hosts"]
    assert sorted(h["hypervisor_hostname"] for h in hosts) == ["r1", "r2", "r3", "r4"]
    r1 = next(h for h in hosts if h["hypervisor_hostname"] == "r1")
    assert r1["node_type"] == "compute" and r1["vcpus"] == 16
    assert lab_member.get(f"{V1}/os-hosts").status_code == 403
    missing = ops.post(f"{V1}/os-hosts", {"name": "nope"})
    assert (missing.status_code, missing.json()["error_message"]) == (404, "Host 'nope' not found!")
    assert ops.post(f"{V1}/os-hosts", {"name": "r1"}).status_code == 409
    updated = ops.put(f"{V1}/os-hosts/{r1['id']}", {"values": {"rack": "a7"}})
    assert updated.json()["host"]["rack"] == "a7"
    props = ops.get(f"{V1}/os-hosts/properties").json()["resource_properties"]
    assert {"property": "node_type"} in props
    lab_member.post(f"{V1}/leases", lease_body(min=4, max=4))
    assert ops.delete(f"{V1}/os-hosts/{r1['id']}").status_code == 409
    allocations = ops.get(f"{V1}/os-hosts/allocations").json()["allocations"]
    assert all(len(a["reservations"]) == 1 for a in allocations)


def test_free_capacity_is_a_step_function(lab_member, ops):
    lab_member.post(f"{V1}/leases", lease_body(min=3, max=3, start=60, end=120))
    steps = ops.get(
        f"{V1}/os-hosts/free-capacity",
        start_date=minutes(30),
        end_date=minutes(150),
        resource_properties=json.dumps([">=", "$gpus", 0]),
    ).json()
    assert [step["free_hosts"] for step in steps["free_capacity"]] == [3, 0, 3]


def test_feed_is_project_scoped_and_ordered(lab_member):
    lab_member.post(f"{V1}/leases", lease_body())
    feed = lab_member.get(f"{V1}/notifications", since=0).json()
    assert [n["event_type"] for n in feed["notifications"]] == ["lease.create"]
    assert (
        lab_member.get(f"{V1}/notifications", since=feed["last_seq"]).json()["notifications"] == []
    )
    assert (
        Caller("other", "member", username="o").get(f"{V1}/notifications").json()["notifications"]
        == []
    )
    assert lab_member.get(f"{V1}/notifications", since="x").status_code == 400


def test_subscriptions_respect_the_allow_list(lab_member, settings):
    settings.BERTH_WEBHOOK_ALLOWED = ["127.0.0.0/8:9"]
    refused = lab_member.post(f"{V1}/subscriptions", {"subscription": {"url": "http://10.0.0.1/h"}})
    assert refused.status_code == 400 and "refused" in refused.json()["error_message"]
    created = lab_member.post(
        f"{V1}/subscriptions",
        {"subscription": {"url": "http://127.0.0.1:9/hook", "event_types": ["lease.event."]}},
    )
    assert created.status_code == 201 and len(created.json()["subscription"]["secret"]) > 20
    listed = lab_member.get(f"{V1}/subscriptions").json()["subscriptions"]
    assert "secret" not in listed[0]


def test_unknown_ids_are_404(lab_member):
    for ref in (str(uuid.uuid4()), "by-name"):
        response = lab_member.get(f"{V1}/leases/{ref}")
        assert response.status_code == 404 and response.json()["error_code"] == 404


# --- hostile input: each of these answered 500, or (marked) was stored and failed
# later: on PostgreSQL (a value past its column) or in the event worker.


def test_feed_paging_values_are_checked(lab_member):
    lab_member.post(f"{V1}/leases", lease_body())
    assert lab_member.get(f"{V1}/notifications", limit="x").status_code == 400
    # "²" is a digit to str.isdigit but not to int().
    assert lab_member.get(f"{V1}/notifications", since="²").status_code == 400
    assert lab_member.get(f"{V1}/notifications/²").status_code == 404
    assert lab_member.get(f"{V1}/notifications", limit="2").status_code == 200
    assert lab_member.get(f"{V1}/notifications", lease_id="x").json()["error_message"] == (
        "lease_id must be a lease's id, not 'x'."
    )
    response = lab_member.delete(f"{V1}/notifications/1")
    assert response.status_code == 405 and response.json()["error_code"] == 405


@pytest.mark.parametrize(
    ("reservation", "text"),
    [
        ({"min": 2**70, "max": 2**70}, "min must be at most"),
        # Stored as str(...) in a 16-character column (PostgreSQL).
        ({"before_end": {"a": 1}}, "before_end must be a string"),
        (
            {
                "resource_type": "virtual:instance",
                "amount": 1,
                "vcpus": 1,
                "memory_mb": 1,
                "server_template": {"count": "x"},
            },
            "server_template count must be an integer",
        ),
        (
            {
                "resource_type": "virtual:instance",
                "amount": 1,
                "vcpus": 1,
                "memory_mb": 1,
                "server_template": {"networks": ["net"]},
            },
            # Read by the event worker at the lease's start.
            "server_template networks",
        ),
    ],
)
def test_reservation_values_are_checked_before_the_service(lab_member, reservation, text):
    response = lab_member.post(f"{V1}/leases", lease_body(**reservation))
    assert response.status_code == 400 and text in response.json()["error_message"]
    assert not Lease.objects.exists()


def test_dates_past_the_horizon_are_400(lab_member, ops):
    # Date arithmetic near year 9999 overflowed (free capacity adds a week).
    far = {"start_date": "9999-12-31 22:00", "end_date": "9999-12-31 23:59"}
    for body in ({**lease_body(), **far}, {**lease_body(), **far, "dry_run": True}):
        response = lab_member.post(f"{V1}/leases", body)
        assert response.status_code == 400 and "too far ahead" in response.json()["error_message"]
    response = ops.get(f"{V1}/os-hosts/free-capacity", start_date="9999-12-31 23:00")
    assert response.status_code == 400


def test_lease_update_checks_each_reservation_change(lab_member):
    lease = lab_member.post(f"{V1}/leases", lease_body()).json()["lease"]
    reservation = lease["reservations"][0]["id"]
    url = f"{V1}/leases/{lease['id']}"
    for changes, text in [
        (["x"], "must be an object"),
        ([{"id": "x"}], "is not a valid id"),
        ([{"id": reservation, "min": "a"}], "min must be an integer"),
        ([{"id": reservation, "resource_properties": 5}], "JSON-encoded string"),
    ]:
        response = lab_member.put(url, {"reservations": changes})
        assert response.status_code == 400 and text in response.json()["error_message"]
    assert lab_member.put(url, {"name": "x" * 81}).status_code == 400
    assert lab_member.put(url, {"reservations": [{"id": reservation, "max": 2}]}).status_code == 200


def test_webhook_urls_that_do_not_parse_are_400(lab_member, settings):
    settings.BERTH_WEBHOOK_ALLOWED = ["127.0.0.0/8"]
    for url in ("http://[::1/h", "http://127.0.0.1:99999/h", "http://" + "a" * 70 + ".test/h"):
        response = lab_member.post(f"{V1}/subscriptions", {"subscription": {"url": url}})
        assert response.status_code == 400 and "refused" in response.json()["error_message"]
    too_long = {"url": "http://127.0.0.1/h", "secret": "s" * 129}
    assert lab_member.post(f"{V1}/subscriptions", {"subscription": too_long}).status_code == 400


def test_capability_names_fit_their_column(ops):
    # The property row's key column holds 255 characters (PostgreSQL).
    response = ops.post(f"{V1}/os-hosts", {"name": "r1", "k" * 256: "v"})
    assert response.status_code == 400 and "1 to 255" in response.json()["error_message"]


def test_another_projects_reservation_looks_like_no_reservation(lab_member):
    """Booting with a hint to another project's reservation fails as a hint
    to none does: the same fault, naming the hint as the caller wrote it
    (not the owner's lease, nor the id in a form that tells it exists)."""
    from compute import services as compute
    from compute.models import Instance
    from tests.compute.conftest import run_pipeline

    lease = lab_member.post(f"{V1}/leases", lease_body(name="secret-plan")).json()["lease"]
    compute.flavor_create(id="small", name="small", vcpus=1, ram=512, disk=1)
    other = Caller("other", "member", username="o")

    def fault(hint: str) -> str:
        created = other.post(
            "/compute/v2.1/servers",
            {
                "server": {"name": "hinted", "flavorRef": "small", "networks": "none"},
                "os:scheduler_hints": {"reservation": hint},
            },
        )
        assert created.status_code == 202, created.json()
        server = created.json()["server"]["id"]
        run_pipeline(Instance.objects.get(pk=server))
        return other.get(f"/compute/v2.1/servers/{server}").json()["server"]["fault"]["message"]

    hint = lease["reservations"][0]["id"].upper()
    nowhere = str(uuid.uuid4()).upper()
    theirs, none = fault(hint), fault(nowhere)
    assert f"reservation {hint} not found" in theirs
    assert "secret-plan" not in theirs and lease["id"] not in theirs
    assert theirs.replace(hint, "ID") == none.replace(nowhere, "ID")
