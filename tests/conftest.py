import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from celery.utils.nodenames import host_format
from django.conf import settings
from rest_framework.test import APIClient

from identity.services import token_create

ROOT = Path(__file__).resolve().parent.parent


def _has_libvirt() -> bool:
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL (see README)")
    needs_libvirt = pytest.mark.skip(reason="needs libvirt-python: pip install -e '.[libvirt]'")
    # CI sets BERTH_REQUIRE_LIBVIRT=1: there a missing binding fails the tests.
    skip_libvirt = os.environ.get("BERTH_REQUIRE_LIBVIRT") != "1" and not _has_libvirt()
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(skip)
        if skip_libvirt and item.get_closest_marker("libvirt"):
            item.add_marker(needs_libvirt)


@pytest.fixture(scope="session", autouse=True)
def _release_test_database(django_db_setup, django_db_blocker):
    """Close what other threads and processes left connected to the test
    database (live-server threads keep theirs), so it can be dropped."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True)
def _no_conductor_on_its_way():
    """The flag a request of the test before set (a conductor's message on
    its way, compute.tasks.send_new) is not about this test's builds: left
    set, it would hold back their message."""
    from django.core.cache import cache

    from compute.tasks import WAKE_FLAG

    cache.delete(WAKE_FLAG)


class Caller:
    """An API client holding a token for one role in one project."""

    def __init__(self, project_name: str, role: str, username: str | None = None):
        token, raw = token_create(
            project_name=project_name, username=username or f"{role}-{project_name}", role=role
        )
        self.project = token.membership.project
        self.token = raw
        self.client = APIClient()
        self.client.credentials(HTTP_X_AUTH_TOKEN=raw)

    def get(self, url, **params):
        return self.client.get(url, params)

    def post(self, url, body):
        return self.client.post(url, body, format="json")

    def put(self, url, body):
        return self.client.put(url, body, format="json")

    def delete(self, url):
        return self.client.delete(url)


def sdk_connection(base: str, token: str | None):
    """openstacksdk as openstack_wire.md sets it up: admin_token, or the
    none plugin (which sends X-Auth-Token: notused) when token is None."""
    import openstack

    auth = {"auth_type": "admin_token", "auth": {"endpoint": base, "token": token}}
    if token is None:
        auth = {"auth_type": "none", "auth": {"endpoint": base}}
    return openstack.connect(
        **auth,
        network_endpoint_override=base + "/networking",
        compute_endpoint_override=base + "/compute/v2.1",
        load_yaml_config=False,
        load_envvars=False,
        api_timeout=30,
    )


@pytest.fixture
def caller(db):
    """caller(project, role) -> Caller"""
    return lambda project="alpha", role="member": Caller(project, role)


@pytest.fixture
def admin(caller):
    return caller("admin-project", "admin")


@pytest.fixture
def noauth(settings):
    settings.BERTH_AUTH_MODE = "noauth"


def db_url_for_processes() -> str:
    """A URL for the test database that pytest-django created."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def process_env(**extra) -> dict:
    env = dict(os.environ)
    env["DATABASE_URL"] = db_url_for_processes()
    env["PYTHONUNBUFFERED"] = "1"
    # Workers outlive the hosts of one test: they find a new host's queue
    # within half a second, not production's five.
    env["BERTH_HOST_QUEUE_SYNC"] = "0.5"
    env.update(extra)
    return env


def worker_start(
    log: Path, env: dict, options: tuple = ("--host-queues", "-c", "2")
) -> subprocess.Popen:
    """A real Celery worker process with ``env`` and worker ``options``
    (default: every queue and every host's, prefork, 2 children), ready; its output goes to
    ``log`` (``proc.log``). Its own process group, so a test can kill it
    with its pool children."""
    name = f"test-{uuid.uuid4().hex[:8]}@%h"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                *options,
                "-l",
                "info",
                "-n",
                name,
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ready_wait(proc, log, "worker")
    proc.node = host_format(name)  # the name remote control commands go to
    return proc


def ready_wait(proc: subprocess.Popen, log: Path, what: str) -> None:
    """Until a Celery worker process logs that it is ready; fails the test
    with its log if it exits or takes over a minute."""
    deadline = time.monotonic() + 60
    while b" ready." not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    proc.log = log


def wait_for(condition, timeout: float = 60, what: str = "condition"):
    """What ``condition`` returns once it is true, polled every 0.1 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# A database URL on a closed port: a process given it fails if it touches a
# database.
NO_DATABASE = "postgres://nobody@127.0.0.1:9/none"


def agent_start(log: Path, name: str, *options: str, env: dict | None = None) -> subprocess.Popen:
    """`manage.py agent NAME OPTIONS...` as an operator runs it on a host,
    ready (its report sent), logging to ``log``. Its database URL names a
    closed port: an agent that touched a database would fail."""
    env = process_env(DATABASE_URL=NO_DATABASE, **(env or {}))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "agent", name, *options, "--loglevel", "info"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ready_wait(proc, log, f"agent {name}")
    return proc


def worker_stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def beat_start(log: Path, env: dict | None = None) -> subprocess.Popen:
    """`celery -A config beat` as an operator runs it, logging to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "beat", "-l", "info"],
            cwd=ROOT,
            env=env or process_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def beat_stop(beat: subprocess.Popen) -> None:
    beat.send_signal(signal.SIGTERM)
    try:
        beat.wait(timeout=20)
    except subprocess.TimeoutExpired:
        beat.kill()
        beat.wait()


@pytest.fixture(scope="session")
def worker(django_db_setup, django_db_blocker, tmp_path_factory):
    """Real Celery workers on the test database and the configured broker,
    as a deployment runs them (config.celery.WORKER_POOLS): the build
    worker, which this returns, and the notify worker beside it."""
    from config.celery import WORKER_POOLS, app

    with django_db_blocker.unblock():
        app.control.purge()
    logs = tmp_path_factory.mktemp("worker")
    procs = [
        worker_start(logs / f"{name.replace(' ', '-')}.log", process_env(), options)
        for name, options in WORKER_POOLS.items()
    ]
    yield procs[0]
    for proc in procs:
        worker_stop(proc)
