"""What an operator sees first in the admin (issue 13): berth's name, a
"View site" that opens a page, a lease's hosts and event times, and lists
that fit a laptop screen beside the open navigation."""

import pytest
from django.contrib import admin

from compute.models import Instance
from reservations.models import EventType, Lease, LeaseEvent
from tests.browser.conftest import expect, screenshot
from tests.foundation.test_admin_writes import OUR_APPS, admin_url, build_world

pytestmark = pytest.mark.browser

WIDTHS = {"laptop": 1280, "issue": 1400}


@pytest.fixture
def world(transactional_db, no_worker):
    return build_world()


def test_berth_names_the_site_and_view_site_opens_a_page(page):
    expect(page.locator("#site-name")).to_have_text("berth administration")
    expect(page).to_have_title("Operator dashboard | berth")
    with page.expect_navigation() as navigation:
        page.click("#user-tools a:text('View site')")
    assert navigation.value.status == 200
    assert page.url.endswith("/api/docs")
    expect(page.locator("#swagger-ui")).to_be_attached()


def test_lease_page_shows_hosts_event_seconds_and_a_plain_no(page, world):
    first = world.leases["first"]
    page.goto(admin_url(Lease, "change", first.pk))
    hosts = page.locator("table.reserved-hosts tr")
    expect(hosts).to_have_count(1)
    expect(hosts.locator("th")).to_have_text("h3")
    expect(hosts.locator("td").last).to_have_text("to come")
    expect(page.locator(".field-degraded_flag .readonly")).to_have_text("no")
    expect(page.locator(".field-degraded_flag img")).to_have_count(0)

    due = {e.event_type: e.time for e in LeaseEvent.objects.filter(lease=first)}
    rows = page.locator("#events-group tbody tr.has_original")
    for event_type in (EventType.HEADS_UP, EventType.START):
        row = rows.filter(has_text=EventType(event_type).label)
        expect(row.locator("td.field-due")).to_have_text(f"{due[event_type]:%Y-%m-%d %H:%M:%S}")
    heads_up, start = (
        rows.filter(has_text=EventType(t).label).locator("td.field-due").inner_text()
        for t in (EventType.HEADS_UP, EventType.START)
    )
    assert heads_up != start
    # From the status down: the flag, the hosts and the events in one view.
    page.locator("div.form-row.field-status").evaluate("row => row.scrollIntoView()")
    screenshot(page, "lease")


def fits(page) -> bool:
    """The list's table is as wide as its box: nothing cut at the right."""
    return page.evaluate(
        "(() => { const r = document.querySelector('#changelist .results');"
        " return r.scrollWidth <= r.clientWidth; })()"
    )


def test_every_list_fits_beside_the_open_navigation(page, world):
    """At 1400 px with the navigation open (where the server list was cut)
    every list fits; the server list, with a long fault, even at 1280 px."""
    page.context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'true')")
    page.set_viewport_size({"width": WIDTHS["issue"], "height": 800})
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in OUR_APPS or not model_admin.list_display:
            continue
        page.goto(admin_url(model, "changelist"))
        expect(page.locator("#nav-sidebar")).to_be_visible()
        if page.locator("#changelist .results").count():
            assert fits(page), model.__name__
    expect(page.locator("#nav-sidebar")).to_contain_text("Deliveries")

    page.set_viewport_size({"width": WIDTHS["laptop"], "height": 800})
    page.goto(admin_url(Instance, "changelist"))
    failed = page.locator("#result_list tbody tr", has_text="failed")
    expect(failed.locator("td.field-fault_message")).to_contain_text("no host")
    assert fits(page)
    screenshot(page, "server-list")
