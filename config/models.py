import uuid

from django.db import models


class HealthProbe(models.Model):
    """One round trip API -> broker -> worker -> database, for `healthcheck`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    request_id = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"probe {self.id}"


class PeriodicRun(models.Model):
    """When one of beat's periodic tasks last succeeded on a worker, for
    `healthcheck`. Beat's own PeriodicTask.last_run_at says only when beat
    sent the task, not that a worker ran it, and beat writes it minutes late."""

    # The PeriodicTask's name (beat_schedule's key).
    name = models.CharField(max_length=200, unique=True)
    # When the running beat started: it fires a task within one interval
    # of its start (at once if overdue), so the wait counts from here too.
    scheduled_at = models.DateTimeField()
    succeeded_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name
