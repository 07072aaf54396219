"""Statements per build: what one build asks of PostgreSQL, step by step.

Builds servers one after another in this process, through the pipeline's
table as the workers run it (the conductor; then the spawn on the host,
which asks nothing of the database; then spawn_done, which records it), on
the same world as build_throughput.py (50 hosts, a routed network of two
segments, one NIC per server, the fake driver), and counts what Django
sends for each hop that uses the database: statements (BEGIN and COMMIT
aside), of which savepoints, and transactions (BEGIN/COMMIT pairs and
statements that commit by themselves). No worker and no broker: the
hand-off to the host's queue goes to an in-memory one.

Then one request for --batch servers (as --min-count), conducted as the
worker does, in one batch: the conductor's statements per build there.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/berth_bench \\
        .venv/bin/python bench/statements.py [--builds 50] [--batch 50]
"""

import argparse
import os
import statistics
import sys
from collections import Counter

import benchdb

GOAL = 25  # statements per build, BEGIN/COMMIT aside


def tally(sent: list[str]) -> Counter:
    """Statements (BEGIN and COMMIT aside), savepoints among them, and
    transactions: each BEGIN, and each statement run outside one, which
    commits by itself."""
    counts = Counter(statements=0, savepoints=0, transactions=0)
    inside = False
    for statement in sent:
        if statement == "BEGIN":
            inside = True
            counts["transactions"] += 1
        elif statement in ("COMMIT", "ROLLBACK"):
            inside = False
        else:
            counts["statements"] += 1
            counts["savepoints"] += "SAVEPOINT" in statement
            counts["transactions"] += not inside
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=50)
    parser.add_argument("--batch", type=int, default=50, help="servers in the batched request")
    parser.add_argument("--show", action="store_true", help="print the last build's statements")
    args = parser.parse_args()
    os.environ["CELERY_BROKER_URL"] = "memory://"
    benchdb.database_prepare()
    import build_throughput as world
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from compute import agent, pipeline
    from compute import services as compute
    from compute.models import Instance

    def spawn_done(instance_id) -> CaptureQueriesContext:
        # The host's part, as its agent runs it, with no statement counted:
        # what the conductor sent it, then the driver.
        instance = Instance.objects.select_related("host").get(pk=instance_id)
        request = pipeline.spawn_request(instance).to_message()
        result = agent.spawn_result(request, instance.host.virt_driver)
        with CaptureQueriesContext(connection) as captured:
            pipeline.spawn_done(instance_id, instance.attempt, instance.host.name, result)
        return captured

    def conduct(instance_id) -> CaptureQueriesContext:
        # As the message sent when the server was requested says.
        state, attempt = Instance.objects.values_list("task_state", "attempt").get(pk=instance_id)
        with CaptureQueriesContext(connection) as captured:
            pipeline.conduct(instance_id, state, attempt)
        return captured

    world.cleanup()
    per_hop: dict[str, list[Counter]] = {"conductor": [], "spawn_done": []}
    try:
        context, flavor, network = world.setup()
        benchdb.vacuum_analyze()
        for n in range(args.builds):
            instance = world.server_request(context, flavor, network, f"bench-statements-{n}")
            for hop, run in (("conductor", conduct), ("spawn_done", spawn_done)):
                captured = run(instance.pk)
                sent = [q["sql"] for q in captured.captured_queries]
                if args.show and n == args.builds - 1:
                    print(f"--- {hop}", *sent, sep="\n")
                per_hop[hop].append(tally(sent))
            if Instance.objects.get(pk=instance.pk).status != "ACTIVE":
                sys.exit(f"build {n} failed: {Instance.objects.get(pk=instance.pk).fault}")
        batch = compute.server_create(
            context=context,
            name="bench-statements-batch",
            flavor=flavor,
            nics=[compute.NicRequest(network=network)],
            min_count=args.batch,
            max_count=args.batch,
        )
        ids = [str(instance.pk) for instance in batch]
        with CaptureQueriesContext(connection) as captured:
            pipeline.conduct(ids, batch[0].task_state, 1)
        batched = tally([q["sql"] for q in captured.captured_queries])
        if Instance.objects.filter(pk__in=ids, task_state="spawning").count() != args.batch:
            sys.exit("a build of the batch did not reach spawn")
    finally:
        world.cleanup()

    print(
        f"Statements per build, {args.builds} builds one after another in one process, "
        f"PostgreSQL {connection.pg_version // 10000}, {world.HOSTS} hosts, one NIC"
    )
    print(f"{'':12} {'statements':>11} {'savepoints':>11} {'transactions':>13}")
    total = Counter()
    for hop, counts in per_hop.items():
        # The first builds warm caches (content types, the legacy check's plan).
        steady = counts[len(counts) // 5 :]
        means = {k: statistics.mean(c[k] for c in steady) for k in counts[0]}
        total.update(means)
        print(
            f"{hop:12} {means['statements']:>11.1f} {means['savepoints']:>11.1f} "
            f"{means['transactions']:>13.1f}"
        )
    print(
        f"{'build':12} {total['statements']:>11.1f} {total['savepoints']:>11.1f} "
        f"{total['transactions']:>13.1f}"
    )
    plain = total["statements"] - total["savepoints"]
    verdict = "MET" if plain <= GOAL else "NOT MET"
    print(f"statements per build, savepoints aside: {plain:.1f} (goal <= {GOAL}): {verdict}")
    print(
        f"{'conductor, per build of a request of ' + str(args.batch):40} "
        + " ".join(f"{k} {batched[k] / args.batch:.1f}" for k in batched)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
