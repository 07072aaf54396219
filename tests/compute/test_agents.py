"""Hosts run agents of their own: real `manage.py agent` processes with no
database, real workers, a real broker. Builds are spawned by the agent of
the host they land on; a host whose agent dies goes down and its waiting
builds fail over to another host on the same ports."""

import json
import os
import signal
import time
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from django.utils import timezone

from compute import services
from compute.models import Host, Instance
from compute.services import NicRequest
from compute.virt import PowerState
from identity.models import Project
from reservations.models import HostAllocation, Notification
from reservations.services import HostRequest, LeaseRequest, lease_create, reservable_host_create
from tests.conftest import agent_start, wait_for, worker_stop
from tests.factories import ContextFactory, FlavorFactory, NetworkFactory
from tests.networking.test_clients import OpenStackCLI, token

pytestmark = pytest.mark.worker

# Fast heartbeats, so a dead agent is noticed within seconds.
BEAT = {"BERTH_HEARTBEAT_INTERVAL": "0.3"}


@pytest.fixture
def world(transactional_db):
    """A VLAN network on physnet1 and a small flavor, for project acme."""
    context = ContextFactory(user_id="u1", project__name="acme")
    return {
        "context": context,
        "network": NetworkFactory(project=context.project, vlan=True),
        "flavor": FlavorFactory(name="small", vcpus=1, ram=1024, disk=10),
    }


@pytest.fixture
def agents(tmp_path, worker):
    """Start agents by name, stop them all at the end."""
    started = {}

    def start(name: str, *options: str):
        started[name] = agent_start(tmp_path / f"{name}.log", name, *options, env=BEAT)
        return started[name]

    yield start
    for proc in started.values():
        if proc.poll() is None:
            worker_stop(proc)


def boot(world, name="vm") -> Instance:
    (instance,) = services.server_create(
        context=world["context"],
        name=name,
        flavor=world["flavor"],
        nics=[NicRequest(network=world["network"])],
    )
    return instance


def settled(instance: Instance) -> Instance | None:
    instance.refresh_from_db()
    return instance if instance.status in ("ACTIVE", "ERROR") else None


def domains_of(host: str) -> dict:
    return Host.objects.get(name=host).domains


def test_an_agent_reports_its_host_and_heartbeats(world, agents):
    agents("ag-solo", "--physnet", "physnet1", "--vcpus", "8", "--ram", "4096")
    host = wait_for(lambda: Host.objects.filter(name="ag-solo").first(), what="the report")
    assert (host.vcpus, host.memory_mb, host.has_agent) == (8, 4096, True)
    first = host.last_heartbeat
    wait_for(lambda: Host.objects.get(name="ag-solo").last_heartbeat > first, what="a heartbeat")


LIBVIRT = [
    "--virt-driver",
    "libvirt",
    "--driver-options",
    json.dumps({"libvirt_uri": "test:///default", "libvirt_pool": "default-pool"}),
]


@pytest.mark.parametrize("driver", ["fake", pytest.param("libvirt", marks=pytest.mark.libvirt)])
def test_a_build_is_spawned_by_the_agent_of_its_host_only(world, agents, driver):
    options = LIBVIRT if driver == "libvirt" else []
    agents("ag-big", "--physnet", "physnet1", "--ram", "65536", *options)
    agents("ag-small", "--physnet", "physnet1", "--ram", "8192", *options)
    wait_for(lambda: Host.objects.filter(has_agent=True).count() == 2, what="both reports")
    instance = boot(world)
    instance = wait_for(lambda: settled(instance), what="the build")
    assert (instance.status, instance.host.name) == ("ACTIVE", "ag-big")
    assert instance.power_state == PowerState.RUNNING
    if driver == "libvirt":
        # The domain the agent's libvirt connection defined: berth's uuid,
        # one interface per port, plugged as the binding said (ovs).
        domain = ET.fromstring(instance.driver_data)
        assert domain.findtext("uuid") == str(instance.pk)
        (interface,) = domain.findall("devices/interface")
        port = instance.nics.get().port
        assert interface.find("mac").get("address") == port.mac_address
        assert interface.find("virtualport").get("type") == "openvswitch"
        assert port.binding_vif_type == "ovs"
    # What each agent's own hypervisor runs, as the agent reports it.
    wait_for(lambda: str(instance.pk) in domains_of("ag-big"), what="the domain's report")
    assert str(instance.pk) not in domains_of("ag-small")

    services.server_delete(context=world["context"], instance=instance)
    wait_for(lambda: str(instance.pk) not in domains_of("ag-big"), what="the domain removed")


@pytest.mark.parametrize("killed", ["before the build", "mid-spawn"])
def test_a_dead_agents_host_goes_down_and_its_build_fails_over(world, agents, settings, killed):
    """Killed before the build reaches it (the spawn waits in its queue) or
    while its hypervisor works on the spawn (SIGKILL): the host goes down,
    the build is rebuilt on another host with its ports, once."""
    settings.BERTH_HOST_DOWN_AFTER = 2
    slow = ["--driver-options", '{"spawn_delay": 30}'] if killed == "mid-spawn" else []
    doomed = agents("ag-doomed", "--physnet", "physnet1", "--ram", "65536", *slow)
    agents("ag-spare", "--physnet", "physnet1", "--ram", "8192")
    wait_for(lambda: Host.objects.filter(has_agent=True).count() == 2, what="both reports")
    if killed == "before the build":
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
    # The worker's scheduler still sees the roomier host alive: the build
    # goes there.
    instance = boot(world)
    wait_for(
        lambda: Instance.objects.filter(pk=instance.pk, task_state="spawning").exists(),
        what="the spawn sent to the doomed host",
    )
    if killed == "mid-spawn":
        wait_for(lambda: b"compute.spawn[" in doomed.log.read_bytes(), what="the spawn taken")
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
    ports = set(instance.nics.values_list("port_id", flat=True))
    wait_for(
        lambda: (
            Host.objects.get(name="ag-doomed").last_heartbeat
            < timezone.now() - timedelta(seconds=2)
        ),
        what="the heartbeats to stop",
    )
    assert ("ag-doomed", False) in services.hosts_check()
    assert services.hosts_check() == []  # the edge is taken once

    instance = wait_for(lambda: settled(instance), what="the failed-over build")
    assert (instance.status, instance.host.name) == ("ACTIVE", "ag-spare")
    assert instance.excluded_hosts == ["ag-doomed"]
    assert set(instance.nics.values_list("port_id", flat=True)) == ports
    operator = Project.objects.get(name=settings.BERTH_OPERATOR_PROJECT)
    down = Notification.objects.get(project=operator, event_type="host.down")
    assert down.payload == {"host": "ag-doomed", "builds_failed_over": [str(instance.pk)]}

    # Back again: up, and the spawn it was sent before it died never runs.
    agents("ag-doomed", "--physnet", "physnet1", "--ram", "65536")
    wait_for(
        lambda: (
            Host.objects.get(name="ag-doomed").last_heartbeat
            > timezone.now() - timedelta(seconds=1)
        ),
        what="the heartbeats back",
    )
    assert services.hosts_check() == [("ag-doomed", True)]
    assert Notification.objects.filter(project=operator, event_type="host.up").count() == 1
    time.sleep(1)
    assert domains_of("ag-doomed") == {}
    assert str(instance.pk) in domains_of("ag-spare")


@pytest.mark.libvirt
def test_openstack_cli_stops_starts_and_reboots_a_libvirt_domain(
    world, agents, live_server, tmp_path
):
    agents("ag-power", "--physnet", "physnet1", *LIBVIRT)
    wait_for(lambda: Host.objects.filter(name="ag-power", has_agent=True).exists(), what="report")
    instance = boot(world, name="pw")
    instance = wait_for(lambda: settled(instance), what="the build")
    assert instance.status == "ACTIVE"
    cli = OpenStackCLI(live_server.url, token("admin", "acme"), tmp_path)

    def power_is(status: str, state: PowerState):
        instance.refresh_from_db()
        reported = domains_of("ag-power").get(str(instance.pk))
        return instance.task_state is None and (instance.status, reported) == (status, state)

    assert cli("server", "stop", str(instance.pk)) is None
    wait_for(lambda: power_is("SHUTOFF", PowerState.SHUTDOWN), what="stopped")
    assert "Cannot 'stop' instance" in cli.fails("server", "stop", str(instance.pk))
    assert cli("server", "start", str(instance.pk)) is None
    wait_for(lambda: power_is("ACTIVE", PowerState.RUNNING), what="started")
    assert cli("server", "reboot", "--hard", str(instance.pk)) is None
    wait_for(lambda: power_is("ACTIVE", PowerState.RUNNING), what="rebooted")
    assert list(instance.actions.values_list("action", flat=True).order_by("start_time")) == [
        "create",
        "stop",
        "start",
        "reboot",
    ]


def test_a_reserved_host_whose_agent_dies_is_healed_out_of_its_lease(world, agents, settings):
    settings.BERTH_HOST_DOWN_AFTER = 2
    procs = {name: agents(name, "--physnet", "physnet1") for name in ("ag-gpu-1", "ag-gpu-2")}
    wait_for(lambda: Host.objects.filter(has_agent=True).count() == 2, what="both reports")
    for name in procs:
        reservable_host_create(name=name, capabilities={"node_type": "gpu"})
    start = timezone.now() + timedelta(hours=1)
    lease = lease_create(
        context=world["context"],
        request=LeaseRequest(
            name="gpu",
            start=start,
            end=start + timedelta(hours=1),
            reservations=[
                HostRequest(min=1, max=1, resource_properties='["==", "$node_type", "gpu"]')
            ],
        ),
    )
    held = HostAllocation.objects.filter(reservation__lease=lease)
    (lost,) = held.values_list("host__name", flat=True)
    os.killpg(procs[lost].pid, signal.SIGKILL)
    procs[lost].wait()
    wait_for(
        lambda: Host.objects.get(name=lost).last_heartbeat < timezone.now() - timedelta(seconds=2),
        what="the heartbeats to stop",
    )
    assert (lost, False) in services.hosts_check()
    # The heal runs on the worker at once, not at the next periodic heal.
    (spare,) = set(procs) - {lost}
    wait_for(lambda: list(held.values_list("host__name", flat=True)) == [spare], what="the heal")
    replaced = Notification.objects.get(lease=lease, event_type="lease.host_replaced")
    assert (replaced.payload["lost_host"], replaced.payload["new_host"]) == (lost, spare)
