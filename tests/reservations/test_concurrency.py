"""Real concurrent processes on PostgreSQL: no double booking, and two
sweepers never fire an event twice."""

import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from compute.models import Host
from identity.quotas import quota_set
from reservations import events, services
from reservations.models import EventStatus, HostAllocation, Lease, LeaseEvent, Notification
from tests.conftest import ROOT, process_env
from tests.reservations.conftest import host_lease

BOOK = """
import sys
from datetime import timedelta
import django; django.setup()
from django.utils import timezone
from identity.auth import RequestContext
from config.errors import Conflict
from identity.models import Project
from reservations import services
project = Project.objects.get(name="lab")
context = RequestContext(user_id="u", project=project, role="member")
start = timezone.now().replace(microsecond=0) + timedelta(days=1)
booked = refused = 0
for n in range(int(sys.argv[2])):
    request = services.LeaseRequest(
        name=f"{sys.argv[1]}-{n}", start=start, end=start + timedelta(hours=1),
        reservations=[services.HostRequest(min=1, max=1)])
    try:
        services.lease_create(context=context, request=request)
        booked += 1
    except Conflict:
        refused += 1
print(booked, refused)
"""


def run_all(script: str, *argsets) -> list[str]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args],
            cwd=ROOT,
            env=process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in argsets
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    return [out for out, _ in results]


@pytest.mark.postgres
def test_concurrent_lease_creation_never_double_books(transactional_db, pool):
    outputs = run_all(BOOK, *[(f"c{i}", "3") for i in range(4)])
    booked = sum(int(o.split()[0]) for o in outputs)
    assert booked == 4  # four hosts, twelve requests for the same hour
    hosts = list(HostAllocation.objects.values_list("host_id", flat=True))
    assert len(hosts) == len(set(hosts)) == 4


@pytest.mark.postgres
def test_the_database_refuses_an_overlap_the_service_did_not_write(transactional_db, pool):
    from django.db import IntegrityError

    lease = host_lease(pool, start=1, end=3)
    mine = HostAllocation.objects.get(reservation__lease=lease)
    with pytest.raises(IntegrityError):
        HostAllocation.objects.create(
            reservation=mine.reservation,
            host=mine.host,
            start_at=mine.start_at + timedelta(minutes=30),
            end_at=mine.end_at,
        )


SWEEP = """
import django; django.setup()
from reservations import events
print(events.sweep(batch=25))
"""


@pytest.mark.postgres
def test_two_sweepers_never_fire_an_event_twice(transactional_db, pool):
    quota_set(project=pool.project, resource="leases", limit=-1)
    start = timezone.now() - timedelta(hours=2)
    for n in range(60):
        lease = host_lease(pool, name=f"l{n}", start=n, end=n + 0.5)
        Lease.objects.filter(pk=lease.pk).update(
            start_at=start + timedelta(seconds=n), end_at=start + timedelta(seconds=n + 30)
        )
        LeaseEvent.objects.filter(lease=lease).update(time=start + timedelta(seconds=n))
    outputs = run_all(SWEEP, (), ())
    fired = [int(o) for o in outputs]
    # An event whose lease the other sweeper held is left to the next
    # sweep (beat's, a second later), as this one is.
    fired.append(events.sweep())
    assert sum(fired) == 180, fired  # heads_up, start, end of each lease, once
    assert not LeaseEvent.objects.exclude(status=EventStatus.DONE).exists()
    per_event = Notification.objects.filter(event_type__startswith="lease.event.")
    assert per_event.count() == 180
    assert per_event.values("payload__event_id").distinct().count() == 180


@pytest.mark.postgres
def test_the_sweeper_never_waits_for_a_lease_an_operation_holds(transactional_db, pool):
    # A lease operation locks the lease, then its events; the sweeper holds
    # events, so it must pass a held lease by, not wait (a deadlock once).
    import psycopg

    from tests.conftest import db_url_for_processes

    lease = host_lease(pool, name="held", start=1, end=2)
    LeaseEvent.objects.filter(lease=lease).update(time=timezone.now() - timedelta(seconds=1))
    with psycopg.connect(db_url_for_processes()) as operation:
        operation.execute("SELECT 1 FROM reservations_lease WHERE id = %s FOR UPDATE", [lease.pk])
        assert events.sweep() == 0
        assert not LeaseEvent.objects.exclude(status=EventStatus.UNDONE).exists()
    assert events.sweep() == LeaseEvent.objects.filter(lease=lease).count()
    assert not LeaseEvent.objects.filter(lease=lease).exclude(status=EventStatus.DONE).exists()


REPORT_FAULTY = """
import sys
import django; django.setup()
from identity.auth import RequestContext
from reservations import services
from reservations.models import HostAllocation, Lease
lease = Lease.objects.select_related("project").get(name=sys.argv[1])
host = HostAllocation.objects.get(reservation__lease=lease).host.name
context = RequestContext(user_id="u", project=lease.project, role="member")
report = services.lease_host_report_faulty(context=context, lease=lease, host=host, reason="race")
print(report["replaced_by"] or "-")
"""


@pytest.mark.postgres
def test_two_faulty_reports_racing_for_the_last_free_host_swap_once(transactional_db, pool):
    """Leases a and b each report their host faulty at once; one host of
    the pool is free (c holds the third): one lease gets it, the other
    starts missing its host, degraded; no host is held twice."""
    start = timezone.now() - timedelta(seconds=1)
    for name in ("a", "b", "c"):
        request = services.LeaseRequest(
            name=name,
            start=start,
            end=start + timedelta(hours=1),
            reservations=[services.HostRequest(min=1, max=1)],
        )
        services.lease_create(context=pool, request=request, now=start)
    events.sweep()
    (free,) = set(Host.objects.values_list("name", flat=True)) - set(
        HostAllocation.objects.values_list("host__name", flat=True)
    )
    outputs = sorted(o.strip() for o in run_all(REPORT_FAULTY, ("a",), ("b",)))
    assert outputs == ["-", free], outputs
    degraded = Lease.objects.filter(degraded=True).values_list("name", flat=True)
    assert len(degraded) == 1 and degraded[0] in ("a", "b")
    assert Host.objects.filter(enabled=False).count() == 2
    now = timezone.now()
    held = HostAllocation.objects.filter(replaced_by=None, end_at__gt=now)
    assert held.filter(host__name=free).count() == 1
    holders = list(held.values_list("host_id", flat=True))
    assert len(holders) == len(set(holders))


EXTEND_OR_BOOK = """
import sys
from datetime import timedelta
import django; django.setup()
from django.utils import timezone
from config.errors import Conflict
from identity.auth import RequestContext
from reservations import services
from reservations.models import Lease
from datetime import datetime
lease = Lease.objects.select_related("project").get(name="running")
# Both from the end the lease had before either ran.
end = datetime.fromisoformat(sys.argv[2])
later = end + timedelta(hours=1)
try:
    if sys.argv[1] == "extend":
        services.lease_update(lease=lease, end=later)
    else:
        context = RequestContext(user_id="u", project=lease.project, role="member")
        request = services.LeaseRequest(
            name="all-four", start=end + timedelta(minutes=10), end=later,
            reservations=[services.HostRequest(min=4, max=4)])
        services.lease_create(context=context, request=request)
    print("ok")
except Conflict:
    print("refused")
"""


@pytest.mark.postgres
def test_an_extension_racing_a_new_lease_for_its_host_one_wins(transactional_db, pool):
    """A started lease extends over the hour in which a new lease wants
    every host, its own included: exactly one of the two gets it."""
    start = timezone.now() - timedelta(seconds=1)
    request = services.LeaseRequest(
        name="running",
        start=start,
        end=start + timedelta(hours=1),
        reservations=[services.HostRequest(min=1, max=1)],
    )
    services.lease_create(context=pool, request=request, now=start)
    events.sweep()
    end = Lease.objects.get(name="running").end_at.isoformat()
    outputs = run_all(EXTEND_OR_BOOK, ("extend", end), ("book", end))
    outcome = dict(zip(("extend", "book"), outputs, strict=True))
    assert sorted(o.strip() for o in outcome.values()) == ["ok", "refused"], outcome
    running = Lease.objects.get(name="running")
    extended = running.end_at > start + timedelta(hours=1)
    assert extended == (outcome["extend"].strip() == "ok")
    assert Lease.objects.filter(name="all-four").exists() == (not extended)
    rows = list(HostAllocation.objects.values_list("host_id", "start_at", "end_at"))
    for n, (host, begin, end) in enumerate(rows):
        for other, other_begin, other_end in rows[n + 1 :]:
            assert host != other or end <= other_begin or other_end <= begin


HOLD = """
import sys
from datetime import timedelta
import django; django.setup()
from django.utils import timezone
from identity.auth import RequestContext
from config.errors import Conflict
from identity.models import Project
from reservations import services
project = Project.objects.get(name="lab")
context = RequestContext(user_id="u", project=project, role="member")
start = timezone.now().replace(second=0, microsecond=0) + timedelta(days=1)
request = services.LeaseRequest(
    name=sys.argv[1], start=start, end=start + timedelta(hours=1),
    reservations=[services.HostRequest(
        min=1, max=1, network_id=sys.argv[2], same_segment=True, addresses_per_host=3)])
try:
    services.lease_create(context=context, request=request)
    print("booked")
except Conflict as refused:
    print("refused", refused.message)
"""


@pytest.mark.postgres
def test_two_leases_racing_for_the_last_addresses_of_a_segment_one_wins(transactional_db, pool):
    """Four hosts but four addresses on the only segment: of four leases
    asking for one host with three addresses each at once, exactly one gets
    them, and no address is held twice."""
    from networking.models import AddressHold
    from tests.factories import NetworkFactory, vlan_segment

    network = NetworkFactory(
        project=pool.project,
        segments=[vlan_segment("physnet1", 9, "only")],
        subnets=[
            {
                "cidr": "10.9.0.0/24",
                "segment": "only",
                "allocation_pools": [{"start": "10.9.0.10", "end": "10.9.0.13"}],
            }
        ],
    )
    outputs = run_all(HOLD, *[(f"racer{i}", str(network.pk)) for i in range(4)])
    assert sorted(o.split()[0] for o in outputs) == ["booked", "refused", "refused", "refused"]
    held = list(AddressHold.objects.values_list("address", flat=True))
    assert len(held) == len(set(held)) == 3
    assert HostAllocation.objects.count() == 1 and Lease.objects.count() == 1


BUILD_OR_REPORT = """
import sys
import django; django.setup()
from identity.auth import RequestContext
from compute import services as compute
from compute.models import Flavor
from reservations import services
from reservations.models import Lease
lease = Lease.objects.select_related("project").get(name="running")
context = RequestContext(user_id="u", project=lease.project, role="member")
if sys.argv[1] == "build":
    from tests.compute.conftest import run_pipeline
    built = compute.server_create(
        context=context, name="racer", flavor=Flavor.objects.get(pk="small"), nics=[],
        reservation_id=sys.argv[2], min_count=6, max_count=6)
    for instance in built:
        run_pipeline(instance)
    print("built")
else:
    report = services.lease_host_report_faulty(
        context=context, lease=lease, host=sys.argv[2], reason="race")
    print(report["replaced_by"])
"""


@pytest.mark.postgres
def test_a_swap_racing_a_build_loses_no_server_and_no_claim(transactional_db, pool):
    """Six servers of a running lease build while a member reports one of
    its two hosts faulty: the report swaps it for a free host, and every
    server ends ACTIVE on a host the lease held or in ERROR saying why;
    the hosts' claimed resources match the servers they run."""
    from compute import services as compute
    from compute.models import Instance, InstanceStatus

    compute.flavor_create(id="small", name="small", vcpus=1, ram=512, disk=1)
    start = timezone.now() - timedelta(seconds=1)
    request = services.LeaseRequest(
        name="running",
        start=start,
        end=start + timedelta(hours=1),
        reservations=[services.HostRequest(min=2, max=2)],
    )
    lease = services.lease_create(context=pool, request=request, now=start)
    events.sweep()
    reservation = lease.reservations.get()
    held = sorted(HostAllocation.objects.values_list("host__name", flat=True))
    outputs = run_all(BUILD_OR_REPORT, ("build", str(reservation.pk)), ("report", held[0]))
    replacement = outputs[1].strip()
    now = timezone.now()
    holds_now = set(
        HostAllocation.objects.filter(replaced_by=None, end_at__gt=now).values_list(
            "host__name", flat=True
        )
    )
    assert holds_now == {held[1], replacement} and replacement not in held
    servers = list(Instance.objects.filter(reservation_id=str(reservation.pk)))
    assert len(servers) == 6
    for server in servers:
        assert server.status in (InstanceStatus.ACTIVE, InstanceStatus.ERROR), server.status
        if server.status == InstanceStatus.ACTIVE:
            assert server.host.name in {*held, replacement}
        else:
            assert server.last_failure
    for host in Host.objects.all():
        running = [s for s in servers if s.host_id == host.pk and s.status == "ACTIVE"]
        assert host.running_instances == len(running), host.name
        assert host.vcpus_used == len(running), host.name
