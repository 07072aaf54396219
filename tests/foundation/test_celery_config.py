"""The Celery app is configured for at-least-once delivery of idempotent tasks."""

from django.conf import settings
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from config.celery import PERIODIC_TASKS, app


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
    assert {q.name for q in app.conf.task_queues} == {"default", "build", "events", "notify"}
    router = app.amqp.router
    assert router.route({}, "compute.pipeline.schedule")["queue"].name == "build"
    assert router.route({}, "reservations.events.sweep")["queue"].name == "events"
    assert router.route({}, "identity.purge_expired_tokens")["queue"].name == "default"


def test_worker_reuses_database_connections():
    from celery.fixups.django import DjangoWorkerFixup

    assert DjangoWorkerFixup(app).db_reuse_max == settings.BERTH_CELERY_DB_REUSE_MAX > 0


def test_beat_uses_the_database_scheduler():
    assert app.conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"


def test_install_periodic_tasks_is_idempotent_and_removes_stale(db):
    every_minute = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="berth: retired job", task="gone", interval=every_minute)
    PeriodicTask.objects.create(name="someone else's job", task="theirs", interval=every_minute)
    call_command("install_periodic_tasks")
    call_command("install_periodic_tasks")
    installed = PeriodicTask.objects.filter(name__startswith="berth: ")
    assert sorted(installed.values_list("name", flat=True)) == sorted(PERIODIC_TASKS)
    for task in installed:
        assert task.task == PERIODIC_TASKS[task.name]["task"]
        assert task.interval.every == PERIODIC_TASKS[task.name]["every"]
        assert task.enabled
    assert PeriodicTask.objects.filter(name="someone else's job").exists()
