import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from config.models import HealthProbe
from config.tasks import answer_health_probe


class Command(BaseCommand):
    help = (
        "Check the database, the broker and a worker: enqueue a probe and wait until a "
        "worker has written its answer to the database."
    )

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=30.0)

    def handle(self, *args, timeout, **options):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        self.stdout.write(f"database: ok ({connection.vendor})")
        with transaction.atomic():
            probe = HealthProbe.objects.create()
            transaction.on_commit(lambda: answer_health_probe.delay(str(probe.pk)))
        self.stdout.write("broker: ok (probe enqueued)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe.refresh_from_db()
            if probe.answered_at:
                took = (probe.answered_at - probe.created_at).total_seconds()
                self.stdout.write(f"worker: ok ({probe.worker}, {took * 1000:.0f} ms)")
                return
            time.sleep(0.2)
        raise CommandError(f"worker: no answer within {timeout:.0f}s (is a worker running?)")
