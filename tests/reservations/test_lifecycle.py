"""The lease lifecycle with time travel: heads-up, start, before-end, end;
placement during the lease; healing; notifications."""

from datetime import timedelta

import time_machine

from compute import services as compute
from compute.models import Host, Instance
from networking import services as net_services
from reservations import events, placement, services
from reservations.models import EventStatus, Lease, LeaseEvent, Notification
from tests.compute.conftest import run_pipeline
from tests.factories import HostFactory
from tests.reservations.conftest import T0, at, heartbeat_all, host_lease, hosts_of


def sweep_at(when):
    """The sweep at ``when``, the hosts heard from then (else the heads-up
    and the start find them down, and swap them)."""
    with time_machine.travel(when, tick=False):
        heartbeat_all()
        return events.sweep()


def kinds(lease):
    return list(
        Notification.objects.filter(lease=lease)
        .order_by("seq")
        .values_list("event_type", flat=True)
    )


def test_events_fire_in_order_once(pool, settings):
    settings.BERTH_LEASE_BEFORE_END = 600
    lease = host_lease(pool, start=1, end=2, heads_up_seconds=900)
    plan = dict(LeaseEvent.objects.filter(lease=lease).values_list("event_type", "time"))
    assert plan["heads_up"] == at(0.75) and plan["before_end_lease"] == at(2) - timedelta(
        seconds=600
    )
    assert sweep_at(at(0.5)) == 0
    assert sweep_at(at(0.8)) == 1
    lease.refresh_from_db()
    assert lease.status == "PENDING"
    assert sweep_at(at(1)) == 1
    lease.refresh_from_db()
    assert lease.status == "ACTIVE"
    assert set(lease.reservations.values_list("status", flat=True)) == {"active"}
    assert sweep_at(at(1)) == 0  # nothing fires twice
    assert sweep_at(at(3)) == 2  # before_end then end
    lease.refresh_from_db()
    assert lease.status == "TERMINATED"
    assert kinds(lease) == [
        "lease.create",
        "lease.event.heads_up",
        "lease.event.start_lease",
        "lease.event.before_end_lease",
        "lease.event.end_lease",
    ]
    assert not LeaseEvent.objects.exclude(status=EventStatus.DONE).exists()


def test_catching_up_fires_start_before_end(pool):
    lease = host_lease(pool, start=1, end=2)
    sweep_at(at(5))  # the sweeper was down for the whole lease
    assert kinds(lease).index("lease.event.start_lease") < kinds(lease).index(
        "lease.event.end_lease"
    )


def test_end_now_ends_an_active_lease(pool):
    lease = host_lease(pool, start=1, end=5)
    sweep_at(at(1))
    with time_machine.travel(at(2), tick=False):
        services.lease_update(lease=Lease.objects.get(pk=lease.pk), end=at(2))
        events.sweep()
    lease.refresh_from_db()
    assert lease.status == "TERMINATED"
    # The hosts are free from then on.
    assert len(hosts_of(host_lease(pool, name="next", min=4, max=4, start=2, end=3))) == 4


def boot(context, network, flavor, reservation_id=""):
    return compute.server_create(
        context=context,
        name="s",
        flavor=flavor,
        nics=[compute.NicRequest(network=network)],
        reservation_id=reservation_id,
    )[0]


def test_reserved_hosts_take_only_their_lease_instances(pool):
    HostFactory(name="free-1")  # not reservable
    network = net_services.network_create(context=pool, project=pool.project)
    net_services.subnet_create(project=pool.project, network=network, cidr="10.9.0.0/24")
    flavor = compute.flavor_create(id="f", name="f", vcpus=1, ram=512, disk=1)
    lease = host_lease(pool, start=1, end=3, min=1, max=1, props='["==", "$gpus", 8]')
    reservation = lease.reservations.get()
    with time_machine.travel(at(1.5), tick=False):
        for host in Host.objects.all():
            compute.host_report(
                report=compute.HostReport(name=host.name, vcpus=16, memory_mb=32768, disk_gb=200)
            )
        events.sweep()
        inside = run_pipeline(boot(pool, network, flavor, str(reservation.pk)))
        outside = run_pipeline(boot(pool, network, flavor))
        assert (inside.status, inside.host.name) == ("ACTIVE", "r2")
        assert (outside.status, outside.host.name) == ("ACTIVE", "free-1")
    with time_machine.travel(at(3), tick=False):
        events.sweep()
    inside.refresh_from_db()
    assert inside.task_state == "deleting"  # the lease's end deletes its servers


def template_lease(context, network, *, amount, affinity=None, **template):
    """A lease from at(1) to at(2) of ``amount`` instance slots whose
    servers, booted at its start, are on ``network``."""
    request = services.LeaseRequest(
        name="vms",
        start=at(1),
        end=at(2),
        reservations=[
            services.InstanceRequest(
                amount=amount,
                vcpus=2,
                memory_mb=2048,
                disk_gb=10,
                affinity=affinity,
                server_template={"networks": [{"uuid": str(network.pk)}], **template},
            )
        ],
    )
    return services.lease_create(context=context, request=request, now=T0)


def report_hosts(bigger: str = ""):
    """Every host reports itself with its networks; ``bigger`` with twice
    the RAM of the others."""
    for host in Host.objects.all():
        compute.host_report(
            report=compute.HostReport(
                name=host.name,
                vcpus=16,
                memory_mb=65536 if host.name == bigger else 32768,
                disk_gb=200,
                network=net_services.HostNetworkReport(host=host.name),
            )
        )


def test_instance_reservation_boots_its_template_at_start(pool):
    network = net_services.network_create(context=pool, project=pool.project)
    net_services.subnet_create(project=pool.project, network=network, cidr="10.9.0.0/24")
    lease = template_lease(pool, network, amount=2, name="worker", count=2)
    with time_machine.travel(at(1), tick=False):
        report_hosts()
        events.sweep()
        built = [run_pipeline(i) for i in Instance.objects.all()]
    assert sorted(i.name for i in built) == ["worker-1", "worker-2"]
    assert {i.status for i in built} == {"ACTIVE"}
    reserved = set(hosts_of(lease))
    assert {i.host.name for i in built} <= reserved
    # A third instance of the reservation finds no free slot.
    with time_machine.travel(at(1) + timedelta(seconds=10), tick=False):
        extra = run_pipeline(boot(pool, network, lease.reservations.get().flavor))
    assert extra.status == "ERROR" and "no free slot" in extra.fault["message"]


def test_a_failed_start_rolls_back_its_own_lease_only(pool):
    """Two leases start in one sweep; one's servers can no longer be booted
    (the network of its template was deleted). That lease alone is ERROR,
    the reason on it and on its event, and nothing of its start is written;
    the other starts, notified once."""
    network = net_services.network_create(context=pool, project=pool.project)
    failing = template_lease(pool, network, amount=1)
    starting = host_lease(pool, name="hosts", start=1, end=2)
    net_services.network_delete(network=network)

    assert sweep_at(at(1)) == 4  # both heads-ups and both starts
    failing.refresh_from_db()
    starting.refresh_from_db()
    assert failing.status == "ERROR"
    assert failing.status_reason.startswith("start_lease failed:")
    event = LeaseEvent.objects.get(lease=failing, event_type="start_lease")
    assert event.status == EventStatus.ERROR and event.error in failing.status_reason
    assert set(failing.reservations.values_list("status", flat=True)) == {"pending"}
    assert not Instance.objects.exists()
    assert kinds(failing) == ["lease.create", "lease.event.heads_up", "lease.error"]
    assert starting.status == "ACTIVE"
    assert set(starting.reservations.values_list("status", flat=True)) == {"active"}
    assert kinds(starting) == ["lease.create", "lease.event.heads_up", "lease.event.start_lease"]


def test_healing_replaces_a_disabled_host_or_degrades(pool):
    lease = host_lease(pool, min=1, max=1, start=1, end=3, props='["==", "$node_type", "compute"]')
    (lost,) = hosts_of(lease)
    compute.host_set_enabled(host=Host.objects.get(name=lost), enabled=False)
    with time_machine.travel(T0, tick=False):
        heartbeat_all()
        placement.heal()
    (replacement,) = hosts_of(lease)
    assert replacement != lost and replacement in ("r1", "r2")
    assert "lease.host_replaced" in kinds(lease)
    compute.host_set_enabled(host=Host.objects.get(name=replacement), enabled=False)
    with time_machine.travel(T0, tick=False):
        placement.heal()
        placement.heal()  # still nothing free: notified once
    lease.refresh_from_db()
    assert lease.degraded
    assert kinds(lease).count("lease.degraded") == 1


def test_a_second_sweep_finds_nothing_left(pool):
    for n in range(20):
        host_lease(pool, name=f"l{n}", start=1 + n, end=1.5 + n)  # 3 events each
    with time_machine.travel(at(100), tick=False):
        first, second = events.sweep(batch=7), events.sweep()
    assert (first, second) == (60, 0)


def test_end_now_from_the_admin_action(pool, admin_client, admin_user):
    from django.urls import reverse

    with time_machine.travel(at(0), tick=False):
        lease = host_lease(pool, start=0.01, end=5)
    with time_machine.travel(at(1), tick=False):
        events.sweep()
        admin_client.force_login(admin_user)  # the session would have expired by 2030
        response = admin_client.post(
            reverse("admin:reservations_lease_changelist"),
            {"action": "end_now", "_selected_action": [str(lease.pk)]},
        )
    assert response.status_code == 302
    lease.refresh_from_db()
    assert lease.status == "TERMINATED"
    assert (
        admin_client.get(reverse("admin:reservations_lease_change", args=[lease.pk])).status_code
        == 200
    )


def test_an_instance_reservations_servers_conducted_together_keep_to_its_slots(pool):
    """The template's servers come as one request, conducted as one batch.
    The reservation spreads them, one slot per host (no affinity), and r1
    has the most free RAM even after one of them: each server is still
    scheduled on its own, after the one before it took its slot, so the
    second goes to another host."""
    from compute import pipeline
    from reservations.models import HostAllocation
    from tests.compute.conftest import host_spawn

    network = net_services.network_create(context=pool, project=pool.project)
    net_services.subnet_create(project=pool.project, network=network, cidr="10.9.0.0/24")
    lease = template_lease(pool, network, amount=2, affinity=False, count=2)
    with time_machine.travel(at(1), tick=False):
        report_hosts(bigger="r1")
        events.sweep()
        ids = [str(pk) for pk in Instance.objects.values_list("pk", flat=True)]
        assert len(ids) == 2
        pipeline.conduct(ids, "preparing_ports", 1)
        for instance in Instance.objects.all():
            host_spawn(instance)
    slots = dict(
        HostAllocation.objects.filter(reservation__lease=lease).values_list("host__name", "slots")
    )
    assert sorted(slots.values()) == [1, 1]
    built = list(Instance.objects.select_related("host"))
    assert {i.status for i in built} == {"ACTIVE"}
    assert sorted(i.host.name for i in built) == sorted(slots)
