"""Writes for compute: host reports, flavors, and instance requests.

The build pipeline's steps live in compute.pipeline; this module holds what
the API and the admin call directly."""

from dataclasses import dataclass, field, replace
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models.deletion import ProtectedError
from django.utils import timezone

from compute import pipeline, tasks
from compute.models import (
    Flavor,
    Host,
    Instance,
    InstanceNic,
    InstanceStatus,
    TaskState,
)
from config.auth import RequestContext
from config.errors import Conflict, Invalid, NotFound, in_use_by
from config.quotas import quota_fit
from networking.models import Network, Port
from networking.services import HostNetworkReport, host_agent_report


@dataclass
class HostReport:
    """What a compute host says about itself; repeated reports are heartbeats."""

    name: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    hypervisor_type: str = "QEMU"
    virt_driver: str = "fake"
    baremetal: bool = False
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    service_version: int = 2
    capabilities: dict = field(default_factory=dict)
    driver_options: dict = field(default_factory=dict)
    network: HostNetworkReport | None = None


def _check_report(report: HostReport) -> None:
    from compute.virt import DRIVER_NAMES

    if not report.name or len(report.name) > 255:
        raise Invalid("A host report needs a name of at most 255 characters.")
    for attr in ("vcpus", "memory_mb", "disk_gb"):
        if not isinstance(getattr(report, attr), int) or getattr(report, attr) < 0:
            raise Invalid(f"Invalid host report for {report.name}: {attr} must be an integer >= 0.")
    for attr in ("cpu_allocation_ratio", "ram_allocation_ratio", "disk_allocation_ratio"):
        if getattr(report, attr) <= 0:
            raise Invalid(f"Invalid host report for {report.name}: {attr} must be above 0.")
    if report.virt_driver not in DRIVER_NAMES:
        raise Invalid(
            f"Invalid host report for {report.name}: unknown virt driver {report.virt_driver!r} "
            f"(known: {', '.join(DRIVER_NAMES)})."
        )


@transaction.atomic
def host_report(*, report: HostReport, now: datetime | None = None) -> Host:
    """Upsert the host and its network capabilities (through networking's
    service, like a Neutron agent's report). Capacity in use is kept: it is
    berth's own accounting, not the host's."""
    _check_report(report)
    now = now or timezone.now()
    host, created = Host.objects.select_for_update().get_or_create(
        name=report.name,
        defaults={
            "vcpus": report.vcpus,
            "memory_mb": report.memory_mb,
            "disk_gb": report.disk_gb,
            "last_heartbeat": now,
        },
    )
    for attr in (
        "vcpus",
        "memory_mb",
        "disk_gb",
        "hypervisor_type",
        "virt_driver",
        "baremetal",
        "cpu_allocation_ratio",
        "ram_allocation_ratio",
        "disk_allocation_ratio",
        "service_version",
        "capabilities",
        "driver_options",
    ):
        setattr(host, attr, getattr(report, attr))
    host.last_heartbeat = now
    try:
        with transaction.atomic():
            host.save()
    except IntegrityError:
        raise Conflict(
            f"Host {report.name} reports less capacity than its instances already use."
        ) from None
    network = replace(report.network or HostNetworkReport(host=report.name), host=report.name)
    host_agent_report(report=network, now=now)
    return host


@transaction.atomic
def host_set_enabled(*, host: Host, enabled: bool, reason: str = "") -> Host:
    host = Host.objects.select_for_update().get(pk=host.pk)
    host.enabled = enabled
    host.disabled_reason = "" if enabled else reason
    host.save(update_fields=["enabled", "disabled_reason", "updated_at"])
    return host


def flavor_create(
    *, id: str | None, name: str, vcpus: int, ram: int, disk: int, **fields
) -> Flavor:
    try:
        with transaction.atomic():
            return Flavor.objects.create(
                id=id or name, name=name, vcpus=vcpus, ram=ram, disk=disk, **fields
            )
    except IntegrityError:
        raise Conflict(f"Flavor with name {name} or ID {id or name} already exists.") from None


@transaction.atomic
def flavor_delete(*, flavor: Flavor) -> None:
    """Instances keep a copy of what they hold, as Nova embeds the flavor,
    and let go of it. A row that protects the flavor (a reservation's own,
    until its lease is deleted) makes the delete a Conflict."""
    try:
        flavor.delete()
    except ProtectedError as error:
        raise Conflict(
            f"Flavor {flavor.pk} cannot be deleted: it is in use by {in_use_by(error)}."
        ) from None


@transaction.atomic
def flavor_set_extra_specs(*, flavor: Flavor, specs: dict) -> Flavor:
    flavor = Flavor.objects.select_for_update().get(pk=flavor.pk)
    flavor.extra_specs = {**flavor.extra_specs, **{str(k): str(v) for k, v in specs.items()}}
    flavor.save(update_fields=["extra_specs"])
    return flavor


@transaction.atomic
def flavor_unset_extra_spec(*, flavor: Flavor, key: str) -> None:
    flavor = Flavor.objects.select_for_update().get(pk=flavor.pk)
    if key not in flavor.extra_specs:
        raise NotFound(f"Flavor {flavor.pk} has no extra spec with key {key}.")
    del flavor.extra_specs[key]
    flavor.save(update_fields=["extra_specs"])


# --- servers -------------------------------------------------------------------


@dataclass
class NicRequest:
    """One entry of a server request's ``networks``."""

    network: Network | None = None
    port: Port | None = None
    fixed_ip: str | None = None


@transaction.atomic
def server_create(
    *,
    context: RequestContext,
    name: str,
    flavor: Flavor,
    nics: list[NicRequest],
    image_ref: str = "",
    metadata: dict | None = None,
    reservation_id: str = "",
    min_count: int = 1,
    max_count: int = 1,
) -> list[Instance]:
    """Store the instances and start their builds after commit (seed 000:
    accept fast, satisfy asynchronously). Only what can be checked without
    holding scarce resources is checked here; hosts, IPs and binding are the
    pipeline's."""
    ports = [nic.port for nic in nics if nic.port is not None]
    if ports and max_count > 1:
        raise Invalid("Unable to launch multiple instances with a single configured port ID.")
    if len({p.pk for p in ports}) != len(ports):
        raise Invalid("A port is requested more than once.")
    for port in ports:
        if port.device_id or port.binding_host:
            raise Conflict(f"Port {port.pk} is still in use.")
    per_instance = {"instances": 1, "cores": flavor.vcpus, "ram": flavor.ram}
    count = quota_fit(
        project=context.project, per_unit=per_instance, wanted_min=min_count, wanted_max=max_count
    )
    first = pipeline.first_step()
    instances = []
    for n in range(count):
        instance = Instance.objects.create(
            project=context.project,
            user_id=context.user_id,
            name=name if count == 1 else f"{name}-{n + 1}",
            flavor=flavor,
            vcpus=flavor.vcpus,
            memory_mb=flavor.ram,
            disk_gb=flavor.disk,
            baremetal=flavor.baremetal,
            image_ref=image_ref,
            metadata=metadata or {},
            reservation_id=reservation_id,
            task_state=first,
            step_deadline=pipeline.step_deadline(first),
        )
        InstanceNic.objects.bulk_create(
            InstanceNic(
                instance=instance,
                index=i,
                network=nic.network if nic.port is None else nic.port.network,
                requested_port_id=nic.port.pk if nic.port else None,
                fixed_ip=nic.fixed_ip,
            )
            for i, nic in enumerate(nics)
        )
        pipeline.action_start(instance, "create", context.user_id)
        instance.save(update_fields=["current_action"])
        tasks.send_step(instance)
        instances.append(instance)
    return instances


@transaction.atomic
def server_delete(*, context: RequestContext, instance: Instance) -> None:
    """Accept the delete; the worker unbinds, deletes and releases."""
    instance = Instance.objects.select_for_update().get(pk=instance.pk)
    if instance.status == InstanceStatus.DELETED:
        raise NotFound(f"Instance {instance.pk} could not be found.")
    if instance.task_state != TaskState.DELETING:
        pipeline.action_start(instance, "delete", context.user_id)
        instance.task_state = TaskState.DELETING
        instance.step_deadline = pipeline.step_deadline(TaskState.DELETING)
        instance.save(update_fields=["current_action", "task_state", "step_deadline", "updated_at"])
    tasks.start_delete(instance)


@transaction.atomic
def server_retry(*, instance: Instance) -> Instance:
    """Build an ERROR instance again from scratch (admin action)."""
    instance = Instance.objects.select_for_update().get(pk=instance.pk)
    if instance.status != InstanceStatus.ERROR:
        raise Conflict(
            f"Instance {instance.pk} is {instance.status}; only ERROR builds are retried."
        )
    first = pipeline.first_step()
    instance.retry(first, pipeline.step_deadline(first))
    instance.save()
    tasks.send_step(instance)
    return instance
