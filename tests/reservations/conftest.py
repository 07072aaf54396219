import http.server
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from reservations import services
from tests.conftest import Caller
from tests.factories import ContextFactory, HostFactory

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def pool(db):
    """Hosts r1..r4 reported (physnet1) and reservable; r1, r2 are
    node_type=compute with 4/8 gpus... r3, r4 node_type=storage. A project
    "lab" with an admin context."""
    caps = {
        "r1": {"node_type": "compute", "gpus": 4},
        "r2": {"node_type": "compute", "gpus": 8},
        "r3": {"node_type": "storage", "gpus": 0},
        "r4": {"node_type": "storage", "gpus": "none"},
    }
    for name, capabilities in caps.items():
        HostFactory(
            name=name, vcpus=16, memory_mb=32768, reservable=True, extra_capabilities=capabilities
        )
    return ContextFactory(user_id="u", project__name="lab")


@pytest.fixture
def lab_member(pool):
    return Caller("lab", "member", username="lab-member")


@pytest.fixture
def ops(pool):
    return Caller("ops", "admin", username="operator")


def host_lease(context, name="l1", start=1, end=2, min=1, max=1, props="", **kwargs):
    request = services.LeaseRequest(
        name=name,
        start=at(start),
        end=at(end),
        reservations=[services.HostRequest(min=min, max=max, resource_properties=props)],
        **kwargs,
    )
    return services.lease_create(context=context, request=request, now=T0)


def hosts_of(lease) -> list[str]:
    from reservations.models import HostAllocation

    return sorted(
        HostAllocation.objects.filter(reservation__lease=lease).values_list("host__name", flat=True)
    )


def heartbeat_all() -> None:
    """Every host reports again (now, as time-machine has it)."""
    from compute import services as compute
    from compute.models import Host

    for host in Host.objects.all():
        compute.host_report(
            report=compute.HostReport(
                name=host.name, vcpus=host.vcpus, memory_mb=host.memory_mb, disk_gb=host.disk_gb
            )
        )


class Trickler:
    """A receiver that answers with a status line, then one header line each
    second, never ending its answer: no single read of berth's waits long,
    so only a deadline on the whole answer stops it."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held: list[float] = []  # seconds each connection was held open
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.trickle, args=(connection,), daemon=True).start()

    def trickle(self, connection):
        opened = time.monotonic()
        with connection:
            try:
                connection.sendall(b"HTTP/1.1 200 OK\r\n")
                connection.settimeout(1)
                lines = 0
                while lines < 120:
                    try:
                        if not connection.recv(65536):  # berth hung up
                            break
                    except TimeoutError:  # a second without a byte: the next line
                        connection.sendall(b"X-Slow-%d: 1\r\n" % lines)
                        lines += 1
            except OSError:  # berth hung up
                pass
        self.held.append(time.monotonic() - opened)


@pytest.fixture
def trickler():
    trickler = Trickler()
    yield trickler
    trickler.server.close()


class Receiver(http.server.BaseHTTPRequestHandler):
    answers: list[int] = []
    received: list[tuple[dict, bytes]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(Receiver.answers.pop(0) if Receiver.answers else 204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def listener():
    """The port of a Receiver on loopback (never 80 or 443)."""
    Receiver.answers, Receiver.received = [], []
    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()


@pytest.fixture
def receiver(settings, listener):
    settings.BERTH_WEBHOOK_ALLOWED = [f"127.0.0.1/32:{listener}"]
    settings.BERTH_WEBHOOK_MAX_ATTEMPTS = 3
    return f"http://127.0.0.1:{listener}/hook"
