from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from config.celery import PERIODIC_TASKS


class Command(BaseCommand):
    help = "Install or update berth's periodic tasks for beat, by name. Safe to run again."

    @transaction.atomic
    def handle(self, *args, **options):
        for name, spec in PERIODIC_TASKS.items():
            schedule, _ = IntervalSchedule.objects.get_or_create(
                every=spec["every"], period=IntervalSchedule.SECONDS
            )
            _, created = PeriodicTask.objects.update_or_create(
                name=name,
                defaults={"task": spec["task"], "interval": schedule, "enabled": True},
            )
            self.stdout.write(
                f"{'installed' if created else 'updated'}: {name} every {spec['every']}s"
            )
        # Entries berth once installed but no longer has would fire tasks
        # that do not exist any more.
        stale = PeriodicTask.objects.filter(name__startswith="berth: ").exclude(
            name__in=PERIODIC_TASKS
        )
        for task in stale:
            self.stdout.write(f"removed: {task.name}")
        stale.delete()
