"""Time to ACTIVE of the demo's builds on the embedded default (SQLite and
kombu's filesystem broker), through a real worker and beat as the demo
starts them.

What a newcomer sees first: `manage.py demo` boots three servers at once on
the demo cloud (whose roomiest host fails every spawn, so some builds
reschedule). This script does the same in rounds: each round asks for three
servers, as the demo does, and waits until all three have left BUILD. A
server's time to ACTIVE runs from its request (``created_at``) to its
``launched_at``. Beat's sweeps share the worker with the builds, as in the
demo; at the end the script counts the sweeps still waiting in their queue.

It needs nothing installed and touches no database of yours: the SQLite
file and the broker's folders live in a temporary BERTH_DATA_DIR, removed at
the end. DATABASE_URL and CELERY_BROKER_URL are ignored.

    .venv/bin/python bench/embedded_builds.py [--rounds 10]
"""

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchdb

ROUND = 3
GOAL_P50 = 1.0


def django_setup(data_dir: str) -> None:
    """Django on the embedded default in ``data_dir``; the worker started
    later inherits the same environment."""
    for name in ("DATABASE_URL", "CELERY_BROKER_URL"):
        os.environ.pop(name, None)
    os.environ["BERTH_DATA_DIR"] = data_dir
    sys.path.insert(0, str(benchdb.ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def rounds_run(rounds: int, deadline: float) -> list:
    """Boot ROUND servers per round on the demo cloud and wait for them;
    returns every instance, refreshed."""
    from compute import services as compute
    from compute.models import Flavor, Instance, InstanceStatus
    from console import demo

    network = demo.cloud_ensure()
    context = demo.demo_context()
    flavor = Flavor.objects.get(pk="m1.small")
    ids = []
    with benchdb.progress("builds", rounds * ROUND) as advance:
        for n in range(rounds):
            booted = compute.server_create(
                context=context,
                name=f"bench-{n}",
                flavor=flavor,
                nics=[compute.NicRequest(network=network)],
                min_count=ROUND,
                max_count=ROUND,
            )
            ids += [i.pk for i in booted]
            building = Instance.objects.filter(pk__in=ids, status=InstanceStatus.BUILD)
            while building.exists():
                if time.monotonic() > deadline:
                    sys.exit(f"time limit reached in round {n + 1} of {rounds}")
                advance(len(ids) - building.count())
                time.sleep(0.05)
            # The demo's hosts must not look dead during a long run.
            demo.hosts_report()
    return list(Instance.objects.filter(pk__in=ids))


def sweeps_waiting() -> int:
    """Messages waiting in the events queue, where beat sends its sweeps."""
    from config.celery import app

    with app.connection_for_write() as connection:
        return connection.default_channel.queue_declare("events").message_count


def beat_start(log) -> "subprocess.Popen":
    """Beat, as the demo starts it: its sweeps share the worker with the builds."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "beat", "-l", "warning"],
        cwd=benchdb.ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=10, help=f"of {ROUND} servers each (default: 10)"
    )
    parser.add_argument("--time-limit", type=float, default=600, help="seconds (default: 600)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    with tempfile.TemporaryDirectory(prefix="berth-bench-") as data_dir:
        django_setup(data_dir)
        from django.conf import settings
        from django.core.management import call_command

        log_path = Path(data_dir) / "processes.log"
        with open(log_path, "wb") as log:
            worker, beat = benchdb.worker_start(log), beat_start(log)
        try:
            # The round trip also warms the pool processes up.
            call_command("healthcheck", "--timeout", "60", stdout=io.StringIO())
            instances = rounds_run(args.rounds, time.monotonic() + args.time_limit)
            waiting = sweeps_waiting()
        except BaseException:
            sys.stderr.write(log_path.read_text(errors="replace")[-5000:])
            raise
        finally:
            benchdb.worker_stop(beat)
            benchdb.worker_stop(worker)

    active = [i for i in instances if i.status == "ACTIVE"]
    latencies = [(i.launched_at - i.created_at).total_seconds() for i in active]
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    print(
        f"Demo builds on the embedded default (SQLite, filesystem broker, polling every "
        f"{options['polling_interval'] * 1000:.0f} ms), one worker (prefork, concurrency 2), "
        f"{os.cpu_count()} CPUs; {args.rounds} rounds of {ROUND} servers"
    )
    print(f"{'':22} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    if latencies:
        print(
            f"{'time to ACTIVE':22} {len(latencies):>6} "
            f"{benchdb.percentile(latencies, 50) * 1000:>8.0f} "
            f"{benchdb.percentile(latencies, 95) * 1000:>8.0f} {max(latencies) * 1000:>8.0f}"
        )
    rescheduled = sum(1 for i in active if i.attempt > 1)
    print(f"ACTIVE {len(active)} of {len(instances)}, of which rescheduled {rescheduled}")
    print(f"sweep messages waiting in the events queue at the end: {waiting}")
    if len(latencies) < 2:
        return 1
    p50 = benchdb.percentile(latencies, 50)
    verdict = "MET" if p50 < GOAL_P50 else "NOT MET"
    print(f"p50 time to ACTIVE {p50:.2f} s (goal < {GOAL_P50:.0f} s): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
