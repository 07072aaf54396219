"""The Nova API through DRF's client."""

import uuid

import pytest

from compute.models import Host, Instance
from identity.quotas import quota_set
from networking import services as net_services
from tests.compute.conftest import C21, run_pipeline


@pytest.fixture
def acme_admin(cloud):
    from tests.conftest import Caller

    return Caller("acme", "admin", username="acme-admin")


def create(caller, **server):
    return caller.post(f"{C21}/servers", {"server": {"name": "s", "flavorRef": "small", **server}})


def test_create_is_202_and_stores_the_request(acme_admin, cloud):
    response = create(acme_admin, networks=[{"uuid": str(cloud.network.pk)}])
    assert response.status_code == 202
    body = response.json()["server"]
    instance = Instance.objects.get(pk=body["id"])
    assert instance.status == "BUILD" and instance.task_state == "preparing_ports"
    assert body["links"][0]["href"].endswith(f"/compute/v2.1/servers/{body['id']}")
    assert instance.actions.get().action == "create"
    assert response["OpenStack-API-Version"] == "compute 2.1"


def test_show_active_server_with_addresses_and_host(acme_admin, cloud):
    body = create(acme_admin, networks=[{"uuid": str(cloud.network.pk)}]).json()["server"]
    run_pipeline(Instance.objects.get(pk=body["id"]))
    server = acme_admin.get(f"{C21}/servers/{body['id']}").json()["server"]
    assert server["status"] == "ACTIVE"
    assert server["OS-EXT-SRV-ATTR:host"] == "h1"  # equal weights: by name
    (addr,) = server["addresses"]["routed"]
    assert addr["OS-EXT-IPS:type"] == "fixed" and addr["version"] == 4
    detail = acme_admin.get(f"{C21}/servers/detail", name="^s$", status="active").json()
    assert [s["id"] for s in detail["servers"]] == [body["id"]]
    brief = acme_admin.get(f"{C21}/servers").json()["servers"][0]
    assert set(brief) == {"id", "name", "links"}
    interfaces = acme_admin.get(f"{C21}/servers/{body['id']}/os-interface").json()
    assert interfaces["interfaceAttachments"][0]["fixed_ips"][0]["ip_address"] == addr["addr"]
    actions = acme_admin.get(f"{C21}/servers/{body['id']}/os-instance-actions").json()
    request_id = actions["instanceActions"][0]["request_id"]
    events = acme_admin.get(f"{C21}/servers/{body['id']}/os-instance-actions/{request_id}").json()
    assert [e["event"] for e in events["instanceAction"]["events"]] == [
        "compute_prepare_ports",
        "compute_schedule_instance",
        "compute_bind_ports",
        "compute_spawn",
    ]


def test_error_server_shows_its_fault(acme_admin, cloud):
    Host.objects.update(enabled=False)
    body = create(acme_admin, networks=[{"uuid": str(cloud.network.pk)}]).json()["server"]
    run_pipeline(Instance.objects.get(pk=body["id"]))
    server = acme_admin.get(f"{C21}/servers/{body['id']}").json()["server"]
    assert server["status"] == "ERROR"
    assert server["fault"]["message"] == "no enabled host is alive"
    assert server["fault"]["code"] == 500 and server["fault"]["created"].endswith("Z")


def test_bad_requests(acme_admin, cloud):
    net = str(cloud.network.pk)
    cases = [
        ({"flavorRef": "nope", "networks": [{"uuid": net}]}, 400, "badRequest", "Flavor nope"),
        ({"networks": [{"uuid": str(uuid.uuid4())}]}, 400, "badRequest", "could not be found"),
        ({"networks": [{"port": str(uuid.uuid4())}]}, 400, "badRequest", "Port id"),
        ({"networks": [{}]}, 400, "badRequest", "uuid"),
        (
            {"networks": [{"uuid": net}], "min_count": 3, "max_count": 2},
            400,
            "badRequest",
            "min_count",
        ),
        ({"name": "", "networks": [{"uuid": net}]}, 400, "badRequest", "name"),
    ]
    for body, status, fault, text in cases:
        response = create(acme_admin, **body)
        assert response.status_code == status, (body, response.json())
        assert text in response.json()[fault]["message"]
    assert not Instance.objects.exists()


def test_port_in_use_is_409(acme_admin, cloud):
    port = net_services.port_create(
        project=cloud.project, network=cloud.network, device_id="someone-else"
    )
    response = create(acme_admin, networks=[{"port": str(port.pk)}])
    assert response.status_code == 409
    assert response.json()["conflictingRequest"]["message"] == f"Port {port.pk} is still in use."


def test_only_the_owner_picks_a_fixed_ip_on_a_shared_network(cloud, caller):
    network = cloud.network
    network.shared = True
    network.save(update_fields=["shared"])
    beta = caller("beta", "member")
    pinned = [{"uuid": str(network.pk), "fixed_ip": "10.1.0.50"}]
    response = create(beta, networks=pinned)
    assert response.status_code == 403
    assert response.json()["forbidden"]["message"] == (
        f"Only an admin or the owner of network {network.pk} can choose a fixed IP "
        "address on it; leave ip_address out to get one from the pool."
    )
    assert not Instance.objects.exists()
    assert create(beta, networks=[{"uuid": str(network.pk)}]).status_code == 202


def test_over_quota_is_403_and_multi_create_is_all_or_nothing_at_min(acme_admin, cloud):
    quota_set(project=cloud.project, resource="instances", limit=3)
    net = [{"uuid": str(cloud.network.pk)}]
    assert create(acme_admin, networks=net, min_count=2, max_count=5).status_code == 202
    assert Instance.objects.count() == 3  # as many as fit, at least min_count
    response = create(acme_admin, networks=net)
    assert response.status_code == 403
    assert response.json()["forbidden"]["message"].startswith("Quota exceeded for instances")


def test_unknown_server_is_404_and_names_are_looked_up_by_list(acme_admin, cloud):
    for ref in (str(uuid.uuid4()), "my-server"):
        response = acme_admin.get(f"{C21}/servers/{ref}")
        assert response.status_code == 404
        assert response.json()["itemNotFound"]["message"] == f"Instance {ref} could not be found."


def test_other_project_cannot_see_or_delete(acme_admin, cloud, caller):
    body = create(acme_admin, networks=[{"uuid": str(cloud.network.pk)}]).json()["server"]
    bob = caller("beta", "member")
    assert bob.get(f"{C21}/servers/{body['id']}").status_code == 404
    assert bob.delete(f"{C21}/servers/{body['id']}").status_code == 404
    assert bob.get(f"{C21}/servers/detail").json() == {"servers": []}


def test_delete_is_204_then_404(acme_admin, cloud):
    body = create(acme_admin, networks=[{"uuid": str(cloud.network.pk)}]).json()["server"]
    run_pipeline(Instance.objects.get(pk=body["id"]))
    assert acme_admin.delete(f"{C21}/servers/{body['id']}").status_code == 204
    from compute import pipeline

    pipeline.delete(body["id"])  # what the worker runs after commit
    assert acme_admin.get(f"{C21}/servers/{body['id']}").status_code == 404


def test_unsupported_microversion_is_406(acme_admin, cloud):
    response = acme_admin.client.get(f"{C21}/flavors", HTTP_OPENSTACK_API_VERSION="compute 2.96")
    assert response.status_code == 406
    assert "not supported" in response.json()["HTTPNotAcceptable"]["message"]


def test_flavors(acme_admin, cloud, caller):
    reader = caller("beta", "reader")
    detail = reader.get(f"{C21}/flavors/detail", is_public="None").json()["flavors"]
    assert {f["id"]: (f["vcpus"], f["ram"]) for f in detail} == {
        "small": (1, 1024),
        "big": (8, 8192),
    }
    assert reader.get(f"{C21}/flavors/small").json()["flavor"]["disk"] == 10
    assert reader.get(f"{C21}/flavors/small/os-extra_specs").json() == {"extra_specs": {}}
    body = {"flavor": {"name": "gpu", "vcpus": 4, "ram": 4096, "disk": 20, "id": "gpu"}}
    assert reader.post(f"{C21}/flavors", body).status_code == 403
    assert acme_admin.post(f"{C21}/flavors", body).json()["flavor"]["id"] == "gpu"
    specs = {"extra_specs": {"hw:cpu_policy": "dedicated"}}
    assert acme_admin.post(f"{C21}/flavors/gpu/os-extra_specs", specs).status_code == 200
    assert reader.get(f"{C21}/flavors/gpu/os-extra_specs").json() == specs
    assert acme_admin.delete(f"{C21}/flavors/gpu").status_code == 202
    assert reader.get(f"{C21}/flavors/gpu").status_code == 404


def test_hypervisors_services_and_host_reports(acme_admin, cloud, caller):
    report = {
        "host_report": {
            "name": "h9",
            "vcpus": 4,
            "memory_mb": 4096,
            "disk_gb": 40,
            "physnets": {"physnet1": {"bridge": "br-ex"}},
        }
    }
    assert caller("beta", "member").post(f"{C21}/os-host-reports", report).status_code == 403
    shown = acme_admin.post(f"{C21}/os-host-reports", report).json()["hypervisor"]
    assert (shown["hypervisor_hostname"], shown["vcpus"], shown["state"]) == ("h9", 4, "up")
    bad = {"host_report": {"name": "h9", "vcpus": -1, "memory_mb": 1, "disk_gb": 1}}
    assert acme_admin.post(f"{C21}/os-host-reports", bad).status_code == 400
    hypervisors = acme_admin.get(f"{C21}/os-hypervisors/detail").json()["hypervisors"]
    assert {h["hypervisor_hostname"] for h in hypervisors} == {"h1", "h2", "h3", "h9"}
    disabled = acme_admin.put(
        f"{C21}/os-services/disable-log-reason",
        {"host": "h9", "binary": "nova-compute", "disabled_reason": "maint"},
    )
    assert disabled.json()["service"]["status"] == "disabled"
    services = acme_admin.get(f"{C21}/os-services").json()["services"]
    h9 = next(s for s in services if s["host"] == "h9")
    assert (h9["status"], h9["disabled_reason"]) == ("disabled", "maint")
    enabled = acme_admin.put(f"{C21}/os-services/enable", {"host": "h9", "binary": "nova-compute"})
    assert enabled.json()["service"]["status"] == "enabled"
    assert acme_admin.put(f"{C21}/os-services/enable", {"host": "nope"}).status_code == 404


# --- hostile input: each of these answered 500 ------------------------------------


def test_routes_without_an_action_are_404_or_405(acme_admin, cloud):
    # They reached viewsets with no serializer or perform_destroy for them.
    host = cloud.hosts["h1"].pk
    for method, url, status in [
        ("delete", f"{C21}/os-hypervisors/{host}", 405),
        ("get", f"{C21}/os-host-reports", 405),
        ("get", f"{C21}/os-host-reports/{host}", 404),
        ("delete", f"{C21}/os-host-reports/{host}", 404),
        ("get", f"{C21}/os-services/{host}", 405),
        ("delete", f"{C21}/os-services/{host}", 405),
    ]:
        response = getattr(acme_admin.client, method)(url)
        assert response.status_code == status, (method, url)
        assert response.json()[{404: "itemNotFound", 405: "HTTPMethodNotAllowed"}[status]]
    assert Host.objects.filter(pk=host).exists()


def test_numbers_past_an_integer_column_are_400(acme_admin, cloud):
    flavor = {"name": "huge", "vcpus": 2**70, "ram": 1, "disk": 1}
    response = acme_admin.post(f"{C21}/flavors", {"flavor": flavor})
    assert response.status_code == 400 and "vcpus" in response.json()["badRequest"]["message"]
    report = {"name": "h9", "vcpus": 2**40, "memory_mb": 1, "disk_gb": 1}
    response = acme_admin.post(f"{C21}/os-host-reports", {"host_report": report})
    assert response.status_code == 400 and "vcpus" in response.json()["badRequest"]["message"]


def test_host_report_network_values_are_typed(acme_admin, cloud):
    base = {"name": "h9", "vcpus": 4, "memory_mb": 1024, "disk_gb": 10}

    def report(**network):
        return acme_admin.post(f"{C21}/os-host-reports", {"host_report": {**base, **network}})

    # A list where a bridge name goes was hashed by the service (TypeError).
    assert report(physnets={"physnet1": {"bridge": ["br-ex"]}}).status_code == 400
    assert report(physnets={"p" * 65: {"bridge": "br-ex"}}).status_code == 400
    nic = {"mac_address": "52:54:00:00:00:09", "physical_network": "physnet1"}
    assert report(baremetal_nics=[{**nic, "physical_network": {"a": 1}}]).status_code == 400
    assert report(baremetal_nics=[{"mac_address": nic["mac_address"]}]).status_code == 400
    # An unknown NIC key went into the model constructor (TypeError); now dropped.
    from networking.models import HostAgent

    shown = report(baremetal_nics=[{**nic, "vendor": "x"}])
    assert shown.status_code == 200
    nics = HostAgent.objects.get(host="h9").baremetal_nics.values_list("mac_address", flat=True)
    assert list(nics) == ["52:54:00:00:00:09"]


def test_options_is_405_not_a_description_of_a_missing_serializer(acme_admin, cloud):
    # DRF answered OPTIONS by describing the view's serializer; these views
    # build their bodies without one (AssertionError).
    for url in (f"{C21}/os-host-reports", f"{C21}/os-services/disable", f"{C21}/servers"):
        response = acme_admin.client.options(url)
        assert response.status_code == 405 and "HTTPMethodNotAllowed" in response.json()


def test_changes_since_with_an_offset_postgresql_refuses(acme_admin, cloud):
    # Python takes offsets up to 24 h, PostgreSQL up to 15:59 (a DataError
    # that poisoned the request's transaction); the filter now sends UTC.
    response = acme_admin.get(f"{C21}/servers", **{"changes-since": "2026-03-13T03:47:19+20:56"})
    assert response.status_code == 200
    assert response.json()["servers"] == []
