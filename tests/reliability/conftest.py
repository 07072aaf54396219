"""What the reliability scenarios share: a Redis of their own (so a test
may kill it), workers and client processes on it, SQL from outside Django
(to hold locks the way another transaction would), and the invariants
every scenario ends by checking."""

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from django.db.models import Count, Sum

from tests.compute.conftest import cloud  # noqa: F401 (the scenarios' clouds)
from tests.conftest import ROOT, db_url_for_processes, process_env, worker_start, worker_stop
from tests.reservations.conftest import pool, trickler  # noqa: F401

REDIS_SERVER = shutil.which("redis-server")
# Client processes set Django up, then run the scenario's code.
SETUP = "import django; django.setup()\n"
# Words a precise fault names (seed 000): never a bare "No valid host".
PRECISE = ("no host", "binding failed", "spawn failed", "preparing ports failed", "did not finish")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server process on a free port, keeping nothing on disk, like
    the broker in production after a restart without persistence."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.answers, 10, "redis-server to start")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def redis_server(tmp_path):
    # Redis is part of the production path these scenarios run on; a missing
    # server is a broken set-up, not a reason to prove nothing.
    assert REDIS_SERVER, "the fault scenarios start their own redis-server: put it on PATH"
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def env(redis_server):
    """The environment of every process of a scenario: the test database,
    the scenario's own broker, and steps that overrun after 3 s, a spawn
    12 s after it started (so the reaper's work is seen within the test)."""
    return process_env(
        CELERY_BROKER_URL=redis_server.url,
        BERTH_STEP_DEADLINE="3",
        BERTH_SPAWN_DEADLINE="12",
        BERTH_REAPER_MAX_RESUMES="50",
    )


@pytest.fixture
def workers(env, tmp_path):
    """start(*options, **overrides) -> a real worker on the scenario's
    broker (by default on every queue and every host's), with ``overrides``
    of the scenario's environment; all stopped at the end."""
    started = []

    def start(*options, **overrides):
        log = tmp_path / f"worker-{len(started)}.log"
        proc = worker_start(log, {**env, **overrides}, *([options] if options else []))
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            worker_stop(proc)


@pytest.fixture
def processes(env):
    """start(code) -> a Django process running ``code``, or start(argv=[...])
    for another command; all killed at the end, so a failed test leaves
    none at work on the next test's rows."""
    started = []

    def start(code: str = "", *, argv: list | None = None, **popen):
        command = argv or [sys.executable, "-c", SETUP + code]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, **popen)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_python(code: str, env: dict, timeout: float = 120) -> str:
    """Run ``code`` in a fresh Django process; its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", SETUP + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def reap(env: dict) -> int:
    """One run of the reaper, as beat would start it."""
    out = run_python("from compute.tasks import reap_stuck_builds; print(reap_stuck_builds())", env)
    return int(out.split()[-1])


@pytest.fixture
def outside(transactional_db):
    """A connection of its own to the test database: another transaction.
    Closed before the database is emptied, so a lock it holds when a test
    fails cannot block the teardown."""
    conn = psycopg.connect(db_url_for_processes())
    yield conn
    conn.close()


def terminate_lock_waiters(conn: psycopg.Connection) -> int:
    """Drop the connections stuck waiting for a lock: those a killed
    process left behind (and any live one, which must then retry)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock' "
        "AND pid <> pg_backend_pid()"
    ).fetchall()
    return len(rows)


def lock_waiters(conn: psycopg.Connection) -> int:
    # Activity is read once per transaction unless the snapshot is cleared,
    # and this connection may be holding a lock in a long transaction.
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"
    ).fetchone()[0]


def pool_children(proc: subprocess.Popen) -> list[int]:
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def settle(env: dict, timeout: float = 120) -> None:
    """Wait until no build is left in flight, running the reaper (as beat
    does) for the ones whose step overran its deadline."""
    from compute.models import Instance

    deadline = time.monotonic() + timeout
    while Instance.objects.filter(task_state__isnull=False).exists():
        if time.monotonic() > deadline:
            stuck = list(
                Instance.objects.filter(task_state__isnull=False).values("name", "task_state")
            )
            raise AssertionError(f"builds still in flight: {stuck}")
        time.sleep(1)
        if Instance.objects.filter(task_state__isnull=False, step_deadline__lt=_now()).exists():
            reap(env)


def _now():
    from django.utils import timezone

    return timezone.now()


def check_invariants() -> dict:
    """Every invariant berth promises about builds, checked in the database;
    returns the counts it looked at. Fails listing every violation."""
    from compute.models import Host, Instance, InstanceNic
    from networking.models import IPAllocation, Port

    violations = []
    instances = list(Instance.objects.all())
    states = Counter(i.status for i in instances)
    for instance in instances:
        if instance.status not in ("ACTIVE", "ERROR", "DELETED"):
            violations.append(f"{instance.name} ended {instance.status}/{instance.task_state}")
        if instance.status == "ERROR":
            message = (instance.fault or {}).get("message", "")
            if not any(word in message for word in PRECISE):
                violations.append(f"{instance.name} fault is not precise: {message!r}")
    claimed = {
        row["claimed_host"]: row
        for row in Instance.objects.filter(claimed_host__isnull=False)
        .values("claimed_host")
        .annotate(vcpus=Sum("vcpus"), ram=Sum("memory_mb"), n=Count("id"))
    }
    for host in Host.objects.all():
        mine = claimed.get(host.pk, {"vcpus": 0, "ram": 0, "n": 0})
        used = (host.vcpus_used, host.memory_mb_used, host.running_instances)
        if used != (mine["vcpus"], mine["ram"], mine["n"]):
            violations.append(f"{host.name} usage {used} != its claims {mine}")
        if host.memory_mb_used > host.memory_mb * host.ram_allocation_ratio:
            violations.append(f"{host.name} RAM over-committed")
        if host.vcpus_used > host.vcpus * host.cpu_allocation_ratio:
            violations.append(f"{host.name} vCPUs over-committed")
    addresses = list(IPAllocation.objects.values_list("subnet_id", "address"))
    if len(addresses) != len(set(addresses)):
        violations.append("duplicate IP addresses")
    macs = list(Port.objects.values_list("network_id", "mac_address"))
    if len(macs) != len(set(macs)):
        violations.append("duplicate MAC addresses")
    live = {str(i.pk) for i in instances if i.status == "ACTIVE"}
    for port in Port.objects.filter(device_owner="compute:nova"):
        if port.device_id not in live:
            violations.append(f"orphan port {port.pk} of {port.device_id} ({port.status})")
    in_use = set(
        InstanceNic.objects.filter(instance__status="ACTIVE").values_list("port", flat=True)
    )
    if in_use != {p.pk for p in Port.objects.filter(device_owner="compute:nova")}:
        violations.append("ports of ACTIVE instances and compute's ports differ")
    assert not violations, "\n".join(violations)
    return {
        "instances": len(instances),
        **{status.lower(): n for status, n in states.items()},
        "ports": len(macs),
        "addresses": len(addresses),
        "hosts": Host.objects.count(),
    }
