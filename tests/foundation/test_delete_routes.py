"""Every DELETE route of the three APIs, with each kind of dependent there
(the peer service's 409 in its error shape, nothing deleted) and gone (the
peer's 2xx, no row left behind, then 404). Builds run the pipeline's steps
in this process, as the compute API tests do."""

from datetime import timedelta

import pytest
from django.utils import timezone

from compute import pipeline
from compute.api import urls as compute_urls
from compute.models import Host, Instance, InstanceAction, InstanceNic
from identity.quotas import quota_set
from identity.services import token_create
from networking.api import urls as networking_urls
from networking.models import HostPhysnet, IPAllocation, Network, Port, Segment, Subnet
from reservations import events
from reservations.api import urls as reservation_urls
from reservations.models import (
    Delivery,
    HostAllocation,
    HostProperty,
    Lease,
    LeaseEvent,
    LeaseStatus,
    Notification,
    Reservation,
)
from tests.compute.conftest import run_pipeline
from tests.conftest import Caller, sdk_connection
from tests.factories import FlavorFactory, HostFactory, NetworkFactory, ReservableHostFactory

V2 = "/networking/v2.0"
C21 = "/compute/v2.1"
V1 = "/reservation/v1"

# What this module walks, by route; the last test checks it is all of them.
WALKED = {
    "networking": {"networks", "segments", "subnets", "ports", "agents"},
    "compute": {"flavors", "flavors/os-extra_specs", "servers"},
    "reservation": {"leases", "os-hosts", "subscriptions"},
}


@pytest.fixture
def admin(db):
    """An admin of project "acme", hosts h1 and h2 (VXLAN and physnet1),
    flavor small, network "net" (one VXLAN segment) with subnet 10.0.0.0/24."""
    caller = Caller("acme", "admin", username="acme-admin")
    for name in ("h1", "h2"):
        HostFactory(name=name)
    FlavorFactory(name="small", ram=512, disk=1)
    NetworkFactory(project=caller.project, name="net", subnets=[{"cidr": "10.0.0.0/24"}])
    return caller


def net_id() -> str:
    return str(Network.objects.get(name="net").pk)


def subnet_id() -> str:
    return str(Subnet.objects.get(network__name="net").pk)


def boot(caller, *, build: bool = True, **server) -> str:
    server = {"name": "vm", "flavorRef": "small", "networks": [{"uuid": net_id()}], **server}
    response = caller.post(f"{C21}/servers", {"server": server})
    assert response.status_code == 202, response.json()
    server_id = response.json()["server"]["id"]
    if build:
        run_pipeline(Instance.objects.get(pk=server_id))
    return server_id


def delete_server(caller, server_id: str) -> None:
    assert caller.delete(f"{C21}/servers/{server_id}").status_code == 204
    pipeline.delete(server_id)  # what the worker runs after commit
    assert caller.get(f"{C21}/servers/{server_id}").status_code == 404


def create_port(caller, **port) -> str:
    body = {"port": {"network_id": net_id(), **port}}
    return caller.post(f"{V2}/ports", body).json()["port"]["id"]


def neutron_conflict(response, error_type: str) -> str:
    assert response.status_code == 409, response.content
    error = response.json()["NeutronError"]
    assert error["type"] == error_type
    return error["message"]


# --- networking -------------------------------------------------------------------


def test_the_network_a_deleted_server_was_booted_on_is_deleted(admin):
    """The issue's reproduction: this was a 500 "The database refused the
    operation", and the network counted against the quota for ever."""
    quota_set(project=admin.project, resource="network", limit=1)
    server_id = boot(admin)
    assert admin.get(f"{C21}/servers/{server_id}").json()["server"]["status"] == "ACTIVE"
    delete_server(admin, server_id)
    assert admin.delete(f"{V2}/subnets/{subnet_id()}").status_code == 204
    network = net_id()
    assert admin.delete(f"{V2}/networks/{network}").status_code == 204
    assert admin.get(f"{V2}/networks/{network}").status_code == 404
    assert not Segment.objects.filter(network_id=network).exists()
    assert not InstanceNic.objects.filter(network_id=network).exists()
    # The deleted server's story is kept, and the quota has room again.
    actions = InstanceAction.objects.filter(instance_id=server_id)
    assert sorted(actions.values_list("action", flat=True)) == ["create", "delete"]
    again = admin.post(f"{V2}/networks", {"network": {"name": "again"}})
    assert again.status_code == 201


@pytest.mark.worker
def test_the_issue_on_a_real_worker_through_openstacksdk(transactional_db, live_server, worker):
    """The same, as it was found: openstacksdk against a live server, the
    build and the delete on a real worker."""
    token = token_create(project_name="acme", username="acme-admin", role="admin")[1]
    conn = sdk_connection(live_server.url, token)
    HostFactory(name="h1")
    FlavorFactory(name="small", ram=512, disk=1)
    network = conn.network.create_network(name="net")
    subnet = conn.network.create_subnet(network_id=network.id, ip_version=4, cidr="10.0.0.0/24")
    server = conn.compute.create_server(
        name="vm", flavor_id="small", networks=[{"uuid": network.id}]
    )
    conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], interval=0.3, wait=90)
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, interval=0.3, wait=60)
    conn.network.delete_subnet(subnet)
    conn.network.delete_network(network)  # HttpException: 500
    assert conn.network.find_network(network.id) is None


def test_a_network_with_ports_is_in_use(admin):
    port = create_port(admin)
    neutron_conflict(admin.delete(f"{V2}/networks/{net_id()}"), "NetworkInUse")
    assert admin.get(f"{V2}/ports/{port}").status_code == 200
    assert admin.get(f"{V2}/subnets/{subnet_id()}").status_code == 200
    assert admin.delete(f"{V2}/ports/{port}").status_code == 204
    assert admin.delete(f"{V2}/networks/{net_id()}").status_code == 204
    assert not Subnet.objects.exists() and not Segment.objects.exists()


@pytest.mark.parametrize("status", ["BUILD", "ERROR"])
def test_a_network_a_live_server_asked_for_is_in_use(admin, status):
    """A server not built yet (its port is still to be made) or whose build
    failed (its ports are gone, a retry would make them again) holds its
    network. Both deletes were 500s."""
    if status == "ERROR":
        Host.objects.update(enabled=False)
    server_id = boot(admin, build=status == "ERROR")
    assert Instance.objects.get(pk=server_id).status == status
    assert not Port.objects.exists()
    network = net_id()
    message = neutron_conflict(admin.delete(f"{V2}/networks/{network}"), "NetworkInUse")
    assert f"server {server_id}" in message
    assert admin.get(f"{V2}/subnets/{subnet_id()}").status_code == 200
    assert Segment.objects.filter(network_id=network).exists()
    delete_server(admin, server_id)
    assert admin.delete(f"{V2}/networks/{network}").status_code == 204
    assert not InstanceNic.objects.exists()


def test_a_network_with_a_deleted_servers_user_port(admin):
    port = create_port(admin, name="mine")
    delete_server(admin, boot(admin, networks=[{"port": port}]))
    # The user's port outlives the server and holds the network, as in Neutron.
    neutron_conflict(admin.delete(f"{V2}/networks/{net_id()}"), "NetworkInUse")
    assert admin.delete(f"{V2}/ports/{port}").status_code == 204
    assert admin.delete(f"{V2}/networks/{net_id()}").status_code == 204
    assert not InstanceNic.objects.exists()


def test_a_subnet_with_addresses_is_in_use(admin):
    port = create_port(admin)
    neutron_conflict(admin.delete(f"{V2}/subnets/{subnet_id()}"), "SubnetInUse")
    assert IPAllocation.objects.filter(port_id=port).count() == 1
    assert admin.delete(f"{V2}/ports/{port}").status_code == 204
    subnet = subnet_id()
    assert admin.delete(f"{V2}/subnets/{subnet}").status_code == 204
    assert admin.get(f"{V2}/subnets/{subnet}").status_code == 404
    assert not IPAllocation.objects.exists()


def test_a_segment_with_subnets_is_in_use(admin):
    provider = {
        "name": "routed",
        "provider:network_type": "vlan",
        "provider:physical_network": "physnet1",
        "provider:segmentation_id": 101,
    }
    network = admin.post(f"{V2}/networks", {"network": provider}).json()["network"]["id"]
    segment = str(Segment.objects.get(network_id=network).pk)
    body = {"network_id": network, "segment_id": segment, "ip_version": 4, "cidr": "10.9.0.0/24"}
    subnet = admin.post(f"{V2}/subnets", {"subnet": body}).json()["subnet"]["id"]
    message = neutron_conflict(admin.delete(f"{V2}/segments/{segment}"), "SegmentInUse")
    assert message == (
        f"Segment '{segment}' cannot be deleted: The segment is still associated with "
        f"subnet(s) {subnet}."
    )
    assert admin.delete(f"{V2}/subnets/{subnet}").status_code == 204
    assert admin.delete(f"{V2}/segments/{segment}").status_code == 204
    assert admin.get(f"{V2}/segments/{segment}").status_code == 404


def test_a_segment_ports_are_bound_through_is_in_use(admin):
    """It was deleted from under the port, whose binding it carries (h1
    reaches the network's VXLAN segment)."""
    segment = str(Segment.objects.get(network__name="net").pk)
    port = create_port(admin, **{"binding:host_id": "h1"})
    message = neutron_conflict(admin.delete(f"{V2}/segments/{segment}"), "SegmentInUse")
    assert message == (
        f"Segment '{segment}' cannot be deleted: The segment is still bound with port(s) {port}."
    )
    assert Segment.objects.filter(pk=segment).exists()
    unbound = admin.put(f"{V2}/ports/{port}", {"port": {"binding:host_id": ""}})
    assert unbound.status_code == 200
    assert admin.delete(f"{V2}/segments/{segment}").status_code == 204
    assert admin.get(f"{V2}/segments/{segment}").status_code == 404


def test_the_users_port_of_a_live_server_is_detached_when_deleted(admin):
    """Neutron deletes a server's port (204) and Nova detaches the
    interface. The NIC kept naming the deleted port, and a build to come
    would look for it."""
    port = create_port(admin, name="mine")
    server_id = boot(admin, networks=[{"port": port}])
    assert admin.delete(f"{V2}/ports/{port}").status_code == 204
    assert admin.get(f"{V2}/ports/{port}").status_code == 404
    assert not InstanceNic.objects.filter(instance_id=server_id).exists()
    assert not IPAllocation.objects.exists()
    server = admin.get(f"{C21}/servers/{server_id}").json()["server"]
    assert (server["status"], server["addresses"]) == ("ACTIVE", {})
    delete_server(admin, server_id)
    assert admin.delete(f"{V2}/networks/{net_id()}").status_code == 204


def test_computes_port_of_a_live_server_deleted_leaves_its_nic_on_the_network(admin):
    server_id = boot(admin)
    port = str(Port.objects.get(device_id=server_id).pk)
    assert admin.delete(f"{V2}/ports/{port}").status_code == 204
    nic = InstanceNic.objects.get(instance_id=server_id)
    assert (nic.port_id, str(nic.network_id)) == (None, net_id())
    neutron_conflict(admin.delete(f"{V2}/networks/{net_id()}"), "NetworkInUse")
    delete_server(admin, server_id)
    assert admin.delete(f"{V2}/networks/{net_id()}").status_code == 204


def test_an_agent_goes_and_comes_back_with_its_hosts_next_report(admin):
    """Neutron deletes an agent whatever is bound on its host (204); the
    host registers again when it next reports."""
    port = create_port(admin, **{"binding:host_id": "h1"})
    agents = {a["host"]: a["id"] for a in admin.get(f"{V2}/agents").json()["agents"]}
    assert admin.delete(f"{V2}/agents/{agents['h1']}").status_code == 204
    assert admin.get(f"{V2}/agents/{agents['h1']}").status_code == 404
    assert not HostPhysnet.objects.filter(agent__host="h1").exists()
    assert admin.get(f"{V2}/ports/{port}").json()["port"]["binding:host_id"] == "h1"
    HostFactory(name="h1")
    assert "h1" in {a["host"] for a in admin.get(f"{V2}/agents").json()["agents"]}


# --- compute ----------------------------------------------------------------------


def test_a_server_delete_is_204_then_404(admin):
    server_id = boot(admin)
    port = Port.objects.get(device_id=server_id)
    delete_server(admin, server_id)
    response = admin.delete(f"{C21}/servers/{server_id}")
    assert response.status_code == 404 and "itemNotFound" in response.json()
    # Compute's own port went with the server; its capacity is back.
    assert not Port.objects.filter(pk=port.pk).exists()
    assert sum(Host.objects.values_list("vcpus_used", flat=True)) == 0


def host_lease_body(name: str, start: str = "now", hours: int = 2, **reservation) -> dict:
    end = (timezone.now() + timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M")
    reservation = {"resource_type": "physical:host", "min": 1, "max": 1, **reservation}
    return {"name": name, "start_date": start, "end_date": end, "reservations": [reservation]}


def instance_lease_body(name: str) -> dict:
    slots = {"resource_type": "virtual:instance", "amount": 1, "vcpus": 1, "memory_mb": 256}
    return host_lease_body(name, **slots)


def test_a_flavor_is_deleted_under_its_servers_but_not_under_a_reservation(admin):
    server_id = boot(admin)
    assert admin.delete(f"{C21}/flavors/small").status_code == 202  # as Nova
    assert admin.get(f"{C21}/flavors/small").status_code == 404
    instance = Instance.objects.get(pk=server_id)
    assert (instance.status, instance.vcpus, instance.memory_mb) == ("ACTIVE", 1, 512)
    # A reservation's own flavor goes with its lease, not before: deleting it
    # left the lease's servers nothing to boot with.
    admin.post(f"{V1}/os-hosts", {"name": "h2"})
    lease = admin.post(f"{V1}/leases", instance_lease_body("slots")).json()["lease"]
    flavor = lease["reservations"][0]["flavor_id"]
    response = admin.delete(f"{C21}/flavors/{flavor}")
    assert response.status_code == 409
    assert f"Flavor {flavor} cannot be deleted" in response.json()["conflictingRequest"]["message"]
    assert admin.get(f"{C21}/flavors/{flavor}").status_code == 200
    assert admin.delete(f"{V1}/leases/{lease['id']}").status_code == 204
    assert admin.get(f"{C21}/flavors/{flavor}").status_code == 404


def test_a_flavor_extra_spec_delete(admin):
    url = f"{C21}/flavors/small/os-extra_specs"
    admin.post(url, {"extra_specs": {"hw:cpu_policy": "dedicated", "a": "b"}})
    assert admin.delete(f"{url}/hw:cpu_policy").status_code == 200  # as Nova
    assert admin.get(url).json() == {"extra_specs": {"a": "b"}}
    response = admin.delete(f"{url}/hw:cpu_policy")
    assert response.status_code == 404 and "itemNotFound" in response.json()


# --- reservations -----------------------------------------------------------------


@pytest.fixture
def pool(admin):
    """h1 and h2 in the reservable pool."""
    return {
        name: ReservableHostFactory(host=Host.objects.get(name=name), capabilities={"rack": "a"})
        for name in ("h1", "h2")
    }


def lease_rows(lease_id: str) -> list[int]:
    return [
        model.objects.filter(**{field: lease_id}).count()
        for model, field in (
            (Reservation, "lease_id"),
            (HostAllocation, "reservation__lease_id"),
            (LeaseEvent, "lease_id"),
        )
    ]


def test_a_pending_lease_goes_with_everything_it_holds(admin, pool):
    start = (timezone.now() + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")
    lease = admin.post(f"{V1}/leases", host_lease_body("later", start=start, hours=3)).json()
    lease_id = lease["lease"]["id"]
    assert all(lease_rows(lease_id))
    assert admin.delete(f"{V1}/leases/{lease_id}").status_code == 204
    response = admin.get(f"{V1}/leases/{lease_id}")
    assert (response.status_code, response.json()["error_code"]) == (404, 404)
    assert lease_rows(lease_id) == [0, 0, 0]
    # The outbox keeps what happened to it.
    kept = Notification.objects.filter(payload__lease_id=lease_id)
    assert sorted(kept.values_list("event_type", flat=True)) == ["lease.create", "lease.delete"]
    assert not kept.exclude(lease=None).exists()


def started_lease_with_a_server(admin) -> tuple[str, str]:
    lease = admin.post(f"{V1}/leases", host_lease_body("now")).json()["lease"]
    start = LeaseEvent.objects.get(lease_id=lease["id"], event_type="start_lease")
    events.fire_now(event=start)
    assert Lease.objects.get(pk=lease["id"]).status == LeaseStatus.ACTIVE
    hint = {"reservation": lease["reservations"][0]["id"]}
    server_id = boot(admin, **{"os:scheduler_hints": hint})
    assert Instance.objects.get(pk=server_id).status == "ACTIVE"
    return lease["id"], server_id


@pytest.mark.parametrize("status", [LeaseStatus.ACTIVE, LeaseStatus.ERROR])
def test_a_started_lease_ends_with_its_servers(admin, pool, status):
    """An ERROR lease (an event failed after it started) still had its
    servers, which outlived it on hosts no longer reserved."""
    lease_id, server_id = started_lease_with_a_server(admin)
    Lease.objects.filter(pk=lease_id).update(status=status)
    assert admin.delete(f"{V1}/leases/{lease_id}").status_code == 204
    assert Instance.objects.get(pk=server_id).task_state == "deleting"
    pipeline.delete(server_id)
    assert lease_rows(lease_id) == [0, 0, 0]
    assert admin.get(f"{C21}/servers/{server_id}").status_code == 404


def test_a_reserved_host_stays_in_the_pool(admin, pool):
    lease = admin.post(f"{V1}/leases", host_lease_body("all", min=2, max=2)).json()["lease"]
    h1 = pool["h1"].pk
    response = admin.delete(f"{V1}/os-hosts/{h1}")
    assert response.status_code == 409
    assert response.json() == {
        "error_code": 409,
        "error_message": f"Can't delete host {h1}. The host is reserved.",
        "error_name": 409,
    }
    assert HostProperty.objects.filter(reservable_id=h1).exists()
    assert admin.delete(f"{V1}/leases/{lease['id']}").status_code == 204
    assert admin.delete(f"{V1}/os-hosts/{h1}").status_code == 204
    assert admin.get(f"{V1}/os-hosts/{h1}").status_code == 404
    assert not HostProperty.objects.filter(reservable_id=h1).exists()
    assert Host.objects.filter(name="h1").exists()  # the hypervisor itself stays


def test_a_subscription_goes_with_its_deliveries(admin, pool, settings):
    settings.BERTH_WEBHOOK_ALLOWED = ["127.0.0.0/8:9"]
    body = {"subscription": {"url": "http://127.0.0.1:9/hook"}}
    subscription = admin.post(f"{V1}/subscriptions", body).json()["subscription"]["id"]
    admin.post(f"{V1}/leases", host_lease_body("noticed"))
    assert Delivery.objects.filter(subscription_id=subscription).exists()
    assert admin.delete(f"{V1}/subscriptions/{subscription}").status_code == 204
    assert admin.get(f"{V1}/subscriptions/{subscription}").status_code == 404
    assert not Delivery.objects.filter(subscription_id=subscription).exists()


# --- the walk is complete ---------------------------------------------------------


def delete_routes(router) -> set[str]:
    """The routes of a router that answer DELETE: viewsets with destroy, and
    extra actions mapped to DELETE (named as collection/action path)."""
    routes = set()
    for prefix, viewset, _ in router.registry:
        if hasattr(viewset, "destroy"):
            routes.add(prefix)
        for extra in viewset.get_extra_actions():
            if "delete" in extra.mapping:
                routes.add(f"{prefix}/{extra.url_path.split('/')[0]}")
    return routes


def test_every_delete_route_is_walked_here():
    routers = {
        "networking": networking_urls.router,
        "compute": compute_urls.router,
        "reservation": reservation_urls.router,
    }
    assert {api: delete_routes(router) for api, router in routers.items()} == WALKED
