"""Hosts run agents of their own: real `manage.py agent` processes with no
database, real workers, a real broker. Builds are spawned by the agent of
the host they land on; a host whose agent dies goes down and its waiting
builds fail over to another host on the same ports."""

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from compute import services
from compute.models import Host, Instance
from compute.services import NicRequest
from compute.virt import PowerState
from config.models import Project
from reservations.models import Notification
from tests.conftest import agent_start, worker_stop
from tests.factories import ContextFactory, FlavorFactory, NetworkFactory

pytestmark = pytest.mark.worker

# Fast heartbeats, so a dead agent is noticed within seconds.
BEAT = {"BERTH_HEARTBEAT_INTERVAL": "0.3"}


def wait_for(condition, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


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


def test_a_build_is_spawned_by_the_agent_of_its_host_only(world, agents):
    agents("ag-big", "--physnet", "physnet1", "--ram", "65536")
    agents("ag-small", "--physnet", "physnet1", "--ram", "8192")
    wait_for(lambda: Host.objects.filter(has_agent=True).count() == 2, what="both reports")
    instance = boot(world)
    instance = wait_for(lambda: settled(instance), what="the build")
    assert (instance.status, instance.host.name) == ("ACTIVE", "ag-big")
    assert instance.power_state == PowerState.RUNNING
    # What each agent's own hypervisor runs, as the agent reports it.
    wait_for(lambda: str(instance.pk) in domains_of("ag-big"), what="the domain's report")
    assert str(instance.pk) not in domains_of("ag-small")

    services.server_delete(context=world["context"], instance=instance)
    wait_for(lambda: str(instance.pk) not in domains_of("ag-big"), what="the domain removed")


def test_a_dead_agents_host_goes_down_and_its_build_fails_over(world, agents, settings):
    settings.BERTH_HOST_DOWN_AFTER = 2
    doomed = agents("ag-doomed", "--physnet", "physnet1", "--ram", "65536")
    agents("ag-spare", "--physnet", "physnet1", "--ram", "8192")
    wait_for(lambda: Host.objects.filter(has_agent=True).count() == 2, what="both reports")
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()

    # The worker's scheduler still sees the roomier host alive: the build
    # waits in its queue, which no one serves.
    instance = boot(world)
    wait_for(
        lambda: Instance.objects.filter(pk=instance.pk, task_state="spawning").exists(),
        what="the spawn sent to the dead host",
    )
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
