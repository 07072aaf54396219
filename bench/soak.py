"""A bounded soak: steady churn of servers and leases through the API and a
real worker, printing per interval the requests made, API latency, build
time-to-ACTIVE and the memory (RSS) of the API and worker processes.
Memory and latency should stay flat from the first interval to the last.

It runs on a database of its own, made afresh (its name must contain
"bench"), and a Redis database of its own, flushed before and after.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/berth_soak_bench \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/12 \\
        .venv/bin/python bench/soak.py [--minutes 3] [--interval 30] [--rate 4]
"""

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import benchdb

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/berth_soak_bench"
DEFAULT_BROKER = "redis://127.0.0.1:6379/12"
HOSTS = 12
KEEP = 24  # servers kept alive; older ones are deleted as new ones come
HEARTBEAT_EVERY = 20


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children, in KiB."""
    total = 0
    for each in [pid, *children(pid)]:
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def children(pid: int) -> list[int]:
    with contextlib.suppress(FileNotFoundError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def setup():
    """Project with an admin token and no quota in the way, flavor, routed
    network of two segments, hosts (two of them reservable)."""
    from compute import services as compute
    from identity.auth import RequestContext
    from identity.models import Role
    from identity.quotas import quota_set
    from identity.services import token_create
    from networking import services as networking
    from networking.services import HostNetworkReport
    from reservations import services as reservations

    token, raw = token_create(project_name="soak", username="soak", role=Role.ADMIN)
    project = token.membership.project
    for resource in ("instances", "cores", "ram", "port", "leases"):
        quota_set(project=project, resource=resource, limit=-1)
    context = RequestContext(user_id="soak", project=project, role=Role.ADMIN)
    compute.flavor_create(id="soak", name="soak", vcpus=1, ram=256, disk=1)
    network = networking.network_create(
        context=context,
        project=project,
        name="soak",
        segments=[
            {"network_type": "vlan", "physical_network": f"soak{i}", "segmentation_id": 100 + i}
            for i in range(2)
        ],
    )
    for i, segment in enumerate(network.segments.order_by("segmentation_id")):
        networking.subnet_create(
            project=project, network=network, segment=segment, cidr=f"127.{80 + i}.0.0/20"
        )
    for n in range(HOSTS):
        name = f"soak-{n:02d}"
        compute.host_report(
            report=compute.HostReport(
                name=name,
                vcpus=64,
                memory_mb=65536,
                disk_gb=1000,
                network=HostNetworkReport(host=name, physnets={f"soak{n % 2}": {"bridge": "br"}}),
            )
        )
    for n in range(2):
        reservations.reservable_host_create(name=f"soak-{n:02d}", capabilities={})
    return raw, str(network.pk)


def heartbeat() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("UPDATE compute_host SET last_heartbeat = now()")


def api_start(port: int, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=benchdb.ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


class Churn:
    """The client: boots a server per step, deletes the oldest beyond KEEP,
    lists now and then, and makes and deletes a lease every tenth step."""

    def __init__(self, base: str, token: str, network: str):
        import requests

        self.http = requests.Session()
        self.http.headers["X-Auth-Token"] = token
        self.base = base
        self.network = network
        self.servers: list[str] = []
        self.steps = 0
        self.latencies: list[float] = []
        self.errors = 0

    def call(self, method: str, path: str, **kwargs):
        started = time.perf_counter()
        answer = self.http.request(method, self.base + path, timeout=60, **kwargs)
        self.latencies.append(time.perf_counter() - started)
        if answer.status_code >= 500:
            self.errors += 1
        return answer

    def step(self) -> None:
        from django.utils import timezone

        self.steps += 1
        body = {
            "server": {
                "name": f"soak-{self.steps}",
                "flavorRef": "soak",
                "networks": [{"uuid": self.network}],
            }
        }
        answer = self.call("POST", "/compute/v2.1/servers", json=body)
        if answer.status_code == 202:
            self.servers.append(answer.json()["server"]["id"])
        if len(self.servers) > KEEP:
            self.call("DELETE", f"/compute/v2.1/servers/{self.servers.pop(0)}")
        if self.steps % 5 == 0:
            self.call("GET", "/compute/v2.1/servers/detail")
        if self.steps % 10 == 0:
            start = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=2)
            lease = {
                "name": f"soak-{self.steps}",
                "start_date": start.strftime("%Y-%m-%d %H:%M"),
                "end_date": (start + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M"),
                "reservations": [
                    {
                        "resource_type": "physical:host",
                        "min": 1,
                        "max": 1,
                        "hypervisor_properties": "",
                        "resource_properties": "",
                    }
                ],
                "events": [],
            }
            made = self.call("POST", "/reservation/v1/leases", json=lease)
            if made.status_code in (200, 201):
                self.call("DELETE", f"/reservation/v1/leases/{made.json()['lease']['id']}")


def build_times(since, until) -> list[float]:
    from compute.models import Instance

    rows = Instance.objects.filter(launched_at__gte=since, launched_at__lt=until).values_list(
        "created_at", "launched_at"
    )
    return [(launched - created).total_seconds() for created, launched in rows]


def ms(values: list[float], p: int) -> str:
    if len(values) < 2:
        return "-"
    return f"{benchdb.percentile(values, p) * 1000:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--interval", type=float, default=30, help="seconds per printed row")
    parser.add_argument("--rate", type=float, default=4, help="churn steps per second")
    args = parser.parse_args()

    os.environ.setdefault("DATABASE_URL", DEFAULT_DB)
    broker = os.environ.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER)
    if not broker.startswith("redis://"):
        sys.exit(f"CELERY_BROKER_URL must name a Redis database, not {broker!r}")
    benchdb.database_prepare(fresh=True)
    import redis
    from django.utils import timezone

    redis.Redis.from_url(broker).flushdb()
    token, network = setup()
    port = benchdb.free_port()
    with tempfile.TemporaryFile() as log:
        worker = benchdb.worker_start(log)
        api = api_start(port, log)
        try:
            benchdb.worker_wait_ready(worker)
            churn = Churn(f"http://127.0.0.1:{port}", token, network)
            benchdb.wait_http(f"http://127.0.0.1:{port}/compute/v2.1", token)
            print(
                f"Soak: {args.minutes} min, {args.rate} steps/s, {HOSTS} hosts, "
                f"{KEEP} servers kept; API (runserver) and worker (prefork, 2) as processes"
            )
            print(
                f"{'minute':>6} {'requests':>8} {'5xx':>4} {'api p50':>8} {'api p95':>8} "
                f"{'built':>6} {'build p50':>9} {'build p95':>9} {'api MiB':>8} {'worker MiB':>10}"
            )
            rows = []
            started = time.monotonic()
            end = started + args.minutes * 60
            beat = 0.0
            while time.monotonic() < end:
                window_start, wall_start = time.monotonic(), timezone.now()
                churn.latencies = []
                while time.monotonic() - window_start < args.interval:
                    churn.step()
                    if time.monotonic() - beat > HEARTBEAT_EVERY:
                        heartbeat()
                        beat = time.monotonic()
                    time.sleep(max(0.0, 1 / args.rate - (time.monotonic() % (1 / args.rate))))
                built = build_times(wall_start, timezone.now())
                row = (
                    (time.monotonic() - started) / 60,
                    len(churn.latencies),
                    churn.errors,
                    ms(churn.latencies, 50),
                    ms(churn.latencies, 95),
                    len(built),
                    ms(built, 50),
                    ms(built, 95),
                    rss_kib(api.pid) / 1024,
                    rss_kib(worker.pid) / 1024,
                )
                rows.append(row)
                print(
                    f"{row[0]:>6.1f} {row[1]:>8} {row[2]:>4} {row[3]:>8} {row[4]:>8} {row[5]:>6} "
                    f"{row[6]:>9} {row[7]:>9} {row[8]:>8.1f} {row[9]:>10.1f}",
                    flush=True,
                )
        finally:
            api.terminate()
            api.wait(timeout=30)
            benchdb.worker_stop(worker)
            redis.Redis.from_url(broker).flushdb()
    first, last = rows[0], rows[-1]
    print(
        f"first -> last interval: api RSS {first[8]:.1f} -> {last[8]:.1f} MiB, "
        f"worker RSS {first[9]:.1f} -> {last[9]:.1f} MiB, api p95 {first[4]} -> {last[4]} ms, "
        f"build p95 {first[7]} -> {last[7]} ms; 5xx: {churn.errors}"
    )
    return 1 if churn.errors else 0


if __name__ == "__main__":
    sys.exit(main())
