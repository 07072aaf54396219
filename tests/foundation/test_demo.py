"""The README's demo command, on the embedded default (SQLite + filesystem
broker, nothing installed), with real API, worker and beat processes."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from blazarclient import client as blazar_client
from blazarclient import exception as blazar_exception
from keystoneauth1 import session, token_endpoint

from console import demo as demo_module
from tests.conftest import ROOT, sdk_connection


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo running on the embedded default; yields (base URL, token)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")
    }
    data = tmp_path_factory.mktemp("demo") / "data"
    env.update(BERTH_DATA_DIR=str(data), PYTHONUNBUFFERED="1")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, deadline = [], time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        output.append(line)
        if line.startswith("token (admin of project"):
            token = proc.stdout.readline().strip()
            break
    else:
        token = None
    if not output or not output[-1].startswith("token"):
        proc.kill()
        pytest.fail("demo did not come up:\n" + "".join(output))
    yield f"http://127.0.0.1:{port}", token, "".join(output)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert (data / "berth.sqlite3").exists()


def test_demo_serves_the_apis_to_the_real_clients(demo):
    base, token, output = demo
    assert "worker: ok" in output
    assert f"{base}/admin/" in output
    conn = sdk_connection(base, token)
    net = conn.network.create_network(name="from-sdk")
    assert conn.network.get_network(net.id).name == "from-sdk"
    assert conn.compute.get_endpoint_data().max_microversion == (2, 1)

    bz = blazar_client.Client(
        version="1",
        session=session.Session(auth=token_endpoint.Token(base, token)),
        endpoint_override=base + "/reservation/v1",
    )
    with pytest.raises(blazar_exception.BlazarClientException) as raised:
        bz.lease.get("00000000-0000-0000-0000-000000000000")
    assert raised.value.kwargs["code"] == 404


def test_demo_admin_console_login_page(demo):
    import urllib.request

    base, _, _ = demo
    with urllib.request.urlopen(base + "/admin/login/") as response:
        assert response.status == 200
        assert b"berth administration" in response.read()


def test_demo_checks_beat_and_times_each_server(demo):
    """Beat fired the lease's events with nothing installed but `migrate`,
    and the summary says how long each server took to go ACTIVE."""
    _, _, output = demo
    assert "periodic: berth: fire due lease events: ok" in output
    timed = re.findall(r"^\s*(\S+)\s+ACTIVE\s.*\s\d+\.\d s$", output, re.MULTILINE)
    assert sorted(timed) == sorted([*demo_module.DEMO_SERVERS, "leased-1", "failover-1"])


def test_demo_runs_an_agent_per_host_and_fails_a_build_over(demo):
    """Each host is served by its own agent process (libvirt's test driver
    where libvirt-python is installed); the demo stops one agent, and the
    build sent to its host is rebuilt elsewhere on the same port."""
    _, _, output = demo
    driver = "libvirt" if demo_module.libvirt_available() else "fake"
    for name in demo_module.DEMO_HOSTS:
        expected = "fake" if name == "compute-3" else driver
        assert re.search(rf"^\s*{name}\s+up\s+{expected} \(agent\)", output, re.MULTILINE)
    story = re.search(
        r"failover-1 was sent to compute-4, which went down; it was rebuilt on "
        r"(compute-\d) with the same port \(ACTIVE, attempt 2\)",
        output,
    )
    assert story and story.group(1) != "compute-4"
    assert re.search(
        rf"^\s*failover-1\s+ACTIVE\s+running\s+{story.group(1)}\s", output, re.MULTILINE
    )


def test_demo_prints_a_keystone_user_every_client_signs_in_with(demo, tmp_path):
    """The OS_* lines the demo prints (an auth_url, a user, a password and
    a project; no endpoint) are all the openstack CLI and python-blazarclient's
    own shell need."""
    _, _, output = demo
    printed = {}
    for key, value in re.findall(r"^\s*export (OS_\w+)=(\S+)$", output, re.MULTILINE):
        printed.setdefault(key, value)  # the user's lines come before the token's
    assert printed["OS_AUTH_URL"].endswith("/identity")
    keystone = ("AUTH_URL", "AUTH_TYPE", "USERNAME", "PASSWORD", "PROJECT_NAME", "USER_DOMAIN_NAME")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update({f"OS_{key}": printed[f"OS_{key}"] for key in keystone}, HOME=str(tmp_path))
    env["OS_PROJECT_DOMAIN_NAME"] = printed["OS_PROJECT_DOMAIN_NAME"]

    def run(client: str, *command: str) -> list[dict]:
        done = subprocess.run(
            [str(Path(sys.executable).parent / client), *command, "-f", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    names = {server["Name"] for server in run("openstack", "server", "list")}
    assert {*demo_module.DEMO_SERVERS, "leased-1", "failover-1"} <= names
    assert [lease["name"] for lease in run("blazar", "lease-list")] == [demo_module.DEMO_LEASE]
