"""Port lookup by MAC through the real API, against its floor.

Creates many ports (one IP allocation each), starts the API in Django's
development server on 127.0.0.1, and times, sequentially over one
keep-alive connection with an admin token, GET /ports?mac_address=<MAC of
a random existing port> and the floor: GET /extensions, a static view that
still authenticates. Goal: p50(lookup) within 2x p50(floor).

The server is what `manage.py runserver --noreload` runs, with TCP_NODELAY
on its connections (see serve); `--server runserver` runs the command itself.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/berth_bench \\
        .venv/bin/python bench/port_lookup.py [--ports 100000] [--requests 2000]
"""

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlencode

import benchdb

PROJECT = "bench-port-lookup"
USERNAME = "bench-port-lookup-admin"
# Loopback space, so no real address appears even in the database; a /15
# pool holds 131,069 addresses: one per port.
CIDR = "127.128.0.0/15"
MAX_PORTS = 131_069
PREFIX = "/networking/v2.0"
FLOOR_PATH = f"{PREFIX}/extensions"
BATCH = 5000
GOAL = 2.0


def setup(count: int) -> tuple[str, list[str]]:
    """The admin token and the MACs of ``count`` new ports, each with one
    address, as port_create would leave them."""
    import netaddr
    from django.db import connection, transaction

    from identity.services import token_create
    from networking import services
    from networking.models import IPAllocation, Network, Port, PortStatus

    token, raw = token_create(project_name=PROJECT, username=USERNAME, role="admin")
    project = token.membership.project
    network = Network.objects.create(project=project, name=PROJECT)
    subnet = services.subnet_create(project=project, network=network, cidr=CIDR)
    first = netaddr.IPAddress(subnet.allocation_pools[0]["start"])
    # Random distinct MACs under Neutron's prefix, as _free_mac makes them.
    macs = [benchdb.mac(n) for n in random.sample(range(2**24), count)]
    with transaction.atomic():
        for start in range(0, count, BATCH):
            ports = Port.objects.bulk_create(
                Port(
                    project=project,
                    network=network,
                    name=f"port-{i}",
                    mac_address=macs[i],
                    status=PortStatus.ACTIVE,
                    device_owner="compute:nova",
                )
                for i in range(start, min(start + BATCH, count))
            )
            IPAllocation.objects.bulk_create(
                IPAllocation(port=port, subnet=subnet, address=str(first + start + k))
                for k, port in enumerate(ports)
            )
    # Fresh statistics, as autovacuum would have them on a live database.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE networking_port, networking_ipallocation")
    return raw, macs


def user_delete() -> None:
    from django.contrib.auth import get_user_model

    get_user_model().objects.filter(username=USERNAME).delete()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int) -> None:
    """What `manage.py runserver --noreload` runs, with TCP_NODELAY on each
    connection. wsgiref sends the status line in a write of its own; Nagle
    then holds the rest of the answer until the client's delayed ACK, which
    adds 40 ms to every keep-alive request but the first."""
    benchdb.django_setup()
    from django.core.servers.basehttp import WSGIServer, get_internal_wsgi_application, run

    class NoDelayServer(WSGIServer):
        def get_request(self):
            conn, address = super().get_request()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return conn, address

    application = get_internal_wsgi_application()
    run("127.0.0.1", port, application, threading=True, server_cls=NoDelayServer)


def server_start(kind: str, log) -> tuple[subprocess.Popen, int]:
    port = free_port()
    if kind == "runserver":
        command = ["manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    else:
        command = [__file__, "--serve", str(port)]
    server = subprocess.Popen(
        [sys.executable, *command],
        cwd=benchdb.ROOT,
        env=os.environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return server, port


class Client:
    """One keep-alive connection; every answer must be a 200 that keeps it."""

    def __init__(self, port: int, token: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"X-Auth-Token": token, "Accept": "application/json"}

    def get(self, path: str) -> tuple[float, bytes]:
        start = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            sys.exit(f"GET {path}: {response.status} {body[:300]!r}")
        if response.getheader("Connection") == "close":
            sys.exit(f"GET {path}: the server closed the connection; timings would include TCP")
        return elapsed, body


def wait_ready(server: subprocess.Popen, port: int, token: str, log) -> Client:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            client = Client(port, token)
            client.get(FLOOR_PATH)
            return client
        except OSError:
            time.sleep(0.2)
    log.seek(0)
    sys.exit(f"the server did not come up:\n{log.read().decode()[-3000:]}")


def measure(client: Client, macs: list[str], requests: int, warmup: int) -> dict:
    def lookup(address):
        elapsed, body = client.get(f"{PREFIX}/ports?{urlencode({'mac_address': address})}")
        found = [p["mac_address"] for p in json.loads(body)["ports"]]
        if found != [address]:
            sys.exit(f"lookup of {address} found {found}")
        return elapsed

    for _ in range(warmup):
        lookup(random.choice(macs))
        client.get(FLOOR_PATH)
    times = {"lookup": [], "floor": []}
    # Alternate the two, so drift in the machine's load hits both alike.
    for _ in range(requests):
        times["lookup"].append(lookup(random.choice(macs)))
        times["floor"].append(client.get(FLOOR_PATH)[0])
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, default=100_000, help="default: 100000")
    parser.add_argument("--requests", type=int, default=2000, help="of each kind (default: 2000)")
    parser.add_argument("--warmup", type=int, default=100, help="of each kind (default: 100)")
    parser.add_argument(
        "--server",
        choices=["nodelay", "runserver"],
        default="nodelay",
        help="nodelay: runserver's server with TCP_NODELAY (default); runserver: the command",
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    if not 0 < args.ports <= MAX_PORTS:
        parser.error(f"--ports must be 1..{MAX_PORTS}: one address each in {CIDR}")
    load = os.getloadavg()[0]

    benchdb.database_prepare()
    from django.db import connection

    benchdb.project_delete(PROJECT)
    user_delete()
    server = None
    with tempfile.TemporaryFile() as log:
        try:
            started = time.monotonic()
            token, macs = setup(args.ports)
            print(f"created {args.ports} ports in {time.monotonic() - started:.0f} s")
            server, port = server_start(args.server, log)
            client = wait_ready(server, port, token, log)
            times = measure(client, macs, args.requests, args.warmup)
        finally:
            if server is not None:
                server.terminate()
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
            benchdb.project_delete(PROJECT)
            user_delete()

    p50 = {k: benchdb.percentile(v, 50) * 1000 for k, v in times.items()}
    p95 = {k: benchdb.percentile(v, 95) * 1000 for k, v in times.items()}
    ratio = p50["lookup"] / p50["floor"]
    print(
        f"port lookup by MAC among {args.ports} ports, {args.requests} requests each, "
        f"PostgreSQL {connection.pg_version // 10000}, {os.cpu_count()} CPUs, "
        f"load average {load:.1f} at start"
    )
    server_name = {
        "nodelay": "runserver's server with TCP_NODELAY",
        "runserver": "manage.py runserver --noreload",
    }[args.server]
    print(f"server: {server_name} (Django's development server, one thread per connection)")
    print(f"{'':48} {'p50 ms':>8} {'p95 ms':>8}")
    for key, label in (
        ("floor", f"floor   GET {FLOOR_PATH}"),
        ("lookup", f"lookup  GET {PREFIX}/ports?mac_address="),
    ):
        print(f"{label:48} {p50[key]:8.2f} {p95[key]:8.2f}")
    verdict = "MET" if ratio <= GOAL else "NOT MET"
    print(f"ratio p50 lookup/floor: {ratio:.2f} (goal <= {GOAL}): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
