"""The build pipeline's steps: prepare ports -> schedule -> bind -> spawn.

Each step is a service that compute.tasks runs as one link of a Celery
chain. A step first locks the instance row and checks that the instance is
in the step's state for the task's attempt; a stale or duplicate delivery
finds it is not and does nothing, so every step is safe to run twice.
Domain failures are state transitions with a fault, never lost exceptions:
a failed bind or spawn releases the claim, excludes the host and asks for
a reschedule (the task replaces the chain's tail), reusing the same ports.
"""

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from compute import scheduler
from compute.models import (
    Host,
    Instance,
    InstanceAction,
    InstanceActionEvent,
    InstanceNic,
    InstanceStatus,
    TaskState,
)
from compute.virt import DRIVERS, DriverError, SpawnRequest, Vif
from config import sql
from config.errors import BerthError
from config.models import Project
from config.request_id import current_request_id
from networking import selectors as net_selectors
from networking import services as net_services
from networking.models import IpAllocationMode, Network, Port, PortStatus, VifType, VnicType

# The compute service version from which hosts understand ports created
# before scheduling (seed 001); while any enabled host is older, ports are
# created at bind time, the legacy order.
PORTS_BEFORE_SCHEDULING = 2
DEVICE_OWNER = "compute:nova"


class Outcome(enum.Enum):
    NEXT = "next"
    RESCHEDULE = "reschedule"
    STOP = "stop"


EVENTS = {
    TaskState.PREPARING_PORTS: "compute_prepare_ports",
    TaskState.SCHEDULING: "compute_schedule_instance",
    TaskState.BINDING: "compute_bind_ports",
    TaskState.SPAWNING: "compute_spawn",
    TaskState.DELETING: "compute_terminate_instance",
}
# What a fault calls each step.
LABELS = {
    TaskState.PREPARING_PORTS: "prepare ports",
    TaskState.SCHEDULING: "schedule",
    TaskState.BINDING: "bind ports",
    TaskState.SPAWNING: "spawn",
    TaskState.DELETING: "delete",
}


def fleet_is_legacy() -> bool:
    return Host.objects.filter(enabled=True, service_version__lt=PORTS_BEFORE_SCHEDULING).exists()


def first_step() -> str:
    return TaskState.SCHEDULING if fleet_is_legacy() else TaskState.PREPARING_PORTS


def step_deadline(seconds: int | None = None) -> datetime:
    """When a step entered now is overdue: BERTH_STEP_DEADLINE from now,
    or ``seconds``."""
    return timezone.now() + timedelta(seconds=seconds or settings.BERTH_STEP_DEADLINE)


# Rows a step may read with its instance (joined: a related row read
# lazily is one more query to build).
JOINS = {
    "host": sql.Join("host", Host, "LEFT JOIN compute_host h ON h.id = i.host_id", "h"),
    "project": sql.Join(
        "project", Project, "JOIN identity_project pr ON pr.id = i.project_id", "pr"
    ),
}


NIC_JOINS = {
    "port": sql.Join("port", Port, "LEFT JOIN networking_port p ON p.id = n.port_id", "p"),
    "network": sql.Join(
        "network", Network, "LEFT JOIN networking_network w ON w.id = n.network_id", "w"
    ),
}
# The NICs with their ports and the ports' networks, read with the instance
# by the steps that need both: one round trip less per step.
WITH_NICS = " ".join(
    [
        "LEFT JOIN compute_instancenic n ON n.instance_id = i.id",
        NIC_JOINS["port"].clause,
        "LEFT JOIN networking_network pw ON pw.id = p.network_id",
    ]
)


def _read(instance_id, related: tuple, *, lock: bool, nics: bool) -> tuple:
    """(the instance or None, its NICs if ``nics``) with the instance's
    ``related`` rows, locked if ``lock`` (its row alone: the host's is
    shared by every build on it). Hand-written, as the pipeline's hottest
    statement (config.sql says why)."""
    joins = [JOINS[name] for name in related]
    models = [Instance, *(j.model for j in joins)]
    tables = ["compute_instance i", *(j.clause for j in joins)]
    select = [sql.columns(Instance, "i"), *(sql.columns(j.model, j.alias) for j in joins)]
    order = ""
    if nics:
        models += [InstanceNic, Port, Network]
        tables.append(WITH_NICS)
        select += [sql.columns(m, a) for m, a in ((InstanceNic, "n"), (Port, "p"), (Network, "pw"))]
        order = ' ORDER BY n."index"'
    rows = sql.instances(
        tuple(models),
        f"SELECT {', '.join(select)} FROM {' '.join(tables)} WHERE i.id = %s{order}"
        + (sql.for_update(of="i") if lock else ""),
        [sql.param(Instance, "id", instance_id)],
    )
    if not rows:
        return None, []
    instance, *rest = rows[0][: 1 + len(joins)]
    for join, row in zip(joins, rest, strict=True):
        setattr(instance, join.path, row)
    found = []
    for *_, nic, port, network in rows if nics else ():
        if nic is None:  # an instance without NICs
            continue
        if port is not None:
            port.network = network
        nic.port = port
        found.append(nic)
    return instance, found


def _load(instance_id, *related: str, lock: bool = False) -> Instance | None:
    """The instance with its ``related`` rows, locked if ``lock``."""
    return _read(instance_id, related, lock=lock, nics=False)[0]


def _nics(instance: Instance, *related: str, without_port: bool = False) -> list[InstanceNic]:
    """The instance's NICs in order, with their ``related`` rows; hand-written
    as ``_read``."""
    return sql.select(
        InstanceNic,
        "n",
        "WHERE n.instance_id = %s"
        + (" AND n.port_id IS NULL" if without_port else "")
        + ' ORDER BY n."index"',
        [sql.param(InstanceNic, "instance", instance.pk)],
        [NIC_JOINS[name] for name in related],
    )


def _lock(instance_id, attempt: int, state: str, *related: str) -> Instance | None:
    """The instance, locked, if it is in ``state`` for ``attempt``, with
    the ``related`` rows its step reads."""
    instance = _load(instance_id, *related, lock=True)
    return instance if _in_step(instance, attempt, state) else None


def _lock_with_nics(instance_id, attempt: int, state: str, *related: str) -> tuple:
    """As ``_lock``, and the instance's NICs with their ports, in the same
    statement: (None, []) when the step has no work."""
    instance, nics = _read(instance_id, related, lock=True, nics=True)
    return (instance, nics) if _in_step(instance, attempt, state) else (None, [])


def _in_step(instance: Instance | None, attempt: int, state: str) -> bool:
    """Whether a task for (state, attempt) still has work on the instance."""
    return (
        instance is not None
        and instance.status == InstanceStatus.BUILD
        and (instance.task_state, instance.attempt) == (state, attempt)
    )


# What the pipeline changes on an instance; saving only these keeps each
# step's UPDATE small (the request's own fields never change here).
PIPELINE_FIELDS = [
    "task_state",
    "step_deadline",
    "status",
    "host",
    "claimed_host",
    "attempt",
    "excluded_hosts",
    "alternate_hosts",
    "last_failure",
    "fault",
    "driver_data",
    "launched_at",
    "deleted_at",
    "updated_at",
]


def _move(instance: Instance, state: str | None) -> None:
    instance.task_state = state
    instance.step_deadline = step_deadline() if state else None
    sql.save(instance, PIPELINE_FIELDS)


# --- the action log ------------------------------------------------------------


def action_start(instance: Instance, name: str, user_id: str = "") -> InstanceAction:
    """Record a request on the instance (create, delete); its steps' events
    hang off it."""
    action = InstanceAction.objects.create(
        instance=instance,
        action=name,
        request_id=current_request_id(),
        user_id=user_id,
        project_id=instance.project_id,
    )
    instance.current_action = action
    return action


@dataclass
class Step:
    """One step of one attempt, written to the action log once it ends."""

    instance: Instance
    state: str
    started: datetime
    action: str = "create"


def _event(instance: Instance, state: str, action: str = "create") -> Step:
    return Step(instance, state, timezone.now(), action)


EVENT_UPSERT = (
    "INSERT INTO compute_instanceactionevent "
    "(action_id, event, attempt, host, start_time, finish_time, result, details) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (action_id, event, attempt) DO UPDATE SET host = excluded.host, "
    "finish_time = excluded.finish_time, result = excluded.result, details = excluded.details"
)


def _finish(step: Step, result: str, details: str = "", host: str = "") -> None:
    """One upsert: a redelivered step overwrites its own event."""
    instance = step.instance
    # A build's steps run under the create action that requested them (a
    # delete replaces it and ends the build), so only a delete's step loads
    # the current action to compare.
    if instance.current_action_id is None or (
        step.action != "create" and instance.current_action.action != step.action
    ):
        # A request that recorded no action (a delete started by the reaper
        # or a lease's end) gets one now.
        action_start(instance, step.action)
        instance.save(update_fields=["current_action"])
    values = {
        "action": instance.current_action_id,
        "event": EVENTS[step.state],
        "attempt": instance.attempt,
        "host": host or (instance.host.name if instance.host else ""),
        "start_time": step.started,
        "finish_time": timezone.now(),
        "result": result,
        "details": details,
    }
    sql.execute(EVENT_UPSERT, [sql.param(InstanceActionEvent, f, v) for f, v in values.items()])


# --- ports ---------------------------------------------------------------------


def _ensure_ports(instance: Instance) -> None:
    """Get the user's ports and create the missing ones, recording which
    compute created. Idempotent: NICs that have a port are skipped."""
    device = str(instance.pk)
    for nic in _nics(instance, "network", without_port=True):
        if nic.requested_port_id:
            port = Port.objects.get(pk=nic.requested_port_id)
            net_services.port_attach(port=port, device_id=device, device_owner=DEVICE_OWNER)
            nic.port = port
        else:
            fixed = [{"ip_address": nic.fixed_ip}] if nic.fixed_ip else None
            nic.port = net_services.port_create(
                project=instance.project,
                network=nic.network,
                fixed_ips=fixed,
                device_id=device,
                device_owner=DEVICE_OWNER,
                binding_vnic_type=VnicType.BAREMETAL if instance.baremetal else VnicType.NORMAL,
            )
            nic.created_by_compute = True
        sql.save(nic, ["port", "created_by_compute"])


def cleanup_ports(instance: Instance) -> None:
    """Delete the ports compute created, unbind the ones the user passed in
    (their host, device and profile are cleared; the ports stay)."""
    for nic in _nics(instance, "port"):
        port = nic.port
        if port is None:
            continue
        if nic.created_by_compute:
            net_services.port_delete(port=port)
        elif port.device_id == str(instance.pk):
            net_services.port_unbind(port=port)


def _release_claim(instance: Instance, *, host_failed: bool = False) -> None:
    """Give the host's capacity back (counting a failure against it if
    ``host_failed``); idempotent through claimed_host."""
    if instance.claimed_host_id:
        scheduler.release(host_id=instance.claimed_host_id, instance=instance, failed=host_failed)
        instance.claimed_host = None


def _attempt_line(attempt: int, label: str, host: str, reason: str) -> str:
    return f"attempt {attempt} {label}{f' on {host}' if host else ''}: {reason}"


def _failed_attempts(instance: Instance) -> list[str]:
    """What failed each earlier attempt, from the action log: the step, the
    host and the reason (which names the port or the hypervisor's error)."""
    if instance.current_action_id is None:
        return []
    labels = {EVENTS[state]: label for state, label in LABELS.items()}
    failed = InstanceActionEvent.objects.filter(
        action_id=instance.current_action_id, result="Error", attempt__lt=instance.attempt
    ).order_by("attempt", "start_time")
    return [
        _attempt_line(e.attempt, labels.get(e.event, e.event), e.host, e.details) for e in failed
    ]


def _fail(instance: Instance, state: str, message: str, event=None, *, found: str = "") -> Outcome:
    """ERROR with a fault, everything the build held released. The message
    says what failed; the details (admin-only) name the step, host and
    reason of every failed attempt in order (the cause of a reschedule
    that later found no host is an earlier attempt's), then the final step
    with what it ``found`` (the message unless given)."""
    cleanup_ports(instance)
    _release_claim(instance)
    found = found or message
    host = instance.host.name if instance.host_id else ""
    attempts = [
        *_failed_attempts(instance),
        _attempt_line(instance.attempt, LABELS[state], host, found),
    ]
    instance.status = InstanceStatus.ERROR
    instance.fault = {
        "code": 500,
        "message": message,
        "details": "; ".join(attempts)
        + f"; final step: {LABELS[state]}; "
        + f"hosts tried: {', '.join(instance.excluded_hosts) or 'none'}",
        "created": timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if event is not None:
        _finish(event, "Error", found)
    _move(instance, None)
    return Outcome.STOP


def _retry_or_fail(
    instance: Instance, state: str, reason: str, event, *, host_failed: bool = True
) -> Outcome:
    """The host failed the build: release it (counting the failure against
    it unless ``host_failed`` is false: the cause was elsewhere), exclude it
    and try another host with the same ports, unless the attempts are used
    up."""
    _finish(event, "Error", reason)
    host = instance.host
    _release_claim(instance, host_failed=host_failed)
    instance.excluded_hosts = [*instance.excluded_hosts, host.name]
    instance.last_failure = reason
    if instance.attempt >= settings.BERTH_BUILD_MAX_ATTEMPTS:
        return _fail(instance, state, reason)
    instance.attempt += 1
    instance.host = None
    _move(instance, TaskState.SCHEDULING)
    return Outcome.RESCHEDULE


def _baremetal_ports(instance: Instance) -> None:
    """On a baremetal node (seed 003): a port an admin made for one of its
    NICs (found by MAC on the NIC's network) replaces the one compute made,
    and is reused and kept when the instance goes; compute's is deleted.
    Every port is plugged as vnic baremetal, as Nova does for Ironic."""
    macs = net_selectors.baremetal_macs(host=instance.host.name)
    for nic in (n for n in _nics(instance, "port") if n.created_by_compute):
        found = net_selectors.free_ports_by_mac(network_id=nic.port.network_id, macs=macs).first()
        if found is None:
            continue
        net_services.port_attach(port=found, device_id=str(instance.pk), device_owner=DEVICE_OWNER)
        net_services.port_delete(port=nic.port)
        nic.port, nic.created_by_compute = found, False
        nic.save(update_fields=["port", "created_by_compute"])
    for nic in _nics(instance, "port"):
        if nic.port.binding_vnic_type != VnicType.BAREMETAL:
            net_services.port_update(port=nic.port, binding_vnic_type=VnicType.BAREMETAL)


def _ports_ready(instance: Instance, state: str, event) -> Outcome | None:
    """Get or create the instance's ports: None when they are there, else
    the failed build's outcome. Nothing half-made is kept without a
    savepoint here: each port service undoes its own work when it fails,
    and the failure deletes the ports compute made for earlier NICs."""
    try:
        _ensure_ports(instance)
    except BerthError as error:
        return _fail(instance, state, f"preparing ports failed: {error.message}", event)
    return None


# --- the steps -----------------------------------------------------------------


def prepare_ports(instance_id, attempt: int) -> Outcome:
    with transaction.atomic():
        instance = _lock(instance_id, attempt, TaskState.PREPARING_PORTS, "project")
        if instance is None:
            return Outcome.STOP
        event = _event(instance, TaskState.PREPARING_PORTS)
        failed = _ports_ready(instance, TaskState.PREPARING_PORTS, event)
        if failed:
            return failed
        _finish(event, "Success")
        _move(instance, TaskState.SCHEDULING)
        return Outcome.NEXT


def nic_needs(instance: Instance, nics: list[InstanceNic] | None = None) -> list[scheduler.NicNeed]:
    """What each NIC (read with its port, unless given) requires of a host,
    from its port if it has one."""
    needs = []
    for nic in _nics(instance, "port") if nics is None else nics:
        port = nic.port
        if port is None:  # legacy order: the port comes at bind time
            vnic = VnicType.BAREMETAL if instance.baremetal else VnicType.NORMAL
            needs.append(scheduler.NicNeed(network_id=nic.network_id, vnic_type=vnic))
            continue
        pinned = None
        if port.ip_allocation != IpAllocationMode.DEFERRED:
            segments = {a.subnet.segment_id for a in port.fixed_ips.select_related("subnet")}
            if segments and None not in segments:
                pinned = tuple(segments)
        needs.append(
            scheduler.NicNeed(
                network_id=port.network_id, vnic_type=port.binding_vnic_type, segment_ids=pinned
            )
        )
    return needs


def schedule(instance_id, attempt: int) -> Outcome:
    with transaction.atomic():
        instance, nics = _lock_with_nics(instance_id, attempt, TaskState.SCHEDULING)
        if instance is None:
            return Outcome.STOP
        event = _event(instance, TaskState.SCHEDULING)
        needs = nic_needs(instance, nics)
        constraints = scheduler.constraints_for(instance)
        picked = scheduler.select_hosts(
            instance, needs, constraints, alternates=settings.BERTH_SCHEDULER_ALTERNATES
        )
        host = scheduler.claim_first(hosts=picked, instance=instance)
        if host is None:
            no_host = scheduler.explain_no_host(instance, needs, constraints)
            why = no_host.why
            if instance.last_failure:
                why = f"{instance.last_failure}; no other host: {why}"
            found = f"{no_host.why} ({no_host.detail})" if no_host.detail else no_host.why
            return _fail(instance, TaskState.SCHEDULING, why, event, found=found)
        instance.host_id = instance.claimed_host_id = host.pk
        instance.alternate_hosts = [h.name for h in picked if h != host]
        _finish(event, "Success", scheduler.explain_choice(host, picked), host=host.name)
        _move(instance, TaskState.BINDING)
        return Outcome.NEXT


def bind_ports(instance_id, attempt: int) -> Outcome:
    with transaction.atomic():
        instance, nics = _lock_with_nics(instance_id, attempt, TaskState.BINDING, "host")
        if instance is None:
            return Outcome.STOP
        event = _event(instance, TaskState.BINDING)
        host = instance.host.name
        if any(nic.port is None for nic in nics):
            # A legacy fleet: the ports are created only now.
            failed = _ports_ready(instance, TaskState.BINDING, event)
            if failed:
                return failed
        if instance.baremetal:
            _baremetal_ports(instance)
        if instance.baremetal or any(nic.port is None for nic in nics):
            nics = _nics(instance, "port")
        for nic in nics:
            try:
                port = net_services.port_bind(port=nic.port, host=host)
            except BerthError as error:
                # A segment out of addresses is the network's doing, not the
                # host's: it does not weigh the host down.
                return _retry_or_fail(
                    instance,
                    TaskState.BINDING,
                    f"port {nic.port.pk}: binding on {host}: {error.message}",
                    event,
                    host_failed=error.type != "IpAddressGenerationFailure",
                )
            if port.binding_vif_type == VifType.BINDING_FAILED:
                return _retry_or_fail(
                    instance, TaskState.BINDING, f"port {port.pk}: {port.binding_failure}", event
                )
        _finish(event, "Success", host=host)
        _move(instance, TaskState.SPAWNING)
        return Outcome.NEXT


def _spawn_request(instance: Instance, nics: list[InstanceNic]) -> SpawnRequest:
    vifs = [
        Vif(
            port_id=str(port.pk),
            mac_address=port.mac_address,
            vif_type=port.binding_vif_type,
            vif_details=port.binding_vif_details,
            network_id=str(port.network_id),
            mtu=port.network.mtu,
        )
        for port in (nic.port for nic in nics)
    ]
    return SpawnRequest(
        instance_id=str(instance.pk),
        instance_name=instance.name,
        host=instance.host.name,
        vifs=vifs,
        driver_options=instance.host.driver_options,
    )


def spawn(instance_id, attempt: int) -> Outcome:
    started = timezone.now()
    # Read without a lock: the driver may take its time, and the locked
    # re-check below decides whether what it did still counts.
    instance, nics = _read(instance_id, ("host",), lock=False, nics=True)
    if not _in_step(instance, attempt, TaskState.SPAWNING):
        return Outcome.STOP
    # Started: the deadline now counts from here and outlasts the task's
    # hard time limit, so the reaper never resumes a spawn still running.
    # Conditional on the resumes seen: if the reaper resumed this step in
    # the meantime, the run it enqueued spawns and this one stops.
    started_here = Instance.objects.filter(
        pk=instance.pk, task_state=TaskState.SPAWNING, attempt=attempt, resumes=instance.resumes
    ).update(step_deadline=step_deadline(settings.BERTH_SPAWN_DEADLINE))
    if not started_here:
        return Outcome.STOP
    request = _spawn_request(instance, nics)
    host_id, host_failures = instance.host_id, instance.host.failed_builds
    driver = DRIVERS[instance.host.virt_driver]
    try:
        driver_data, error = driver.spawn(request), None
    except DriverError as failure:
        driver_data, error = "", str(failure)
    with transaction.atomic():
        # The host is in the request already; only a failure reads it again.
        instance = _lock(instance_id, attempt, TaskState.SPAWNING)
        if instance is None:  # deleted while spawning: the delete cleans up
            return Outcome.STOP
        event = Step(instance, TaskState.SPAWNING, started)
        if error is not None:
            reason = f"spawn failed on {request.host}: {error}"
            return _retry_or_fail(instance, TaskState.SPAWNING, reason, event)
        # A success clears the host's failures; read with the instance, so
        # only a host that has some pays the UPDATE.
        if host_failures:
            scheduler.clear_failures(host_id=host_id, before=started)
        net_services.ports_set_status(
            port_ids=[vif.port_id for vif in request.vifs], status=PortStatus.ACTIVE
        )
        instance.status = InstanceStatus.ACTIVE
        instance.driver_data = driver_data
        instance.launched_at = timezone.now()
        instance.last_failure = ""
        _finish(event, "Success", host=request.host)
        _move(instance, None)
        return Outcome.NEXT


def delete(instance_id) -> None:
    """Unbind the user's ports, delete compute's, release IPs and capacity.
    Idempotent: a deleted instance is left as it is."""
    with transaction.atomic():
        instance = _load(instance_id, lock=True)
        if instance is None or instance.status == InstanceStatus.DELETED:
            return
        event = _event(instance, TaskState.DELETING, action="delete")
        cleanup_ports(instance)
        _release_claim(instance)
        instance.status = InstanceStatus.DELETED
        instance.deleted_at = timezone.now()
        _finish(event, "Success")
        _move(instance, None)


def resume_step(instance: Instance) -> str | None:
    """The reaper's decision for a build whose step overran its deadline:
    the step to run again (all steps are idempotent), or None after it
    failed the build because it was resumed too often."""
    if instance.resumes >= settings.BERTH_REAPER_MAX_RESUMES:
        step = instance.task_state
        if step == TaskState.DELETING:
            return step
        _fail(instance, step, f"step {step} did not finish after {instance.resumes} resumes")
        return None
    instance.resumes += 1
    instance.step_deadline = step_deadline()
    instance.save(update_fields=["resumes", "step_deadline", "updated_at"])
    return instance.task_state


def stuck_instances(grace: float = 0):
    """Builds whose step is overdue by more than ``grace`` seconds."""
    overdue = timezone.now() - timedelta(seconds=grace)
    return Instance.objects.filter(task_state__isnull=False, step_deadline__lt=overdue)
