"""Load with contention: client processes boot servers into scarce
capacity and scarce addresses on a routed network while another process
creates, extends and ends leases on the same hosts and a sweeper fires
their events. At the end every invariant holds.

BERTH_LOAD_SCALE multiplies the work (1: 36 builds and 30 lease
operations, the CI run; 10: 360 builds and 300 operations)."""

import ast
import os
import subprocess

import pytest

from compute import services as compute
from identity.quotas import quota_set
from reservations.models import HostAllocation, LeaseEvent, Notification
from tests.reliability.conftest import check_invariants, settle
from tests.reliability.test_faults import BOOT, SWEEPER

pytestmark = [pytest.mark.postgres, pytest.mark.worker]

SCALE = int(os.environ.get("BERTH_LOAD_SCALE", "1"))

LEASES = """
import random
from datetime import timedelta
from django.utils import timezone
from identity.auth import RequestContext
from config.errors import BerthError
from identity.models import Project
from reservations import services
from reservations.models import Lease
context = RequestContext(user_id="churn", project=Project.objects.get(name="acme"), role="admin")
rng = random.Random(7)
done = {{"created": 0, "extended": 0, "ended": 0, "refused": 0}}
for n in range({operations}):
    now = timezone.now()
    try:
        action = rng.choice(["create", "create", "extend", "end"])
        if action == "create":
            start = now + timedelta(seconds=rng.uniform(1, 8))
            services.lease_create(context=context, request=services.LeaseRequest(
                name=f"churn-{{n}}", start=start, end=start + timedelta(seconds=rng.uniform(1, 6)),
                reservations=[services.HostRequest(min=1, max=1)]))
            done["created"] += 1
        else:
            # Ending a lease that has not started deletes it (and its
            # allocations, which the check below reads): only a running
            # lease is ended here.
            status = ["PENDING", "ACTIVE"] if action == "extend" else ["ACTIVE"]
            lease = Lease.objects.filter(status__in=status).order_by("?").first()
            if lease is None:
                continue
            if action == "extend":
                services.lease_update(lease=lease, end=lease.end_at + timedelta(seconds=2))
                done["extended"] += 1
            else:
                services.lease_end_now(lease=lease)
                done["ended"] += 1
    except BerthError:
        done["refused"] += 1  # no free host, or the lease moved on meanwhile
print(done)
"""


def test_builds_and_lease_churn_on_shared_hosts(outside, cloud, env, workers, processes):
    from reservations import services as reservations

    # h3 is reservable: leases come and go on it while builds fill h1, h2.
    reservations.reservable_host_create(name="h3", capabilities={})
    # Scarce capacity and addresses are the point here, not quotas (failed
    # builds count against instances until they are deleted).
    for resource in ("instances", "cores", "ram", "port", "leases"):
        quota_set(project=cloud.project, resource=resource, limit=-1)
    compute.flavor_create(id="medium", name="medium", vcpus=2, ram=2048, disk=10)
    workers()
    # The first client asks for its servers four per request (batches in
    # the conductor), the others one per request.
    clients = [
        processes(BOOT.format(requests=12 * SCALE // n, per_request=n, prefix=f"c{i}"))
        for i, n in enumerate((4, 1, 1))
    ]
    churn = processes(LEASES.format(operations=30 * SCALE), stdout=subprocess.PIPE, text=True)
    sweeper = processes(SWEEPER.format(seconds=30 + 10 * SCALE))
    for client in clients:
        assert client.wait(timeout=300) == 0
    churned, _ = churn.communicate(timeout=300)
    assert churn.returncode == 0
    settle(env, timeout=300)
    assert sweeper.wait(timeout=300) == 0
    counts = check_invariants()
    assert counts["instances"] == 36 * SCALE
    assert counts.get("active", 0) > 0

    # No two allocations of one host overlap (the database's exclusion
    # constraint, checked again from the rows), among the leases that got in.
    assert ast.literal_eval(churned.strip())["created"] > 0, churned
    rows = sorted(HostAllocation.objects.values_list("host_id", "start_at", "end_at"))
    assert rows
    overlaps = [a for a, b in zip(rows, rows[1:], strict=False) if a[0] == b[0] and b[1] < a[2]]
    assert overlaps == []
    # Every lease event fired at most once, and none is left due.
    fired = list(
        Notification.objects.filter(event_type__startswith="lease.event.").values_list(
            "payload__event_id", flat=True
        )
    )
    assert len(fired) == len(set(fired))
    due = LeaseEvent.objects.filter(status="UNDONE", time__lt=_now_minus(5))
    assert not due.exists(), list(due.values("event_type", "time"))
    print({**counts, "lease operations": churned.strip(), "events fired": len(fired)})


def _now_minus(seconds: float):
    from datetime import timedelta

    from django.utils import timezone

    return timezone.now() - timedelta(seconds=seconds)
