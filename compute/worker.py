"""The worker side of the spawn hop: consuming the host queues.

Spawn is sent to the queue of the host a build landed on, ``host.<name>``,
so that an agent on that host can take it. Until hosts run agents, a
worker started with ``--host-queues`` serves every host's queue: it
consumes the queue of each host in the database when it starts, and of
each host reported later within BERTH_HOST_QUEUE_SYNC seconds. The list
is read by the worker itself, so no message has to reach every worker
when a host appears, and a worker started later finds them all.
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
    help="Also serve the queue of every host (host.<name>): spawns, until hosts run agents.",
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
            wanted = {host_queue(name) for name in Host.objects.values_list("name", flat=True)}
        except DatabaseError:
            logger.warning("host queues not synced: the database is unreachable", exc_info=True)
            return
        for queue in sorted(wanted - {q.name for q in consumer.task_consumer.queues}):
            consumer.add_task_queue(queue)
