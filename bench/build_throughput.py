"""1,000 builds through a real worker, against the floor: builds/s and time-to-ACTIVE.

A Celery worker (prefork, concurrency 2, serving the host queues) on Redis
and PostgreSQL builds servers with the fake driver (no delay): each build is
the pipeline's two hops (compute.pipeline.PIPELINE), the conductor's three
database steps then spawn on the host's queue, one NIC on a routed network
of two segments, 50 hosts (room for 3,200 servers). The floor, in the same
run and on the same worker, is a chain of four tasks that each do one ORM
update (floor_step, below; the worker imports this module with --include).
Both store their rows before the clock starts and then enqueue everything
at once; latencies count from that moment. The servers are requested 50
per request (as `--min-count`; the conductor takes a request's builds as
one batch), then as many again one per request (a conductor takes the
builds that wait along, up to 50). A last phase builds one
server at a time, each enqueued when the one before is ACTIVE: the time to
ACTIVE of a build that waits behind no other, and p50 of its parts (before
and in each step, from the steps' events). Goal: builds/s at least the
floor's chains/s.

The broker's Redis database is flushed before and after the run: give the
benchmark one of its own (the default is database 13).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/berth_bench \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/13 \\
        .venv/bin/python bench/build_throughput.py [--builds 1000]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchdb
from celery import chain, shared_task

PROJECT = "bench-build-throughput"
HOST_PREFIX = "bench-build-"
HOSTS = 50
PHYSNETS = ["bench-build-physnet0", "bench-build-physnet1"]
# Loopback space, so no real address appears even in the database; a /20
# per segment holds every build's port.
CIDRS = ["127.16.0.0/20", "127.32.0.0/20"]
FLAVOR = "bench-build"
DEFAULT_BROKER = "redis://127.0.0.1:6379/13"
BATCH = 50
WARMUP = 10
GOAL = 1.0
# The hosts report more often than BERTH_HOST_DOWN_AFTER (75 s), or the
# scheduler would see them die during a long run.
HEARTBEAT_EVERY = 20

# Children before parents, as benchdb.CLEANUP, which follows for the
# project's networks and ports; hosts, the flavor and the floor's rows are
# not a project's, so by name.
INSTANCE_CLEANUP = [
    "DELETE FROM compute_instanceactionevent WHERE action_id IN "
    "(SELECT id FROM compute_instanceaction WHERE project_id = %(p)s)",
    "DELETE FROM compute_instanceaction WHERE project_id = %(p)s",
    "DELETE FROM compute_instancenic WHERE instance_id IN "
    "(SELECT id FROM compute_instance WHERE project_id = %(p)s)",
    "DELETE FROM compute_instance WHERE project_id = %(p)s",
]
GLOBAL_CLEANUP = [
    *benchdb.HOST_CLEANUP,
    "DELETE FROM compute_flavor WHERE id = %(f)s",
]


@shared_task(name="bench.floor_step")
def floor_step(probe_id: str, step: int) -> None:
    """One step of the floor: one ORM update, by id."""
    from django.utils import timezone

    from config.models import HealthProbe

    HealthProbe.objects.filter(pk=probe_id).update(
        worker=f"floor step {step}", answered_at=timezone.now()
    )


def cleanup() -> None:
    """Delete every row this benchmark makes, also those an interrupted run left."""
    from django.db import connection, transaction

    from config.models import HealthProbe
    from identity.models import Project

    with transaction.atomic(), connection.cursor() as cursor:
        for project_id in Project.objects.filter(name=PROJECT).values_list("pk", flat=True):
            for statement in INSTANCE_CLEANUP + benchdb.CLEANUP:
                cursor.execute(statement, {"p": project_id})
        for statement in GLOBAL_CLEANUP:
            cursor.execute(statement, {"h": HOST_PREFIX + "%", "f": FLAVOR})
        # The floor's probes: a model nothing references, so the ORM deletes
        # them in one statement.
        HealthProbe.objects.filter(request_id=PROJECT).delete()


def broker_url() -> str:
    url = os.environ.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER)
    if not url.startswith("redis://"):
        sys.exit(f"CELERY_BROKER_URL must name a Redis database, not {url!r}")
    return url


def broker_flush() -> None:
    # Messages an interrupted run left would run against deleted rows.
    import redis

    redis.Redis.from_url(broker_url()).flushdb()


def setup(hosts: int = HOSTS):
    """The project (no quota in the way), flavor, routed network and
    ``hosts`` hosts, through the services; returns the request context,
    flavor and network."""
    from compute import services as compute
    from identity.auth import RequestContext
    from identity.models import Project, Role
    from identity.quotas import quota_set
    from networking import services as networking
    from networking.services import HostNetworkReport

    project = Project.objects.create(name=PROJECT)
    for resource in ("instances", "cores", "ram", "port"):
        quota_set(project=project, resource=resource, limit=-1)
    context = RequestContext(user_id="bench", project=project, role=Role.ADMIN)
    flavor = compute.flavor_create(id=FLAVOR, name=FLAVOR, vcpus=1, ram=512, disk=1)
    network = networking.network_create(
        context=context,
        project=project,
        name=PROJECT,
        segments=[
            {"network_type": "vlan", "physical_network": p, "segmentation_id": 101 + i}
            for i, p in enumerate(PHYSNETS)
        ],
    )
    for segment, cidr in zip(network.segments.order_by("segmentation_id"), CIDRS, strict=True):
        networking.subnet_create(project=project, network=network, segment=segment, cidr=cidr)
    for n in range(hosts):
        name = f"{HOST_PREFIX}{n:03d}"
        physnet = PHYSNETS[n % len(PHYSNETS)]
        compute.host_report(
            report=compute.HostReport(
                name=name,
                vcpus=16,
                memory_mb=65536,
                disk_gb=400,
                network=HostNetworkReport(host=name, physnets={physnet: {"bridge": "br-ex"}}),
            )
        )
    return context, flavor, network


def server_request(context, flavor, network, name: str):
    """One server on the world's network, requested through the service
    (committed, and its build sent, at the end of the caller's transaction
    if it is in one); returns its instance."""
    from compute import services as compute

    [instance] = compute.server_create(
        context=context, name=name, flavor=flavor, nics=[compute.NicRequest(network=network)]
    )
    return instance


def heartbeat() -> None:
    # Stands in for the hosts' periodic reports: only the heartbeat matters here.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE compute_host SET last_heartbeat = now() WHERE name LIKE %s", [HOST_PREFIX + "%"]
        )


def worker_start(log) -> subprocess.Popen:
    """The worker as operations run it, plus this module for floor_step."""
    return benchdb.worker_start(
        log, include="build_throughput", path=str(Path(__file__).resolve().parent)
    )


def wait_until(done, count: int, deadline: float, what: str) -> None:
    beat = 0.0
    with benchdb.progress(what, count) as advance:
        while (finished := done()) < count:
            advance(finished)
            if time.monotonic() > deadline:
                sys.exit(f"time limit reached: {finished} of {count} {what} finished")
            if time.monotonic() - beat > HEARTBEAT_EVERY:
                heartbeat()
                beat = time.monotonic()
            time.sleep(0.2)


def floor_run(chains: int, deadline: float) -> tuple[float, list[float]]:
    """Chains/s from first enqueue to last step, and each chain's time
    from enqueue to its last step (s)."""
    from django.utils import timezone

    from config.models import HealthProbe

    probes = HealthProbe.objects.bulk_create(HealthProbe(request_id=PROJECT) for _ in range(chains))
    ids = [p.pk for p in probes]
    start = timezone.now()
    for probe in probes:
        chain(*(floor_step.si(str(probe.pk), step) for step in range(1, 5))).apply_async()
    done = HealthProbe.objects.filter(pk__in=ids, worker="floor step 4")
    wait_until(done.count, chains, deadline, "floor chains")
    answered = list(done.values_list("answered_at", flat=True))
    return chains / (max(answered) - start).total_seconds(), [
        (a - start).total_seconds() for a in answered
    ]


def builds_run(context, flavor, network, builds: int, deadline: float, per_request: int = BATCH):
    """Builds/s from first enqueue to last ACTIVE, and each build's time
    from enqueue to ACTIVE (s); exits if a build failed.

    As the floor's rows, the servers are stored before the clock starts:
    requests for ``per_request`` servers each (as `--min-count`), all in
    one transaction, whose commit enqueues every build. Storing them while
    the worker builds would charge the API's work to the pipeline, on the
    same CPUs."""
    from django.db import transaction
    from django.utils import timezone

    from compute import services as compute
    from compute.models import Instance, InstanceStatus

    prefix = f"bench-{per_request}-per-request-"
    with transaction.atomic():
        for first in range(0, builds, per_request):
            count = min(per_request, builds - first)
            compute.server_create(
                context=context,
                name=f"{prefix}{first}",
                flavor=flavor,
                nics=[compute.NicRequest(network=network)],
                min_count=count,
                max_count=count,
            )
        start = timezone.now()
    mine = Instance.objects.filter(project=context.project, name__startswith=prefix)
    wait_until(mine.exclude(status=InstanceStatus.BUILD).count, builds, deadline, "builds")
    failed = mine.exclude(status=InstanceStatus.ACTIVE)
    if failed.exists():
        faults = {str(f) for f in failed.values_list("fault", flat=True)}
        sys.exit(f"{failed.count()} builds failed: {'; '.join(sorted(faults)[:5])}")
    launched = list(mine.values_list("launched_at", flat=True))
    rate = builds / (max(launched) - start).total_seconds()
    return rate, [(a - start).total_seconds() for a in launched], start


def one_at_a_time(
    context, flavor, network, builds: int, deadline: float
) -> tuple[list[float], dict[str, list[float]]]:
    """Each build's time from the commit of its request to ACTIVE (s, from
    its launched_at, which the worker stamps as it records ACTIVE), enqueued
    when the one before is ACTIVE; and the parts of that time (alone_parts).
    Waiting for it polls every 10 ms, which the figure does not include (so
    a busy poller does not slow the worker it measures)."""
    from django.db import transaction
    from django.utils import timezone

    from compute.models import Instance, InstanceStatus

    took = []
    parts: dict[str, list[float]] = {}
    committed: list = []  # each request's commit time
    for n in range(builds):
        with transaction.atomic():
            # Registered first, so it runs before the request's own enqueue.
            transaction.on_commit(lambda: committed.append(timezone.now()))
            instance = server_request(context, flavor, network, f"bench-alone-{n}")
        mine = Instance.objects.filter(pk=instance.pk)
        while not mine.exclude(status=InstanceStatus.BUILD).exists():
            if time.monotonic() > deadline:
                sys.exit(f"time limit reached: build {n} of {builds} alone")
            time.sleep(0.01)
        instance = mine.get()
        if instance.status != InstanceStatus.ACTIVE:
            sys.exit(f"build alone failed: {instance.fault}")
        took.append((instance.launched_at - committed[-1]).total_seconds())
        for part, seconds in alone_parts(instance, committed[-1]):
            parts.setdefault(part, []).append(seconds)
    return took, parts


def alone_parts(instance, committed) -> list[tuple[str, float]]:
    """Where a build's time from ``committed`` to ACTIVE went (s), from its
    steps' events: before each step (messages, reads and the step before's
    commit), each step, and after the last (its result recorded; negative
    when the spawn's event ends after ACTIVE is stamped, in the same
    transaction)."""
    from compute.models import InstanceActionEvent
    from compute.pipeline import PIPELINE

    events = {
        event.event: event
        for event in InstanceActionEvent.objects.filter(action__instance_id=instance.pk)
    }
    parts, before = [], committed
    for step in PIPELINE:
        event = events[step.event]
        name = step.event.removeprefix("compute_")
        parts.append((f"to {name}", (event.start_time - before).total_seconds()))
        parts.append((name, (event.finish_time - event.start_time).total_seconds()))
        before = event.finish_time
    parts.append(("to ACTIVE", (instance.launched_at - before).total_seconds()))
    return parts


def step_times(context, start) -> tuple[dict, float]:
    """Mean ms each step's event lasted, and mean ms a build spent outside
    them (from ``start``, its enqueue, to its last step's end, minus the steps)."""
    from compute.models import InstanceActionEvent
    from compute.pipeline import PIPELINE

    events = InstanceActionEvent.objects.filter(action__project_id=context.project.pk)
    durations: dict[str, list[float]] = {step.event: [] for step in PIPELINE}
    busy: dict = {}
    last: dict = {}
    for instance_id, event, started, finished in events.values_list(
        "action__instance_id", "event", "start_time", "finish_time"
    ):
        took = (finished - started).total_seconds()
        durations[event].append(took)
        busy[instance_id] = busy.get(instance_id, 0) + took
        last[instance_id] = max(last.get(instance_id, finished), finished)
    waiting = [(last[i] - start).total_seconds() - busy[i] for i in last]
    means = {step: statistics.mean(values) * 1000 for step, values in durations.items()}
    return means, statistics.mean(waiting) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=1000, help="and floor chains (default: 1000)")
    parser.add_argument(
        "--alone", type=int, default=100, help="builds one at a time (default: 100)"
    )
    parser.add_argument(
        "--time-limit", type=float, default=300, help="seconds for all phases (default: 300)"
    )
    args = parser.parse_args()
    if args.builds < 2:
        parser.error("--builds must be at least 2")

    broker_url()
    benchdb.database_prepare()
    from django.conf import settings
    from django.db import connection

    cleanup()
    broker_flush()
    with tempfile.TemporaryFile() as log:
        proc = worker_start(log)
        try:
            context, flavor, network = setup()
            # Another benchmark may just have filled and emptied these
            # tables, and the planner keeps a prepared statement's plan.
            benchdb.vacuum_analyze()
            benchdb.worker_wait_ready(proc)
            deadline = time.monotonic() + args.time_limit
            # The pool processes connect and warm up on these, not on the floor.
            floor_run(WARMUP, deadline)
            floor_rate, floor_latencies = floor_run(args.builds, deadline)
            build_rate, build_latencies, start = builds_run(
                context, flavor, network, args.builds, deadline
            )
            steps, waiting = step_times(context, start)
            single_rate, single_latencies, _ = builds_run(
                context, flavor, network, args.builds, deadline, per_request=1
            )
            alone, alone_split = one_at_a_time(context, flavor, network, args.alone, deadline)
        except BaseException:
            # With -l warning, what the worker said is what went wrong.
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-5000:])
            raise
        finally:
            benchdb.worker_stop(proc)
            broker_flush()
            cleanup()

    print(
        f"Builds through a real worker (prefork, concurrency 2), fake driver, {HOSTS} hosts; "
        f"Redis, PostgreSQL {connection.pg_version // 10000}, {os.cpu_count()} CPUs; "
        f"CELERY_DB_REUSE_MAX={settings.BERTH_CELERY_DB_REUSE_MAX}"
    )
    print(f"{'':30} {'count':>6} {'per s':>7} {'p50 ms':>8} {'p95 ms':>8}")
    for label, rate, latencies in (
        ("floor: 4 tasks, 1 update each", floor_rate, floor_latencies),
        (f"builds, {BATCH} per request", build_rate, build_latencies),
        ("builds, 1 per request", single_rate, single_latencies),
        ("one build at a time", len(alone) / sum(alone), alone),
    ):
        print(
            f"{label:30} {len(latencies):>6} {rate:>7.1f} "
            f"{benchdb.percentile(latencies, 50) * 1000:>8.0f} "
            f"{benchdb.percentile(latencies, 95) * 1000:>8.0f}"
        )
    ratio = build_rate / floor_rate
    verdict = "MET" if ratio >= GOAL else "NOT MET"
    print(f"ratio builds/floor, {BATCH} per request: {ratio:.2f} (goal >= {GOAL}): {verdict}")
    print(f"ratio builds/floor, 1 per request: {single_rate / floor_rate:.2f}")
    print(
        "mean ms per build step (InstanceActionEvent): "
        + ", ".join(f"{step.removeprefix('compute_')} {ms:.1f}" for step, ms in steps.items())
        + f"; outside the steps (queue, task overhead): {waiting:.0f}"
    )
    print(
        "one build at a time, p50 ms of each part: "
        + ", ".join(
            f"{part} {benchdb.percentile(seconds, 50) * 1000:.1f}"
            for part, seconds in alone_split.items()
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
