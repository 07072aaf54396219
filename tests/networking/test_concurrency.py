"""Concurrent allocators in separate processes on PostgreSQL: no address is
handed out twice and exhaustion is reported, never a duplicate or a 500."""

import subprocess
import sys

import pytest

from identity.auth import RequestContext
from identity.models import Project
from networking import services
from networking.models import IPAllocation, Port, Segment
from tests.conftest import ROOT, process_env

ALLOCATE = """
import sys
import django; django.setup()
from config.errors import Conflict
from networking.models import Network
from networking.services import port_create
network = Network.objects.get(name="contended")
made = exhausted = 0
for _ in range(int(sys.argv[1])):
    try:
        port_create(project=network.project, network=network)
        made += 1
    except Conflict as error:
        assert error.type == "IpAddressGenerationFailure", error.type
        exhausted += 1
print(made, exhausted)
"""


@pytest.mark.postgres
def test_concurrent_processes_never_allocate_an_address_twice(transactional_db):
    project = Project.objects.create(name="p")
    context = RequestContext(user_id="u", project=project, role="admin")
    network = services.network_create(context=context, project=project, name="contended")
    pool = [{"start": "10.30.0.10", "end": "10.30.0.49"}]  # 40 addresses
    services.subnet_create(
        project=project, network=network, cidr="10.30.0.0/24", allocation_pools=pool
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ALLOCATE, "15"],
            cwd=ROOT,
            env=process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    made = sum(int(out.split()[0]) for out, _ in results)
    exhausted = sum(int(out.split()[1]) for out, _ in results)
    addresses = list(IPAllocation.objects.values_list("address", flat=True))
    assert (made, exhausted) == (40, 20)
    assert len(addresses) == len(set(addresses)) == 40
    # A port whose address could not be allocated was not left behind.
    assert Port.objects.count() == 40


CREATE_NETWORK = """
import sys
import django; django.setup()
from identity.auth import RequestContext
from config.errors import Conflict
from identity.models import Project
from networking.services import network_create
context = RequestContext(user_id="u", project=Project.objects.get(name=sys.argv[1]), role="member")
print("ready", flush=True)
sys.stdin.readline()
try:
    network = network_create(context=context, project=context.project, name=sys.argv[1])
    print(network.segments.get().segmentation_id)
except Conflict as error:
    print(error.type)
"""


def started_together(script: str, args: list[str]) -> list[str]:
    """Run ``script`` once per argument in its own process; each prints
    "ready" when set up, and all are let go at once. Their last lines."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, arg],
            cwd=ROOT,
            env=process_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for arg in args
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    return [out.split()[-1] for out, _ in results]


@pytest.mark.postgres
def test_concurrent_network_creates_each_get_their_own_vni(transactional_db):
    # One project each: creates in one project queue on its row (the quota
    # lock), which would hide the race on the VNI.
    names = [f"p{n}" for n in range(16)]
    for name in names:
        Project.objects.create(name=name)
    vnis = started_together(CREATE_NETWORK, names)
    assert all(v.isdigit() for v in vnis), vnis
    assert len(set(vnis)) == 16
    assert sorted(Segment.objects.values_list("segmentation_id", flat=True)) == sorted(
        int(v) for v in vnis
    )
