"""Writes for compute: host reports, flavors, and instance requests.

The build pipeline's steps live in compute.pipeline; this module holds what
the API and the admin call directly."""

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.deletion import ProtectedError
from django.utils import timezone

from compute import pipeline, signals, tasks
from compute.models import (
    Flavor,
    Host,
    Image,
    Instance,
    InstanceNic,
    InstanceStatus,
    TaskState,
)
from compute.virt import PowerAction
from config.errors import Conflict, Invalid, NotFound, in_use_by
from identity.auth import RequestContext
from identity.quotas import quota_fit
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

    def to_message(self) -> dict:
        """As an agent sends it through the broker (JSON)."""
        return asdict(self)

    @classmethod
    def from_message(cls, message: dict) -> "HostReport":
        """What an agent sent; Invalid if it is not a report."""
        try:
            network = message.get("network")
            return cls(**{**message, "network": network and HostNetworkReport(**network)})
        except (TypeError, AttributeError) as error:
            raise Invalid(f"Malformed host report: {error}.") from None


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


def agent_report(*, report: HostReport, power_states: dict[str, int], sent_at: datetime) -> Host:
    """An agent's report of its host, sent when it starts and whenever the
    report changes: the host as ``host_report`` stores it, served by the
    agent from now on, with the power state of every domain it runs."""
    with transaction.atomic():
        host = host_report(report=report)
        Host.objects.filter(pk=host.pk, has_agent=False).update(has_agent=True)
        _domains_record(host=host.name, power_states=power_states, sent_at=sent_at)
    return host


@dataclass(frozen=True)
class Heartbeat:
    """One agent heartbeat: its host, the power state of every domain the
    host runs when one changed since its last heartbeat (else None), and
    when the agent sent it."""

    host: str
    power_states: dict[str, int] | None
    sent_at: datetime


def hosts_heartbeat(*, beats: list[Heartbeat]) -> int:
    """Agents' heartbeats, taken many at once (compute.tasks.heartbeat):
    every host named is alive now, in one update, and the newest power
    states each host sent are recorded. A heartbeat from a host berth does
    not know (deleted while its agent ran) is dropped: the agent's report
    at its next start makes it again. Returns the hosts found."""
    newest: dict[str, Heartbeat] = {}
    for beat in beats:
        if beat.power_states is not None and (
            beat.host not in newest or beat.sent_at > newest[beat.host].sent_at
        ):
            newest[beat.host] = beat
    with transaction.atomic():
        names = {beat.host for beat in beats}
        found = Host.objects.filter(name__in=names).update(last_heartbeat=timezone.now())
        for beat in newest.values():
            _domains_record(host=beat.host, power_states=beat.power_states, sent_at=beat.sent_at)
    return found


def _domains_record(*, host: str, power_states: dict[str, int], sent_at: datetime) -> None:
    """The host's domains as its agent saw them at ``sent_at``, unless a
    later report was applied already (two workers may take a host's
    reports out of order)."""
    newer = Q(domains_at__isnull=True) | Q(domains_at__lt=sent_at)
    if Host.objects.filter(newer, name=host).update(domains=power_states, domains_at=sent_at):
        found = Host.objects.only("pk", "name").get(name=host)
        pipeline.power_states_record(host=found, power_states=power_states)


def hosts_check(*, now: datetime | None = None) -> list[tuple[str, bool]]:
    """The liveness sweep: a host whose heartbeats stopped for
    BERTH_HOST_DOWN_AFTER seconds goes down (its waiting builds fail over to
    other hosts on the same ports, its queue is emptied, and the world is
    told); one whose heartbeats came back is up again. Each edge is taken
    once, by a conditional update, whoever else sweeps. Returns the hosts
    that changed and whether each is up now."""
    from compute.scheduler import alive_since

    now, since = now or timezone.now(), alive_since()
    changed = []
    for pk, name in Host.objects.filter(down_since=None, last_heartbeat__lt=since).values_list(
        "pk", "name"
    ):
        with transaction.atomic():
            if not Host.objects.filter(pk=pk, down_since=None, last_heartbeat__lt=since).update(
                down_since=now
            ):
                continue
            failed_over = pipeline.fail_over(host_id=pk, reason=f"host {name} is down")
            signals.host_liveness.send(sender=Host, host=name, up=False, failed_over=failed_over)
            transaction.on_commit(lambda name=name: tasks.purge_host_queue(name), robust=True)
        changed.append((name, False))
    for pk, name in Host.objects.filter(
        down_since__isnull=False, last_heartbeat__gte=since
    ).values_list("pk", "name"):
        with transaction.atomic():
            back = Host.objects.filter(pk=pk, down_since__isnull=False, last_heartbeat__gte=since)
            if back.update(down_since=None):
                signals.host_liveness.send(sender=Host, host=name, up=True, failed_over=[])
                changed.append((name, True))
    return changed


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


# --- images --------------------------------------------------------------------


def image_create(
    *,
    name: str,
    disk_format: str = "qcow2",
    container_format: str = "bare",
    min_disk: int = 0,
    min_ram: int = 0,
    visibility: str = Image.Visibility.PUBLIC,
    project=None,
) -> Image:
    return Image.objects.create(
        name=name,
        disk_format=disk_format,
        container_format=container_format,
        min_disk=min_disk,
        min_ram=min_ram,
        visibility=visibility,
        project=project,
    )


def image_delete(*, image: Image) -> None:
    """Servers booted from it keep its id, as Nova's do."""
    image.delete()


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
        instances.append(instance)
    tasks.send_builds(instances)
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


# Nova's vm_state of each status, as its errors name it.
VM_STATES = {
    InstanceStatus.BUILD: "building",
    InstanceStatus.ACTIVE: "active",
    InstanceStatus.SHUTOFF: "stopped",
    InstanceStatus.ERROR: "error",
    InstanceStatus.DELETED: "deleted",
}
# A power action: (the step it runs, its name in Nova's errors, the statuses
# it starts from). A hard reboot also revives an ERROR instance that ran.
POWER_ACTIONS = {
    PowerAction.STOP: (TaskState.POWERING_OFF, "stop", {"ACTIVE", "ERROR"}),
    PowerAction.START: (TaskState.POWERING_ON, "start", {"SHUTOFF"}),
    PowerAction.REBOOT: (TaskState.REBOOTING, "reboot", {"ACTIVE"}),
    PowerAction.REBOOT_HARD: (TaskState.REBOOTING_HARD, "reboot", {"ACTIVE", "SHUTOFF", "ERROR"}),
}


@transaction.atomic
def server_power(*, context: RequestContext, instance: Instance, action: PowerAction) -> Instance:
    """Accept a power action (os-stop, os-start, reboot); the instance's host
    runs it. Conflict, in Nova's words, while another task runs or from a
    status the action does not start from; the instance must have run on a
    host."""
    state, name, sources = POWER_ACTIONS[action]
    locked = Instance.objects.select_for_update(of=("self",)).select_related("host")
    instance = locked.get(pk=instance.pk)
    if instance.status == InstanceStatus.DELETED:
        raise NotFound(f"Instance {instance.pk} could not be found.")
    if instance.task_state is not None:
        raise Conflict(
            f"Cannot '{name}' instance {instance.pk} while it is in task_state "
            f"{instance.task_state}"
        )
    if instance.status not in sources or instance.launched_at is None:
        raise Conflict(
            f"Cannot '{name}' instance {instance.pk} while it is in vm_state "
            f"{VM_STATES[instance.status]}"
        )
    pipeline.action_start(instance, name, context.user_id)
    instance.enter(state, pipeline.step_deadline(state))
    instance.save(update_fields=["current_action", "task_state", "step_deadline", "updated_at"])
    tasks.send_step(instance)
    return instance


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
