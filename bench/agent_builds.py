"""Builds/s with two host agents vs. the same two hosts served centrally, in one run.

A Celery worker as deployed (prefork, concurrency 2, serving the queues of
hosts without an agent) builds servers with the fake driver on a routed
network of two segments and two hosts. Phase "central": the hosts are
reported by `host_report`, so the worker runs their spawns itself. Phase
"agents": the same hosts are reported by two `manage.py agent` processes
(one per host, threads), which take their spawns; each result travels back
to the worker as a message. Each phase stores its builds first, then
enqueues them all at once; builds/s counts from that commit to the last
ACTIVE. The phases alternate (--rounds), so a slow moment of the machine
falls on both.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/berth_bench \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/13 \\
        .venv/bin/python bench/agent_builds.py [--builds 300] [--rounds 2]
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
import build_throughput as floor_bench

HOSTS = [f"{floor_bench.HOST_PREFIX}agent-{n}" for n in range(2)]


def setup(*, agents: bool, logs: Path) -> tuple:
    """The project, flavor and network of build_throughput, and the two
    hosts: reported here (central), or by an agent process each (agents).
    Returns the context, flavor, network and the agent processes."""
    from compute import services as compute
    from compute.management.commands.host_report import host_report_from, report_options
    from compute.models import Host

    context, flavor, network = floor_bench.setup(hosts=0)
    options = [
        {"name": name, "vcpus": 64, "ram": 262144, "disk": 4000, "physnet": [physnet]}
        for name, physnet in zip(HOSTS, floor_bench.PHYSNETS, strict=True)
    ]
    if not agents:
        for host in options:
            compute.host_report(report=host_report_from(report_options(host)))
        return context, flavor, network, []
    procs = []
    for host in options:
        argv = [host["name"], "--vcpus", "64", "--ram", "262144", "--disk", "4000"]
        argv += ["--physnet", host["physnet"][0], "--loglevel", "warning", "--quiet"]
        with open(logs / f"{host['name']}.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", "agent", *argv],
                    cwd=benchdb.ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    deadline = time.monotonic() + 60
    while Host.objects.filter(name__in=HOSTS, has_agent=True).count() < len(HOSTS):
        if time.monotonic() > deadline:
            sys.exit("the agents did not report their hosts within 60 s")
        time.sleep(0.2)
    # The worker lets go of their queues within BERTH_HOST_QUEUE_SYNC.
    time.sleep(2 * float(os.environ["BERTH_HOST_QUEUE_SYNC"]))
    return context, flavor, network, procs


def phase(agents: bool, builds: int, deadline: float, logs: Path) -> float:
    floor_bench.cleanup()
    context, flavor, network, procs = setup(agents=agents, logs=logs)
    try:
        benchdb.vacuum_analyze()
        rate, _, _ = floor_bench.builds_run(context, flavor, network, builds, deadline)
    finally:
        for proc in procs:
            benchdb.worker_stop(proc)
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=300, help="per phase (default: 300)")
    parser.add_argument("--rounds", type=int, default=2, help="of both phases (default: 2)")
    parser.add_argument("--time-limit", type=float, default=600, help="seconds in all")
    args = parser.parse_args()

    floor_bench.broker_url()
    # A host's queue is taken or let go within half a second, not five.
    os.environ["BERTH_HOST_QUEUE_SYNC"] = "0.5"
    benchdb.database_prepare()
    floor_bench.cleanup()
    floor_bench.broker_flush()
    deadline = time.monotonic() + args.time_limit
    rates: dict[str, list[float]] = {"central": [], "agents": []}
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryFile() as log:
        proc = floor_bench.worker_start(log)
        try:
            benchdb.worker_wait_ready(proc)
            for _ in range(args.rounds):
                for name in rates:
                    rates[name].append(phase(name == "agents", args.builds, deadline, Path(folder)))
        finally:
            benchdb.worker_stop(proc)
            floor_bench.cleanup()
            floor_bench.broker_flush()
    print(f"{args.builds} builds per phase, {args.rounds} rounds, two hosts, fake driver")
    for name, values in rates.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {name:8} builds/s: {shown} (median {statistics.median(values):.1f})")
    ratio = statistics.median(rates["agents"]) / statistics.median(rates["central"])
    print(f"  agents / central: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
