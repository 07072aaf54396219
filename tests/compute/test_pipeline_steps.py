"""The pipeline's steps, driven in-process: placement, binding, retries on
the same ports, faults that name the step and the resource."""

import xml.etree.ElementTree as ET

import netaddr
import pytest

from compute import pipeline, services
from compute.models import Host, InstanceActionEvent
from compute.services import NicRequest
from compute.virt import driver_for
from identity.quotas import quota_set
from networking import selectors as net_selectors
from networking import services as net_services
from networking.models import Port
from tests.compute.conftest import host_spawn, run_pipeline, sriov_on_h1_only, step_outcome
from tests.factories import HostFactory


def boot(cloud, flavor="small", nics=None, **kwargs):
    nics = nics if nics is not None else [NicRequest(network=cloud.network)]
    return services.server_create(
        context=cloud.context, name="vm", flavor=cloud.flavors[flavor], nics=nics, **kwargs
    )


def test_build_lands_with_an_ip_from_the_hosts_segment(cloud):
    instance = run_pipeline(boot(cloud)[0])
    assert instance.status == "ACTIVE" and instance.task_state is None
    port = instance.nics.get().port
    assert port.binding_host == instance.host.name
    assert port.device_id == str(instance.pk) and port.device_owner == "compute:nova"
    assert port.binding_vif_type == "ovs" and port.status == "ACTIVE"
    segment = port.fixed_ips.get().subnet.segment
    physnet = "physnet1" if instance.host.name == "h1" else "physnet2"
    assert segment.physical_network == physnet
    host = Host.objects.get(pk=instance.host_id)
    assert (host.vcpus_used, host.memory_mb_used, host.running_instances) == (1, 1024, 1)


def test_exhausted_segment_is_avoided_by_the_scheduler(cloud):
    # h2 and h3 (rack2) weigh the most: the first two builds take rack2's
    # two addresses.
    HostFactory(name="h1", physnets=["physnet1"], memory_mb=4096)
    filled = [run_pipeline(boot(cloud)[0]) for _ in range(2)]
    assert [(i.host.name, i.attempt) for i in filled] == [("h2", 1), ("h3", 1)]
    rack2 = net_selectors.segment_usage(network=cloud.network).segments[0]
    assert (rack2.segment.name, rack2.availability.free_ips) == ("rack2", 0)
    # h2 and h3 still weigh the most, but reach only the dry segment: the
    # scheduler picks h1 at once, no bind tries a host of rack2 first.
    third = run_pipeline(boot(cloud)[0])
    assert (third.status, third.host.name, third.attempt) == ("ACTIVE", "h1", 1)
    assert not InstanceActionEvent.objects.filter(result="Error").exists()


def test_a_segment_is_reached_while_any_of_its_subnets_has_room(cloud):
    network, rack2 = cloud.network, cloud.segments["rack2"]

    def physnets():
        [reach] = net_selectors.network_reaches(wanted=[(network.pk, None)])
        return reach.physnets

    for address in ("10.2.0.10", "10.2.0.11"):  # rack2's whole pool
        net_services.port_create(
            project=cloud.project, network=network, fixed_ips=[{"ip_address": address}]
        )
    assert physnets() == {"physnet1"}
    net_services.subnet_create(
        project=cloud.project, network=network, segment=rack2, cidr="10.3.0.0/29"
    )
    assert physnets() == {"physnet1", "physnet2"}


def test_a_port_holding_its_address_on_a_full_segment_is_still_placed(cloud):
    network = cloud.network
    held, _ = (
        net_services.port_create(
            project=cloud.project, network=network, fixed_ips=[{"ip_address": address}]
        )
        for address in ("10.2.0.10", "10.2.0.11")  # rack2's whole pool
    )
    # rack2 has no free address left, but the port already holds one there:
    # it is placed on a rack2 host, not refused for want of an address.
    instance = run_pipeline(boot(cloud, nics=[NicRequest(port=held)])[0])
    assert (instance.status, instance.host.name in {"h2", "h3"}) == ("ACTIVE", True)
    assert [str(a.address) for a in held.fixed_ips.all()] == ["10.2.0.10"]


def test_a_port_that_cannot_be_made_fails_the_build_and_keeps_no_port(cloud):
    network = cloud.network
    instance = boot(cloud, nics=[NicRequest(network=network), NicRequest(network=network)])[0]
    # Room for the first NIC's port only, once the request was accepted.
    quota_set(project=cloud.project, resource="port", limit=Port.objects.count() + 1)
    instance = run_pipeline(instance)
    assert instance.status == "ERROR"
    assert instance.fault["message"].startswith("preparing ports failed: Quota exceeded for port")
    assert not Port.objects.filter(device_id=str(instance.pk)).exists()
    assert not instance.nics.filter(port__isnull=False).exists()


def test_alternates_on_other_segments_come_first(cloud):
    # h2 and h3 (both on rack2) weigh the most, h1 (rack1) the least.
    HostFactory(name="h1", physnets=["physnet1"], memory_mb=4096)
    instance = run_pipeline(boot(cloud)[0])
    assert instance.host.name == "h2"
    # By weight alone h3 would come next; a rack2 that runs dry would then
    # sink every retry.
    assert instance.alternate_hosts == ["h1", "h3"]


def test_binding_failure_reschedules_on_the_same_port(cloud):
    port = sriov_on_h1_only(cloud)
    instance = run_pipeline(boot(cloud, nics=[NicRequest(port=port)])[0])
    assert instance.status == "ACTIVE" and instance.host.name == "h1"
    assert instance.attempt == 3 and instance.excluded_hosts == ["h2", "h3"]
    assert instance.nics.get().port_id == port.pk  # the same port, reused
    port.refresh_from_db()
    assert port.binding_vif_type == "hw_veb" and port.binding_host == "h1"
    assert str(port.fixed_ips.get().subnet.cidr) == "10.1.0.0/24"  # re-addressed in rack1
    failed = InstanceActionEvent.objects.filter(event="compute_bind_ports", result="Error")
    assert failed.count() == instance.attempt - 1
    assert "does not support" not in failed.first().details  # drivers said why
    assert "no SR-IOV physical function" in failed.first().details
    for name in instance.excluded_hosts:
        assert Host.objects.get(name=name).vcpus_used == 0  # claims released


def test_no_host_reaches_the_network_names_it(cloud):
    for host in Host.objects.all():
        services.host_set_enabled(host=host, enabled=True)
    HostFactory(name="h1", physnets=["physnet9"])
    HostFactory(name="h2", physnets=["physnet9"])
    HostFactory(name="h3", physnets=["physnet9"])
    instance = run_pipeline(boot(cloud)[0])
    assert instance.status == "ERROR"
    why = f"no host reaches a segment of network {cloud.network.pk} with a free IP"
    assert instance.fault["message"] == why
    seg = cloud.segments
    assert instance.fault["details"] == (
        f"attempt 1 schedule: {why} (no host left reaches: "
        f"segment rack1 ({seg['rack1'].pk}, physnet1) (253 free), "
        f"segment rack2 ({seg['rack2'].pk}, physnet2) (2 free)); "
        "final step: schedule; hosts tried: none"
    )
    assert not Port.objects.exists()  # the port compute created is gone


def test_capacity_is_named_when_nothing_fits(cloud):
    for name in ("h2", "h3"):
        services.host_set_enabled(host=Host.objects.get(name=name), enabled=False)
    # h1: 16 GB of RAM at ratio 1 fits two "big" (8 GB), whatever its vCPUs.
    fitted = [run_pipeline(boot(cloud, flavor="big")[0]) for _ in range(2)]
    assert [(i.status, i.host.name) for i in fitted] == [("ACTIVE", "h1"), ("ACTIVE", "h1")]
    third = run_pipeline(boot(cloud, flavor="big")[0])
    assert third.status == "ERROR"
    assert third.fault["message"] == "no host has 8 vCPUs, 8192 MB RAM and 10 GB disk free"
    assert Host.objects.get(name="h1").memory_mb_used == 16384


def test_spawn_failure_reschedules_then_fails_precisely(cloud, settings):
    for name in ("h1", "h2", "h3"):
        physnet = "physnet1" if name == "h1" else "physnet2"
        HostFactory(name=name, physnets=[physnet], driver_options={"spawn_error": "disk on fire"})
    instance = run_pipeline(boot(cloud)[0])
    assert instance.status == "ERROR"
    assert instance.fault["message"] == "spawn failed on h3: disk on fire"
    assert instance.attempt == settings.BERTH_BUILD_MAX_ATTEMPTS == 3
    assert instance.excluded_hosts == ["h1", "h2", "h3"]  # equal weights: by name
    assert all(h.vcpus_used == 0 for h in Host.objects.all())
    assert not Port.objects.exists()


def test_user_port_is_unbound_not_deleted(cloud):
    port = net_services.port_create(project=cloud.project, network=cloud.network)
    instance = run_pipeline(boot(cloud, nics=[NicRequest(port=port)])[0])
    assert instance.status == "ACTIVE"
    pipeline.delete(instance.pk)
    port.refresh_from_db()
    assert (port.binding_host, port.device_id, port.device_owner) == ("", "", "")
    assert port.fixed_ips.exists()
    instance.refresh_from_db()
    assert instance.status == "DELETED"
    assert Host.objects.get(name=instance.host.name).vcpus_used == 0
    pipeline.delete(instance.pk)  # idempotent
    assert Host.objects.get(name=instance.host.name).vcpus_used == 0


def test_delete_removes_ports_compute_created(cloud):
    instance = run_pipeline(boot(cloud)[0])
    port_id = instance.nics.get().port_id
    pipeline.delete(instance.pk)
    assert not Port.objects.filter(pk=port_id).exists()


def test_steps_are_idempotent_and_ignore_stale_attempts(cloud):
    instance = boot(cloud)[0]
    assert step_outcome(pipeline.prepare_ports, instance.pk, 1) is pipeline.Outcome.NEXT
    # A duplicate delivery changes nothing.
    assert step_outcome(pipeline.prepare_ports, instance.pk, 1) is pipeline.Outcome.STOP
    assert Port.objects.count() == 1
    assert step_outcome(pipeline.schedule, instance.pk, 1) is pipeline.Outcome.NEXT
    assert step_outcome(pipeline.schedule, instance.pk, 1) is pipeline.Outcome.STOP
    assert sum(h.running_instances for h in Host.objects.all()) == 1
    # A stale attempt does nothing.
    assert step_outcome(pipeline.bind_ports, instance.pk, 2) is pipeline.Outcome.STOP
    assert step_outcome(pipeline.bind_ports, instance.pk, 1) is pipeline.Outcome.NEXT
    assert host_spawn(instance) is pipeline.Outcome.NEXT
    # The host's result delivered twice: recorded once.
    instance.refresh_from_db()
    result = {"driver_data": "", "power_state": 1, "started": instance.launched_at.isoformat()}
    assert pipeline.spawn_done(instance.pk, 1, instance.host.name, result) is pipeline.Outcome.STOP
    assert instance.actions.get().events.filter(event="compute_spawn").count() == 1


def test_a_message_behind_its_build_goes_on_from_where_the_build_is(cloud):
    """A conductor message redelivered after its worker died says the state
    it was sent in; the build is further on: the steps done are not run
    again, the rest are. Delivered the first time, the same message leaves
    the build to the conductor that took it along. A message that says no
    state (sent before messages carried it) is read from the build."""
    instance = boot(cloud)[0]
    assert step_outcome(pipeline.prepare_ports, instance.pk, 1) is pipeline.Outcome.NEXT
    pipeline.conduct(instance.pk, "preparing_ports", 1)
    instance.refresh_from_db()
    assert instance.task_state == "scheduling"
    pipeline.conduct(instance.pk, "preparing_ports", 1, again=True)
    instance.refresh_from_db()
    assert (instance.task_state, Port.objects.count()) == ("spawning", 1)
    events = instance.actions.get().events.values_list("event", flat=True)
    assert sorted(events) == [
        "compute_bind_ports",
        "compute_prepare_ports",
        "compute_schedule_instance",
    ]
    other = boot(cloud)[0]
    pipeline.conduct(other.pk)
    other.refresh_from_db()
    assert other.task_state == "spawning"


def test_a_port_deleted_before_bind_is_made_again_and_bound(cloud):
    """Of two NICs, one's port (compute's) is deleted between schedule and
    bind: the NIC forgets it, and bind makes it again on the NIC's network
    next to the port the other NIC kept."""
    instance = boot(cloud, nics=[NicRequest(network=cloud.network)] * 2)[0]
    for step in (pipeline.prepare_ports, pipeline.schedule):
        assert step_outcome(step, instance.pk, 1) is pipeline.Outcome.NEXT
    kept, gone = (nic.port for nic in instance.nics.order_by("index"))
    net_services.port_delete(port=gone)
    assert step_outcome(pipeline.bind_ports, instance.pk, 1) is pipeline.Outcome.NEXT
    instance = run_pipeline(instance)
    assert instance.status == "ACTIVE"
    ports = [nic.port for nic in instance.nics.order_by("index")]
    assert ports[0] == kept and ports[1].pk != gone.pk
    assert all(p.binding_host == instance.host.name and p.status == "ACTIVE" for p in ports)
    assert all(p.fixed_ips.count() == 1 for p in ports)


def test_a_spawn_is_recorded_whole_or_not_at_all(cloud, monkeypatch):
    """The worker stops while it records a spawn (here the ports' update
    fails, after the instance's): none of it is kept, and the result sent
    again records it whole: ACTIVE, its port ACTIVE, the spawn logged once."""
    instance = boot(cloud)[0]
    for step in (pipeline.prepare_ports, pipeline.schedule, pipeline.bind_ports):
        assert step_outcome(step, instance.pk, 1) is pipeline.Outcome.NEXT

    def worker_stops(**kwargs):
        raise RuntimeError("worker stopped")

    with monkeypatch.context() as patched:
        patched.setattr(pipeline.net_services, "device_ports_set_status", worker_stops)
        with pytest.raises(RuntimeError):
            host_spawn(instance)
    instance.refresh_from_db()
    assert (instance.status, instance.task_state) == ("BUILD", "spawning")
    assert host_spawn(instance) is pipeline.Outcome.NEXT
    instance.refresh_from_db()
    assert instance.status == "ACTIVE"
    assert instance.nics.get().port.status == "ACTIVE"
    assert instance.actions.get().events.filter(event="compute_spawn").count() == 1


def test_legacy_fleet_creates_ports_at_bind_time(cloud):
    HostFactory(name="h1", physnets=["physnet1"], service_version=1)
    instance = boot(cloud)[0]
    assert instance.task_state == "scheduling"  # no prepare step
    assert not Port.objects.exists()
    step_outcome(pipeline.schedule, instance.pk, 1)
    assert not Port.objects.exists()  # still none: legacy order
    instance = run_pipeline(instance)
    assert instance.status == "ACTIVE"
    port = instance.nics.get().port
    assert (instance.host.name, port.binding_host) == ("h1", "h1")
    assert netaddr.IPAddress(port.fixed_ips.get().address) in netaddr.IPNetwork("10.1.0.0/24")


def test_baremetal_flavor_takes_a_whole_node_and_its_nic_mac(cloud):
    flavor = services.flavor_create(id="bm", name="bm", vcpus=1, ram=1024, disk=10, baremetal=True)
    HostFactory(
        name="bm1",
        baremetal=True,
        vcpus=32,
        memory_mb=65536,
        baremetal_nics=[
            {
                "mac_address": "52:54:00:00:00:aa",
                "physical_network": "physnet1",
                "switch_id": "sw1",
                "switch_port": "Eth1",
            }
        ],
    )
    port = net_services.port_create(
        project=cloud.project, network=cloud.network, binding_vnic_type="baremetal"
    )
    first = run_pipeline(
        services.server_create(
            context=cloud.context, name="bm-a", flavor=flavor, nics=[NicRequest(port=port)]
        )[0]
    )
    assert first.status == "ACTIVE" and first.host.name == "bm1"
    port.refresh_from_db()
    assert port.mac_address == "52:54:00:00:00:aa" and port.binding_vif_type == "other"
    second = run_pipeline(
        services.server_create(
            context=cloud.context,
            name="bm-b",
            flavor=flavor,
            nics=[NicRequest(network=cloud.network)],
        )[0]
    )
    assert second.status == "ERROR"
    assert second.fault["message"] == "no baremetal host is free"


@pytest.mark.libvirt
def test_libvirt_driver_defines_the_domain_with_its_interfaces(cloud):
    # libvirt's test driver: a real connection without a hypervisor.
    options = {"libvirt_uri": "test:///default", "libvirt_pool": "default-pool"}
    HostFactory(name="h1", physnets=["physnet1"], virt_driver="libvirt", driver_options=options)
    for name in ("h2", "h3"):
        services.host_set_enabled(host=Host.objects.get(name=name), enabled=False)
    instance = run_pipeline(boot(cloud)[0])
    driver_for("libvirt", options).destroy(str(instance.pk))
    assert instance.status == "ACTIVE" and instance.host.name == "h1"
    port = instance.nics.get().port
    domain = ET.fromstring(instance.driver_data)
    assert domain.findtext("uuid") == str(instance.pk)
    (interface,) = domain.findall("devices/interface")
    assert interface.find("mac").get("address") == port.mac_address
    assert interface.find("virtualport/parameters").get("interfaceid") == str(port.pk)


def test_reaper_resumes_a_stuck_step_then_gives_up(cloud, settings):
    instance = boot(cloud)[0]
    step_outcome(pipeline.prepare_ports, instance.pk, 1)  # now "scheduling", as if the worker died
    instance.refresh_from_db()
    for _ in range(settings.BERTH_REAPER_MAX_RESUMES):
        assert pipeline.resume_step(instance) == "scheduling"
    assert pipeline.resume_step(instance) is None
    instance.refresh_from_db()
    assert instance.status == "ERROR"
    assert "did not finish" in instance.fault["message"]
    assert not Port.objects.exists()


def test_baremetal_reuses_the_admins_port_found_by_mac(cloud):
    flavor = services.flavor_create(id="bm", name="bm", vcpus=1, ram=1024, disk=10, baremetal=True)
    HostFactory(name="bm1", baremetal=True, nic_mac="52:54:00:00:00:bb")
    admins = net_services.port_create(
        project=cloud.project,
        network=cloud.network,
        mac_address="52:54:00:00:00:bb",
        name="bm1-nic0",
    )
    instance = run_pipeline(
        services.server_create(
            context=cloud.context,
            name="bm",
            flavor=flavor,
            nics=[NicRequest(network=cloud.network)],
        )[0]
    )
    assert instance.status == "ACTIVE" and instance.host.name == "bm1"
    nic = instance.nics.get()
    assert nic.port_id == admins.pk and not nic.created_by_compute
    assert Port.objects.count() == 1  # compute's own port was dropped
    admins.refresh_from_db()
    assert (admins.binding_vif_type, admins.binding_vnic_type) == ("other", "baremetal")
    pipeline.delete(instance.pk)
    admins.refresh_from_db()
    assert (admins.binding_host, admins.device_id) == ("", "")  # kept, unbound


def test_baremetal_port_made_just_in_time_goes_with_the_instance(cloud):
    flavor = services.flavor_create(id="bm", name="bm", vcpus=1, ram=1024, disk=10, baremetal=True)
    HostFactory(name="bm1", baremetal=True, nic_mac="52:54:00:00:00:cc")
    instance = run_pipeline(
        services.server_create(
            context=cloud.context,
            name="bm",
            flavor=flavor,
            nics=[NicRequest(network=cloud.network)],
        )[0]
    )
    port = instance.nics.get().port
    assert port.mac_address == "52:54:00:00:00:cc" and instance.nics.get().created_by_compute
    pipeline.delete(instance.pk)
    assert not Port.objects.exists()
