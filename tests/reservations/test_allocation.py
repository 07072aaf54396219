"""Admission of host and instance reservations over time."""

import json

import pytest

from config.errors import Conflict, Invalid
from reservations import services
from reservations.models import HostAllocation, Lease
from tests.reservations.conftest import T0, at, host_lease, hosts_of


def test_takes_as_many_hosts_as_free_up_to_max(pool):
    lease = host_lease(pool, min=2, max=3)
    assert len(hosts_of(lease)) == 3


def test_not_enough_hosts_is_409_and_nothing_is_written(pool):
    host_lease(pool, name="a", min=3, max=3)
    with pytest.raises(Conflict, match="Not enough hosts available"):
        host_lease(pool, name="b", min=2, max=2, start=1.5, end=3)
    assert list(Lease.objects.values_list("name", flat=True)) == ["a"]
    assert HostAllocation.objects.count() == 3


def test_back_to_back_leases_share_a_host(pool):
    first = host_lease(pool, name="a", min=4, max=4, start=1, end=2)
    second = host_lease(pool, name="b", min=4, max=4, start=2, end=3)
    assert hosts_of(first) == hosts_of(second) == ["r1", "r2", "r3", "r4"]


def test_cleaning_buffer_keeps_the_next_lease_off(pool, settings):
    settings.BERTH_LEASE_CLEANING_SECONDS = 600
    host_lease(pool, name="a", min=4, max=4, start=1, end=2)
    with pytest.raises(Conflict):
        host_lease(pool, name="b", min=1, max=1, start=2, end=3)
    assert len(hosts_of(host_lease(pool, name="c", min=4, max=4, start=2.2, end=3))) == 4


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (["==", "$node_type", "compute"], ["r1", "r2"]),
        ([">=", "$gpus", 5], ["r2"]),
        ([">=", "$gpus", "5"], ["r2"]),  # numeric even as a string
        ([">", "$gpus", "10"], []),  # 8 > 10 is false numerically, true as text
        (["or", ["==", "$node_type", "storage"], [">", "$gpus", 6]], ["r2", "r3", "r4"]),
        (["and", ["==", "$node_type", "compute"], ["<", "$gpus", 5]], ["r1"]),
        (["!=", "$node_type", "compute"], ["r3", "r4"]),
    ],
)
def test_property_queries(pool, query, expected):
    if not expected:
        with pytest.raises(Conflict):
            host_lease(pool, min=1, max=4, props=json.dumps(query))
        return
    assert hosts_of(host_lease(pool, min=1, max=4, props=json.dumps(query))) == expected


def test_hypervisor_properties(pool):
    from compute.models import Host

    Host.objects.filter(name="r3").update(memory_mb=65536)
    request = services.LeaseRequest(
        name="hv",
        start=at(1),
        end=at(2),
        reservations=[
            services.HostRequest(min=1, max=4, hypervisor_properties='[">=", "$memory_mb", 65536]')
        ],
    )
    assert hosts_of(services.lease_create(context=pool, request=request, now=T0)) == ["r3"]


@pytest.mark.parametrize(
    "props",
    ["not json", '["~=", "$x", 1]', '["==", "x", 1]', '["and"]', '["==", "$x", [1]]', "{}"],
)
def test_malformed_property_queries_are_400(pool, props):
    with pytest.raises(Invalid, match="Malformed"):
        host_lease(pool, props=props)
    assert not Lease.objects.exists()


def test_bad_windows(pool):
    with pytest.raises(Invalid, match="after its start"):
        host_lease(pool, start=2, end=1)
    with pytest.raises(Invalid, match="min/max"):
        host_lease(pool, min=3, max=2)
    with pytest.raises(Invalid, match="heads_up"):
        host_lease(pool, heads_up_seconds=10**7)


def test_duplicate_name_in_project_is_409(pool):
    host_lease(pool, name="same", start=1, end=2)
    with pytest.raises(Conflict, match="already exists"):
        host_lease(pool, name="same", start=5, end=6)


def instance_lease(
    context, name="i1", amount=2, vcpus=4, memory_mb=8192, affinity=None, start=1, end=2, props=""
):
    request = services.LeaseRequest(
        name=name,
        start=at(start),
        end=at(end),
        reservations=[
            services.InstanceRequest(
                amount=amount,
                vcpus=vcpus,
                memory_mb=memory_mb,
                disk_gb=10,
                affinity=affinity,
                resource_properties=props,
            )
        ],
    )
    return services.lease_create(context=context, request=request, now=T0)


def test_instance_capacity_is_counted_at_the_peak(pool):
    # Each host: 16 vCPUs x 4 = 64, 32 GB x 1: four 8 GB slots per host.
    compute_only = json.dumps(["==", "$node_type", "compute"])
    instance_lease(pool, name="a", amount=4, start=1, end=3, props=compute_only)
    instance_lease(pool, name="b", amount=4, start=2, end=4, props=compute_only)
    # 1..2 and 3..4 have room, but at 2..3 both run: nothing left then.
    with pytest.raises(Conflict, match="Not enough capacity"):
        instance_lease(pool, name="c", amount=1, start=1.5, end=3.5, props=compute_only)
    assert instance_lease(pool, name="d", amount=1, start=3, end=4, props=compute_only)


def test_affinity(pool):
    together = instance_lease(pool, name="a", amount=3, affinity=True)
    assert [a.slots for a in HostAllocation.objects.filter(reservation__lease=together)] == [3]
    apart = instance_lease(pool, name="b", amount=3, affinity=False)
    assert [a.slots for a in HostAllocation.objects.filter(reservation__lease=apart)] == [1, 1, 1]
    with pytest.raises(Conflict, match="distinct hosts"):
        instance_lease(pool, name="c", amount=5, affinity=False)


def test_host_lease_and_instance_slots_exclude_each_other(pool):
    host_lease(pool, name="whole", min=4, max=4)
    with pytest.raises(Conflict):
        instance_lease(pool, name="slots", amount=1)


def test_dry_run_writes_nothing_and_finds_the_earliest_start(pool):
    host_lease(pool, name="busy", min=4, max=4, start=1, end=3)
    request = services.LeaseRequest(
        name="try",
        start=at(2),
        end=at(4),
        reservations=[services.HostRequest(min=2, max=2)],
    )
    result = services.lease_dry_run(context=pool, request=request, now=T0)
    assert not result.feasible and "Not enough hosts" in result.reason
    assert result.earliest_start == at(3)
    assert Lease.objects.count() == 1
    fits = services.lease_dry_run(
        context=pool,
        request=services.LeaseRequest(
            name="t2", start=at(3), end=at(4), reservations=[services.HostRequest(min=2, max=2)]
        ),
        now=T0,
    )
    assert fits.feasible and len(fits.hosts) == 2


def test_update_extends_atomically(pool):
    a = host_lease(pool, name="a", min=2, max=2, start=1, end=2)
    services.lease_update(lease=a, end=at(2.5), now=T0)
    assert HostAllocation.objects.filter(reservation__lease=a, end_at=at(2.5)).count() == 2
    host_lease(pool, name="b", min=4, max=4, start=3, end=4)
    hosts_before = hosts_of(a)
    with pytest.raises(Conflict):
        services.lease_update(lease=a, end=at(6), name="renamed", now=T0)
    a.refresh_from_db()
    assert (a.name, a.end_at, hosts_of(a)) == ("a", at(2.5), hosts_before)


def test_a_pending_lease_may_move_to_other_hosts(pool):
    a = host_lease(pool, name="a", min=2, max=2, start=1, end=2)
    b = host_lease(pool, name="b", min=2, max=2, start=3, end=4)
    assert hosts_of(a) == hosts_of(b) == ["r1", "r2"]
    services.lease_update(lease=a, end=at(3.5), now=T0)
    assert hosts_of(a) == ["r3", "r4"]
