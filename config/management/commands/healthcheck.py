import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from config.celery import PERIODIC_TASKS, app
from config.models import HealthProbe
from config.selectors import PeriodicState, periodic_states
from config.tasks import answer_health_probe

# A periodic task without a success for this many of its intervals fails the
# check: one late run is load, three mean beat or its worker is missing.
MISSED_INTERVALS = 3


def last_ran(state: PeriodicState, now) -> str:
    if state.succeeded_at is None:
        return "never ran"
    return f"last ran {(now - state.succeeded_at).total_seconds():.1f} s ago"


def periodic_problem(state: PeriodicState, now) -> str:
    """Why the periodic task is unhealthy, or "" if it is not."""
    if not state.scheduled:
        return "not scheduled (beat installs it when it starts: is beat running?)"
    if not state.enabled:
        return "disabled (enable it in the admin's periodic tasks)"
    if state.waiting_since is None:
        return "not scheduled by beat since the upgrade (restart beat)"
    waited = (now - state.waiting_since).total_seconds()
    if waited <= MISSED_INTERVALS * state.every:
        return ""
    queue = app.amqp.router.route({}, PERIODIC_TASKS[state.name]["task"])["queue"].name
    return (
        f"has not run for {MISSED_INTERVALS} of its intervals of {state.every:g} s "
        f"({last_ran(state, now)}): is beat running, and a worker on queue {queue}?"
    )


class Command(BaseCommand):
    help = (
        "Check the database, the broker and a worker (enqueue a probe and wait until a "
        "worker has written its answer to the database), and that beat's periodic tasks "
        "are scheduled and run. Waits up to --timeout for all of it, then fails naming "
        "what is not."
    )

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=30.0)
        parser.add_argument(
            "--skip-periodic",
            action="store_true",
            help="Leave beat's periodic tasks out, as a probe of worker processes should: "
            "beat being down is no reason to restart them.",
        )

    def handle(self, *args, timeout, skip_periodic, **options):
        HealthProbe.objects.exists()
        self.stdout.write(f"database: ok ({connection.vendor})")
        with transaction.atomic():
            probe = HealthProbe.objects.create()
            transaction.on_commit(lambda: answer_health_probe.delay(str(probe.pk)))
        self.stdout.write("broker: ok (probe enqueued)")
        every = {} if skip_periodic else {n: float(s["every"]) for n, s in PERIODIC_TASKS.items()}
        # Until all is well or the time is up: a worker or beat just started
        # (as by the demo) gets the time to answer and to run its tasks.
        deadline = time.monotonic() + timeout
        while True:
            probe.refresh_from_db()
            now = timezone.now()
            periodic = [(s, periodic_problem(s, now)) for s in periodic_states(every=every)]
            if (probe.answered_at and not any(p for _, p in periodic)) or (
                time.monotonic() >= deadline
            ):
                break
            time.sleep(0.2)
        failures = []
        if probe.answered_at:
            took = (probe.answered_at - probe.created_at).total_seconds()
            self.stdout.write(f"worker: ok ({probe.worker}, {took * 1000:.0f} ms)")
        else:
            failures.append(f"worker: no answer within {timeout:g} s (is a worker running?)")
        for state, problem in periodic:
            task = PERIODIC_TASKS[state.name]["task"]
            if problem:
                failures.append(f"periodic task {state.name!r} ({task}): {problem}")
                continue
            self.stdout.write(
                f"periodic: {state.name}: ok ({last_ran(state, now)}, every {state.every:g} s)"
            )
        if failures:
            raise CommandError("\n".join(failures))
