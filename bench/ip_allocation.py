"""Concurrent IP allocation on one subnet, against its floor.

Two spawned processes allocate addresses on ONE subnet through
networking.services.ip_allocate, each allocation its own transaction. The
floor is the same two processes doing the least such a transaction must do:
lock the subnet row and insert one IPAllocation (a precomputed address).
The two phases alternate in rounds. Goal: allocations/s at least half the
floor's transactions/s.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/berth_bench \\
        .venv/bin/python bench/ip_allocation.py [--per-process 2000]
"""

import argparse
import multiprocessing
import os
import queue
import sys
import time

import benchdb

PROJECT = "bench-ip-allocation"
# Loopback space, so no real address appears even in the database. The
# allocator's pool is the upper three quarters of the /16 (49,151 addresses,
# mostly free at the default sizes); the floor inserts precomputed addresses
# from the lower quarter, so the two never collide.
CIDR = "127.64.0.0/16"
POOL = {"start": "127.64.64.0", "end": "127.64.255.254"}
FLOOR_FIRST = "127.64.0.2"
MAX_PER_PROCESS = 8000
PROCESSES = 2
GOAL = 0.5

FLOOR_LOCK = "SELECT id FROM networking_subnet WHERE id = %s FOR UPDATE"
FLOOR_INSERT = (
    "INSERT INTO networking_ipallocation (port_id, subnet_id, address, created_at) "
    "VALUES (%s, %s, %s, now())"
)


def setup(per_process: int) -> tuple[str, list[dict]]:
    """The subnet, and per process: ports for the floor with precomputed
    addresses (disjoint, outside the pool) and ports to allocate for."""
    import netaddr

    from identity.models import Project
    from networking import services
    from networking.models import Network, Port

    project = Project.objects.create(name=PROJECT)
    network = Network.objects.create(project=project, name=PROJECT)
    subnet = services.subnet_create(
        project=project, network=network, cidr=CIDR, allocation_pools=[POOL]
    )
    ports = Port.objects.bulk_create(
        Port(project=project, network=network, mac_address=benchdb.mac(i))
        for i in range(PROCESSES * 2 * per_process)
    )
    first = netaddr.IPAddress(FLOOR_FIRST)
    jobs = []
    for w in range(PROCESSES):
        mine = ports[w * 2 * per_process : (w + 1) * 2 * per_process]
        offset = w * per_process
        jobs.append(
            {
                "floor": [
                    (str(p.pk), str(first + offset + k)) for k, p in enumerate(mine[:per_process])
                ],
                "allocation": [str(p.pk) for p in mine[per_process:]],
            }
        )
    return str(subnet.pk), jobs


def timed(do, items) -> tuple[float, float, list[float]]:
    # perf_counter is CLOCK_MONOTONIC on Linux: comparable across processes.
    latencies = []
    start = time.perf_counter()
    for item in items:
        t0 = time.perf_counter()
        do(item)
        latencies.append(time.perf_counter() - t0)
    return start, time.perf_counter(), latencies


def worker(subnet_id: str, job: dict, rounds: int, barrier, results) -> None:
    benchdb.django_setup()
    from django.db import connection, transaction

    from networking.models import Port, Subnet
    from networking.services import ip_allocate

    subnet = Subnet.objects.get(pk=subnet_id)
    ports = list(Port.objects.filter(pk__in=job["allocation"]))

    def floor_once(item):
        port_id, address = item
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(FLOOR_LOCK, [subnet_id])
            cursor.execute(FLOOR_INSERT, [port_id, subnet_id, address])

    def allocate_once(port):
        ip_allocate(port=port, subnet=subnet)

    # The phases alternate in rounds, so drift in the machine's load hits
    # both alike; the barrier starts each in both processes together, so
    # they contend throughout.
    out = {"floor": [], "allocation": []}
    for r in range(rounds):
        for phase, do, items in (
            ("floor", floor_once, job["floor"]),
            ("allocation", allocate_once, ports),
        ):
            barrier.wait()
            out[phase].append(timed(do, items[r::rounds]))
    results.put(out)


def run(subnet_id: str, jobs: list[dict], rounds: int, time_limit: float) -> list[dict]:
    """Each process's timings: {phase: [(start, end, latencies) per round]}."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(subnet_id, job, rounds, barrier, results)) for job in jobs
    ]
    for p in procs:
        p.start()
    collected = []
    deadline = time.monotonic() + time_limit
    try:
        while len(collected) < PROCESSES:
            if time.monotonic() > deadline:
                sys.exit(f"time limit of {time_limit:.0f} s reached")
            if any(p.exitcode not in (None, 0) for p in procs):
                sys.exit("a worker process failed (its traceback is above)")
            try:
                collected.append(results.get(timeout=1))
            except queue.Empty:
                continue
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    return collected


def summary(per_process: list[list[tuple]]) -> tuple[float, float, float]:
    """Transactions/s over the phase's wall time (the sum of its rounds'),
    p50 and p95 in ms."""
    wall = sum(
        max(end for _, end, _ in one_round) - min(start for start, _, _ in one_round)
        for one_round in zip(*per_process, strict=True)
    )
    latencies = [x for timings in per_process for _, _, lat in timings for x in lat]
    return (
        len(latencies) / wall,
        benchdb.percentile(latencies, 50) * 1000,
        benchdb.percentile(latencies, 95) * 1000,
    )


def duplicates(subnet_id: str) -> tuple[int, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT address) FROM networking_ipallocation "
            "WHERE subnet_id = %s",
            [subnet_id],
        )
        return cursor.fetchone()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-process", type=int, default=2000, help="default: 2000")
    parser.add_argument(
        "--rounds", type=int, default=10, help="floor and allocation alternate (default: 10)"
    )
    parser.add_argument(
        "--time-limit", type=float, default=300, help="seconds for both phases (default: 300)"
    )
    args = parser.parse_args()
    if not 0 < args.per_process <= MAX_PER_PROCESS:
        parser.error(f"--per-process must be 1..{MAX_PER_PROCESS}: the floor's addresses run out")
    load = os.getloadavg()[0]

    benchdb.database_prepare()
    from django.db import connection

    benchdb.project_delete(PROJECT)
    try:
        subnet_id, jobs = setup(args.per_process)
        # The workers need no connection of ours, and we hold no lock.
        connection.close()
        collected = run(subnet_id, jobs, args.rounds, args.time_limit)
        rows, distinct = duplicates(subnet_id)
    finally:
        benchdb.project_delete(PROJECT)

    floor = summary([c["floor"] for c in collected])
    allocation = summary([c["allocation"] for c in collected])
    ratio = allocation[0] / floor[0]
    expected = PROCESSES * 2 * args.per_process
    print(
        f"IP allocation on one {CIDR} subnet: {PROCESSES} processes x {args.per_process}, "
        f"PostgreSQL {connection.pg_version // 10000}, {os.cpu_count()} CPUs, "
        f"load average {load:.1f} at start"
    )
    print(f"{'':34} {'tx/s':>8} {'p50 ms':>8} {'p95 ms':>8}")
    for label, (rate, p50, p95) in (
        ("floor (lock subnet + insert row)", floor),
        ("ip_allocate (one per transaction)", allocation),
    ):
        print(f"{label:34} {rate:8.0f} {p50:8.2f} {p95:8.2f}")
    verdict = "MET" if ratio >= GOAL else "NOT MET"
    print(f"ratio allocation/floor: {ratio:.2f} (goal >= {GOAL}): {verdict}")
    print(f"rows in subnet: {rows} (expected {expected}), distinct addresses: {distinct}")
    if rows != expected or distinct != rows:
        print("FAILED: duplicate or missing allocations")
        return 1
    print("duplicates: none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
