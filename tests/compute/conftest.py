import pytest

from compute import pipeline, services
from compute.models import Instance
from config.auth import RequestContext
from config.models import Project
from networking import services as net_services
from networking.services import HostNetworkReport

C21 = "/compute/v2.1"


def report_host(name: str, physnets: dict, **kwargs):
    network_keys = ("vnic_types", "datapath_type", "interface_types", "baremetal_nics")
    network = {k: kwargs.pop(k) for k in network_keys if k in kwargs}
    defaults = {"vcpus": 8, "memory_mb": 16384, "disk_gb": 200}
    return services.host_report(
        report=services.HostReport(
            name=name,
            **{**defaults, **kwargs},
            network=HostNetworkReport(host=name, physnets=physnets, **network),
        )
    )


@pytest.fixture
def cloud(db):
    """Project "acme" (admin context), flavors small (1 vCPU, 1 GB, 10 GB)
    and big (8 vCPUs), a routed network "routed" with segments rack1 on
    physnet1 (10.1.0.0/24) and rack2 on physnet2 (10.2.0.0/24, 2 addresses),
    hosts h1 (physnet1) and h2, h3 (physnet2)."""
    project = Project.objects.create(name="acme")
    context = RequestContext(user_id="u1", project=project, role="admin")
    small = services.flavor_create(id="small", name="small", vcpus=1, ram=1024, disk=10)
    big = services.flavor_create(id="big", name="big", vcpus=8, ram=8192, disk=10)
    network = net_services.network_create(
        context=context,
        project=project,
        name="routed",
        segments=[
            {
                "network_type": "vlan",
                "physical_network": "physnet1",
                "segmentation_id": 101,
                "name": "rack1",
            },
            {
                "network_type": "vlan",
                "physical_network": "physnet2",
                "segmentation_id": 102,
                "name": "rack2",
            },
        ],
    )
    seg = {s.name: s for s in network.segments.all()}
    net_services.subnet_create(
        project=project, network=network, segment=seg["rack1"], cidr="10.1.0.0/24"
    )
    net_services.subnet_create(
        project=project,
        network=network,
        segment=seg["rack2"],
        cidr="10.2.0.0/24",
        allocation_pools=[{"start": "10.2.0.10", "end": "10.2.0.11"}],
    )
    hosts = {
        "h1": report_host("h1", {"physnet1": {"bridge": "br-ex"}}),
        "h2": report_host("h2", {"physnet2": {"bridge": "br-ex"}}),
        "h3": report_host("h3", {"physnet2": {"bridge": "br-ex"}}),
    }
    return {
        "project": project,
        "context": context,
        "network": network,
        "segments": seg,
        "flavors": {"small": small, "big": big},
        "hosts": hosts,
    }


def sriov_on_h1_only(cloud):
    """h2 and h3 report vnic direct but no SR-IOV function, so binding
    fails there; h1 can, and weighs the least (the first attempts go
    elsewhere). Returns a direct port on the routed network."""
    for name in ("h2", "h3"):
        report_host(name, {"physnet2": {"bridge": "br-ex"}}, vnic_types=["normal", "direct"])
    report_host(
        "h1",
        {"physnet1": {"bridge": "br-ex", "sriov_interface": "ens1"}},
        vnic_types=["normal", "direct"],
        memory_mb=2048,
    )
    return net_services.port_create(
        project=cloud["project"], network=cloud["network"], binding_vnic_type="direct"
    )


def run_pipeline(instance: Instance) -> Instance:
    """The build's tasks, in this process: each step the table names for the
    instance's state, until none is due. For tests that check the steps,
    not the delivery."""
    for _ in range(20):
        instance.refresh_from_db()
        step = pipeline.STEPS.get(instance.task_state)
        if step is None or step.run is None:
            return instance
        step.run(instance.pk, instance.attempt)
    raise AssertionError("pipeline did not finish")
