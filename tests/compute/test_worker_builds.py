"""Builds through the real Celery chain on a real worker process, driven by
openstacksdk against a live server."""

import subprocess
import sys
import time

import pytest

from compute.models import Host, Instance, InstanceActionEvent
from identity.services import token_create
from networking.models import IPAllocation, Port
from tests.conftest import ROOT, process_env, sdk_connection
from tests.factories import HostFactory


@pytest.fixture
def conn(transactional_db, live_server, cloud, worker):
    token = token_create(project_name="acme", username="acme-admin", role="admin")[1]
    return sdk_connection(live_server.url, token)


def wait_active(conn, server):
    return conn.compute.wait_for_server(
        server, status="ACTIVE", failures=["ERROR"], interval=0.3, wait=90
    )


@pytest.mark.worker
def test_boot_on_a_network_and_delete(conn, cloud):
    server = conn.compute.create_server(
        name="web", flavor_id="small", networks=[{"uuid": str(cloud.network.pk)}]
    )
    server = wait_active(conn, server)
    assert server.compute_host == "h1"  # equal weights: by name
    (port,) = conn.network.ports(device_id=server.id)
    assert port.binding_host_id == server.compute_host
    assert port.device_owner == "compute:nova"
    address = port.fixed_ips[0]["ip_address"]
    assert server.addresses["routed"][0]["addr"] == address
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, interval=0.3, wait=60)
    assert not Port.objects.filter(pk=port.id).exists()
    assert Host.objects.get(name=server.compute_host).vcpus_used == 0


@pytest.mark.worker
def test_boot_on_a_users_port_keeps_the_port(conn, cloud):
    port = conn.network.create_port(network_id=str(cloud.network.pk), name="mine")
    assert port.ip_allocation == "deferred"
    server = wait_active(
        conn, conn.compute.create_server(name="db", flavor_id="small", networks=[{"port": port.id}])
    )
    bound = conn.network.get_port(port.id)
    assert bound.binding_host_id == server.compute_host and bound.fixed_ips
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, interval=0.3, wait=60)
    after = conn.network.get_port(port.id)
    assert (after.binding_host_id, after.device_id) == ("", "")
    assert after.fixed_ips == bound.fixed_ips


@pytest.mark.worker
def test_spawn_failures_reschedule_through_the_chain(conn, cloud):
    for name, physnet in (("h2", "physnet2"), ("h3", "physnet2")):
        HostFactory(
            name=name,
            physnets=[physnet],
            driver_options={"spawn_error": "boom"},
            memory_mb=65536,
        )
    server = wait_active(
        conn,
        conn.compute.create_server(
            name="x", flavor_id="small", networks=[{"uuid": str(cloud.network.pk)}]
        ),
    )
    assert server.compute_host == "h1"
    instance = Instance.objects.get(pk=server.id)
    assert instance.attempt == 3 and sorted(instance.excluded_hosts) == ["h2", "h3"]
    spawns = InstanceActionEvent.objects.filter(event="compute_spawn").order_by("attempt")
    assert [e.result for e in spawns] == ["Error", "Error", "Success"]
    assert Port.objects.count() == 1  # one port, reused by every attempt
    # h2 and h3 failed lately: the next build goes to h1 at once.
    again = wait_active(
        conn,
        conn.compute.create_server(
            name="y", flavor_id="small", networks=[{"uuid": str(cloud.network.pk)}]
        ),
    )
    assert (again.compute_host, Instance.objects.get(pk=again.id).attempt) == ("h1", 1)


CLIENT = """
import sys
import django; django.setup()
from compute import services
from compute.models import Flavor
from identity.auth import RequestContext
from identity.models import Project
from networking.models import Network
project = Project.objects.get(name="acme")
context = RequestContext(user_id="client", project=project, role="admin")
network = Network.objects.get(name="routed")
for n in range(int(sys.argv[1])):
    services.server_create(context=context, name=f"{sys.argv[2]}-{n}",
                           flavor=Flavor.objects.get(pk="big"),
                           nics=[services.NicRequest(network=network)])
"""


@pytest.mark.postgres
@pytest.mark.worker
def test_many_builds_into_scarce_capacity_and_ips(transactional_db, cloud, worker):
    # Capacity: h1..h3 each hold two "big" (16 GB RAM, ratio 1); rack2 has
    # two addresses, so h2+h3 together can take only two builds.
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, "6", f"c{i}"],
            cwd=ROOT,
            env=process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for client in clients:
        out, err = client.communicate(timeout=120)
        assert client.returncode == 0, err
    deadline = time.monotonic() + 180
    while Instance.objects.filter(status="BUILD").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    instances = list(Instance.objects.all())
    assert len(instances) == 18
    assert {i.status for i in instances} <= {"ACTIVE", "ERROR"}, "every build settled"
    active = [i for i in instances if i.status == "ACTIVE"]
    assert len(active) == 4  # h1: 2 (RAM), h2+h3: 2 (rack2 addresses)
    for failed in (i for i in instances if i.status == "ERROR"):
        # Either the scheduler found nothing, or a bind lost the race for the
        # last address and no other host was left: both name the resource.
        assert "no host " in failed.fault["message"], failed.fault
    for host in Host.objects.all():
        assert host.memory_mb_used <= host.memory_mb * host.ram_allocation_ratio
        assert host.memory_mb_used == 8192 * host.running_instances
    addresses = list(IPAllocation.objects.values_list("subnet_id", "address"))
    assert len(addresses) == len(set(addresses)) == 4
    assert Port.objects.count() == 4  # no orphan: one port per ACTIVE server
    assert set(Port.objects.values_list("device_id", flat=True)) == {str(i.pk) for i in active}
