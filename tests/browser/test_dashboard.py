"""The operator dashboard on the admin index: its counts, and the changelist
each one opens."""

from datetime import timedelta

import pytest
from django.utils import timezone

from compute import services
from compute.models import Host
from reservations import notifications
from reservations import services as reservations
from tests.browser.conftest import expect, screenshot
from tests.compute.conftest import run_pipeline
from tests.factories import ContextFactory, FlavorFactory, HostFactory, NetworkFactory

pytestmark = pytest.mark.browser

EXPECTED = {
    "hosts_up": 3,
    "hosts_down": 1,
    "hosts_disabled": 1,
    "builds_in_flight": 1,
    "builds_failed_last_hour": 1,
    "leases_starting_next_hour": 1,
    "undelivered_notifications": 1,
}


@pytest.fixture
def fleet(transactional_db, no_worker, settings):
    """Hosts up-1, up-2 and off-1 (up, disabled) reporting, gone-1 silent
    for an hour; one build waiting for a worker, one failed (no host has
    room for it); a lease starting in 30 minutes whose webhook is still to
    be delivered."""
    # A documentation address (TEST-NET-1); no worker runs, so it stays pending.
    settings.BERTH_WEBHOOK_ALLOWED = ["192.0.2.0/24"]

    HostFactory(name="up-1")
    HostFactory(name="up-2", reservable=True)  # the lease's
    HostFactory(name="off-1")
    HostFactory(name="gone-1")
    services.host_set_enabled(host=Host.objects.get(name="off-1"), enabled=False, reason="rma")
    # Silence has no service: the heartbeat is simply set an hour back.
    Host.objects.filter(name="gone-1").update(last_heartbeat=timezone.now() - timedelta(hours=1))

    context = ContextFactory(user_id="u1", project__name="acme")
    project = context.project
    network = NetworkFactory(context=context, project=project, name="flat", vlan=True)
    small = FlavorFactory(name="small")
    huge = FlavorFactory(name="huge", vcpus=64)
    nics = [services.NicRequest(network=network)]
    services.server_create(context=context, name="waiting", flavor=small, nics=nics)
    failed = services.server_create(context=context, name="too-big", flavor=huge, nics=nics)[0]
    assert run_pipeline(failed).status == "ERROR"

    notifications.subscription_create(
        project=project, url="https://192.0.2.1/berth", event_types=[], secret="s"
    )
    now = timezone.now()
    reservations.lease_create(
        context=context,
        request=reservations.LeaseRequest(
            name="soon",
            start=now + timedelta(minutes=30),
            end=now + timedelta(hours=4),
            reservations=[reservations.HostRequest(min=1, max=1)],
        ),
    )


def test_dashboard_counts_and_links(page, fleet):
    page.goto("/admin/")
    dashboard = page.locator("div.dashboard")
    values = {
        metric: int(dashboard.locator(f"a.count[data-metric='{metric}'] .value").inner_text())
        for metric in EXPECTED
    }
    assert values == EXPECTED
    screenshot(page, "dashboard")

    # Each count opens the changelist of exactly what it counted.
    with page.expect_navigation():
        dashboard.locator("a.count[data-metric='hosts_down']").click()
    assert "/admin/compute/host/" in page.url
    expect(page.locator("#result_list tbody tr th.field-name")).to_have_text(["gone-1"])

    page.go_back()
    with page.expect_navigation():
        dashboard.locator("a.count[data-metric='builds_failed_last_hour']").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list tbody tr")).to_contain_text("too-big")
