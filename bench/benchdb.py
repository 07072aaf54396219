"""What both benchmarks share: the throwaway PostgreSQL database, Django
setup and percentiles. Imported by the scripts in this folder."""

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/berth_bench"


def database_url() -> str:
    """DATABASE_URL, or the default bench database; PostgreSQL only."""
    url = os.environ.setdefault("DATABASE_URL", DEFAULT_URL)
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(f"DATABASE_URL must name a PostgreSQL database, not {url!r}")
    # berth refuses a database server without SECRET_KEY; a benchmark's
    # throwaway database signs nothing anyone keeps. Spawned processes
    # inherit it.
    os.environ.setdefault("SECRET_KEY", "bench-only-not-secret")
    return url


def django_setup() -> None:
    """Django on the bench database; also what each spawned process runs."""
    database_url()
    # The scripts run as bench/<name>.py; the project's packages live one up.
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def database_prepare(*, fresh: bool = False) -> None:
    """Create the bench database if missing (dropped first if ``fresh``)
    and migrate it, then set up Django."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(database_url())
    name = params.pop("dbname")
    # The scripts write and delete rows, and migrate: keep them off real databases.
    if "bench" not in name:
        sys.exit(f"refusing to run on database {name!r}: its name must contain 'bench'")
    with psycopg.connect(**params, dbname="postgres", autocommit=True) as conn:
        if fresh:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    django_setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# Children before parents. Plain DELETEs, not the ORM's: its collector would
# load every port, and follows relations into other apps, whose tables may
# not be migrated yet while they are being written.
CLEANUP = [
    "DELETE FROM networking_ipallocation WHERE port_id IN "
    "(SELECT id FROM networking_port WHERE project_id = %(p)s)",
    "DELETE FROM networking_port WHERE project_id = %(p)s",
    "DELETE FROM networking_subnet WHERE project_id = %(p)s",
    "DELETE FROM networking_segment WHERE network_id IN "
    "(SELECT id FROM networking_network WHERE project_id = %(p)s)",
    "DELETE FROM networking_network WHERE project_id = %(p)s",
    "DELETE FROM identity_token WHERE membership_id IN "
    "(SELECT id FROM identity_membership WHERE project_id = %(p)s)",
    "DELETE FROM identity_membership WHERE project_id = %(p)s",
    "DELETE FROM identity_quota WHERE project_id = %(p)s",
    "DELETE FROM identity_project WHERE id = %(p)s",
]
# Hosts whose names match %(h)s and what their reports made, children first.
HOST_CLEANUP = [
    "DELETE FROM networking_hostphysnet WHERE agent_id IN "
    "(SELECT id FROM networking_hostagent WHERE host LIKE %(h)s)",
    "DELETE FROM networking_hostvnictype WHERE agent_id IN "
    "(SELECT id FROM networking_hostagent WHERE host LIKE %(h)s)",
    "DELETE FROM networking_hostagent WHERE host LIKE %(h)s",
    "DELETE FROM compute_host WHERE name LIKE %(h)s",
]


def project_delete(name: str) -> None:
    """Delete the project and every row the benchmarks give it, also those
    an interrupted run left behind."""
    from django.db import connection, transaction

    from identity.models import Project

    for project_id in Project.objects.filter(name=name).values_list("pk", flat=True):
        with transaction.atomic(), connection.cursor() as cursor:
            for statement in CLEANUP:
                cursor.execute(statement, {"p": project_id})


def vacuum_analyze(*tables: str) -> None:
    """VACUUM ANALYZE the ``tables`` (all of the database's if none): the
    dead rows of earlier runs gone and fresh statistics, so that the planner
    goes by what the run measures, not by what the last one left."""
    from django.db import connection

    with connection.cursor() as cursor:
        for table in tables or ("",):
            cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(table) if table else ''}")


def mac(number: int) -> str:
    """A MAC under Neutron's default prefix, lower case as ports store them."""
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in number.to_bytes(3, "big"))


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def worker_start(log, *, include: str = "", path: str = "") -> subprocess.Popen:
    """A Celery worker as operations run it (prefork, concurrency 2, serving
    the host queues), in its
    own session so that it and its pool processes can be ended together;
    ``include`` adds a module of tasks found on ``path``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--host-queues",
        "-c",
        "2",
        "-l",
        "warning",
        "-n",
        f"bench-{uuid.uuid4().hex[:8]}@%h",
        "--without-mingle",
        "--without-gossip",
    ]
    if include:
        command += ["--include", include]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def worker_wait_ready(proc: subprocess.Popen) -> None:
    from config.celery import app

    deadline = time.monotonic() + 60
    while not app.control.ping(timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit("the worker did not start")


def worker_stop(proc: subprocess.Popen) -> None:
    # SIGTERM is Celery's warm shutdown; whatever still runs after it is killed.
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, token: str, timeout: float = 60) -> None:
    """Wait until a server answers ``url`` with 200."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(url, headers={"X-Auth-Token": token}, timeout=5).status_code == 200:
                return
        if time.monotonic() > deadline:
            sys.exit(f"{url} did not answer")
        time.sleep(0.2)


def progress(description: str, total: int):
    """A progress bar on stderr while it is a terminal (the figures go to
    stdout, untouched): ``with progress(...) as advance: advance(done)``."""
    from config.progress import progress_bar

    @contextlib.contextmanager
    def bar():
        with progress_bar(sys.stderr) as shown:
            task = shown.add_task(description, total=total)
            yield lambda done: shown.update(task, completed=done)

    return bar()
