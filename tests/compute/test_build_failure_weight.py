"""Hosts that failed builds lately are tried last (Nova's build failure
weigher), for a while or until they succeed again; the schedule step's
action-log event shows each candidate's weight and failures."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from compute import pipeline, scheduler, services
from compute.models import Host, Instance
from networking import services as net_services
from tests.compute.conftest import C21, run_pipeline, step_outcome
from tests.factories import HostFactory


@pytest.fixture
def acme_admin(cloud):
    from tests.conftest import Caller

    return Caller("acme", "admin", username="acme-admin")


@pytest.fixture
def flaky(cloud, acme_admin):
    """Two hosts: h2 has the most free RAM and its hypervisor failed the
    first build's spawn (which then landed on h1); h2 works again now.
    h3 is disabled."""
    services.host_set_enabled(host=Host.objects.get(name="h3"), enabled=False)
    HostFactory(
        name="h2",
        physnets=["physnet2"],
        memory_mb=65536,
        driver_options={"spawn_error": "disk on fire"},
    )
    first = build(acme_admin, cloud)
    assert (first.host.name, first.attempt, first.excluded_hosts) == ("h1", 2, ["h2"])
    HostFactory(name="h2", physnets=["physnet2"], memory_mb=65536)
    return first


def build(caller, cloud, **server) -> Instance:
    server = {"name": "vm", "flavorRef": "small", **server}
    server.setdefault("networks", [{"uuid": str(cloud.network.pk)}])
    response = caller.post(f"{C21}/servers", {"server": server})
    assert response.status_code == 202, response.json()
    instance = run_pipeline(Instance.objects.get(pk=response.json()["server"]["id"]))
    assert instance.status == "ACTIVE", instance.fault
    return instance


def where_first(instance: Instance) -> tuple[str, int]:
    """The host the build landed on and its attempt (1: the first pick)."""
    return instance.host.name, instance.attempt


def schedule_details(caller, instance: Instance) -> str:
    """The schedule step's explanation of the build's last attempt, as an
    admin reads it through os-instance-actions."""
    url = f"{C21}/servers/{instance.pk}/os-instance-actions"
    request_id = caller.get(url).json()["instanceActions"][-1]["request_id"]
    events = caller.get(f"{url}/{request_id}").json()["instanceAction"]["events"]
    [event] = [
        e
        for e in events
        if e["event"] == "compute_schedule_instance" and e["berth:attempt"] == instance.attempt
    ]
    return event["details"]


def test_a_host_that_failed_lately_is_tried_last(acme_admin, cloud, flaky):
    second = build(acme_admin, cloud)
    assert where_first(second) == ("h1", 1)  # by free RAM alone: h2
    details = schedule_details(acme_admin, second)
    h1_free = 16384 - 1024  # the first build's
    assert details == (
        f"chose h1 (weight {h1_free}: {h1_free} MB RAM free, recent build failures: 0); "
        f"alternates: h2 (weight {65536 - 1000000}: 65536 MB RAM free, recent build failures: 1)"
    )


def test_the_failures_stop_counting_after_the_window(acme_admin, cloud, flaky, settings):
    settings.BERTH_SCHEDULER_BUILD_FAILURE_WINDOW = 60
    settings.BERTH_HOST_DOWN_AFTER = 3600  # hosts stay up while time runs ahead
    with time_machine.travel(timezone.now() + timedelta(seconds=50)):
        assert where_first(build(acme_admin, cloud)) == ("h1", 1)
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        later = build(acme_admin, cloud)
    assert where_first(later) == ("h2", 1)
    assert "chose h2 (weight 65536: 65536 MB RAM free, recent build failures: 0)" in (
        schedule_details(acme_admin, later)
    )


def test_weight_zero_keeps_the_free_ram_order(acme_admin, cloud, flaky, settings):
    settings.BERTH_SCHEDULER_BUILD_FAILURE_WEIGHT = 0
    second = build(acme_admin, cloud)
    assert where_first(second) == ("h2", 1)
    assert "chose h2 (weight 65536: 65536 MB RAM free, recent build failures: 1)" in (
        schedule_details(acme_admin, second)
    )


def test_a_success_on_the_host_clears_its_failures(acme_admin, cloud, flaky):
    h1 = Host.objects.get(name="h1")
    services.host_set_enabled(host=h1, enabled=False)
    assert where_first(build(acme_admin, cloud)) == ("h2", 1)  # the only host left
    services.host_set_enabled(host=h1, enabled=True)
    assert where_first(build(acme_admin, cloud)) == ("h2", 1)


def test_failures_add_up_until_a_quiet_window(acme_admin, cloud, settings):
    settings.BERTH_SCHEDULER_BUILD_FAILURE_WINDOW = 60
    settings.BERTH_HOST_DOWN_AFTER = 3600
    services.host_set_enabled(host=Host.objects.get(name="h3"), enabled=False)
    HostFactory(
        name="h2",
        physnets=["physnet2"],
        memory_mb=65536,
        driver_options={"spawn_error": "disk on fire"},
    )
    # A weight that one failure does not outweigh but two do: h2 keeps
    # its place after one failure, loses it after the second.
    settings.BERTH_SCHEDULER_BUILD_FAILURE_WEIGHT = 30000
    assert where_first(build(acme_admin, cloud)) == ("h1", 2)
    with time_machine.travel(timezone.now() + timedelta(seconds=30)):
        assert where_first(build(acme_admin, cloud)) == ("h1", 2)
        assert where_first(build(acme_admin, cloud)) == ("h1", 1)
    # The last failure was 30 s ago: two failures still count until 90 s.
    with time_machine.travel(timezone.now() + timedelta(seconds=80)):
        assert where_first(build(acme_admin, cloud)) == ("h1", 1)
    with time_machine.travel(timezone.now() + timedelta(seconds=95)):
        # Quiet for a window: h2 is tried first again, fails, and counts one.
        assert where_first(build(acme_admin, cloud)) == ("h1", 2)
        HostFactory(name="h2", physnets=["physnet2"], memory_mb=65536)
        assert where_first(build(acme_admin, cloud)) == ("h2", 1)


def test_a_host_that_cannot_bind_what_it_advertises_is_weighed_down(acme_admin, cloud):
    # h2 and h3 advertise vnic direct without an SR-IOV function: a direct
    # port fails to bind there, and the build lands on h1.
    for name in ("h2", "h3"):
        HostFactory(
            name=name, physnets=["physnet2"], vnic_types=["normal", "direct"], memory_mb=65536
        )
    HostFactory(name="h1", physnets=["physnet1"], sriov=True)
    port = net_services.port_create(
        project=cloud.project, network=cloud.network, binding_vnic_type="direct"
    )
    direct = build(acme_admin, cloud, networks=[{"port": str(port.pk)}])
    assert where_first(direct) == ("h1", 3)
    assert where_first(build(acme_admin, cloud)) == ("h1", 1)


def test_a_segment_out_of_addresses_does_not_weigh_the_host_down(acme_admin, cloud):
    # h2 is picked, but the last address of rack2 goes to another port
    # between scheduling and binding: the network's doing, not h2's.
    HostFactory(name="h2", physnets=["physnet2"], memory_mb=65536)
    services.host_set_enabled(host=Host.objects.get(name="h3"), enabled=False)
    response = acme_admin.post(
        f"{C21}/servers",
        {
            "server": {
                "name": "vm",
                "flavorRef": "small",
                "networks": [{"uuid": str(cloud.network.pk)}],
            }
        },
    )
    instance = Instance.objects.get(pk=response.json()["server"]["id"])
    step_outcome(pipeline.prepare_ports, instance.pk, 1)
    step_outcome(pipeline.schedule, instance.pk, 1)
    taken = [
        net_services.port_create(
            project=cloud.project, network=cloud.network, fixed_ips=[{"ip_address": address}]
        )
        for address in ("10.2.0.10", "10.2.0.11")
    ]
    instance = run_pipeline(instance)
    assert where_first(instance) == ("h1", 2) and instance.excluded_hosts == ["h2"]
    for port in taken:
        net_services.port_delete(port=port)
    assert where_first(build(acme_admin, cloud)) == ("h2", 1)


def test_a_weighed_down_host_in_the_window_of_roomiest_hosts_looks_past_it(
    acme_admin, cloud, flaky, settings, monkeypatch
):
    # The network filters first look at the hosts with most free RAM; when
    # those failed lately, a host past them may weigh more.
    monkeypatch.setattr(scheduler, "WINDOW", 1)  # h2 alone
    settings.BERTH_SCHEDULER_ALTERNATES = 0
    assert where_first(build(acme_admin, cloud)) == ("h1", 1)
