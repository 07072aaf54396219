"""The central side of the host hop: serving the queues of hosts that run
no agent.

A host's work (spawn, power actions, destroy: compute.agent) is sent to its
queue, ``host.<name>``, which the agent on that host consumes. For hosts
without an agent (reported with ``manage.py host_report``), a worker
started with ``--host-queues`` runs the same tasks: it consumes the queue
of each such host in the database when it starts, and of each one reported
later within BERTH_HOST_QUEUE_SYNC seconds, and lets go of a host's queue
once an agent reports that host. The list is read by the worker itself, so
no message has to reach every worker when a host appears, and a worker
started later finds them all.
"""

import logging

import click
from celery import bootsteps
from django.conf import settings
from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)

OPTION = click.Option(
    ["--host-queues"],
    is_flag=True,
    default=False,
    help="Also serve the queue (host.<name>) of every host that runs no agent.",
)


class HostQueues(bootsteps.StartStopStep):
    """A consumer step: add the queue of every known host, now and then."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent, host_queues: bool = False, **kwargs):
        self.enabled = host_queues
        self.timer = None
        super().__init__(parent, **kwargs)

    def start(self, consumer):
        self.sync(consumer)
        self.timer = consumer.timer.call_repeatedly(
            settings.BERTH_HOST_QUEUE_SYNC, self.sync, (consumer,), priority=10
        )

    def stop(self, consumer):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def sync(self, consumer) -> None:
        from compute.models import Host
        from compute.tasks import host_queue

        try:
            # This process waits on the broker between syncs, long enough
            # for the database to drop an idle connection.
            connection.close_if_unusable_or_obsolete()
            agentless = Host.objects.filter(has_agent=False).values_list("name", flat=True)
            wanted = {host_queue(name) for name in agentless}
        except DatabaseError:
            logger.warning("host queues not synced: the database is unreachable", exc_info=True)
            return
        served = {q.name for q in consumer.task_consumer.queues if q.name.startswith("host.")}
        for queue in sorted(wanted - served):
            consumer.add_task_queue(queue)
        for queue in sorted(served - wanted):
            consumer.cancel_task_queue(queue)
