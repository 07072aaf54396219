"""Celery adapters for the build pipeline: load by id, call a step.

A build is the chain prepare_ports | schedule | bind_ports | spawn, each
task carrying the instance id and the attempt. When bind or spawn asks for
a reschedule, the task replaces the rest of its chain with
schedule | bind_ports | spawn for the next attempt.
"""

from celery import chain, current_app, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction

from compute import pipeline
from compute.models import Instance, TaskState
from config.celery import enqueue_after_commit

# Lost database connections are worth a retry; domain failures are not
# exceptions at all (they are states with a fault).
TRANSIENT = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": True,
    "max_retries": 5,
}

STEP_ORDER = [
    TaskState.PREPARING_PORTS,
    TaskState.SCHEDULING,
    TaskState.BINDING,
    TaskState.SPAWNING,
]


def build_chain(instance_id, attempt: int, first: str = TaskState.PREPARING_PORTS):
    """The chain of steps from ``first`` to the end."""
    steps = {
        TaskState.PREPARING_PORTS: prepare_ports,
        TaskState.SCHEDULING: schedule,
        TaskState.BINDING: bind_ports,
        TaskState.SPAWNING: spawn,
    }
    tail = STEP_ORDER[STEP_ORDER.index(first) :]
    return chain(*(steps[step].si(str(instance_id), attempt) for step in tail))


def start_build(instance: Instance) -> None:
    """Enqueue the instance's build once the transaction that stored it commits."""
    instance_id, attempt, first = instance.pk, instance.attempt, instance.task_state
    enqueue_after_commit(lambda: build_chain(instance_id, attempt, first).apply_async())


def _continue(task, outcome: pipeline.Outcome, instance_id, attempt: int):
    if outcome is pipeline.Outcome.RESCHEDULE:
        # Same ports, next host: the rest of this chain (stale for the old
        # attempt) is dropped and replaced by a fresh tail.
        task.request.chain = None
        return task.replace(build_chain(instance_id, attempt + 1, TaskState.SCHEDULING))
    if outcome is pipeline.Outcome.STOP:
        task.request.chain = None
    return outcome.value


@shared_task(name="compute.prepare_ports", bind=True, **TRANSIENT)
def prepare_ports(self, instance_id: str, attempt: int):
    return _continue(self, pipeline.prepare_ports(instance_id, attempt), instance_id, attempt)


@shared_task(name="compute.schedule", bind=True, **TRANSIENT)
def schedule(self, instance_id: str, attempt: int):
    return _continue(self, pipeline.schedule(instance_id, attempt), instance_id, attempt)


@shared_task(name="compute.bind_ports", bind=True, **TRANSIENT)
def bind_ports(self, instance_id: str, attempt: int):
    return _continue(self, pipeline.bind_ports(instance_id, attempt), instance_id, attempt)


# Stopped (SoftTimeLimitExceeded), else killed, 5 s before its deadline,
# so the reaper never resumes a spawn while it runs.
@shared_task(
    name="compute.spawn",
    bind=True,
    soft_time_limit=settings.BERTH_SPAWN_DEADLINE - 6,
    time_limit=settings.BERTH_SPAWN_DEADLINE - 5,
    **TRANSIENT,
)
def spawn(self, instance_id: str, attempt: int):
    return _continue(self, pipeline.spawn(instance_id, attempt), instance_id, attempt)


@shared_task(name="compute.delete_instance", **TRANSIENT)
def delete_instance(instance_id: str) -> None:
    pipeline.delete(instance_id)


def start_delete(instance: Instance) -> None:
    instance_id = str(instance.pk)
    enqueue_after_commit(lambda: delete_instance.delay(instance_id))


def build_backlog() -> int:
    """Messages waiting in the build queue (not those a worker holds)."""
    with current_app.connection_for_read() as connection:
        queue = current_app.amqp.queues["build"](connection.default_channel)
        return queue.queue_declare().message_count


@shared_task(name="compute.reap_stuck_builds", **TRANSIENT)
def reap_stuck_builds() -> int:
    """Resume steps that overran their deadline (a worker died, a message
    was lost); fail builds resumed too often. While messages wait in the
    build queue an overdue step may be one of them, so only steps overdue
    by the backlog grace as well are resumed: a burst of builds is never
    resumed (and failed for resuming too often) for waiting its turn."""
    grace = settings.BERTH_STEP_BACKLOG_GRACE if build_backlog() else 0
    resumed = 0
    for instance_id in pipeline.stuck_instances(grace).values_list("pk", flat=True)[:500]:
        with transaction.atomic():
            instance = (
                pipeline.stuck_instances(grace)
                .select_for_update(skip_locked=True)
                .filter(pk=instance_id)
                .first()
            )
            if instance is None:
                continue
            step = pipeline.resume_step(instance)
            if step == TaskState.DELETING:
                start_delete(instance)
            elif step is not None:
                attempt = instance.attempt
                enqueue_after_commit(
                    lambda i=instance_id, a=attempt, s=step: build_chain(i, a, s).apply_async()
                )
            resumed += 1
    return resumed
