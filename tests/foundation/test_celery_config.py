"""The Celery app is configured for at-least-once delivery of idempotent tasks."""

import os
import socket
import subprocess
import sys
import threading
import time
from queue import Empty

import pytest
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler
from kombu import Connection, Exchange, Queue
from kombu.utils.imports import symbol_by_name

from config.beat import Scheduler
from config.celery import PERIODIC_TASKS, app
from config.models import PeriodicRun
from tests.conftest import ROOT


def test_json_only_acks_late_prefetch_one():
    conf = app.conf
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result is True


def test_time_limits_below_the_visibility_timeout():
    conf = app.conf
    assert conf.task_soft_time_limit < conf.task_time_limit
    # On Redis an unacked task is redelivered after the visibility timeout;
    # a task still running then would run twice.
    visibility = conf.broker_transport_options.get("visibility_timeout", 3600)
    assert conf.task_time_limit < visibility


def test_named_queues_and_routes():
    assert {q.name for q in app.conf.task_queues} == {
        "default",
        "build",
        "events",
        "notify",
        "agents",
    }
    router = app.amqp.router
    assert router.route({}, "compute.pipeline.schedule")["queue"].name == "build"
    assert router.route({}, "reservations.events.sweep")["queue"].name == "events"
    assert router.route({}, "identity.purge_expired_tokens")["queue"].name == "default"
    assert router.route({}, "compute.heartbeat")["queue"].name == "agents"
    assert router.route({}, "compute.spawn_done")["queue"].name == "build"


def test_worker_reuses_database_connections():
    from celery.fixups.django import DjangoWorkerFixup

    assert DjangoWorkerFixup(app).db_reuse_max == settings.BERTH_CELERY_DB_REUSE_MAX > 0


def test_beat_uses_the_database_scheduler():
    assert issubclass(symbol_by_name(app.conf.beat_scheduler), DatabaseScheduler)


def test_beat_start_installs_the_schedule_and_removes_berth_entries_it_no_longer_has(
    transactional_db,
):
    # transactional: the scheduler closes connections found in a transaction.
    every_minute = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="berth: retired job", task="gone", interval=every_minute)
    PeriodicTask.objects.create(name="someone else's job", task="theirs", interval=every_minute)
    PeriodicRun.objects.create(name="berth: retired job", scheduled_at=timezone.now())
    Scheduler(app=app)
    # An entry the operator disabled stays disabled when beat starts again.
    PeriodicTask.objects.filter(name="berth: heal leases").update(enabled=False)
    scheduler = Scheduler(app=app)
    installed = PeriodicTask.objects.filter(name__startswith="berth: ")
    assert sorted(installed.values_list("name", flat=True)) == sorted(PERIODIC_TASKS)
    for task in installed:
        spec = PERIODIC_TASKS[task.name]
        assert (task.task, task.interval.every) == (spec["task"], spec["every"])
        assert task.enabled == (task.name != "berth: heal leases")
        # Each message expires when the next is sent (seconds from sending).
        assert task.expire_seconds == spec["every"]
    assert scheduler.schedule["berth: fire due lease events"].options["expires"] == 1
    assert PeriodicTask.objects.filter(name="someone else's job").exists()
    assert sorted(PeriodicRun.objects.values_list("name", flat=True)) == sorted(PERIODIC_TASKS)


def test_embedded_default_broker_is_the_filesystem_transport_that_drains_briefly(tmp_path):
    """With nothing set, the worker's broker connection is config.broker's
    transport (and so are beat's and the API's)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(BERTH_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings")
    script = (
        "import django; django.setup(); from config.celery import app; "
        "t = app.connection_for_read().transport; "
        "print(type(t).__module__, type(t).__name__, t.polling_interval)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert shown.stdout.split() == ["config.broker", "Transport", "0.05"], shown.stderr


def test_filesystem_drain_with_a_full_window_returns_after_one_polling_interval(tmp_path):
    """Celery's worker loop on this transport drains with a 2 s timeout and
    acknowledges finished tasks only between drains: with the prefetch
    window full of unacknowledged messages, kombu's own drain sleeps the 2 s
    out. This one returns after a polling interval, so the ack and the next
    message follow at once."""
    options = {
        "data_folder_in": str(tmp_path),
        "data_folder_out": str(tmp_path),
        "control_folder": str(tmp_path / "control"),
        "store_processed": False,
        "polling_interval": 0.05,
    }
    queue = Queue("steps", Exchange("steps"), "steps")
    received = []
    with Connection(
        "filesystem://localhost//", transport="config.broker:Transport", transport_options=options
    ) as connection:
        producer = connection.Producer()
        for step in (1, 2):
            producer.publish(
                {"step": step}, exchange=queue.exchange, routing_key="steps", declare=[queue]
            )
        consumer = connection.Consumer(
            queue, callbacks=[lambda body, message: received.append(message)], prefetch_count=1
        )
        with consumer:
            connection.drain_events(timeout=2.0)
            assert len(received) == 1  # the window is full
            started = time.monotonic()
            with pytest.raises(socket.timeout):
                connection.drain_events(timeout=2.0)
            # kombu's transport returns only when the 2 s are up.
            assert time.monotonic() - started < 1.0
            received[0].ack()
            connection.drain_events(timeout=2.0)
            assert sorted(m.payload["step"] for m in received) == [1, 2]


def test_filesystem_messages_are_read_whole_while_being_written(tmp_path):
    """A reader polling the folder while large messages are written never
    takes one half-written (kombu's own transport fails this: 8 of 20 were
    read empty, and in a worker that error ends its consumer)."""
    transport = "config.broker:Transport"
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path)}
    body = {"padding": "x" * 4_000_000}
    count, read, errors = 20, [], []

    def reader():
        with Connection("filesystem://", transport=transport, transport_options=options) as c:
            channel = c.default_channel
            deadline = time.monotonic() + 60
            while len(read) < count and time.monotonic() < deadline:
                try:
                    read.append(channel._get("q"))
                except Empty:
                    continue
                except ValueError as error:  # a message read before it was whole
                    errors.append(error)

    thread = threading.Thread(target=reader)
    thread.start()
    with Connection("filesystem://", transport=transport, transport_options=options) as c:
        for _ in range(count):
            c.default_channel._put("q", body)
    thread.join()
    assert errors == []
    assert len(read) == count and all(message == body for message in read)


BIND_ALL = """
import sys, time
from kombu import Connection, Exchange, Queue
folder, name, start, exchanges = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
options = {"data_folder_in": folder, "data_folder_out": folder}
options["control_folder"] = folder + "/control"
transport = "config.broker:Transport"
with Connection("filesystem://", transport=transport, transport_options=options) as connection:
    channel = connection.default_channel
    while time.time() < start:
        pass
    for n in range(exchanges):
        Queue(name, Exchange(f"ex{n}"), routing_key=name).declare(channel=channel)
"""


def test_filesystem_exchanges_declared_by_processes_at_once_keep_every_queue(tmp_path):
    """Processes starting together (the demo's agents and workers) bind
    their queues to the same new exchanges: none fails, and each exchange
    routes to every queue (kombu's own transport read a table another
    process was creating as empty, and the JSON error ended that worker)."""
    processes, exchanges = 6, 30
    start = time.time() + 2  # once every interpreter is up
    binders = [
        subprocess.Popen(
            [sys.executable, "-c", BIND_ALL, str(tmp_path), f"q{p}", str(start), str(exchanges)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(processes)
    ]
    errors = [binder.communicate(timeout=60)[1] for binder in binders]
    assert [binder.returncode for binder in binders] == [0] * processes, errors
    options = {"control_folder": str(tmp_path / "control"), "data_folder_in": str(tmp_path)}
    with Connection(
        "filesystem://", transport="config.broker:Transport", transport_options=options
    ) as connection:
        tables = [connection.default_channel.get_table(f"ex{n}") for n in range(exchanges)]
    assert all(
        sorted(b.queue for b in table) == [f"q{p}" for p in range(processes)] for table in tables
    )
    assert not list((tmp_path / "control").glob("*.part"))
