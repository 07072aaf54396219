"""Leases in the admin: the changelist and its "end now" action, and the
capacity calendar."""

from datetime import UTC, datetime, time, timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from reservations import events, services
from reservations.models import Lease
from tests.browser.conftest import expect, screenshot
from tests.factories import ContextFactory, HostFactory
from tests.reservations.conftest import hosts_of

pytestmark = pytest.mark.browser

# The chart's time axis, in SVG units, whatever the zoom.
PLOT_WIDTH = 960


@pytest.fixture
def lab(transactional_db):
    """Reservable hosts rack-1..rack-4 (two gpu, two storage) and a project
    "lab" with an admin context."""
    kinds = {"rack-1": "gpu", "rack-2": "gpu", "rack-3": "storage", "rack-4": "storage"}
    for name, kind in kinds.items():
        HostFactory(
            name=name,
            vcpus=16,
            memory_mb=32768,
            reservable=True,
            extra_capabilities={"node_type": kind},
        )
    return ContextFactory(user_id="u", project__name="lab")


def lease_create(context, name, start, end, count=1, props=""):
    request = services.LeaseRequest(
        name=name,
        start=start,
        end=end,
        reservations=[services.HostRequest(min=count, max=count, resource_properties=props)],
    )
    return services.lease_create(context=context, request=request)


def test_end_now_action_from_the_lease_changelist(page, lab):
    now = timezone.now()
    running = lease_create(lab, "running", now - timedelta(hours=1), now + timedelta(hours=3))
    later = lease_create(lab, "later", now + timedelta(days=1), now + timedelta(days=2))
    events.sweep()  # starts "running"
    running.refresh_from_db()
    assert running.status == "ACTIVE"

    page.goto("/admin/reservations/lease/")
    row = page.locator("#result_list tbody tr", has_text="running")
    expect(row.locator("td.field-status")).to_have_text("Active")
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "end_now")
    with page.expect_navigation():
        page.click("button[name=index]")

    running.refresh_from_db()
    assert running.status == "TERMINATED" and running.end_at <= timezone.now()
    assert Lease.objects.get(pk=later.pk).status == "PENDING"
    row = page.locator("#result_list tbody tr", has_text="running")
    expect(row.locator("td.field-status")).to_have_text("Terminated")


@pytest.fixture
def booked(lab):
    """Lease "gpu-training" (project lab) holds both gpu hosts from two hours
    from now for three days (so the whole day after its first is held);
    lease "nightly-backup" (project ops) has held one storage host since
    three hours ago and has started."""
    now = timezone.now()
    training = lease_create(
        lab,
        "gpu-training",
        now + timedelta(hours=2),
        now + timedelta(days=3, hours=2),
        count=2,
        props='["==", "$node_type", "gpu"]',
    )
    ops = ContextFactory(user_id="u", project__name="ops")
    backup = lease_create(
        ops,
        "nightly-backup",
        now - timedelta(hours=3),
        now + timedelta(days=1),
        props='["==", "$node_type", "storage"]',
    )
    events.sweep()  # starts nightly-backup
    return SimpleNamespace(training=training, backup=backup)


def week_of(start) -> str:
    return f"/admin/reservations/calendar/?start={start:%Y-%m-%d}&zoom=week"


def test_calendar_draws_the_leases_and_opens_one(page, booked):
    training, backup = booked.training, booked.backup
    # Reached from the lease changelist, as an operator would.
    page.goto("/admin/reservations/lease/")
    with page.expect_navigation():
        page.click("a.calendar-link")
    assert page.url.endswith("/admin/reservations/calendar/")
    # Today's week, named as a bookmark would.
    page.goto(week_of(timezone.now()))

    svg = page.locator("svg.capacity")
    expect(svg.locator("text.host-label")).to_have_text(["rack-1", "rack-2", "rack-3", "rack-4"])
    bars = svg.locator(f"rect.bar[data-lease='{training.pk}']")
    expect(bars).to_have_count(2)
    assert hosts_of(training) == ["rack-1", "rack-2"]
    assert sorted(bars.nth(i).get_attribute("data-host") for i in range(2)) == hosts_of(training)
    assert {bars.nth(i).get_attribute("data-status") for i in range(2)} == {"PENDING"}
    running = svg.locator(f"rect.bar[data-lease='{backup.pk}']")
    expect(running).to_have_count(1)
    expect(running).to_have_attribute("data-status", "ACTIVE")
    assert [running.get_attribute("data-host")] == hosts_of(backup)

    expect(svg.locator("line.now")).to_have_count(1)
    assert svg.locator("path.free-capacity").get_attribute("d").startswith("M ")
    # The heads-up (5 minutes before the start) and the before-end (an hour
    # before the end) fall in this week, on both of the lease's rows.
    expect(svg.locator(f".marker.heads-up[data-lease='{training.pk}']")).to_have_count(2)
    expect(svg.locator(f".marker.before-end[data-lease='{training.pk}']")).to_have_count(2)
    expect(page.locator(".calendar-legend").first).to_contain_text("lab")
    expect(page.locator(".calendar-legend").first).to_contain_text("ops")
    screenshot(page, "calendar")

    with page.expect_navigation():
        bars.first.click()
    assert page.url.endswith(f"/admin/reservations/lease/{training.pk}/change/")
    expect(page.locator("#id_name")).to_have_value("gpu-training")


def test_calendar_zoom_and_query_change_the_window(page, booked):
    training = booked.training
    start = training.start_at
    page.goto(week_of(start))
    week_bar = page.locator(f"rect.bar[data-lease='{training.pk}']").first
    assert float(week_bar.get_attribute("width")) < PLOT_WIDTH / 2  # 3 of 7 days
    expect(page.locator("svg.capacity text.tick-label")).to_have_count(7)

    # The form's own controls: the same day, one day wide.
    page.select_option("select[name=zoom]", "day")
    with page.expect_navigation():
        page.click(".calendar-form input[type=submit]")
    assert "zoom=day" in page.url and f"start={start:%Y-%m-%d}" in page.url
    # 24 hours on the axis, a label every third.
    expect(page.locator("svg.capacity line.grid")).to_have_count(24)
    # The same lease, 24 hours across the plot instead of 7 days: from its
    # start to the day's end.
    day_end = datetime.combine(start.date() + timedelta(days=1), time.min, tzinfo=UTC)
    day_bar = page.locator(f"rect.bar[data-lease='{training.pk}']").first
    expected = (day_end - start).total_seconds() / 86400 * PLOT_WIDTH
    assert float(day_bar.get_attribute("width")) == pytest.approx(expected, abs=1.5)
    expect(page.locator(".calendar-nav a.next")).to_contain_text("next day")

    with page.expect_navigation():
        page.click(".calendar-nav a.next")
    next_day = start.date() + timedelta(days=1)
    assert f"start={next_day:%Y-%m-%d}" in page.url
    # The whole next day is held by the lease: its bar spans the plot.
    full = page.locator(f"rect.bar[data-lease='{training.pk}']").first
    assert float(full.get_attribute("width")) == pytest.approx(PLOT_WIDTH, abs=1)

    page.fill("input[name=query]", '["==", "$node_type", "storage"]')
    with page.expect_navigation():
        page.click(".calendar-form input[type=submit]")
    expect(page.locator("svg.capacity text.host-label")).to_have_text(["rack-3", "rack-4"])
    expect(page.locator(f"rect.bar[data-lease='{training.pk}']")).to_have_count(0)
