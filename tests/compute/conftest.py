from dataclasses import dataclass

import pytest

from compute import agent, pipeline
from compute.models import Flavor, Host, Instance
from identity.auth import RequestContext
from identity.models import Project
from networking import services as net_services
from networking.models import Network, Segment
from tests.factories import (
    ContextFactory,
    FlavorFactory,
    HostFactory,
    NetworkFactory,
    segments_by_name,
)

C21 = "/compute/v2.1"


@dataclass
class Cloud:
    project: Project
    context: RequestContext
    network: Network
    segments: dict[str, Segment]
    flavors: dict[str, Flavor]
    hosts: dict[str, Host]


@pytest.fixture
def cloud(db) -> Cloud:
    """Project "acme" (admin context), flavors small (1 vCPU, 1 GB, 10 GB)
    and big (8 vCPUs), a routed network "routed" with segments rack1 on
    physnet1 (10.1.0.0/24) and rack2 on physnet2 (10.2.0.0/24, 2 addresses),
    hosts h1 (physnet1) and h2, h3 (physnet2)."""
    context = ContextFactory(user_id="u1", project__name="acme")
    flavors = {
        "small": FlavorFactory(name="small", vcpus=1, ram=1024, disk=10),
        "big": FlavorFactory(name="big", vcpus=8, ram=8192, disk=10),
    }
    network = NetworkFactory(project=context.project, two_racks=True, rack2_pool=2)
    return Cloud(
        project=context.project,
        context=context,
        network=network,
        segments=segments_by_name(network),
        flavors=flavors,
        hosts={
            "h1": HostFactory(name="h1", physnets=["physnet1"]),
            "h2": HostFactory(name="h2", physnets=["physnet2"]),
            "h3": HostFactory(name="h3", physnets=["physnet2"]),
        },
    )


def sriov_on_h1_only(cloud):
    """h2 and h3 report vnic direct but no SR-IOV function, so binding
    fails there; h1 can, and weighs the least (the first attempts go
    elsewhere). Returns a direct port on the routed network."""
    for name in ("h2", "h3"):
        HostFactory(name=name, physnets=["physnet2"], vnic_types=["normal", "direct"])
    HostFactory(name="h1", physnets=["physnet1"], sriov=True, memory_mb=2048)
    return net_services.port_create(
        project=cloud.project, network=cloud.network, binding_vnic_type="direct"
    )


def host_spawn(instance: Instance) -> pipeline.Outcome:
    """The host's part of the spawn step, in this process: the request the
    control plane sends, the host's driver run on it, the result recorded."""
    instance = Instance.objects.select_related("host").get(pk=instance.pk)
    request = pipeline.spawn_request(instance).to_message()
    result = agent.spawn_result(request, instance.host.virt_driver)
    return pipeline.spawn_done(instance.pk, instance.attempt, instance.host.name, result)


def host_power(instance: Instance) -> Instance:
    """The host's part of the instance's power action, in this process, and
    its result recorded."""
    instance = Instance.objects.select_related("host").get(pk=instance.pk)
    action = pipeline.STEPS[instance.task_state].power
    host = instance.host
    result = agent.power_result(str(instance.pk), action, host.virt_driver, host.driver_options)
    pipeline.power_done(instance.pk, action, result)
    instance.refresh_from_db()
    return instance


def step_outcome(step, instance_id, attempt: int) -> pipeline.Outcome:
    """One build's outcome of a conductor step run for it alone."""
    return step([instance_id], attempt)[str(instance_id)]


def run_pipeline(instance: Instance) -> Instance:
    """The build's tasks, in this process: each step the table names for the
    instance's state, until none is due. For tests that check the steps,
    not the delivery."""
    for _ in range(20):
        instance.refresh_from_db()
        step = pipeline.STEPS.get(instance.task_state)
        if step is None or step not in pipeline.PIPELINE:
            return instance
        if step.hop == pipeline.HOST:
            host_spawn(instance)
        else:
            step.run([instance.pk], instance.attempt)
    raise AssertionError("pipeline did not finish")
