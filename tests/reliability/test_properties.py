"""The interval rules of host allocations, for any sequence of requests:
no host is ever held twice at one instant, back-to-back holds share a host,
admission takes exactly what a brute-force model says is free, and the
free-capacity step function agrees with counting at every instant.

Intervals are half-open, [start, end), on a grid of hours so that
sequences collide often. The database is reached through the service and
the selector; each example runs in a transaction that is rolled back.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute.models import Host
from config.errors import Conflict
from reservations import allocation, selectors, services
from reservations.models import HostAllocation
from tests.factories import ContextFactory, HostFactory

T0 = datetime(2030, 1, 1, tzinfo=UTC)
HOSTS = ["p1", "p2", "p3"]
DB_EXAMPLES = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


def overlap(a: tuple, b: tuple) -> bool:
    """Half-open intervals share an instant."""
    return a[0] < b[1] and b[0] < a[1]


@pytest.fixture
def lab(db):
    """Three reservable hosts and an admin of a project."""
    for name in HOSTS:
        HostFactory(name=name, reservable=True)
    return ContextFactory(user_id="u", project__name="props")


def request_host_lease(context, n: int, start: int, end: int, low: int, high: int):
    """The lease, or None when admission refused it (409)."""
    request = services.LeaseRequest(
        name=f"l{n}",
        start=at(start),
        end=at(end),
        reservations=[services.HostRequest(min=low, max=high)],
    )
    try:
        return services.lease_create(context=context, request=request, now=T0)
    except Conflict:
        return None


def held() -> dict[str, list[tuple]]:
    """Every stored hold, per host: (start, end, lease id)."""
    rows = HostAllocation.objects.values_list(
        "host__name", "start_at", "end_at", "reservation__lease_id"
    )
    found: dict[str, list[tuple]] = {name: [] for name in HOSTS}
    for host, start, end, lease in rows:
        found[host].append((start, end, lease))
    return found


@st.composite
def host_requests(draw):
    """2-7 lease requests: start hour, duration, min and max hosts."""
    count = draw(st.integers(2, 7))
    requests = []
    for _ in range(count):
        start = draw(st.integers(0, 10))
        length = draw(st.integers(1, 4))
        low = draw(st.integers(1, len(HOSTS)))
        high = draw(st.integers(low, len(HOSTS)))
        requests.append((start, start + length, low, high))
    return requests


@DB_EXAMPLES
@given(requests=host_requests())
def test_admission_matches_a_brute_force_model_and_never_double_books(lab, requests):
    with transaction.atomic():
        model: dict[str, list[tuple]] = {name: [] for name in HOSTS}
        for n, (start, end, low, high) in enumerate(requests):
            window = (at(start), at(end))
            free = [h for h in HOSTS if not any(overlap(window, w) for w in model[h])]
            lease = request_host_lease(lab, n, start, end, low, high)
            if len(free) < low:
                assert lease is None, f"admitted with {len(free)} free of {low} needed"
                continue
            assert lease is not None, f"refused with {len(free)} free of {low} needed"
            taken = sorted(
                HostAllocation.objects.filter(reservation__lease=lease).values_list(
                    "host__name", flat=True
                )
            )
            # As many as are free, up to max, and only free ones.
            assert len(taken) == min(high, len(free)) and set(taken) <= set(free)
            for host in taken:
                model[host].append(window)
        for host, holds in held().items():
            for i, a in enumerate(holds):
                for b in holds[i + 1 :]:
                    assert not overlap(a, b), f"{host} held twice: {a} and {b}"
            assert sorted(h[:2] for h in holds) == sorted(model[host])
        transaction.set_rollback(True)


@DB_EXAMPLES
@given(
    cuts=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    first=st.integers(0, 5),
)
def test_back_to_back_holds_share_every_host(lab, cuts, first):
    """Leases that touch at their ends (one ends when the next starts) all
    get every host: an end is not part of its interval."""
    with transaction.atomic():
        start = first
        for n, length in enumerate(cuts):
            lease = request_host_lease(lab, n, start, start + length, len(HOSTS), len(HOSTS))
            assert lease is not None, f"lease {n} [{start}, {start + length}) refused"
            start += length
        assert all(len(holds) == len(cuts) for holds in held().values())
        transaction.set_rollback(True)


@DB_EXAMPLES
@given(
    first=st.tuples(st.integers(0, 5), st.integers(1, 4)),
    gap_minutes=st.integers(-120, 120),
    cleaning_minutes=st.sampled_from([0, 10, 30, 60]),
)
def test_the_cleaning_buffer_keeps_the_next_hold_off(lab, first, gap_minutes, cleaning_minutes):
    """With one host, a second lease fits iff it starts no earlier than the
    first one's end plus the cleaning time (or ends before the first starts)."""
    cleaning_seconds = cleaning_minutes * 60
    with override_settings(BERTH_LEASE_CLEANING_SECONDS=cleaning_seconds), transaction.atomic():
        Host.objects.exclude(name="p1").update(enabled=False)
        start, length = first
        assert request_host_lease(lab, 0, start, start + length, 1, 1) is not None
        second_start = at(start + length) + timedelta(minutes=gap_minutes)
        request = services.LeaseRequest(
            name="second",
            start=second_start,
            end=second_start + timedelta(hours=1),
            reservations=[services.HostRequest(min=1, max=1)],
        )
        try:
            services.lease_create(context=lab, request=request, now=T0)
            admitted = True
        except Conflict:
            admitted = False
        cleaning = timedelta(minutes=cleaning_minutes)
        fits_after = second_start >= at(start + length) + cleaning
        fits_before = second_start + timedelta(hours=1) + cleaning <= at(start)
        assert admitted == (fits_after or fits_before)
        transaction.set_rollback(True)


@DB_EXAMPLES
@given(
    requests=host_requests(),
    window=st.tuples(st.integers(-2, 12), st.integers(1, 16)),
)
def test_free_capacity_agrees_with_counting_at_every_instant(lab, requests, window):
    with transaction.atomic():
        for n, (start, end, low, high) in enumerate(requests):
            request_host_lease(lab, n, start, end, low, high)
        begin, length = window
        start, end = at(begin), at(begin + length)
        steps = selectors.free_capacity(
            start=start, end=end, resource_properties="", hypervisor_properties=""
        )
        holds = [h for host in held().values() for h in host]
        # Starts at the window's start, only changes, ordered in time.
        assert steps[0][0] == start
        assert all(a[0] < b[0] and a[1] != b[1] for a, b in zip(steps, steps[1:], strict=False))
        assert all(start <= t < end for t, _ in steps)
        # Every quarter hour of the window, the step in force is the count.
        instant = start
        while instant < end:
            busy = {
                h for h, holds_of in held().items() if any(s <= instant < e for s, e, _ in holds_of)
            }
            in_force = [free for t, free in steps if t <= instant][-1]
            assert in_force == len(HOSTS) - len(busy), (instant, steps, holds)
            instant += timedelta(minutes=15)
        transaction.set_rollback(True)


# --- the pure helpers of instance reservations ------------------------------------

SIZES = st.builds(
    allocation.SlotSize,
    vcpus=st.integers(0, 8),
    memory_mb=st.integers(0, 4096),
    disk_gb=st.integers(0, 100),
)


@settings(max_examples=300)
@given(
    usages=st.lists(
        st.tuples(st.integers(0, 20), st.integers(1, 6), SIZES, st.integers(1, 4)), max_size=8
    ),
    window=st.tuples(st.integers(0, 20), st.integers(1, 10)),
)
def test_peak_usage_is_the_highest_at_any_instant(usages, window):
    spans = [(at(s), at(s + n), size, count) for s, n, size, count in usages]
    start, end = at(window[0]), at(window[0] + window[1])
    peak = allocation._peak(spans, start, end)
    # Usage only changes at interval starts: the brute force looks at each
    # hour of the window, which includes all of them.
    expected = (0, 0, 0)
    instant = start
    while instant < end:
        active = [(size, n) for s, e, size, n in spans if s <= instant < e]
        here = (
            sum(size.vcpus * n for size, n in active),
            sum(size.memory_mb * n for size, n in active),
            sum(size.disk_gb * n for size, n in active),
        )
        expected = tuple(max(a, b) for a, b in zip(expected, here, strict=True))
        instant += timedelta(hours=1)
    assert peak == expected


@dataclass(frozen=True)
class Named:
    name: str


@dataclass(frozen=True)
class Reservable:
    """What _plan reads of a ReservableHost: its host's id and name."""

    host_id: int
    host: Named


def fake_host(index: int) -> Reservable:
    return Reservable(host_id=index, host=Named(f"h{index:02d}"))


@settings(max_examples=300)
@given(
    free=st.lists(st.integers(0, 6), min_size=1, max_size=6),
    amount=st.integers(1, 12),
    affinity=st.sampled_from([None, True, False]),
)
def test_plans_respect_free_slots_and_affinity(free, amount, affinity):
    hosts = {fake_host(i): n for i, n in enumerate(free)}
    plan = allocation._plan(hosts, amount, affinity)
    if affinity is True:
        fits = any(n >= amount for n in free)
    elif affinity is False:
        fits = sum(1 for n in free if n >= 1) >= amount
    else:
        fits = sum(free) >= amount
    assert (plan is not None) == fits
    if plan is None:
        return
    assert sum(count for _, count in plan) == amount
    by_id = dict(enumerate(free))
    assert all(0 < count <= by_id[host] for host, count in plan)
    assert len({host for host, _ in plan}) == len(plan)
    if affinity is True:
        assert len(plan) == 1
    if affinity is False:
        assert all(count == 1 for _, count in plan)
