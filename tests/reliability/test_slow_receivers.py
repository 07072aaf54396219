"""A tenant's webhook receiver that answers a line at a time, forever,
while another project builds servers and the tenant's own leases start and
end: builds and lease events keep their normal pace, each delivery is cut
off at its deadline and retried, and the breaker disables the receiver's
subscriptions and tells the project. Real worker pools as a deployment runs
them (config.celery.WORKER_POOLS), beat, and a broker of the scenario's own."""

import pytest

from compute.models import Instance
from config.celery import WORKER_POOLS
from reservations.models import (
    Delivery,
    EventType,
    LeaseEvent,
    Notification,
    Subscription,
)
from tests.conftest import beat_start, beat_stop, process_env, worker_start, worker_stop
from tests.reliability.conftest import run_python, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.worker]

DEADLINE = 2  # BERTH_WEBHOOK_TIMEOUT in the scenario's processes


SCENARIO = """
from datetime import timedelta
from django.utils import timezone
from compute import services as compute
from compute.models import Flavor
from identity.auth import RequestContext
from identity.models import Project
from networking.models import Network
from networking.services import HostNetworkReport
from reservations import services as leases
from reservations.models import Lease

lab = RequestContext(user_id="u", project=Project.objects.get(name="lab"), role="admin")
now = timezone.now()
# Ten lease events of the tenant's own, due while the scenario runs.
for n in range(5):
    start = now + timedelta(seconds=8 + 2 * n)
    leases.lease_create(context=lab, request=leases.LeaseRequest(
        name=f"soon-{n}", start=start, end=start + timedelta(seconds=4),
        reservations=[leases.HostRequest(min=1, max=1)]))
# A flood of notifications to the slow receiver: renames of a later lease.
later = leases.lease_create(context=lab, request=leases.LeaseRequest(
    name="later", start=now + timedelta(days=1), end=now + timedelta(days=2),
    reservations=[leases.HostRequest(min=1, max=1)]))
for n in range(20):
    leases.lease_update(lease=Lease.objects.get(pk=later.pk), name=f"later-{n}")
# Twenty builds of another project.
compute.host_report(report=compute.HostReport(
    name="h4", vcpus=16, memory_mb=32768, disk_gb=200,
    network=HostNetworkReport(host="h4", physnets={"physnet1": {"bridge": "br-ex"}})))
acme = RequestContext(user_id="c", project=Project.objects.get(name="acme"), role="admin")
for n in range(20):
    compute.server_create(context=acme, name=f"vm-{n}", flavor=Flavor.objects.get(pk="small"),
                          nics=[compute.NicRequest(network=Network.objects.get(name="routed"))])
"""


def test_a_trickling_receiver_holds_back_no_build_and_no_lease_event(
    transactional_db, cloud, pool, redis_server, trickler, tmp_path
):
    for path in ("/a", "/b", "/c", "/d"):
        Subscription.objects.create(
            project=pool.project, url=f"http://127.0.0.1:{trickler.port}{path}", secret="s"
        )
    env = process_env(
        CELERY_BROKER_URL=redis_server.url,
        BERTH_WEBHOOK_ALLOWED=f"127.0.0.1/32:{trickler.port}",
        BERTH_WEBHOOK_TIMEOUT=str(DEADLINE),
        BERTH_WEBHOOK_BREAKER_AFTER="2",
        BERTH_WEBHOOK_BREAKER_BACKOFF="0.5",
        BERTH_WEBHOOK_DISABLE_AFTER="4",
    )
    processes = [
        worker_start(tmp_path / f"{name.replace(' ', '-')}.log", env, options)
        for name, options in WORKER_POOLS.items()
    ]
    beat = beat_start(tmp_path / "beat.log", env)
    try:
        run_python(SCENARIO, env)
        wait_for(
            lambda: Instance.objects.filter(status="ACTIVE").count() == 20, 90, "20 builds ACTIVE"
        )
        timed = [EventType.START, EventType.END]
        events = LeaseEvent.objects.filter(lease__name__startswith="soon-", event_type__in=timed)
        wait_for(lambda: not events.filter(fired_at__isnull=True).exists(), 90, "lease events")
        subscriptions = Subscription.objects.filter(project=pool.project)
        wait_for(lambda: not subscriptions.filter(enabled=True).exists(), 40, "the breakers")
    finally:
        beat_stop(beat)
        for proc in processes:
            worker_stop(proc)

    took = [(i.launched_at - i.created_at).total_seconds() for i in Instance.objects.all()]
    late = [(e.fired_at - e.time).total_seconds() for e in events]
    print(f"time to ACTIVE max {max(took):.2f} s; lease events late by at most {max(late):.2f} s;")
    print(f"{len(trickler.held)} connections cut after at most {max(trickler.held):.2f} s")
    # Builds at their normal pace: a second or two each on an idle worker.
    assert max(took) < 15, sorted(took)
    # Lease events on time: the sweep runs every second.
    assert events.count() == 10
    assert max(late) < 5, sorted(late)
    # Each connection was cut at the deadline, not held for the answer.
    assert trickler.held and max(trickler.held) < DEADLINE + 1.5, sorted(trickler.held)
    # Cut-off deliveries were failures like any other: retried, then failed
    # for good when the breaker disabled their subscription; none is left
    # pending, none lost unattempted behind a held worker.
    deliveries = Delivery.objects.filter(subscription__project=pool.project)
    assert set(deliveries.values_list("status", flat=True)) == {"failed"}
    cut = f"no complete answer within {DEADLINE} s"
    assert deliveries.filter(attempts__gte=1).exists()
    assert all(cut in error for error in deliveries.values_list("last_error", flat=True))
    for subscription in subscriptions:
        assert subscription.consecutive_failures == 4
        assert subscription.disabled_reason.startswith("Disabled after 4 failed deliveries")
        assert cut in subscription.disabled_reason
    told = Notification.objects.filter(project=pool.project, event_type="subscription.disabled")
    assert sorted(n.payload["subscription_id"] for n in told) == sorted(
        str(s.pk) for s in subscriptions
    )
