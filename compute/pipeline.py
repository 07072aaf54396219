"""The build pipeline: prepare ports -> schedule -> bind -> spawn.

One table, PIPELINE, says what a build does: each step's function, where it
runs (its hop), and its name in the action log and in faults. It drives the
tasks, the instance's moves from step to step, the reaper's resumes and the
tests. Adding a step is one entry, its function and a test.

Two hops: the steps that only write the database (prepare ports, schedule,
bind) run one after another in one conductor task, each in its own
transaction; spawn runs on the queue of the host the build landed on
(compute.tasks). A message is sent only where the hop changes, after the
step that changes it commits.

A conductor step runs for a batch: the builds of one request (as Nova's
conductor takes a multi-create whole), or one build, plus, for new
builds, others that wait for their first step (a burst of one-server
requests is conducted in batches too). It reads and locks them in one
statement, writes their events in one and their moves in one, and
schedules builds alike with one host search; each build keeps its own
outcome (its host, its failure, its next step).

A step first locks the instance rows and checks that each instance is in
the step's state for the attempt it expects; a stale or duplicate run finds
it is not and does nothing for it, so every step is safe to run twice.
Domain failures are state transitions with a fault, never lost exceptions:
a failed bind or spawn releases the claim, excludes the host and schedules
the next attempt on the same ports.
"""

import enum
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import Exists, OuterRef
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
from compute.virt import PowerAction, PowerState, SpawnRequest, Vif
from config.errors import BerthError
from config.request_id import current_request_id
from networking import selectors as net_selectors
from networking import services as net_services
from networking.models import IpAllocationMode, Port, PortStatus, VifType, VnicType

# The compute service version from which hosts understand ports created
# before scheduling (seed 001); while any enabled host is older, ports are
# created at bind time, the legacy order.
PORTS_BEFORE_SCHEDULING = 2
DEVICE_OWNER = "compute:nova"
# The most builds a conductor takes in one batch: a batch's steps cost
# about one statement each for all its builds, but its builds are
# conducted one after another. A request's builds are sent this many to
# a message; a smaller batch takes waiting builds along up to it.
BATCH = 50

logger = logging.getLogger(__name__)

# Where a step runs: in the conductor task, or on its host's queue.
CONDUCTOR = "conductor"
HOST = "host"


class Interrupted(Exception):
    """A transient error (a lost connection) stopped a conductor: the
    builds it had in hand, each to go on from where it is."""

    def __init__(self, builds: list[str]):
        super().__init__(f"{len(builds)} builds interrupted")
        self.builds = builds


class Outcome(enum.Enum):
    NEXT = "next"
    RESCHEDULE = "reschedule"
    STOP = "stop"
    # Run the step again for this build alone, once its batch is handed
    # on, if it is still there.
    AGAIN = "again"


@dataclass(frozen=True)
class Step:
    """One entry of the pipeline's table."""

    state: str  # the instance's task_state while the step is due or runs
    # (instance ids, attempt) -> outcome by instance id, for a conductor's
    # step; None for one run by a task of its own
    run: Callable[[list, int], dict[str, Outcome]] | None
    hop: str  # CONDUCTOR or HOST
    event: str  # its name in the action log (Nova's)
    label: str  # its name in faults
    # The setting that gives its seconds from entry to overdue (the reaper
    # resumes it then).
    deadline: str = "BERTH_STEP_DEADLINE"
    # For a power action: what the host does (compute.virt.PowerAction).
    power: str = ""


def fleet_is_legacy() -> bool:
    return Host.objects.filter(enabled=True, service_version__lt=PORTS_BEFORE_SCHEDULING).exists()


def first_step() -> str:
    return TaskState.SCHEDULING if fleet_is_legacy() else TaskState.PREPARING_PORTS


def step_deadline(state: str) -> datetime:
    """When the step ``state`` entered now is overdue."""
    return timezone.now() + timedelta(seconds=getattr(settings, STEPS[state].deadline))


def _load(instance_id, *related: str, lock: bool = False) -> Instance | None:
    """The instance with its ``related`` rows, locked if ``lock`` (its row
    alone: the host's is shared by every build on it)."""
    found = Instance.objects.select_related(*related).filter(pk=instance_id)
    if lock:
        found = found.select_for_update(of=("self",))
    return next(iter(found), None)  # by primary key: no ORDER BY, no LIMIT


def _loaded(instance_ids, *related: str, skip_locked: bool = False) -> list[Instance]:
    """The instances of ``instance_ids`` with their ``related`` rows, each
    locked (its row alone), in id order; with ``skip_locked``, without
    those another transaction holds."""
    found = Instance.objects.select_related(*related).filter(pk__in=instance_ids)
    return list(found.order_by("pk").select_for_update(of=("self",), skip_locked=skip_locked))


def _nics(instance: Instance, *related: str) -> list[InstanceNic]:
    """The instance's NICs in order, with their ``related`` rows."""
    return list(InstanceNic.objects.filter(instance=instance).select_related(*related))


def _builds(
    instance_ids, attempt: int, state: str, *related: str, **options
) -> list[tuple[Instance, list[InstanceNic]]]:
    """The builds of ``instance_ids`` that have work in ``state`` for
    ``attempt`` (_read, which takes the same ``options``)."""
    return [
        build
        for build in _read(instance_ids, attempt, state, *related, **options)
        if _in_step(build[0], attempt, state)
    ]


def _read(
    instance_ids,
    attempt: int,
    state: str,
    *related: str,
    nic_rows=(),
    lock_ports: bool = False,
    waiting: int = 0,
) -> list[tuple[Instance, list[InstanceNic]]]:
    """The builds of ``instance_ids`` (those that exist), each locked, with
    the ``related`` rows its step reads and its NICs in order with their
    ``nic_rows`` (what the step reads of them: each row joined costs every
    step that reads it): one statement for the batch, which locks the
    instances' rows through the join, in id order.
    With ``lock_ports``, the NICs' ports are locked in the same statement,
    after their instance's row, as a delete locks them; only for builds
    whose NICs all have one (a row is locked only through an inner join):
    the others (the legacy order, a port deleted meanwhile) are read again
    without the ports' locks.

    With ``waiting`` (never with ``lock_ports``), the same statement also
    takes up to that many other builds waiting in ``state`` for
    ``attempt``, oldest first, after those of ``instance_ids``, and skips
    every row another transaction holds instead of waiting for it (what
    it skipped of ``instance_ids`` is missing): two conductors taking
    builds along never wait on each other."""
    nics = InstanceNic.objects.select_related(
        "instance", *nic_rows, *(f"instance__{r}" for r in related)
    ).order_by("instance_id", "index")
    mine = nics.filter(instance_id__in=instance_ids)
    if waiting:
        # Skipping in the subquery too, so that the builds another batch
        # holds do not use up the limit.
        others = (
            Instance.objects.filter(status=InstanceStatus.BUILD, task_state=state, attempt=attempt)
            .exclude(pk__in=instance_ids)
            .order_by("created_at")
            .select_for_update(of=("self",), skip_locked=True)
            .values("pk")[:waiting]
        )
        found = list(
            (mine | nics.filter(instance_id__in=others)).select_for_update(
                of=("instance",), skip_locked=True
            )
        )
    else:
        found = _with_locked_ports(mine) if lock_ports else []
        missing = set(map(str, instance_ids)) - {str(nic.instance_id) for nic in found}
        if missing:
            found += mine.filter(instance_id__in=missing).select_for_update(of=("instance",))
    builds: dict[str, tuple[Instance, list[InstanceNic]]] = {}
    for nic in found:
        instance, instance_nics = builds.setdefault(str(nic.instance_id), (nic.instance, []))
        nic.instance = instance
        instance_nics.append(nic)
    nicless = set(map(str, instance_ids)) - builds.keys()
    if nicless:  # instances without NICs (or none at all)
        loaded = _loaded(nicless, *related, skip_locked=bool(waiting))
        for instance in loaded:
            builds[str(instance.pk)] = (instance, [])
        # Skipping held rows, an instance with NICs may have been held
        # when they were read and free now: its NICs, under its lock.
        for nic in nics.filter(instance__in=loaded) if waiting and loaded else ():
            nic.instance, instance_nics = builds[str(nic.instance_id)]
            instance_nics.append(nic)
    asked = list(map(str, instance_ids))
    order = asked + sorted(builds.keys() - set(asked))
    return [builds[key] for key in order if key in builds]


def _with_locked_ports(nics) -> list[InstanceNic]:
    """``nics`` locked with their instances and ports, for the instances
    whose NICs all have a port."""
    portless = InstanceNic.objects.filter(instance_id=OuterRef("instance_id"), port__isnull=True)
    found = (
        nics.filter(port__isnull=False)
        .annotate(some_portless=Exists(portless))
        .select_for_update(of=("instance", "port"))
    )
    return [nic for nic in found if not nic.some_portless]


def _lock(instance_id, attempt: int, state: str, *related: str) -> Instance | None:
    """The instance, locked, if it is in ``state`` for ``attempt``, with
    the ``related`` rows its step reads."""
    instance = _load(instance_id, *related, lock=True)
    return instance if _in_step(instance, attempt, state) else None


def _in_step(instance: Instance | None, attempt: int, state: str) -> bool:
    """Whether a run of (state, attempt) still has work on the instance."""
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
    "power_state",
    "launched_at",
    "deleted_at",
    "updated_at",
]


def _move(instance: Instance, state: str | None, nics: list[InstanceNic] | None = None) -> None:
    """Save the instance in step ``state`` (None: no step runs); where the
    hop changes, the next hop's task is sent once this commits (with the
    instance's ``nics`` as the step read them, if given)."""
    _move_all([(instance, nics)], state)


def _move_all(
    builds: list[tuple[Instance, list[InstanceNic] | None]],
    state: str | None,
    changed: tuple[str, ...] = (),
) -> None:
    """_move for each (instance, nics) of ``builds`` that a step moves on,
    having set ``changed`` (fields of PIPELINE_FIELDS) on each besides its
    state: one UPDATE for what they share, and one more for what differs
    from build to build (its CASE per row and field is costly to build, so
    only those fields go into it)."""
    deadline = step_deadline(state) if state else None
    hop_changes = []
    for instance, _ in builds:
        before = instance.task_state
        hop_changes.append(
            state in STEPS and (before not in STEPS or STEPS[before].hop != STEPS[state].hop)
        )
        instance.enter(state, deadline)
    if len(builds) == 1:
        builds[0][0].save(update_fields=PIPELINE_FIELDS)
    elif builds:
        instances = [instance for instance, _ in builds]
        Instance.objects.filter(pk__in=[instance.pk for instance in instances]).update(
            task_state=state, step_deadline=deadline, updated_at=timezone.now()
        )
        if changed:
            Instance.objects.bulk_update(instances, changed)
    if any(hop_changes):
        from compute import tasks  # the Celery side, which imports this module

        for (instance, nics), changes in zip(builds, hop_changes, strict=True):
            if changes:
                tasks.send_step(instance, nics)


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
class StepRun:
    """One run of a step for one attempt, written to the action log once it
    ends."""

    instance: Instance
    state: str
    started: datetime
    action: str = "create"


def _event(instance: Instance, state: str, action: str = "create") -> StepRun:
    return StepRun(instance, state, timezone.now(), action)


def _finish(run: StepRun, result: str, details: str = "", host: str = "") -> None:
    """One upsert: a redelivered step overwrites its own event."""
    _log([_logged(run, result, details, host)])


def _logged(run: StepRun, result: str, details: str = "", host: str = "") -> InstanceActionEvent:
    """The event of ``run`` ended with ``result``, to be written by _log."""
    instance = run.instance
    # A build's steps run under the create action that requested them (a
    # delete replaces it and ends the build), so only a delete's step loads
    # the current action to compare.
    if instance.current_action_id is None or (
        run.action != "create" and instance.current_action.action != run.action
    ):
        # A request that recorded no action (a delete started by the reaper
        # or a lease's end) gets one now.
        action_start(instance, run.action)
        instance.save(update_fields=["current_action"])
    return InstanceActionEvent(
        action_id=instance.current_action_id,
        event=STEPS[run.state].event,
        attempt=instance.attempt,
        host=host or (instance.host.name if instance.host else ""),
        start_time=run.started,
        finish_time=timezone.now(),
        result=result,
        details=details,
    )


def _log(events: list[InstanceActionEvent]) -> None:
    """Write ``events`` in one upsert: a redelivered step overwrites its own."""
    if events:
        InstanceActionEvent.objects.bulk_create(
            events,
            update_conflicts=True,
            unique_fields=["action", "event", "attempt"],
            update_fields=["host", "finish_time", "result", "details"],
        )


# --- ports ---------------------------------------------------------------------


def _address_holder(instance: Instance) -> uuid.UUID | None:
    """The reservation the instance asked for, as networking's holder of
    addresses: a lease's addresses go to its own servers' ports (of its
    project only: networking checks that)."""
    try:
        return uuid.UUID(instance.reservation_id) if instance.reservation_id else None
    except ValueError:
        return None


def _ensure_ports(instance: Instance, nics: list[InstanceNic]) -> None:
    """Get the user's ports and create the missing ones, recording which
    compute created. Idempotent: NICs that have a port are skipped."""
    device = str(instance.pk)
    for nic in (n for n in nics if n.port_id is None):
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
                holder=_address_holder(instance),
            )
            nic.created_by_compute = True
        nic.save(update_fields=["port", "created_by_compute"])


def _ports_together(builds: list[tuple[Instance, list[InstanceNic]]]) -> None:
    """Create the ports compute makes for a batch's NICs (those that ask
    for neither a port nor a fixed IP) with one networking.ports_create per
    project, network, vnic type and address holder, and record them on the
    NICs in one statement: a few statements for the whole batch. If that
    fails (a quota the batch exceeds, a MAC drawn twice), nothing of it is
    kept, and _ensure_ports makes them one build at a time, where a failure
    is the build's own."""
    wanted: dict[tuple, list[tuple[Instance, InstanceNic]]] = {}
    for instance, nics in builds:
        vnic = VnicType.BAREMETAL if instance.baremetal else VnicType.NORMAL
        for nic in nics:
            if nic.port_id is None and not nic.requested_port_id and not nic.fixed_ip:
                key = (instance.project_id, nic.network_id, vnic, _address_holder(instance))
                wanted.setdefault(key, []).append((instance, nic))
    if all(len(group) == 1 for group in wanted.values()):
        return  # nothing to share: port_create, as for one build
    try:
        with transaction.atomic():
            for (_, _, vnic, holder), group in wanted.items():
                ports = net_services.ports_create(
                    project=group[0][0].project,
                    network=group[0][1].network,
                    ports=[
                        {
                            "device_id": str(instance.pk),
                            "device_owner": DEVICE_OWNER,
                            "binding_vnic_type": vnic,
                        }
                        for instance, _ in group
                    ],
                    holder=holder,
                )
                for (_, nic), port in zip(group, ports, strict=True):
                    nic.port, nic.created_by_compute = port, True
            made = [nic for group in wanted.values() for _, nic in group]
            InstanceNic.objects.bulk_update(made, ["port", "created_by_compute"])
    except (BerthError, IntegrityError):
        for group in wanted.values():
            for _, nic in group:
                nic.port, nic.created_by_compute = None, False


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
    labels = {step.event: step.label for step in STEPS.values()}
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
    label = STEPS[state].label
    attempts = [*_failed_attempts(instance), _attempt_line(instance.attempt, label, host, found)]
    fault = {
        "code": 500,
        "message": message,
        "details": "; ".join(attempts)
        + f"; final step: {label}; "
        + f"hosts tried: {', '.join(instance.excluded_hosts) or 'none'}",
        "created": timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if event is not None:
        _finish(event, "Error", found)
    instance.set_error(fault)
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
    _release_claim(instance, host_failed=host_failed)
    instance.exclude_host(reason)
    if instance.attempt >= settings.BERTH_BUILD_MAX_ATTEMPTS:
        return _fail(instance, state, reason)
    instance.next_attempt()
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


def _ports_ready(instance: Instance, nics: list[InstanceNic], state: str, event) -> Outcome | None:
    """Get or create the instance's ports: None when they are there, else
    the failed build's outcome. Nothing half-made is kept without a
    savepoint here: each port service undoes its own work when it fails,
    and the failure deletes the ports compute made for earlier NICs."""
    try:
        _ensure_ports(instance, nics)
    except BerthError as error:
        return _fail(instance, state, f"preparing ports failed: {error.message}", event)
    return None


# --- the steps -----------------------------------------------------------------


def _outcomes(instance_ids) -> dict[str, Outcome]:
    """A batch step's outcome per build, by id: STOP until it says more."""
    return dict.fromkeys(map(str, instance_ids), Outcome.STOP)


def prepare_ports(instance_ids, attempt: int, waiting: int = 0) -> dict[str, Outcome]:
    """Get or make each build's ports. With ``waiting``, up to that many
    other builds waiting for this step come along (_read); a build of
    ``instance_ids`` that another transaction holds is run again alone
    (AGAIN) once this commits, then waiting for it."""
    outcomes = _outcomes(instance_ids)
    with transaction.atomic():
        state = TaskState.PREPARING_PORTS
        read = _read(
            instance_ids, attempt, state, "project", nic_rows=("network",), waiting=waiting
        )
        builds = [build for build in read if _in_step(build[0], attempt, state)]
        if waiting:
            outcomes = dict.fromkeys(outcomes, Outcome.AGAIN) | _outcomes(
                str(instance.pk) for instance, _ in read
            )
            if len(outcomes) - len(instance_ids) == waiting:
                # Full: more may wait, and no message of theirs may come.
                from compute import tasks  # the Celery side, which imports this module

                tasks.send_waiting(state)
        # Each build's step starts before the ports made for all of them.
        runs = [(_event(instance, TaskState.PREPARING_PORTS), nics) for instance, nics in builds]
        _ports_together(builds)
        done, logged = [], []
        for event, nics in runs:
            instance = event.instance
            failed = _ports_ready(instance, nics, TaskState.PREPARING_PORTS, event)
            outcomes[str(instance.pk)] = failed or Outcome.NEXT
            if not failed:
                done.append((instance, None))
                logged.append(_logged(event, "Success"))
        _log(logged)
        _move_all(done, TaskState.SCHEDULING)
    return outcomes


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
            segments = set(port.fixed_ips.values_list("subnet__segment_id", flat=True))
            if segments and None not in segments:
                pinned = tuple(segments)
        needs.append(
            scheduler.NicNeed(
                network_id=port.network_id, vnic_type=port.binding_vnic_type, segment_ids=pinned
            )
        )
    return needs


def _alike(instance: Instance, needs: list[scheduler.NicNeed]) -> tuple:
    """What makes builds share one host search: one request's builds
    (same flavor, project, reservation and excluded hosts) with the same
    needs of their NICs."""
    return (
        instance.project_id,
        instance.reservation_id,
        instance.flavor_id,
        instance.vcpus,
        instance.memory_mb,
        instance.disk_gb,
        instance.baremetal,
        tuple(instance.excluded_hosts),
        tuple(needs),
    )


def schedule(instance_ids, attempt: int) -> dict[str, Outcome]:
    """Claim a host for each build. Builds alike share one host search
    (scheduler.Ranking). In a batch, a claim never waits for a host row
    another transaction holds (two batches waiting on each other's hosts
    would deadlock), and a lease's instance reservation is not ranked
    ahead of the claims before it: such builds are scheduled again alone
    (AGAIN), once the batch commits, as a build alone waits."""
    outcomes = _outcomes(instance_ids)
    alone = len(outcomes) == 1
    with transaction.atomic():
        builds = [
            (instance, nic_needs(instance, nics))
            for instance, nics in _builds(
                instance_ids, attempt, TaskState.SCHEDULING, nic_rows=("port",)
            )
        ]
        sizes = Counter(_alike(instance, needs) for instance, needs in builds)
        searches: dict[tuple, tuple[scheduler.Ranking, scheduler.Constraints]] = {}
        placed, logged = [], []
        for instance, needs in builds:
            event = _event(instance, TaskState.SCHEDULING)
            key = _alike(instance, needs)
            if key not in searches:
                constraints = scheduler.constraints_for(instance)
                if constraints.per_instance and not alone:
                    outcomes[str(instance.pk)] = Outcome.AGAIN
                    continue
                ranking = scheduler.Ranking(
                    instance,
                    needs,
                    constraints,
                    alternates=settings.BERTH_SCHEDULER_ALTERNATES,
                    builds=sizes[key],
                )
                searches[key] = (ranking, constraints)
            ranking, constraints = searches[key]
            picked = ranking.pick()
            host = scheduler.claim_first(hosts=picked, instance=instance, wait=alone)
            if host is None:
                outcomes[str(instance.pk)] = (
                    _no_host(instance, needs, constraints, event) if alone else Outcome.AGAIN
                )
                continue
            ranking.took(host, instance)
            instance.host_id = instance.claimed_host_id = host.pk
            instance.alternate_hosts = [h.name for h in picked if h != host]
            placed.append((instance, None))
            logged.append(
                _logged(event, "Success", scheduler.explain_choice(host, picked), host=host.name)
            )
            outcomes[str(instance.pk)] = Outcome.NEXT
        _log(logged)
        _move_all(placed, TaskState.BINDING, changed=("host", "claimed_host", "alternate_hosts"))
    return outcomes


def _no_host(instance: Instance, needs, constraints, event: StepRun) -> Outcome:
    """No host could take the build: it fails, saying why."""
    no_host = scheduler.explain_no_host(instance, needs, constraints)
    why = no_host.why
    if instance.last_failure:
        why = f"{instance.last_failure}; no other host: {why}"
    found = f"{no_host.why} ({no_host.detail})" if no_host.detail else no_host.why
    return _fail(instance, TaskState.SCHEDULING, why, event, found=found)


def bind_ports(instance_ids, attempt: int) -> dict[str, Outcome]:
    outcomes = _outcomes(instance_ids)
    with transaction.atomic():
        builds = _builds(
            instance_ids,
            attempt,
            TaskState.BINDING,
            "host",
            nic_rows=("port__network",),
            lock_ports=True,
        )
        # The hosts' reports, for the whole batch in one statement.
        views = net_selectors.host_views(hosts={instance.host.name for instance, _ in builds})
        bound, logged = [], []
        for instance, nics in builds:
            event = _event(instance, TaskState.BINDING)
            failed, nics = _bind(instance, nics, attempt, event, views)
            outcomes[str(instance.pk)] = failed or Outcome.NEXT
            if not failed:
                bound.append((instance, nics))
                logged.append(_logged(event, "Success", host=instance.host.name))
        _log(logged)
        _move_all(bound, TaskState.SPAWNING)
    return outcomes


def _bind(
    instance: Instance, nics: list[InstanceNic], attempt: int, event, views: dict
) -> tuple[Outcome | None, list[InstanceNic]]:
    """Bind the build's ports on its host (its report in ``views``): (None,
    its NICs with their ports as bound and their networks: what the host is
    sent), or (the failed build's outcome, [])."""
    host = instance.host.name
    if any(nic.port is None for nic in nics):
        # A legacy fleet: the ports are created only now (each NIC's
        # network is read for it).
        failed = _ports_ready(instance, nics, TaskState.BINDING, event)
        if failed:
            return failed, []
    if instance.baremetal:
        _baremetal_ports(instance)
    if instance.baremetal or any(nic.port is None for nic in nics):
        # Ports made or swapped just now: read again, locked as the rest.
        [(_, nics)] = _builds(
            [instance.pk],
            attempt,
            TaskState.BINDING,
            nic_rows=("port__network",),
            lock_ports=True,
        )
    for nic in nics:
        try:
            port = net_services.port_bind(
                port=nic.port, host=host, holder=_address_holder(instance), views=views
            )
        except BerthError as error:
            # A segment out of addresses is the network's doing, not the
            # host's: it does not weigh the host down.
            reason = f"port {nic.port.pk}: binding on {host}: {error.message}"
            host_failed = error.type != "IpAddressGenerationFailure"
            return _retry_or_fail(
                instance, TaskState.BINDING, reason, event, host_failed=host_failed
            ), []
        if port.binding_vif_type == VifType.BINDING_FAILED:
            reason = f"port {port.pk}: {port.binding_failure}"
            return _retry_or_fail(instance, TaskState.BINDING, reason, event), []
        nic.port = port  # as bound, with its network: what the host is sent
    return None, nics


def spawn_request(instance: Instance, nics: list[InstanceNic] | None = None) -> SpawnRequest:
    """What the host needs to start the instance (read with its host, and
    with its NICs' ports and their networks unless given): the message
    carries it whole, as the host reads no database."""
    ports = [nic.port for nic in nics or _nics(instance, "port__network")]
    return SpawnRequest(
        instance_id=str(instance.pk),
        instance_name=instance.name,
        host=instance.host.name,
        vcpus=instance.vcpus,
        memory_mb=instance.memory_mb,
        disk_gb=instance.disk_gb,
        vifs=[
            Vif(
                port_id=str(port.pk),
                mac_address=port.mac_address,
                vif_type=port.binding_vif_type,
                vif_details=port.binding_vif_details,
                network_id=str(port.network_id),
                mtu=port.network.mtu,
            )
            for port in ports
        ],
        driver_options=instance.host.driver_options,
    )


def spawn_done(instance_id, attempt: int, host: str, result: dict) -> Outcome:
    """Record what ``host`` did with the spawn of ``attempt``: ACTIVE, or the
    next attempt elsewhere on the same ports. A result that no longer counts
    (the build was deleted, failed over or is already recorded) changes
    nothing; a domain the host made for it anyway is destroyed, unless the
    instance lives there."""
    started = datetime.fromisoformat(result["started"])
    if "error" not in result:
        # One transaction: a worker stopped in the middle leaves nothing of
        # it (not an ACTIVE server with DOWN ports and no spawn in its
        # log), and the result sent again records it whole.
        with transaction.atomic():
            instance = _load(instance_id, "host")
            if _in_step(instance, attempt, TaskState.SPAWNING) and instance.host.name == host:
                if _spawned(instance, result, started):
                    return Outcome.NEXT
                instance = _load(instance_id, "host")
            _destroy_stray(instance, host, instance_id=str(instance_id))
            return Outcome.STOP
    with transaction.atomic():
        instance = _lock(instance_id, attempt, TaskState.SPAWNING, "host")
        if instance is None or instance.host.name != host:
            return Outcome.STOP
        event = StepRun(instance, TaskState.SPAWNING, started)
        if result.get("unexpected"):
            message = "spawn failed: unexpected error"
            return _fail(instance, TaskState.SPAWNING, message, event, found=result["error"])
        reason = f"spawn failed on {host}: {result['error']}"
        return _retry_or_fail(instance, TaskState.SPAWNING, reason, event)


def _destroy_stray(instance: Instance | None, host: str, instance_id: str = "") -> None:
    """Have ``host`` remove the domain of an instance (or of ``instance_id``,
    which berth does not know) that does not live there: deleted, failed,
    or moved on to another host."""
    lives_there = (
        instance is not None
        and instance.status != InstanceStatus.DELETED
        and instance.host_id is not None
        and instance.host.name == host
    )
    if not lives_there:
        from compute import tasks  # the Celery side, which imports this module

        tasks.send_destroy(instance_id=instance_id or str(instance.pk), host=host)


def _spawned(instance: Instance, result: dict, started: datetime) -> bool:
    """Record a spawn that succeeded: ACTIVE, in one conditional update of
    the instance as read (with its host), the pipeline's fields only, if it
    is still in this step for the attempt it was read in; False if not (a
    delete that came meanwhile wins and cleans up). The update locks the
    instance's row first, as a delete does, so the ports' row locks follow
    in the same order."""
    current = Instance.objects.filter(
        pk=instance.pk,
        status=InstanceStatus.BUILD,
        task_state=TaskState.SPAWNING,
        attempt=instance.attempt,
    )
    instance.set_active(result["driver_data"], result["power_state"])
    instance.updated_at = timezone.now()
    columns = (Instance._meta.get_field(name).attname for name in PIPELINE_FIELDS)
    if not current.update(**{column: getattr(instance, column) for column in columns}):
        return False
    # A success clears the host's failures; read with the instance, so
    # only a host that has some pays the update.
    if instance.host.failed_builds:
        scheduler.clear_failures(host_id=instance.host_id, before=started)
    net_services.device_ports_set_status(
        device_id=str(instance.pk), host=instance.host.name, status=PortStatus.ACTIVE
    )
    _finish(StepRun(instance, TaskState.SPAWNING, started), "Success")
    return True


def delete(instance_id) -> None:
    """Unbind the user's ports, delete compute's, release IPs and capacity,
    and have the host remove the domain. Idempotent: a deleted instance is
    left as it is."""
    with transaction.atomic():
        instance = _load(instance_id, "host", lock=True)
        if instance is None or instance.status == InstanceStatus.DELETED:
            return
        event = _event(instance, TaskState.DELETING, action="delete")
        cleanup_ports(instance)
        _release_claim(instance)
        instance.set_deleted()
        _finish(event, "Success")
        _move(instance, None)
        if instance.host_id is not None:
            _destroy_stray(instance, instance.host.name)


def fail_over(*, host_id, reason: str) -> list[str]:
    """The host went down: send the builds waiting for its spawn to other
    hosts, on the same ports, as a failed spawn does, and fail the power
    actions waiting for it. Returns the ids of the builds sent elsewhere."""
    waiting = Instance.objects.filter(
        host_id=host_id, task_state__in=[s.state for s in STEPS.values() if s.hop == HOST]
    ).values_list("pk", flat=True)
    moved = []
    for instance_id in waiting:
        instance = _load(instance_id, "host", lock=True)
        step = STEPS.get(instance.task_state)
        if instance.host_id == host_id and step is not None and step.hop == HOST:
            _host_lost(instance, step, reason)
            moved += [str(instance_id)] if step in PIPELINE else []
    return moved


def _host_lost(instance: Instance, step: Step, reason: str) -> None:
    """The host of the instance's ``step`` is gone: a build goes on
    elsewhere with the same ports; a power action fails."""
    run = _event(instance, step.state, step.label if step.power else "create")
    if step.power:
        _power_failed(instance, run, reason)
    else:
        _retry_or_fail(instance, step.state, reason, run)


def power_states_record(*, host: Host, power_states: dict[str, int]) -> None:
    """What ``host`` says of every domain it runs: instance uuid -> power
    state. An instance living there that it does not name has none; a
    domain of an instance that does not live there (deleted, or built
    elsewhere after the host was given up) is destroyed."""
    reported = {}
    for key, state in power_states.items():
        try:
            reported[uuid.UUID(key)] = state
        except ValueError:
            continue  # not berth's: an operator's own domain
    living = dict(
        Instance.objects.filter(host=host)
        .exclude(status=InstanceStatus.DELETED)
        .values_list("pk", "power_state")
    )
    for instance_id in reported.keys() - living.keys():
        _destroy_stray(None, host.name, instance_id=str(instance_id))
    by_state: dict[int, list] = {}
    for instance_id, known in living.items():
        state = reported.get(instance_id, PowerState.NOSTATE)
        if state != known:
            by_state.setdefault(state, []).append(instance_id)
    for state, ids in by_state.items():
        Instance.objects.filter(pk__in=ids).update(power_state=state, updated_at=timezone.now())


def power_done(instance_id, action: str, result: dict) -> None:
    """Record what the host did with a power action: the new status and
    power state, or the failure (in the action log and on the instance; the
    instance keeps its status). A result for an action no longer running
    (a duplicate, or a delete came meanwhile) changes nothing."""
    with transaction.atomic():
        instance = _load(instance_id, "host", lock=True)
        step = STEPS.get(instance.task_state) if instance is not None else None
        if step is None or step.power != action:
            return
        run = StepRun(instance, step.state, datetime.fromisoformat(result["started"]), step.label)
        if "error" in result:
            _power_failed(
                instance, run, f"{step.label} failed on {instance.host.name}: {result['error']}"
            )
            return
        if action == PowerAction.STOP:
            instance.powered_off(result["power_state"])
        else:
            instance.powered_on(result["power_state"])
        _finish(run, "Success")
        _move(instance, None)


def _power_failed(instance: Instance, run: StepRun, reason: str) -> None:
    """A power action that failed: said in the action log and on the
    instance; no step runs any more."""
    _finish(run, "Error", reason)
    instance.last_failure = reason
    _move(instance, None)


def fail_unexpected(instance_id, error: Exception) -> None:
    """A step raised what no step expects: fail the build now, naming the
    step it was in (the reaper would only find it at the step's deadline).
    What the step did is rolled back; what earlier steps made is released."""
    with transaction.atomic():
        instance = _load(instance_id, "host", lock=True)
        if instance is None or instance.status != InstanceStatus.BUILD:
            return
        step = STEPS.get(instance.task_state)
        if step not in PIPELINE:
            return
        _fail(
            instance,
            step.state,
            f"{step.label} failed: unexpected error",
            _event(instance, step.state),
            found=f"unexpected {type(error).__name__}: {error}",
        )


def resume_step(instance: Instance) -> str | None:
    """The reaper's decision for a build whose step overran its deadline
    (read with its host): the step to run again (all steps are idempotent),
    or None after it failed the build over from a host that is down, or
    failed it because it was resumed too often."""
    step = STEPS[instance.task_state]
    if step.hop == HOST and not scheduler.is_up(instance.host):
        _host_lost(instance, step, f"host {instance.host.name} is down")
        return None
    if instance.resumes >= settings.BERTH_REAPER_MAX_RESUMES:
        if step is DELETE:
            return step.state
        reason = f"step {step.state} did not finish after {instance.resumes} resumes"
        if step.power:
            _power_failed(instance, _event(instance, step.state, step.label), reason)
        else:
            _fail(instance, step.state, reason)
        return None
    instance.resumes += 1
    instance.step_deadline = step_deadline(instance.task_state)
    instance.save(update_fields=["resumes", "step_deadline", "updated_at"])
    return instance.task_state


def stuck_instances(grace: float = 0):
    """Builds whose step is overdue by more than ``grace`` seconds."""
    overdue = timezone.now() - timedelta(seconds=grace)
    return Instance.objects.filter(task_state__isnull=False, step_deadline__lt=overdue)


# --- the table and the conductor -------------------------------------------

PIPELINE = (
    Step(
        TaskState.PREPARING_PORTS,
        prepare_ports,
        CONDUCTOR,
        "compute_prepare_ports",
        "prepare ports",
    ),
    Step(TaskState.SCHEDULING, schedule, CONDUCTOR, "compute_schedule_instance", "schedule"),
    Step(TaskState.BINDING, bind_ports, CONDUCTOR, "compute_bind_ports", "bind ports"),
    # Run by the host (compute.agent.spawn), recorded by spawn_done.
    Step(TaskState.SPAWNING, None, HOST, "compute_spawn", "spawn", "BERTH_SPAWN_DEADLINE"),
)
# Not a build's step, but logged, failed and resumed as one; it runs in a
# task of its own (compute.tasks.delete_instance).
DELETE = Step(TaskState.DELETING, None, CONDUCTOR, "compute_terminate_instance", "delete")
# The power actions of a built instance (Nova's os-stop, os-start, reboot):
# each one step, run by the instance's host (compute.agent.power), recorded
# by power_done; the label is the action's name in the action log.
POWER = (
    Step(TaskState.POWERING_OFF, None, HOST, "compute_stop_instance", "stop", power="stop"),
    Step(TaskState.POWERING_ON, None, HOST, "compute_start_instance", "start", power="start"),
    Step(TaskState.REBOOTING, None, HOST, "compute_reboot_instance", "reboot", power="reboot"),
    Step(
        TaskState.REBOOTING_HARD,
        None,
        HOST,
        "compute_reboot_instance",
        "reboot",
        power="reboot_hard",
    ),
)
STEPS = {step.state: step for step in (*PIPELINE, DELETE, *POWER)}
NEXT = {step.state: later for step, later in zip(PIPELINE, PIPELINE[1:], strict=False)}
CONDUCTED = {step for step in PIPELINE if step.hop == CONDUCTOR}


def _where(instance_ids) -> list[tuple[str, int, list[str]]]:
    """The builds of ``instance_ids`` still building, by the step they are
    in and its attempt: (state, attempt, ids)."""
    found = Instance.objects.filter(pk__in=instance_ids, status=InstanceStatus.BUILD)
    where: dict[tuple, list[str]] = {}
    for pk, state, attempt in found.values_list("pk", "task_state", "attempt"):
        where.setdefault((state, attempt), []).append(str(pk))
    return [(state, attempt, ids) for (state, attempt), ids in where.items()]


# What a step may raise that running it again can cure: the conductor's
# task is retried whole (every step is idempotent).
TRANSIENT = (OperationalError, InterfaceError)


def _run(step: Step, instance_ids: list[str], attempt: int, waiting: int = 0) -> dict[str, Outcome]:
    """The step's outcome for each build (and for builds it took along,
    up to ``waiting``: only the first step takes any). An exception no
    step expects rolls the batch's step back; the step then runs for each
    build of ``instance_ids`` alone, and a build that raises again fails at
    once, naming the step (the others go on)."""
    try:
        return (
            step.run(instance_ids, attempt, waiting) if waiting else step.run(instance_ids, attempt)
        )
    except TRANSIENT:
        raise
    except Exception as error:
        if len(instance_ids) == 1 and not waiting:
            logger.exception("build %s: %s failed", instance_ids[0], step.label)
            fail_unexpected(instance_ids[0], error)
            return _outcomes(instance_ids)
    outcomes = {}
    for instance_id in instance_ids:
        outcomes |= _run(step, [instance_id], attempt)
    return outcomes


def room(instance_ids: list[str], state: str | None, attempt: int | None) -> int:
    """How many builds waiting for the first step a message of new builds
    ``instance_ids`` takes along (none past the first step and attempt)."""
    return BATCH - len(instance_ids) if (state, attempt) == (PIPELINE[0].state, 1) else 0


def conduct(
    instance_ids,
    state: str | None = None,
    attempt: int | None = None,
    *,
    take_along: bool = False,
    again: bool = False,
) -> None:
    """Run the conductor steps of the builds ``instance_ids`` (a request's,
    or one build's id) from ``state`` for ``attempt`` (what the message
    says), each step in its own transaction for the whole batch, until
    they are handed to their hosts (or failed, or found done by another
    run). A reschedule after a failed bind loops here with the next
    attempt; a build the batch could not schedule is scheduled again
    alone, once the batch is handed on.

    A request's new builds (``take_along``, which their message says) take
    along others that wait for their first step, up to BATCH in all, so
    that a burst of one-server requests is conducted in batches too (and
    most of them send no message: compute.tasks.send_new); a batch that
    took all it could sends a message for the builds still waiting. The
    messages of builds taken along find them on their way and leave them
    to the conductor that has them (a build another conductor holds is not
    waited for in the batch; it is tried again alone at the end, if it is
    still waiting). A build resumed by the reaper, or sent again after a
    failed spawn, goes alone.

    A message delivered ``again`` (its worker died, or it was retried
    after a lost connection) carries the state it was first sent in, and
    its builds may be further on: its first step finds nothing to do for
    them, and they go on from where they are, read then (read first when
    the message does not say). A transient error raises Interrupted with
    every build in hand, its message's and those it took along, for the
    task to send on (compute.tasks.conduct); builds another conductor took
    along and left half-way when its worker died are the reaper's (at
    their step's deadline)."""
    ids = [str(instance_ids)] if isinstance(instance_ids, (str, uuid.UUID)) else instance_ids
    chase = again and state is not None
    waiting = room(ids, state, attempt) if take_along else 0
    due = [(state, attempt, ids)] if state is not None else _where(ids)
    in_hand = set(ids)
    try:
        _conduct(due, in_hand, chase, waiting)
    except TRANSIENT as error:
        raise Interrupted(sorted(in_hand)) from error


def _conduct(due: list, in_hand: set, chase: bool, waiting: int) -> None:
    """conduct's loop over the ``due`` (state, attempt, ids), adding the
    builds it takes along to ``in_hand``."""
    later: dict[str, tuple[str, int]] = {}  # AGAIN: build -> the step it waits in
    while due or later:
        if not due:
            due = [
                (where, tried, [one])
                for where, tried, found in _where(list(later))
                for one in found
                if later[one] == (where, tried)
            ]
            later = {}
            continue
        state, attempt, ids = due.pop(0)
        step = STEPS.get(state)
        if step not in CONDUCTED:
            continue
        by_outcome: dict[Outcome, list[str]] = {}
        outcomes = _run(step, ids, attempt, waiting)
        in_hand.update(outcomes)
        for instance_id, outcome in outcomes.items():
            by_outcome.setdefault(outcome, []).append(instance_id)
        if Outcome.NEXT in by_outcome:
            due.append((NEXT[state].state, attempt, by_outcome[Outcome.NEXT]))
        if Outcome.RESCHEDULE in by_outcome:
            due.append((TaskState.SCHEDULING, attempt + 1, by_outcome[Outcome.RESCHEDULE]))
        later |= dict.fromkeys(by_outcome.get(Outcome.AGAIN, []), (state, attempt))
        if chase and Outcome.STOP in by_outcome:
            due += _where(by_outcome[Outcome.STOP])
        chase, waiting = False, 0
