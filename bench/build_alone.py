"""Where the time of one build alone goes, in one process.

Builds servers one after another in this process, as the workers run them
(the conductor, then recording the host's spawn result), on the world of
build_throughput.py, and prints p50 of each part: the conductor split into
PostgreSQL's time (from each statement sent to its rows fetched) and the
rest, nearly all of it Django building statements and model instances; and
recording the spawn's result. Then the bookkeeping the conductor's three
steps cannot do without, on the same builds' rows: each step in its own
transaction, lock the instance (through its NIC row, as the steps do), add
the step's event, move the instance on. No broker: the messages between
the hops (build_throughput.py's floor shows what those cost) are not here.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/berth_bench \\
        .venv/bin/python bench/build_alone.py [--builds 100]
"""

import argparse
import os
import statistics
import sys
import time

import benchdb

GOAL_MS = 20  # time to ACTIVE of one build alone, p50, through a worker
STEP_EVENTS = ("skeleton_prepare", "skeleton_schedule", "skeleton_bind")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=100)
    args = parser.parse_args()
    os.environ["CELERY_BROKER_URL"] = "memory://"
    benchdb.database_prepare()
    import build_throughput as world
    from django.db import connection, transaction
    from django.utils import timezone

    from compute import agent, pipeline
    from compute.models import Instance, InstanceAction, InstanceActionEvent, InstanceNic

    database = []  # seconds PostgreSQL took for each statement of the current part

    def timed(execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            database.append(time.perf_counter() - start)

    def measure(run, *args) -> tuple[float, float]:
        """Wall time and database time of ``run(*args)``, in seconds. Commits
        go through the connection, not a cursor: they count as the rest."""
        database.clear()
        start = time.perf_counter()
        with connection.execute_wrapper(timed):
            run(*args)
        return time.perf_counter() - start, sum(database)

    def skeleton(instance_id, action_id) -> None:
        for event in STEP_EVENTS:
            with transaction.atomic():
                nic = (
                    InstanceNic.objects.select_related("instance")
                    .select_for_update(of=("instance",))
                    .filter(instance_id=instance_id)
                    .first()
                )
                now = timezone.now()
                InstanceActionEvent.objects.create(
                    action_id=action_id,
                    event=event,
                    start_time=now,
                    finish_time=now,
                    result="Success",
                )
                Instance.objects.filter(pk=instance_id).update(
                    task_state=nic.instance.task_state, updated_at=now
                )

    world.cleanup()
    parts: dict[str, list[float]] = {
        "conductor": [],
        "  of which PostgreSQL": [],
        "  of which the rest": [],
        "recording the spawn": [],
        "bookkeeping alone": [],
    }
    try:
        context, flavor, network = world.setup()
        benchdb.vacuum_analyze()
        for n in range(args.builds):
            instance = world.server_request(context, flavor, network, f"bench-alone-{n}")
            pk = str(instance.pk)
            wall, db = measure(pipeline.conduct, pk, instance.task_state, 1)
            parts["conductor"].append(wall)
            parts["  of which PostgreSQL"].append(db)
            parts["  of which the rest"].append(wall - db)
            built = Instance.objects.select_related("host").get(pk=pk)
            result = agent.spawn_result(
                pipeline.spawn_request(built).to_message(), built.host.virt_driver
            )
            wall, _ = measure(pipeline.spawn_done, pk, built.attempt, built.host.name, result)
            parts["recording the spawn"].append(wall)
            if Instance.objects.get(pk=pk).status != "ACTIVE":
                sys.exit(f"build {n} failed: {Instance.objects.get(pk=pk).fault}")
            action = InstanceAction.objects.filter(instance_id=pk).values_list("pk", flat=True)[0]
            wall, _ = measure(skeleton, pk, action)
            parts["bookkeeping alone"].append(wall)
    finally:
        world.cleanup()

    print(
        f"One build alone in one process, {args.builds} builds, "
        f"PostgreSQL {connection.pg_version // 10000}, {world.HOSTS} hosts, one NIC, "
        f"{os.cpu_count()} CPUs; p50, the first fifth (warming caches) aside"
    )
    for part, seconds in parts.items():
        steady = seconds[len(seconds) // 5 :]
        print(f"{part:28} {statistics.median(steady) * 1000:7.1f} ms")
    print(
        "bookkeeping alone: the three steps' transactions, lock reads, events and moves; "
        f"with the messages between hops (build_throughput.py), set it against {GOAL_MS} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
