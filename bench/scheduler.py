"""Scheduling decision at 1,000 and 10,000 hosts: p50/p95, goal p95 < 50 ms.

Every host is wired to one of 20 physical networks (a rack). Two routed
networks each have a VLAN segment and a /24 subnet on every physical
network; the instance has a NIC on each, with the deferred ports that
prepare_ports leaves. A decision is what compute.pipeline.schedule does
between locking the instance and recording the event: the NICs' needs, the
constraints, select_hosts and the claim, in one transaction. The claim is
released afterwards, outside the timing, so every decision sees the same
capacity.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/berth_bench \\
        .venv/bin/python bench/scheduler.py [--sizes 1000,10000] [--decisions 200]
"""

import argparse
import os
import random
import sys
import time

import benchdb

PROJECT = "bench-scheduler"
HOST_PREFIX = "bench-sched-"
PHYSNETS = [f"bench-sched-physnet{i}" for i in range(20)]
NETWORKS = 2
GOAL_MS = 50
WARMUP = 5
# Hosts heartbeat more often than BERTH_HOST_DOWN_AFTER (75 s), or the
# scheduler would see them die during a long run.
HEARTBEAT_EVERY = 10

# Children before parents, as benchdb.CLEANUP, which follows for the
# project's networks and ports; hosts are not a project's, so by name.
INSTANCE_CLEANUP = [
    "DELETE FROM compute_instancenic WHERE instance_id IN "
    "(SELECT id FROM compute_instance WHERE project_id = %(p)s)",
    "DELETE FROM compute_instance WHERE project_id = %(p)s",
]


def cleanup() -> None:
    """Delete every row this benchmark makes, also those an interrupted run left."""
    from django.db import connection, transaction

    from identity.models import Project

    with transaction.atomic(), connection.cursor() as cursor:
        for project_id in Project.objects.filter(name=PROJECT).values_list("pk", flat=True):
            for statement in INSTANCE_CLEANUP + benchdb.CLEANUP:
                cursor.execute(statement, {"p": project_id})
        for statement in benchdb.HOST_CLEANUP:
            cursor.execute(statement, {"h": HOST_PREFIX + "%"})


def networks_create(context) -> list:
    """Two routed networks, each with one VLAN segment and subnet per physnet."""
    from networking import services

    networks = []
    for k in range(1, NETWORKS + 1):
        network = services.network_create(
            context=context,
            project=context.project,
            name=f"{PROJECT}-{k}",
            segments=[
                {"network_type": "vlan", "physical_network": p, "segmentation_id": 100 * k + i}
                for i, p in enumerate(PHYSNETS)
            ],
        )
        for i, segment in enumerate(network.segments.order_by("segmentation_id")):
            # Loopback space, so no real address appears even in the database.
            services.subnet_create(
                project=context.project, network=network, segment=segment, cidr=f"127.{k}.{i}.0/24"
            )
        networks.append(network)
    return networks


def hosts_add(start: int, stop: int) -> None:
    """Hosts start..stop-1 and their agents, as their reports would leave
    them, in bulk: reporting 10,000 hosts one by one takes minutes."""
    from django.db import transaction
    from django.utils import timezone

    from compute.models import Host
    from networking.models import HostAgent, HostPhysnet, HostVnicType

    now, rng = timezone.now(), random.Random(start)
    names = [f"{HOST_PREFIX}{n:05d}" for n in range(start, stop)]
    with transaction.atomic():
        # Hosts of different sizes, so weighing has something to sort.
        Host.objects.bulk_create(
            (
                Host(
                    name=name,
                    vcpus=64,
                    memory_mb=rng.choice([131072, 262144, 524288]),
                    disk_gb=4000,
                    last_heartbeat=now,
                )
                for name in names
            ),
            batch_size=1000,
        )
        agents = HostAgent.objects.bulk_create(
            (HostAgent(host=name, heartbeat_at=now, tunnel_types=[]) for name in names),
            batch_size=1000,
        )
        HostPhysnet.objects.bulk_create(
            (
                HostPhysnet(agent=a, physical_network=PHYSNETS[n % len(PHYSNETS)], bridge="br-ex")
                for n, a in enumerate(agents, start)
            ),
            batch_size=1000,
        )
        HostVnicType.objects.bulk_create(
            (HostVnicType(agent=a, vnic_type="normal") for a in agents), batch_size=1000
        )


def heartbeat() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE compute_host SET last_heartbeat = now() WHERE name LIKE %s", [HOST_PREFIX + "%"]
        )


def analyze() -> None:
    # Statistics as autovacuum would have them on a fleet this size; right
    # after a bulk insert the planner would still plan for an empty table.
    from django.db import connection

    with connection.cursor() as cursor:
        for table in (
            "compute_host",
            "networking_hostagent",
            "networking_hostphysnet",
            "networking_hostvnictype",
            "reservations_reservablehost",
        ):
            cursor.execute(f"ANALYZE {table}")


def instance_create(context, networks):
    """An instance as prepare_ports leaves it: a deferred port per NIC."""
    from compute.models import Instance, InstanceNic, TaskState
    from compute.pipeline import DEVICE_OWNER
    from networking import services

    instance = Instance.objects.create(
        project=context.project,
        name=PROJECT,
        vcpus=2,
        memory_mb=4096,
        disk_gb=40,
        task_state=TaskState.SCHEDULING,
    )
    for index, network in enumerate(networks):
        port = services.port_create(
            project=context.project,
            network=network,
            device_id=str(instance.pk),
            device_owner=DEVICE_OWNER,
        )
        InstanceNic.objects.create(
            instance=instance, index=index, network=network, port=port, created_by_compute=True
        )
    return instance


def decide(instance):
    """One scheduling decision, as compute.pipeline.schedule makes it."""
    from django.conf import settings
    from django.db import transaction

    from compute import pipeline, scheduler

    with transaction.atomic():
        needs = pipeline.nic_needs(instance)
        constraints = scheduler.constraints_for(instance)
        picked = scheduler.select_hosts(
            instance, needs, constraints, alternates=settings.BERTH_SCHEDULER_ALTERNATES
        )
        return scheduler.claim_first(hosts=picked, instance=instance)


def release(instance, host) -> None:
    from compute import scheduler

    scheduler.release(host_id=host.pk, instance=instance)


def measure(instance, decisions: int, deadline: float) -> tuple[list[float], int]:
    """Decision latencies in seconds, and the queries one decision makes."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        host = decide(instance)
    if host is None:
        sys.exit("no host was picked: the fixture is wrong")
    release(instance, host)
    for _ in range(WARMUP):
        release(instance, decide(instance))
    latencies, beat = [], time.monotonic()
    for _ in range(decisions):
        if time.monotonic() > deadline:
            sys.exit(f"time limit reached after {len(latencies)} decisions")
        if time.monotonic() - beat > HEARTBEAT_EVERY:
            heartbeat()
            beat = time.monotonic()
        t0 = time.perf_counter()
        host = decide(instance)
        latencies.append(time.perf_counter() - t0)
        release(instance, host)
    return latencies, len(queries)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="1000,10000", help="host counts, ascending (default: 1000,10000)"
    )
    parser.add_argument("--decisions", type=int, default=200, help="per size (default: 200)")
    parser.add_argument(
        "--time-limit", type=float, default=300, help="seconds for the whole run (default: 300)"
    )
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    deadline = time.monotonic() + args.time_limit

    benchdb.database_prepare()
    from django.db import connection

    from identity.auth import RequestContext
    from identity.models import Project, Role

    cleanup()
    rows = []
    try:
        project = Project.objects.create(name=PROJECT)
        context = RequestContext(user_id="bench", project=project, role=Role.ADMIN)
        networks = networks_create(context)
        instance = instance_create(context, networks)
        have = 0
        for size in sizes:
            hosts_add(have, size)
            have = size
            heartbeat()
            analyze()
            latencies, queries = measure(instance, args.decisions, deadline)
            rows.append((size, queries, latencies))
    finally:
        cleanup()

    print(
        f"Scheduling decision: {NETWORKS} NICs on routed networks of {len(PHYSNETS)} segments, "
        f"hosts spread over {len(PHYSNETS)} physnets; PostgreSQL "
        f"{connection.pg_version // 10000}, {os.cpu_count()} CPUs"
    )
    print(
        f"{'hosts':>7} {'decisions':>10} {'queries':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
    )
    met = True
    for size, queries, latencies in rows:
        p95 = benchdb.percentile(latencies, 95) * 1000
        met = met and p95 < GOAL_MS
        print(
            f"{size:>7} {len(latencies):>10} {queries:>8} "
            f"{benchdb.percentile(latencies, 50) * 1000:>8.2f} {p95:>8.2f} "
            f"{max(latencies) * 1000:>8.2f}"
        )
    print(f"goal p95 < {GOAL_MS} ms at every size: {'MET' if met else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
