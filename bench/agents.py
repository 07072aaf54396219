"""The control plane's cost of many hosts' agents: messages/s absorbed and CPU per heartbeat.

N hosts (1,000 then 10,000 by default) are stored as agents' hosts; the
control plane's worker pools that consume the ``agents`` queue are started
as deployed (config.celery.WORKER_POOLS); a load generator of separate
processes, standing for the agents, sends what compute.agent.Reporter
sends: one message per host per BERTH_HEARTBEAT_INTERVAL, the hosts spread
evenly over the interval, for a fixed duration. Most are heartbeats without
power states; 1% carry changed power states (of domains that are not
berth's instances, so no destroy is sent), and 0.1% are whole agent
reports. Then the backlog is left to drain.

Measured: messages published and absorbed per second, the largest backlog
seen (messages waiting in the queue plus those a worker holds unacked), CPU
seconds of the worker processes (main and pool children) and of the
database's backends serving them, from /proc, and so CPU per message and
the cores the control plane needs. The load generator's CPU is not
counted. Goal: 10,000 agents at a 10 s interval use under half a core.
The Redis server's CPU is printed too, but the server may be shared.

The broker's Redis database is flushed before and after the run: give the
benchmark one of its own (the default is database 14). On RabbitMQ
(CELERY_BROKER_URL=amqp://...) the agents' queue is purged instead.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/berth_bench \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/14 \\
        .venv/bin/python bench/agents.py [--hosts 1000 10000] [--duration 60]
"""

import argparse
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid

import benchdb

HOST_PREFIX = "bench-agents-"
DEFAULT_BROKER = "redis://127.0.0.1:6379/14"
QUEUE = "agents"
GOAL_CORES = 0.5
CHANGED = 0.01
REPORTS = 0.001
TICK = os.sysconf("SC_CLK_TCK")


def cleanup() -> None:
    """Delete every row this benchmark makes, also those an interrupted run left."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        for statement in benchdb.HOST_CLEANUP:
            cursor.execute(statement, {"h": HOST_PREFIX + "%"})


class Broker:
    """The broker: a Redis database of the benchmark's own (flushed), or
    RabbitMQ (the agents' queue purged)."""

    def __init__(self):
        url = os.environ.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER)
        self.redis = None
        if url.startswith("redis://"):
            import redis

            self.redis = redis.Redis.from_url(url)
            self.pid = self.redis.info("server")["process_id"]
        elif url.startswith("amqp://"):
            self.pid = next((p for p in pids_where(lambda f: f[0] == "(beam.smp")), 0)
        else:
            sys.exit(f"CELERY_BROKER_URL must name Redis or RabbitMQ, not {url!r}")

    def flush(self) -> None:
        # Messages an interrupted run left would be counted as this one's.
        if self.redis is not None:
            self.redis.flushdb()
            return
        from config.celery import app

        with app.connection_for_write() as connection:
            queue = app.amqp.queues[QUEUE](connection.default_channel)
            queue.declare()
            queue.purge()

    def backlog(self) -> int:
        """Messages waiting in the queue, and (Redis only) those a worker
        holds unacknowledged."""
        from compute.tasks import backlog

        held = self.redis.hlen("unacked") if self.redis is not None else 0
        return backlog(QUEUE) + held

    def cpu(self) -> float:
        return cpu_seconds([self.pid]).get(self.pid, 0.0)


def hosts_create(count: int) -> list[str]:
    """``count`` hosts as their agents' reports leave them, in one bulk insert."""
    from django.utils import timezone

    from compute.models import Host

    now = timezone.now()
    names = [f"{HOST_PREFIX}{n:05d}" for n in range(count)]
    Host.objects.bulk_create(
        (
            Host(name=name, vcpus=64, memory_mb=262144, disk_gb=2000, last_heartbeat=now)
            for name in names
        ),
        batch_size=1000,
    )
    # An agent's host: the workers started with --host-queues leave its queue alone.
    Host.objects.filter(name__startswith=HOST_PREFIX).update(has_agent=True)
    return names


def report_of(name: str) -> dict:
    from compute.services import HostReport

    return HostReport(name=name, vcpus=64, memory_mb=262144, disk_gb=2000).to_message()


def agents_send(names: list[str], offsets: list[float], interval: float, start: float, rounds: int):
    """One load generator process: each host's message at ``start`` + its
    offset + k intervals, as compute.agent.Reporter sends it. Returns the
    count sent, through the queue the caller gave."""
    benchdb.django_setup()
    from django.utils import timezone

    from config.celery import app

    draw = random.Random(names[0])
    sent = 0
    for k in range(rounds):
        for name, offset in zip(names, offsets, strict=True):
            wait = start + k * interval + offset - time.time()
            if wait > 0.001:
                time.sleep(wait)
            now = timezone.now().isoformat()
            chance = draw.random()
            if chance < REPORTS:
                app.send_task("compute.agent_report", (report_of(name), {}, now), queue=QUEUE)
            else:
                # Domains that are not berth's instances: recorded, never destroyed.
                states = {f"{name}-domain": draw.choice((1, 4))} if chance < CHANGED else None
                app.send_task("compute.heartbeat", (name, states, now), queue=QUEUE)
            sent += 1
    return sent


def _send_into(results, *args) -> None:
    results.put(agents_send(*args))


def cpu_seconds(pids) -> dict[int, float]:
    """user + system CPU seconds of each live process in ``pids``."""
    found = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return found


def pids_where(test) -> list[int]:
    """The processes whose /proc/<pid>/stat fields (name first) pass ``test``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    name, rest = stat.read().rsplit(")", 1)
            except (FileNotFoundError, ProcessLookupError):
                continue
            if test([name.split(" ", 1)[1], *rest.split()]):
                pids.append(int(entry))
    return pids


def process_group(pgid: int) -> list[int]:
    """Every process of the group: a worker and its pool children."""
    return pids_where(lambda fields: int(fields[3]) == pgid)


def database_backends() -> list[int]:
    """The backends of the bench database but this process's own."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [row[0] for row in cursor.fetchall()]


class Meter:
    """CPU seconds used since it started by the workers, their database
    backends, and the Redis server. A backend may end during the run (the
    workers reconnect every BERTH_CELERY_DB_REUSE_MAX tasks): ``poll``
    often, and each process counts up to its last sample."""

    def __init__(self, workers: list[subprocess.Popen], broker: Broker):
        self.workers, self.broker = workers, broker
        self.start = self.sample()
        self.last = self.sample()

    def sample(self) -> dict:
        return {
            "workers": cpu_seconds(p for w in self.workers for p in process_group(w.pid)),
            "database": cpu_seconds(database_backends()),
            "broker": self.broker.cpu(),
        }

    def poll(self) -> None:
        now = self.sample()
        for kind in ("workers", "database"):
            self.last[kind].update(now[kind])
        self.last["broker"] = now["broker"]

    def used(self) -> dict[str, float]:
        self.poll()
        # A process that started meanwhile counts from zero.
        return {
            kind: sum(cpu - self.start[kind].get(p, 0) for p, cpu in self.last[kind].items())
            for kind in ("workers", "database")
        } | {"broker": self.last["broker"] - self.start["broker"]}


def workers_start(log) -> list[subprocess.Popen]:
    """The deployment's worker pools that consume the agents' queue."""
    from config.celery import WORKER_POOLS

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = []
    for options in WORKER_POOLS.values():
        if QUEUE not in options[options.index("-Q") + 1].split(","):
            continue
        command = [sys.executable, "-m", "celery", "-A", "config", "worker", *options]
        command += ["-l", "warning", "-n", f"bench-{uuid.uuid4().hex[:8]}@%h"]
        command += ["--without-mingle", "--without-gossip"]
        procs.append(
            subprocess.Popen(
                command,
                cwd=benchdb.ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


def run(count: int, interval: float, duration: float, senders: int, log) -> dict:
    """One run at ``count`` hosts: the figures of its sending window and drain."""
    from django.utils import timezone

    from compute import services
    from compute.models import Host

    broker = Broker()
    broker.flush()
    cleanup()
    names = hosts_create(count)
    benchdb.vacuum_analyze("compute_host")
    workers = workers_start(log)
    try:
        for proc in workers:
            benchdb.worker_wait_ready(proc)
        time.sleep(2)  # past the pool children's start
        idle = Meter(workers, broker)
        time.sleep(5)
        idle_cores = idle.used()["workers"] / 5
        rounds = max(1, round(duration / interval))
        start = time.time() + 2
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        jobs = []
        for s in range(senders):
            mine = list(range(s, count, senders))
            args = ([names[i] for i in mine], [i * interval / count for i in mine])
            jobs.append(
                ctx.Process(target=_send_into, args=(results, *args, interval, start, rounds))
            )
        for job in jobs:
            job.start()
        time.sleep(max(0, start - time.time()))
        meter, began, since = Meter(workers, broker), time.monotonic(), timezone.now()
        largest = 0
        while any(job.is_alive() for job in jobs):
            largest = max(largest, broker.backlog())
            meter.poll()
            time.sleep(0.5)
        window = time.monotonic() - began
        in_window = meter.used()
        left = broker.backlog()
        sent = sum(results.get() for _ in jobs)
        for job in jobs:
            job.join()
        deadline = time.monotonic() + 300
        while broker.backlog() and time.monotonic() < deadline:
            meter.poll()
            time.sleep(0.5)
        time.sleep(2)  # what a worker prefetched, which RabbitMQ does not count
        drained = time.monotonic() - began - window
        total = meter.used()
        remaining = broker.backlog()
        # Every host's heartbeat was written (none was lost on the way).
        unseen = Host.objects.filter(name__startswith=HOST_PREFIX, last_heartbeat__lt=since)
        unseen = unseen.count()
        # The liveness sweep, which beat runs every interval, at this many hosts.
        sweeps = []
        for _ in range(5):
            t = time.perf_counter()
            services.hosts_check()
            sweeps.append((time.perf_counter() - t) * 1000)
    except BaseException:
        log.seek(0)
        sys.stderr.write(log.read().decode(errors="replace")[-5000:])
        raise
    finally:
        for proc in workers:
            benchdb.worker_stop(proc)
        broker.flush()
        cleanup()
    absorbed = sent - remaining
    return {
        "hosts": count,
        "sent": sent,
        "sent/s": sent / window,
        "absorbed/s": (sent - left) / window,
        "largest": largest,
        "left": left,
        "drain s": drained,
        "idle cores": idle_cores,
        "worker cores": in_window["workers"] / window,
        "db cores": in_window["database"] / window,
        "broker cores": in_window["broker"] / window,
        "worker ms/msg": total["workers"] * 1000 / max(absorbed, 1),
        "db ms/msg": total["database"] * 1000 / max(absorbed, 1),
        "sweep ms": min(sweeps),
        "remaining": remaining,
        "unseen": unseen,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--hosts", type=int, nargs="+", default=[1000, 10000], help="(default: 1000 10000)"
    )
    parser.add_argument(
        "--duration", type=float, default=60, help="seconds of sending per run (default: 60)"
    )
    parser.add_argument("--senders", type=int, default=2, help="load generator processes")
    args = parser.parse_args()

    Broker()
    benchdb.database_prepare()
    from django.conf import settings
    from django.db import connection

    from config.celery import WORKER_POOLS

    interval = settings.BERTH_HEARTBEAT_INTERVAL
    figures = []
    with tempfile.TemporaryFile() as log:
        for count in args.hosts:
            figures.append(run(count, interval, args.duration, args.senders, log))

    pools = [" ".join(o) for o in WORKER_POOLS.values() if QUEUE in o[o.index("-Q") + 1]]
    scheme = settings.CELERY_BROKER_URL.split(":")[0]
    print(
        f"Agents' messages every {interval:g} s for {args.duration:g} s through the worker "
        f"pools consuming {QUEUE!r} ({'; '.join(pools)}); {scheme}, PostgreSQL "
        f"{connection.pg_version // 10000}, {os.cpu_count()} CPUs"
    )
    print(
        f"{'hosts':>6} {'sent/s':>7} {'absorbed/s':>10} {'backlog max':>11} {'at end':>6} "
        f"{'drain s':>7} {'worker cores':>12} {'db cores':>8} {'broker*':>7} "
        f"{'worker ms/msg':>13} {'db ms/msg':>9} {'idle cores':>10} {'sweep ms':>8}"
    )
    for f in figures:
        print(
            f"{f['hosts']:>6} {f['sent/s']:>7.0f} {f['absorbed/s']:>10.0f} {f['largest']:>11} "
            f"{f['left']:>6} {f['drain s']:>7.1f} {f['worker cores']:>12.2f} "
            f"{f['db cores']:>8.2f} {f['broker cores']:>7.2f} {f['worker ms/msg']:>13.2f} "
            f"{f['db ms/msg']:>9.2f} {f['idle cores']:>10.2f} {f['sweep ms']:>8.1f}"
        )
        if f["remaining"]:
            print(f"  {f['remaining']} messages still waiting after the drain's time limit")
        if f["unseen"]:
            print(f"  {f['unseen']} hosts' heartbeats not written")
    last = figures[-1]
    # What absorbing every message sent takes, also where the workers fell behind.
    cores = (last["worker ms/msg"] + last["db ms/msg"]) * last["sent/s"] / 1000
    missed = last["remaining"] or last["unseen"]
    verdict = "MET" if cores < GOAL_CORES and not missed else "NOT MET"
    print(
        f"workers + database to absorb {last['hosts']} hosts' messages: {cores:.2f} cores "
        f"(goal < {GOAL_CORES}): {verdict}  (* the broker server's, which may be shared)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
