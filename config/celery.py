"""The Celery app: `celery -A config worker` and `celery -A config beat`.

All settings live in config.settings under CELERY_*; see the comments there.
"""

import os
from collections.abc import Callable

from celery import Celery, signals
from django.conf import settings
from django.db import transaction

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("berth")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _serve_host_queues() -> None:
    # `celery -A config worker --host-queues` (compute.worker says why), and
    # the agent's reports when `manage.py agent` runs the worker.
    from compute.agent import Agent
    from compute.worker import OPTION, HostQueues

    app.user_options["worker"].add(OPTION)
    app.steps["consumer"].add(HostQueues)
    app.steps["consumer"].add(Agent)


_serve_host_queues()

# Celery's Django fixup closes the DB connection around every task unless
# told how many tasks may share one; a reconnect costs about 10 ms. The fixup
# reads only this old-style key.
app.conf["CELERY_DB_REUSE_MAX"] = settings.BERTH_CELERY_DB_REUSE_MAX

# berth's periodic tasks, by name. Beat (config.beat.Scheduler, django-celery-
# beat's DatabaseScheduler) writes beat_schedule into its PeriodicTask rows at
# every start, so `migrate` and a running beat are all they need. One entry
# per job, never one per lease event: beat reloads every entry on each change
# and stalls at 10^4 entries, so events are rows swept by one task.
PERIODIC_TASKS = {
    "berth: purge expired tokens": {"task": "identity.purge_expired_tokens", "every": 3600},
    "berth: reap stuck builds": {"task": "compute.reap_stuck_builds", "every": 10},
    "berth: check host heartbeats": {
        "task": "compute.check_hosts",
        "every": settings.BERTH_HEARTBEAT_INTERVAL,
    },
    "berth: fire due lease events": {"task": "reservations.events.sweep", "every": 1},
    "berth: heal leases": {"task": "reservations.heal", "every": 60},
    "berth: move flexible leases earlier": {"task": "reservations.flex_advance", "every": 60},
    "berth: resend lost webhook deliveries": {
        "task": "reservations.notifications.resend_lost",
        "every": 60,
    },
}
app.conf.beat_schedule = {
    name: {
        "task": spec["task"],
        "schedule": float(spec["every"]),
        # A message not started by the time the next one is sent is worth
        # nothing (the next does the same work), so it expires then instead
        # of queueing behind a busy or absent worker. The workers' clocks
        # must agree with beat's to well within the shortest interval.
        # DatabaseScheduler reads "expire_seconds"; it drops "expires".
        "options": {"expire_seconds": spec["every"]},
    }
    for name, spec in PERIODIC_TASKS.items()
}


# The most heartbeats compute.tasks.heartbeat takes in one batch. The agents'
# worker holds twice as many messages (its prefetch), so that it takes the
# next batch in while one is written.
HEARTBEAT_BATCH = 1000

# The worker pools of a deployment, as `celery -A config worker` options
# (docs/operations.md); the demo and the tests start these. The first also
# serves every host's queue (the spawn hop) until hosts run agents. Webhook
# deliveries have a pool of their own, so a slow receiver never holds a
# build or a lease event back; threads, as they wait on the network. The
# agents' heartbeats and reports have one too: it prefetches thousands of
# messages to batch the heartbeats, which the other pools must not (one
# message at a time per process, so a long build holds no short one back),
# and one process writes them, so two batches never wait on each other's rows.
WORKER_POOLS = {
    "worker": ["-Q", "default,build,events", "--host-queues", "-c", "2"],
    "notify worker": ["-Q", "notify", "-P", "threads", "-c", "8"],
    "agents worker": [
        "-Q",
        "agents",
        "-c",
        "1",
        "--prefetch-multiplier",
        str(2 * HEARTBEAT_BATCH),
    ],
}


def enqueue_after_commit(send: Callable[[], object]) -> None:
    """Run ``send``, a task enqueue, once the current transaction commits.

    Robust: a broker that is down must not turn an accepted request into an
    error after its rows are committed. The failure is logged and the work
    is not lost: its rows say what is due, and the periodic sweeps (the
    reaper for builds) enqueue it again."""
    transaction.on_commit(send, robust=True)


@signals.task_prerun.connect
def _drop_broken_connections(**kwargs):
    # With connections reused across tasks, one the database has dropped
    # (restart, idle timeout) must be replaced before the task touches it.
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        connection.close_if_unusable_or_obsolete()


@signals.task_success.connect
def _record_periodic_run(sender=None, **kwargs):
    # Beat stamps each message with its entry's name; `healthcheck` asks
    # when each of berth's entries last succeeded on a worker.
    name = getattr(sender.request, "periodic_task_name", None)
    if name in PERIODIC_TASKS:
        from config.services import periodic_run_record

        periodic_run_record(name=name)


def _connect_request_id_signals():
    from config import request_id

    signals.before_task_publish.connect(request_id.stamp_outgoing_task, weak=False)
    signals.task_prerun.connect(request_id.restore_for_task, weak=False)
    signals.task_postrun.connect(request_id.clear_after_task, weak=False)


_connect_request_id_signals()
