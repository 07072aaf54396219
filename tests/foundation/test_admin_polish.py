"""What an operator notices in the admin (issue 13's polish), through
Django's test client: the site's name, where "View site" goes, plurals,
a lease's reserved hosts, times to the second, and flags whose "no" is
good news. The layout (lists that fit the screen) is in tests/browser."""

import re
from datetime import timedelta

import pytest
from django.contrib import admin
from django.utils import timezone

from compute import services as compute
from compute.models import Flavor
from identity.models import Project
from identity.quotas import quota_set
from reservations import placement, services
from reservations.models import EventType, HostAllocation, Lease, LeaseEvent, Reservation
from tests.foundation.test_admin_writes import OUR_APPS, admin_url, build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db):
    return build_world()


def test_the_site_is_named_berth(admin_client, client):
    page = admin_client.get("/admin/").content.decode()
    assert re.search(r'id="site-name"><a href="/admin/">berth administration</a>', page)
    assert re.search(r"<title>[^<]*\| berth</title>", page)
    assert "Django" not in re.search(r"<title>[^<]*</title>", page).group()
    login = client.get("/admin/login/").content.decode()
    assert "berth administration" in login and "Django administration" not in login


def test_view_site_opens_a_page_that_exists(admin_client):
    page = admin_client.get("/admin/").content.decode()
    [href] = re.findall(r'<a href="([^"]+)">View site</a>', page)
    response = admin_client.get(href)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")


def test_every_plural_is_spelled_right(admin_client):
    """No "Deliverys": a name ending in consonant + y takes -ies, and the
    app index shows the plural."""
    for model in admin.site._registry:
        if model._meta.app_label not in OUR_APPS:
            continue
        singular, plural = model._meta.verbose_name, str(model._meta.verbose_name_plural)
        assert not re.search(r"[^aeiou]ys$", plural), (singular, plural)
        if re.search(r"[^aeiou]y$", singular):
            assert plural == singular[:-1] + "ies", (singular, plural)
    page = admin_client.get("/admin/reservations/").content.decode()
    assert ">Deliveries<" in page and "Deliverys" not in page


def test_lease_page_shows_its_reserved_hosts_and_their_windows(admin_client, world):
    first = world.leases["first"]
    [allocation] = HostAllocation.objects.filter(reservation__lease=first)
    page = admin_client.get(admin_url(Lease, "change", first.pk)).content.decode()
    [table] = re.findall(r'<table class="reserved-hosts">.*?</table>', page, re.S)
    start, end = (
        f"{timezone.localtime(t):%Y-%m-%d %H:%M:%S}" for t in (first.start_at, first.end_at)
    )
    assert re.search(rf">h3</a></th><td>{start} \u2192 {end}</td><td>to come</td>", table), table
    assert allocation.host.name == "h3"


def test_a_replaced_host_is_shown_with_the_part_it_served(admin_client, world):
    """h3 goes down while "running" holds it; h2 becomes reservable and
    takes over: the page shows h3 ended now and h2 current."""
    running = world.leases["running"]
    services.reservable_host_create(name="h2", capabilities={"node_type": "gpu"})
    compute.host_set_enabled(host=world.hosts["h3"], enabled=False)
    placement.heal()
    page = admin_client.get(admin_url(Lease, "change", running.pk)).content.decode()
    [table] = re.findall(r'<table class="reserved-hosts">.*?</table>', page, re.S)
    states = dict(re.findall(r">(h\d)</a></th><td>[^<]*</td><td>([^<]*)</td>", table))
    assert states == {"h3": "ended", "h2": "current"}


def shown_in_a_cell(stamp: str, html: str) -> bool:
    """The time is a table cell's whole text (not part of an object's
    name, which may carry a time too)."""
    return bool(re.search(rf'<td class="field-\w+[^"]*">\s*(<p>)?{stamp}(</p>)?\s*</td>', html))


def test_event_times_show_seconds(admin_client, world):
    """Heads-up 30 s before the start: the two times read differently on
    the lease's page and in the event list."""
    first = world.leases["first"]
    times = {
        e.event_type: f"{timezone.localtime(e.time):%Y-%m-%d %H:%M:%S}"
        for e in LeaseEvent.objects.filter(lease=first)
    }
    assert times[EventType.HEADS_UP] != times[EventType.START]
    page = admin_client.get(admin_url(Lease, "change", first.pk)).content.decode()
    events = admin_client.get(admin_url(LeaseEvent, "changelist"), {"lease__id__exact": first.pk})
    for html in (page, events.content.decode()):
        for stamp in times.values():
            assert shown_in_a_cell(stamp, html), stamp


def test_heads_up_and_start_in_the_same_minute_read_differently(admin_client, world):
    lease = world.leases["second"]
    services.lease_update(lease=lease, start=lease.start_at.replace(second=40), heads_up_seconds=20)
    due = dict(LeaseEvent.objects.filter(lease=lease).values_list("event_type", "time"))
    assert due[EventType.START] - due[EventType.HEADS_UP] == timedelta(seconds=20)
    page = admin_client.get(admin_url(Lease, "change", lease.pk)).content.decode()
    for event_type in (EventType.HEADS_UP, EventType.START):
        assert shown_in_a_cell(f"{due[event_type]:%Y-%m-%d %H:%M:%S}", page), event_type


def test_flags_whose_no_is_good_news_are_not_red_crosses(admin_client, world):
    """A lease that is not degraded, a reservation missing nothing, a flavor
    not disabled: "no", not the admin's red "no" icon."""
    lease = world.leases["first"]
    pages = {
        "lease list": admin_client.get(admin_url(Lease, "changelist")),
        "lease": admin_client.get(admin_url(Lease, "change", lease.pk)),
        "reservation": admin_client.get(
            admin_url(Reservation, "change", lease.reservations.get().pk)
        ),
    }
    for name, response in pages.items():
        assert "icon-no.svg" not in response.content.decode(), name
    flavors = admin_client.get(admin_url(Flavor, "changelist")).content.decode()
    assert '<td class="field-disabled_flag">no</td>' in flavors
    lease_list = pages["lease list"].content.decode()
    assert '<td class="field-degraded_flag">no</td>' in lease_list
    Lease.objects.filter(pk=lease.pk).update(degraded=True)
    lease_list = admin_client.get(admin_url(Lease, "changelist")).content.decode()
    assert '<td class="field-degraded_flag">yes</td>' in lease_list


def test_a_projects_quotas_show_usage_and_the_lease_bounds_alone(admin_client, settings):
    project = Project.objects.create(name="summary")
    quota_set(project=project, resource="lease_duration", limit=-1)
    page = admin_client.get(admin_url(Project, "change", project.pk)).content.decode()
    assert "leases 0/50" in page
    assert f"lease_start_ahead ≤ {settings.BERTH_LEASE_MAX_START_AHEAD}" in page
    assert "lease_duration ≤ ∞" in page
