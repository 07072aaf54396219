"""Faults injected into real processes on PostgreSQL and Redis: workers
killed in the middle of each pipeline step, the broker lost and restarted
during a burst, database connections dropped mid-transaction, the database
gone under the API. Nothing accepted is lost: every build ends ACTIVE or
ERROR with a precise fault, and the invariants hold."""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from compute import pipeline
from compute.models import Host, Instance, InstanceActionEvent, TaskState
from networking.models import IPAllocation, Port
from tests.conftest import ROOT, Caller
from tests.reliability.conftest import (
    check_invariants,
    free_port,
    lock_waiters,
    pool_children,
    reap,
    run_python,
    settle,
    terminate_lock_waiters,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.worker]

BOOT = """
from compute import services
from compute.models import Flavor
from identity.auth import RequestContext
from identity.models import Project
from networking.models import Network
project = Project.objects.get(name="acme")
context = RequestContext(user_id="client", project=project, role="admin")
for n in range({requests}):
    services.server_create(context=context, name="{prefix}-%d" % n,
                           min_count={per_request}, max_count={per_request},
                           flavor=Flavor.objects.get(pk="small"),
                           nics=[services.NicRequest(network=Network.objects.get(name="routed"))])
"""

# How each step is held in its middle, after it locked its instance and
# began its work: another transaction holds a row the step needs next.
HOLD = {
    # port_create takes the project's row for the port quota
    TaskState.PREPARING_PORTS: "SELECT id FROM identity_project WHERE name = 'acme' FOR UPDATE",
    # the claim's UPDATE on the host row, after SKIP LOCKED found them all busy
    TaskState.SCHEDULING: "SELECT id FROM compute_host FOR UPDATE",
    # the address on the host's segment: the subnet row, FOR SHARE
    TaskState.BINDING: "SELECT id FROM networking_subnet FOR UPDATE",
}
# Every step of the pipeline's table, by its task state.
STEPS = [step.state for step in pipeline.PIPELINE]


def boot(env, count: int, prefix: str, per_request: int = 1) -> None:
    """``count`` servers, ``per_request`` in each request (as --min-count:
    the conductor takes a request's builds as one batch)."""
    requests = count // per_request
    run_python(BOOT.format(requests=requests, per_request=per_request, prefix=prefix), env)


def task_of(step: str) -> str:
    """The task that runs the step: the conductor, or spawn on the host."""
    return "spawn" if pipeline.STEPS[step].hop == pipeline.HOST else "conduct"


def received(worker, task: str) -> int:
    """Deliveries of compute.``task`` to the worker so far."""
    return len(re.findall(rf"Task compute\.{task}\[[0-9a-f-]+\] received", worker.log.read_text()))


def spawn_running(worker) -> bool:
    """A pool process is asleep in the fake driver's spawn delay. Where the
    kernel does not say what a process waits on, the delivery must do."""
    waits = []
    for pid in pool_children(worker):
        wait = ""
        with contextlib.suppress(OSError):
            wait = Path(f"/proc/{pid}/wchan").read_text().strip()
        waits.append(wait)
    hidden = bool(waits) and all(wait in ("", "0") for wait in waits)
    return "hrtimer_nanosleep" in waits or hidden


def held_in_step(conn, worker, step: str, deliveries: int):
    """Wait until the ``deliveries``-th delivery of the step's task is in
    the step's middle."""
    wait_for(lambda: received(worker, task_of(step)) >= deliveries, 60, f"{step} delivery")
    if step not in HOLD:  # spawn: the fake driver takes 2 s
        time.sleep(0.5)
        # Received is not running: after a kill, the pool's new process
        # may not have taken the spawn yet, and a kill then misses it.
        wait_for(lambda: spawn_running(worker), 30, f"{step} to run in a pool process")
        return
    try:
        wait_for(lambda: lock_waiters(conn) > 0, 60, f"{step} to wait on the held row")
    except AssertionError:
        rows = conn.execute(
            "SELECT pid, state, wait_event_type, wait_event, left(query, 120) "
            "FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()
        raise AssertionError(f"{rows}\n{worker.log.read_text()[-3000:]}") from None


def assert_built_once(instance: Instance) -> None:
    """One build's trace after the faults: ACTIVE on its first host, each
    step recorded once and successful, one port, one address."""
    assert instance.status == "ACTIVE", instance.fault
    assert instance.attempt == 1
    events = InstanceActionEvent.objects.filter(action__instance=instance)
    assert sorted(events.values_list("event", "result")) == sorted(
        (step.event, "Success") for step in pipeline.PIPELINE
    )
    assert Port.objects.filter(device_id=str(instance.pk)).count() == 1
    assert IPAllocation.objects.filter(port__device_id=str(instance.pk)).count() == 1


@pytest.mark.parametrize("step", STEPS)
def test_pool_process_killed_in_each_step_twice(outside, cloud, env, workers, step):
    """SIGKILL the pool process running the step, twice: the message is
    redelivered (acks late, reject on worker lost) and the step, run again
    from its start, does its work once."""
    if step == TaskState.SPAWNING:
        Host.objects.update(driver_options={"spawn_delay": 2})
    boot(env, 1, "kill")  # queued: no worker yet
    conn = outside
    if step in HOLD:
        conn.execute(HOLD[step])
    worker = workers()
    for kill in (1, 2):
        held_in_step(conn, worker, step, deliveries=kill)
        for child in pool_children(worker):
            os.kill(child, signal.SIGKILL)
        # The killed process's connection may still wait on the held row.
        terminate_lock_waiters(conn)
    if step == TaskState.SPAWNING:
        Host.objects.update(driver_options={})
    conn.rollback()
    settle(env)
    assert_built_once(Instance.objects.get())
    assert received(worker, task_of(step)) >= 3
    print(check_invariants())


@pytest.mark.parametrize(
    "step", [s.state for s in pipeline.PIPELINE if s.hop == pipeline.CONDUCTOR]
)
@pytest.mark.parametrize("per_request", [4, 1])
def test_pool_process_killed_in_a_batchs_steps(outside, cloud, env, workers, step, per_request):
    """Four servers conducted as one batch (one request's, or four
    one-server requests the first one's message takes along): SIGKILL the
    pool processes in the middle of the batch's step. The message killed is
    redelivered, takes along again what waits for the first step, and its
    builds go on from where they are; builds taken along and left further
    on are resumed by the reaper. Each is built once, on its first attempt."""
    boot(env, 4, "batch", per_request=per_request)
    assert Instance.objects.count() == 4
    conn = outside
    conn.execute(HOLD[step])
    worker = workers()
    held_in_step(conn, worker, step, deliveries=1)
    for child in pool_children(worker):
        os.kill(child, signal.SIGKILL)
    terminate_lock_waiters(conn)
    conn.rollback()
    settle(env)
    for instance in Instance.objects.all():
        assert_built_once(instance)
    assert received(worker, "conduct") >= 2
    print(check_invariants())


@pytest.mark.parametrize("step", STEPS)
def test_whole_worker_killed_in_each_step(outside, cloud, env, workers, step):
    """SIGKILL the worker with its pool in the middle of the step: its
    message stays unacknowledged, and the reaper resumes the step once its
    deadline passed, on a new worker."""
    if step == TaskState.SPAWNING:
        Host.objects.update(driver_options={"spawn_delay": 2})
    boot(env, 1, "killall")
    conn = outside
    if step in HOLD:
        conn.execute(HOLD[step])
    worker = workers()
    held_in_step(conn, worker, step, deliveries=1)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    terminate_lock_waiters(conn)
    conn.rollback()
    Host.objects.update(driver_options={})
    workers()
    settle(env)
    instance = Instance.objects.get()
    assert instance.resumes >= 1, "the reaper resumed it"
    assert_built_once(instance)
    print(check_invariants())


def test_database_connections_dropped_mid_transaction(outside, cloud, env, workers):
    """Every connection of the workers is terminated by the server, again
    and again, while builds run: transactions are rolled back, tasks retry
    or the reaper resumes them, and every build settles once."""
    boot(env, 20, "drop")
    workers()
    conn = outside
    conn.autocommit = True
    dropped = 0
    deadline = time.monotonic() + 60
    # Every 0.1 s, each worker connection that is inside a statement or a
    # transaction, until 15 were dropped or the builds are through.
    while dropped < 15 and time.monotonic() < deadline:
        if not Instance.objects.filter(task_state__isnull=False).exists():
            break
        dropped += len(
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND state IN ('active', 'idle in transaction') "
                "AND query NOT LIKE '%pg_stat_activity%'"
            ).fetchall()
        )
        time.sleep(0.1)
    assert dropped > 0, "no connection was caught mid-transaction"
    settle(env, timeout=180)
    counts = check_invariants()
    assert counts["instances"] == 20
    print({"connections dropped": dropped, **counts})


class Proxy:
    """A TCP proxy to PostgreSQL that can be cut: the API behind it sees
    its database go away (connections reset, new ones refused)."""

    def __init__(self, target_port: int):
        self.port = free_port()
        self.target = target_port
        self.sockets = []
        self.listener = None

    def start(self):
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass

    def cut(self):
        # shutdown() wakes the threads blocked in accept() and recv();
        # close() alone would leave them serving.
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.sockets = []


def test_api_answers_503_while_the_database_is_down(transactional_db, cloud, env):
    """The API's database goes away: requests get a clear 503 in the API's
    error format and nothing is written; when it is back, the API is too."""
    import requests
    from django.conf import settings

    admin = Caller("acme", "admin", username="api-admin")
    db = settings.DATABASES["default"]
    proxy = Proxy(int(db["PORT"] or 5432))
    proxy.start()
    port = free_port()
    url = f"postgres://{db['USER']}@127.0.0.1:{proxy.port}/{db['NAME']}"
    api = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        # The scenario's own broker: no worker of another test builds what
        # this API accepts.
        env={**env, "DATABASE_URL": url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/compute/v2.1"
    headers = {"X-Auth-Token": admin.token}
    network = str(cloud.network.pk)
    fault_message = "The service is temporarily unavailable; retry later."
    body = {"server": {"name": "while-down", "flavorRef": "small", "networks": [{"uuid": network}]}}
    try:
        wait_for(lambda: _answers(base, headers), 30, "the API")
        proxy.cut()
        for _ in range(3):
            answer = requests.post(f"{base}/servers", json=body, headers=headers, timeout=30)
            assert answer.status_code == 503, answer.text
            fault = answer.json()
            assert fault == {"serviceUnavailable": {"code": 503, "message": fault_message}}
            listing = requests.get(f"{base}/servers", headers=headers, timeout=30)
            assert listing.status_code == 503
        assert not Instance.objects.filter(name="while-down").exists()
        proxy.start()
        answer = requests.post(f"{base}/servers", json=body, headers=headers, timeout=30)
        assert answer.status_code == 202, answer.text
        assert Instance.objects.filter(name="while-down").count() == 1
    finally:
        api.terminate()
        api.wait(timeout=20)
        proxy.cut()


def _answers(base, headers) -> bool:
    import requests

    try:
        return requests.get(base, headers=headers, timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def test_reaper_leaves_a_running_spawn_alone(transactional_db, cloud, env, workers):
    """A spawn's deadline counts from its start and outlasts its task's
    hard time limit: past the 3 s that other steps get, the reaper does
    not resume a spawn whose driver is still at work."""
    Host.objects.update(driver_options={"spawn_delay": 5})
    boot(env, 1, "slow")
    worker = workers()
    wait_for(lambda: received(worker, "spawn") >= 1, 60, "spawn")
    time.sleep(3.5)
    assert reap(env) == 0
    settle(env)
    instance = Instance.objects.get()
    assert instance.resumes == 0
    assert_built_once(instance)


def test_a_hung_spawn_is_killed_at_its_limit_then_resumed(transactional_db, cloud, env, workers):
    """A driver that never returns is stopped at the spawn task's time limit
    (1 s before its 12 s deadline), then the reaper resumes the step; one
    run spawns."""
    Host.objects.update(driver_options={"spawn_delay": 600})
    boot(env, 1, "hung")
    worker = workers()
    wait_for(lambda: "SoftTimeLimitExceeded" in worker.log.read_text(), 30, "the stop")
    Host.objects.update(driver_options={})
    settle(env)
    instance = Instance.objects.get()
    assert instance.resumes == 1
    assert_built_once(instance)
    print(check_invariants())


def test_builds_waiting_their_turn_are_not_resumed(transactional_db, cloud, env, workers):
    """Steps overdue only because their messages wait in the build queue
    are left to them; once those messages are lost, they are resumed."""
    boot(env, 3, "queued")  # no worker yet: three messages wait
    time.sleep(3.2)  # every first step past its 3 s deadline
    assert reap(env) == 0
    run_python(
        "from celery import current_app\n"
        "with current_app.connection_for_write() as c:\n"
        "    print(current_app.amqp.queues['build'](c.default_channel).purge())",
        env,
    )
    assert reap(env) == 3
    workers()
    settle(env)
    for instance in Instance.objects.all():
        assert instance.resumes == 1
        assert_built_once(instance)


SWEEPER = """
import time
from reservations import events
end = time.monotonic() + float({seconds})
while time.monotonic() < end:
    events.sweep()
    time.sleep(0.2)
"""


def test_beat_killed_beside_a_second_sweeper(
    transactional_db, pool, env, workers, processes, tmp_path
):
    """Lease events fall due over 10 s while beat (through the worker) and a
    second sweeper process both fire them; beat is killed and restarted in
    the middle. Every event fires exactly once, in order."""
    from django.utils import timezone

    from reservations import services
    from reservations.models import EventStatus, LeaseEvent, Notification

    start = timezone.now() + timedelta(seconds=3)
    for window in range(5):
        for host in range(4):
            begin = start + timedelta(seconds=2 * window)
            services.lease_create(
                context=pool,
                request=services.LeaseRequest(
                    name=f"w{window}-{host}",
                    start=begin,
                    end=begin + timedelta(seconds=2),
                    reservations=[services.HostRequest(min=1, max=1)],
                ),
            )
    workers()
    beat_command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "beat",
        "-l",
        "warning",
        "-s",
        str(tmp_path / "beat-schedule"),
    ]

    def beat_start():
        return processes(argv=beat_command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    sweeper = processes(SWEEPER.format(seconds=16))
    beat = beat_start()
    time.sleep(5)
    beat.send_signal(signal.SIGKILL)
    beat.wait()
    time.sleep(2)
    beat = beat_start()
    try:
        assert sweeper.wait(timeout=60) == 0
        wait_for(
            lambda: not LeaseEvent.objects.exclude(status=EventStatus.DONE).exists(),
            30,
            "every event to fire",
        )
    finally:
        beat.terminate()
        try:
            beat.wait(timeout=20)
        except subprocess.TimeoutExpired:
            # A slow shutdown under load is not what this test is about
            # (seen once with the whole suite on 2 CPUs); each event fired
            # once is, below.
            beat.kill()
            beat.wait()
    events = LeaseEvent.objects.count()
    fired = list(
        Notification.objects.filter(event_type__startswith="lease.event.").values_list(
            "payload__event_id", flat=True
        )
    )
    # Heads-up, start and end of each of the 20 leases (too short for a
    # before-end event), each fired once.
    assert len(fired) == len(set(fired)) == events == 20 * 3
    for lease_events in _events_by_lease():
        assert lease_events == sorted(lease_events), "fired in order"
    print({"events": events, "fired": len(fired), "beats killed": 1, "sweepers": 2})


def _events_by_lease():
    from reservations.models import LeaseEvent

    by_lease = {}
    for lease, fired_at, time_, rank in LeaseEvent.objects.values_list(
        "lease", "fired_at", "time", "rank"
    ):
        by_lease.setdefault(lease, []).append((fired_at, (time_, rank)))
    return [[key for _, key in sorted(rows)] for rows in by_lease.values()]
