"""The demo cloud's setup (console.demo): idempotent, and the servers it
boots go through the real pipeline, one of them rescheduled."""

import re
from datetime import timedelta

import pytest

from compute.models import Flavor, Host, Instance
from compute.virt import driver_for
from console import demo
from networking.models import HostAgent, HostPhysnet, Network, Port, Subnet
from tests.compute.conftest import run_pipeline


@pytest.fixture(autouse=True)
def demo_project(settings):
    settings.BERTH_DEMO_PROJECT = "demo-tests"


@pytest.fixture(autouse=True)
def empty_hypervisor():
    """The demo's libvirt hosts share this process's test driver, which
    outlives each test's database: each test leaves it as it found it (its
    storage pool holds 100 GiB)."""
    yield
    if demo.libvirt_available():
        hypervisor = driver_for(**demo.LIBVIRT_OPTIONS)
        for instance_id in hypervisor.power_states():
            hypervisor.destroy(instance_id)


def test_network_setup_is_idempotent(db):
    first = demo.cloud_ensure()
    heartbeat = Host.objects.get(name="compute-1").last_heartbeat
    second = demo.cloud_ensure()
    assert first.pk == second.pk
    assert Network.objects.filter(name=demo.DEMO_NETWORK).count() == 1
    segments = {
        s.name: (s.physical_network, s.segmentation_id, [n.cidr for n in s.subnets.all()])
        for s in first.segments.all()
    }
    assert segments == {
        "rack1": ("physnet1", 101, ["10.1.0.0/24"]),
        "rack2": ("physnet2", 102, ["10.2.0.0/24"]),
    }
    assert Subnet.objects.filter(network=first).count() == 2
    reach = {
        a.host: (a.datapath_type, sorted(p.physical_network for p in a.physnets.all()))
        for a in HostAgent.objects.prefetch_related("physnets")
    }
    assert reach == {
        "compute-1": ("system", ["physnet1"]),
        "compute-2": ("system", ["physnet1"]),
        "compute-3": ("system", ["physnet2"]),
        "compute-4": ("netdev", ["physnet2"]),
        "compute-5": ("system", ["physnet1"]),
    }
    assert HostPhysnet.objects.count() == 5
    assert sorted(Flavor.objects.values_list("pk", flat=True)) == ["m1.large", "m1.small"]
    assert Host.objects.get(name="compute-1").last_heartbeat >= heartbeat  # a heartbeat


def test_network_and_hosts_tables(db):
    network = demo.cloud_ensure()
    text = demo.render(demo.network_table(network))
    assert re.search(r"rack1\s+physnet1\s+101\s+10\.1\.0\.0/24\s+0/253", text)
    assert re.search(r"rack2\s+physnet2\s+102\s+10\.2\.0\.0/24\s+0/253", text)
    text = demo.render(demo.hosts_table(network))
    assert re.search(
        r"compute-4\s+up\s+(libvirt|fake)\s+netdev\s+physnet2\s+rack2\s+64\s+65536", text
    )


def test_servers_are_built_and_one_is_rescheduled(db):
    network = demo.cloud_ensure()
    booted = demo.servers_boot(network)
    assert sorted(i.name for i in booted) == sorted(demo.DEMO_SERVERS)
    for instance in booted:
        run_pipeline(instance)
    servers = {i.name: i for i in Instance.objects.select_related("host")}
    assert {i.status for i in servers.values()} == {"ACTIVE"}
    # compute-3 is tried first (most RAM) and fails every spawn.
    assert servers["web-1"].excluded_hosts == ["compute-3"]
    assert servers["web-1"].attempt == 2
    assert all(i.host.name != "compute-3" for i in servers.values())
    db_port = Port.objects.get(name="db-1-port")
    assert db_port.device_id == str(servers["db-1"].pk)
    # Running the demo again boots nothing that already runs.
    assert demo.servers_boot(network) == []
    text = demo.render(demo.servers_table())
    assert re.search(
        r"web-1\s+ACTIVE\s+running\s+compute-\d\s+10\.\d\.0\.\d+\s+(ovs|vhostuser)\s+2\s+compute-3\s+-",
        text,
    )


def test_lease_starts_and_takes_its_server(db):
    import time_machine
    from django.utils import timezone

    from reservations import events

    network = demo.cloud_ensure()
    lease = demo.lease_ensure(starts_in=20, heads_up=10)
    assert demo.lease_ensure() == lease  # re-run: the same lease
    with time_machine.travel(timezone.now() + timedelta(seconds=25), tick=False):
        demo.hosts_report()
        events.sweep()
        lease = demo.lease_wait_active(lease, timeout=0)
        assert lease.status == "ACTIVE"
        (server,) = demo.lease_server_boot(lease, network)
        server = run_pipeline(server)
    assert (server.status, server.host and server.host.name, server.fault) == (
        "ACTIVE",
        "compute-5",
        None,
    )
    text = demo.render(demo.leases_table())
    assert re.search(r"demo-lease\s+ACTIVE\s+.*compute-5\s+heads_up\s+DONE", text)
    assert re.search(r"start_lease\s+DONE", text)
