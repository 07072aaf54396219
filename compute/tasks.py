"""Celery adapters for the control plane: load by id, call a service.

A build is two hops (compute.pipeline.PIPELINE says which step runs where):
``conduct`` runs the database-only steps on the build queue (for a
request's builds together, pipeline.BATCH at most), then the host
the build landed on spawns it (compute.agent.spawn, on its queue
``host.<name>``) and hands the result to ``spawn_done``: an agent of the
host's own sends it as a message; a central worker serving the queue of a
host without one (compute.worker) runs it in place. A message is sent
only where the hop changes: after bind (to the host), and after a failed
spawn (back to the conductor, for the next attempt). The agents' reports
and heartbeats arrive on the ``agents`` queue.
"""

import logging
import time
from datetime import datetime

from celery import Task, current_app, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery_batches import Batches
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from redis.exceptions import RedisError

from compute import agent, pipeline, services
from compute.models import Host, Instance, TaskState
from config.celery import HEARTBEAT_BATCH, enqueue_after_commit

# Lost database connections are worth a retry; domain failures are not
# exceptions at all (they are states with a fault).
TRANSIENT = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": True,
    "max_retries": 5,
}
BUILD_QUEUE = "build"
# Set while a conductor's message that takes along waiting builds is on its
# way (send_new), for settings.BERTH_TAKE_ALONG_WINDOW at most: in the cache,
# beside the broker's messages (config.settings).
WAKE_FLAG = "compute:conductor-on-its-way"
# Seconds before the builds of a batch a lost connection interrupted go on
# (each alone): about the first retry's backoff.
INTERRUPTED_BATCH_DELAY = 1
# A batch of heartbeats is written at least this often (s); with the
# liveness sweep's minute of grace, a delay of this size costs nothing.
HEARTBEAT_FLUSH_INTERVAL = 1.0
HEARTBEAT_ATTEMPTS = 3

logger = logging.getLogger(__name__)


def host_queue(host: str) -> str:
    return f"host.{host}"


class BuildTask(Task):
    """A task running a build's steps. An exception no step expected (a
    bug, a malformed host option) fails the build at once with the step's
    name, instead of leaving it to the reaper; lost connections (retried)
    and a spawn stopped at its time limit (resumed by the reaper) are not
    failures of the build."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        if isinstance(exc, (OperationalError, InterfaceError, SoftTimeLimitExceeded)):
            return
        if isinstance(args[0], list):
            # A batch's conductor fails each build that raised itself
            # (compute.pipeline.conduct): what escapes it is no build's.
            return
        try:
            pipeline.fail_unexpected(args[0], exc)
        except DatabaseError:  # the reaper fails or resumes it later
            logger.exception("could not record the failure of build %s", args[0])


def send_step(instance: Instance, nics: list | None = None) -> None:
    """Send, once the current transaction commits, the task that runs the
    instance's step: the conductor, or its host's part on the host's queue
    (read now, inside the transaction, from the instance's ``nics`` with
    their ports if given)."""
    instance_id, attempt = str(instance.pk), instance.attempt
    step = pipeline.STEPS[instance.task_state]
    if step.hop == pipeline.CONDUCTOR:
        state = instance.task_state
        enqueue_after_commit(lambda: conduct.delay(instance_id, state, attempt))
        return
    queue, driver = host_queue(instance.host.name), instance.host.virt_driver
    if step.power:
        args = (instance_id, step.power, driver, instance.host.driver_options)
        enqueue_after_commit(lambda: agent.power.apply_async(args, queue=queue))
    else:
        request = pipeline.spawn_request(instance, nics).to_message()
        enqueue_after_commit(
            lambda: agent.spawn.apply_async((request, attempt, driver), queue=queue)
        )


def send_builds(instances: list[Instance]) -> None:
    """Send, once the current transaction commits, the conductor the
    first step of a request's new builds (all in the same state, attempt
    1), in batches of pipeline.BATCH, each free to take along other new
    builds that wait. A batch that leaves room is not sent while such a
    message is on its way (send_new)."""
    state = instances[0].task_state if instances else None
    for batch in _batches([str(instance.pk) for instance in instances]):
        enqueue_after_commit(lambda batch=batch: send_new(batch, state))


def _batches(ids: list[str]) -> list[list[str]]:
    return [ids[first : first + pipeline.BATCH] for first in range(0, len(ids), pipeline.BATCH)]


def send_new(instance_ids: list[str], state: str) -> None:
    """Send the conductor new builds (committed), or nothing if a message
    that takes along waiting builds is on its way: it takes these too, since
    it reads the builds waiting only once it starts (after it clears the
    flag, in ``conduct``). So a burst of one-server requests costs a message
    per batch, not one per request. The flag lapses after
    BERTH_TAKE_ALONG_WINDOW, so a message lost or stuck behind a backlog
    holds back others only so long; past it, the next request sends one."""
    takes_along = pipeline.room(instance_ids, state, 1) > 0
    if takes_along and not cache.add(WAKE_FLAG, True, timeout=settings.BERTH_TAKE_ALONG_WINDOW):
        return
    # A full batch's message takes none along, so it is not the message on
    # its way and leaves the flag to the one that is.
    conduct.delay(instance_ids, state, 1, takes_along)


def send_waiting(state: str) -> None:
    """Send, once the current transaction commits, a message of no build
    of its own that takes along the builds waiting in ``state`` (send_new)."""
    enqueue_after_commit(lambda: send_new([], state))


def send_destroy(*, instance_id: str, host: str) -> None:
    """Have ``host`` remove the instance's domain, once this commits."""
    found = Host.objects.filter(name=host).values_list("virt_driver", "driver_options").first()
    if found is None or instance_id is None:
        return
    args = (instance_id, *found)
    enqueue_after_commit(lambda: agent.destroy.apply_async(args, queue=host_queue(host)))


@shared_task(name="compute.conduct", base=BuildTask, bind=True, **TRANSIENT)
def conduct(
    self,
    instance_ids: list[str] | str,
    state: str | None = None,
    attempt: int | None = None,
    take_along: bool = False,
) -> None:
    # Delivered again: requeued after its pool process died (the broker
    # marks it), or retried after a lost connection.
    again = bool((self.request.delivery_info or {}).get("redelivered")) or self.request.retries > 0
    if take_along:
        # Before the batch is read: a build committed from now on is not
        # left to this message (send_new).
        try:
            cache.delete(WAKE_FLAG)
        except (RedisError, OSError):  # the flag lapses by itself
            logger.warning("could not clear the conductor's flag", exc_info=True)
    try:
        pipeline.conduct(instance_ids, state, attempt, take_along=take_along, again=again)
    except pipeline.Interrupted as interrupted:
        if len(interrupted.builds) == 1:
            raise interrupted.__cause__ from None  # retried (TRANSIENT)
        # A batch is not retried whole: its long transactions are the
        # likeliest to be cut again. Each build it had in hand goes on in
        # a message of its own, from where it is (no state named), with
        # retries of its own.
        for build in interrupted.builds:
            conduct.apply_async((build,), countdown=INTERRUPTED_BATCH_DELAY)


@shared_task(name="compute.spawn_done", base=BuildTask, **TRANSIENT)
def spawn_done(instance_id: str, attempt: int, host: str, result: dict) -> None:
    pipeline.spawn_done(instance_id, attempt, host, result)


@shared_task(name="compute.power_done", **TRANSIENT)
def power_done(instance_id: str, action: str, result: dict) -> None:
    pipeline.power_done(instance_id, action, result)


@shared_task(name="compute.agent_report", **TRANSIENT)
def agent_report(report: dict, power_states: dict, sent_at: str) -> None:
    services.agent_report(
        report=services.HostReport.from_message(report),
        power_states=power_states,
        sent_at=datetime.fromisoformat(sent_at),
    )


@shared_task(
    name="compute.heartbeat",
    base=Batches,
    flush_every=HEARTBEAT_BATCH,
    flush_interval=HEARTBEAT_FLUSH_INTERVAL,
)
def heartbeat(requests: list) -> None:
    """The agents' heartbeats, in batches: each message is one
    ``compute.heartbeat(host, power_states, sent_at)`` as compute.agent
    sends it, and the worker hands over what it holds (up to
    HEARTBEAT_BATCH messages, or every HEARTBEAT_FLUSH_INTERVAL seconds),
    so a batch costs one task and a few statements, not each heartbeat.
    A malformed message is logged and dropped, not the batch with it."""
    beats = []
    for request in requests:
        try:
            host, power_states, sent_at = request.args
            beats.append(services.Heartbeat(host, power_states, datetime.fromisoformat(sent_at)))
        except (TypeError, ValueError):
            logger.warning("malformed heartbeat dropped: %r", request.args)
    # The batch's messages are acknowledged whatever the task raises, so a
    # lost connection is retried here, on a new one; the writes are
    # idempotent (a power report older than the one recorded is not applied).
    for attempt in range(HEARTBEAT_ATTEMPTS):
        try:
            services.hosts_heartbeat(beats=beats)
            return
        except (OperationalError, InterfaceError):
            if attempt == HEARTBEAT_ATTEMPTS - 1:
                raise
            connection.close()
            time.sleep(2**attempt)


@shared_task(name="compute.check_hosts", **TRANSIENT)
def check_hosts() -> int:
    return len(services.hosts_check())


@shared_task(name="compute.delete_instance", **TRANSIENT)
def delete_instance(instance_id: str) -> None:
    pipeline.delete(instance_id)


def start_delete(instance: Instance) -> None:
    instance_id = str(instance.pk)
    enqueue_after_commit(lambda: delete_instance.delay(instance_id))


def queue_of(instance: Instance) -> str:
    """The queue that holds the message of the instance's step."""
    if pipeline.STEPS[instance.task_state].hop == pipeline.HOST:
        return host_queue(instance.host.name)
    return BUILD_QUEUE


def purge_host_queue(host: str) -> int:
    """Drop what waits for a host that went down: its builds fail over, and
    what it would find on its return is stale (it reports its domains then,
    and those that do not live there are destroyed)."""
    with current_app.connection_for_write() as connection:
        declared = current_app.amqp.queues[host_queue(host)](connection.default_channel)
        return declared.purge() or 0


def backlog(queue: str) -> int:
    """Messages waiting in ``queue`` (not those a worker holds)."""
    with current_app.connection_for_read() as connection:
        declared = current_app.amqp.queues[queue](connection.default_channel)
        return declared.queue_declare().message_count


@shared_task(name="compute.reap_stuck_builds", **TRANSIENT)
def reap_stuck_builds() -> int:
    """Resume steps that overran their deadline (a worker died, a message
    was lost); fail builds resumed too often. While messages wait in a
    step's queue, the step's message may be one of them, so it is resumed
    only once overdue by the backlog grace as well: a burst of builds is
    never resumed (and failed for resuming too often) for waiting its turn."""
    waiting: dict[str, int] = {}
    resumed = 0
    conducted: dict[tuple[str, int], list[str]] = {}  # (state, attempt) -> builds
    stuck = pipeline.stuck_instances().select_related("host")
    for instance in stuck.only("task_state", "host__name")[:500]:
        queue = queue_of(instance)
        if queue not in waiting:
            waiting[queue] = backlog(queue)
        grace = settings.BERTH_STEP_BACKLOG_GRACE if waiting[queue] else 0
        with transaction.atomic():
            instance = (
                pipeline.stuck_instances(grace)
                .select_related("host")
                .select_for_update(skip_locked=True, of=("self",))
                .filter(pk=instance.pk)
                .first()
            )
            if instance is None:
                continue
            step = pipeline.resume_step(instance)
            if step == TaskState.DELETING:
                start_delete(instance)
            elif step is not None and pipeline.STEPS[step].hop == pipeline.CONDUCTOR:
                conducted.setdefault((step, instance.attempt), []).append(str(instance.pk))
            elif step is not None:
                send_step(instance)
            resumed += 1
    # Builds resumed in the same conductor step (a batch whose worker died
    # left them there) go on in one batch, as they were: their claims weigh
    # each other's, where builds resumed each alone and conducted at once
    # would claim a rack's last addresses twice. Each resume has committed.
    for (state, attempt), ids in conducted.items():
        for batch in _batches(ids):
            message = (batch, state, attempt)
            enqueue_after_commit(lambda message=message: conduct.delay(*message))
    return resumed
