"""The capacity calendar: the selector, its JSON endpoint and the admin page,
through Django's test client as a superuser."""

import re
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

import pytest
import time_machine
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from compute.models import Host
from config.errors import Invalid
from identity.auth import RequestContext
from identity.models import Project
from reservations import calendar
from reservations.models import Lease, LeaseStatus
from tests.reservations.conftest import at, host_lease, hosts_of

PAGE = "/admin/reservations/calendar/"
DATA = "/admin/reservations/calendar/data"
SVG = "{http://www.w3.org/2000/svg}"
TUESDAY = "2030-01-01"  # the day of T0
MIDNIGHT = datetime(2030, 1, 1, tzinfo=UTC)
NEXT_TUESDAY = "2030-01-08"


def svg_of(response) -> ElementTree.Element:
    """The chart, parsed as XML: it must be well formed to draw at all."""
    assert response.status_code == 200
    match = re.search(r'<svg class="capacity".*?</svg>', response.content.decode(), re.S)
    return ElementTree.fromstring(match.group(0))


def bars_of(svg) -> list[ElementTree.Element]:
    return svg.findall(f".//{SVG}rect[@class='bar']")


def other_project() -> RequestContext:
    return RequestContext(user_id="u", project=Project.objects.create(name="other"), role="admin")


def test_urls():
    assert reverse("admin:reservations_calendar") == PAGE
    assert reverse("admin:reservations_calendar_data") == DATA


@pytest.mark.parametrize(("zoom", "days"), [("day", 1), ("week", 7), ("month", 30)])
def test_zoom_windows(zoom, days):
    window = calendar.calendar_window(start=TUESDAY, zoom=zoom)
    assert (window.start, window.end, window.zoom) == (
        MIDNIGHT,
        MIDNIGHT + timedelta(days=days),
        zoom,
    )


def test_window_defaults_to_a_week_from_today_utc():
    with time_machine.travel(at(13), tick=False):  # 01:00 UTC on Wednesday
        window = calendar.calendar_window()
    assert window.start == MIDNIGHT + timedelta(days=1)
    assert window.end == window.start + timedelta(days=7)
    assert window.zoom == "week"


@pytest.mark.parametrize(
    "params",
    [{"zoom": "year"}, {"start": "01/01/2030"}, {"start": "2030-02-30"}, {"start": "9999-12-31"}],
)
def test_bad_window_is_invalid(params):
    with pytest.raises(Invalid):
        calendar.calendar_window(**params)


def test_bar_on_the_leased_host_at_the_leased_times(pool, admin_client):
    lease = host_lease(pool, start=1, end=3)
    [host] = hosts_of(lease)
    body = admin_client.get(DATA, {"start": TUESDAY, "zoom": "day"}).json()
    assert body["start"] == MIDNIGHT.isoformat()
    assert body["end"] == (MIDNIGHT + timedelta(days=1)).isoformat()
    assert [h["name"] for h in body["hosts"]] == ["r1", "r2", "r3", "r4"]
    assert body["bars"] == [
        {
            "lease_id": str(lease.pk),
            "lease_name": "l1",
            "project": "lab",
            "project_id": str(pool.project.pk),
            "host": host,
            "start": at(1).isoformat(),
            "end": at(3).isoformat(),
            "status": "PENDING",
            "color": calendar.project_color(pool.project.pk),
            "replaced_by": None,
            "url": reverse("admin:reservations_lease_change", args=[lease.pk]),
        }
    ]

    svg = svg_of(admin_client.get(PAGE, {"start": TUESDAY, "zoom": "day"}))
    [rect] = bars_of(svg)
    assert (rect.get("data-lease"), rect.get("data-host")) == (str(lease.pk), host)
    assert "l1" in rect.find(f"{SVG}title").text and "lab" in rect.find(f"{SVG}title").text
    # The bar spans 13:00 to 15:00 of the day's 960 px after the 150 px labels.
    assert float(rect.get("x")) == pytest.approx(150 + 960 * 13 / 24, abs=0.1)
    assert float(rect.get("width")) == pytest.approx(960 * 2 / 24, abs=0.2)
    [link] = [a for a in svg.iter(f"{SVG}a") if a.find(f"{SVG}rect") is not None]
    assert link.get("href") == reverse("admin:reservations_lease_change", args=[lease.pk])
    labels = [t.text for t in svg.findall(f".//{SVG}text[@class='host-label']")]
    assert labels == ["r1", "r2", "r3", "r4"]


def test_colour_is_stable_per_project(pool):
    other = other_project()
    mine = [host_lease(pool, name=n, start=s, end=s + 1) for n, s in (("a", 1), ("b", 3))]
    theirs = host_lease(other, name="c", start=1, end=2)
    bars = calendar.calendar_data(window=calendar.calendar_window(start=TUESDAY, zoom="day")).bars
    colors = {bar.lease_id: bar.color for bar in bars}
    assert colors[mine[0].pk] == colors[mine[1].pk] == calendar.project_color(pool.project.pk)
    assert colors[theirs.pk] == calendar.project_color(other.project.pk)
    # The same id gets the same colour in every process (no salted hash()).
    assert calendar.project_color("00000000-0000-0000-0000-000000000000") == "#edc948"


def test_status_is_on_the_bar(pool, admin_client):
    pending = host_lease(pool, name="pending", start=1, end=3)
    active = host_lease(pool, name="active", start=1, end=3)
    ended = host_lease(pool, name="ended", start=1, end=3)
    Lease.objects.filter(pk=active.pk).update(status=LeaseStatus.ACTIVE)
    Lease.objects.filter(pk=ended.pk).update(status=LeaseStatus.TERMINATED)
    svg = svg_of(admin_client.get(PAGE, {"start": TUESDAY, "zoom": "day"}))
    status = {rect.get("data-lease"): rect.get("data-status") for rect in bars_of(svg)}
    assert status == {
        str(pending.pk): "PENDING",
        str(active.pk): "ACTIVE",
        str(ended.pk): "TERMINATED",
    }


def test_free_capacity_at_known_instants(pool, admin_client):
    host_lease(pool, name="two", start=1, end=3, min=2, max=2)
    host_lease(pool, name="one", start=2, end=4)
    body = admin_client.get(DATA, {"start": TUESDAY, "zoom": "day"}).json()
    assert [(step["at"], step["free"]) for step in body["free"]] == [
        (MIDNIGHT.isoformat(), 4),
        (at(1).isoformat(), 2),
        (at(2).isoformat(), 1),
        (at(3).isoformat(), 3),
        (at(4).isoformat(), 4),
    ]
    svg = svg_of(admin_client.get(PAGE, {"start": TUESDAY, "zoom": "day"}))
    [line] = svg.findall(f".//{SVG}path[@class='free-capacity']")
    # Starts at the window's left edge at the top of the band: all 4 free.
    assert line.get("d").startswith("M 150.0 34.0 H")


def test_heads_up_and_before_end_markers(pool, admin_client, settings):
    settings.BERTH_LEASE_BEFORE_END = 600
    lease = host_lease(pool, start=1, end=2, heads_up_seconds=900)
    [host] = hosts_of(lease)
    body = admin_client.get(DATA, {"start": TUESDAY, "zoom": "day"}).json()
    assert body["markers"] == [
        {"lease_id": str(lease.pk), "kind": "heads-up", "at": at(0.75).isoformat(), "host": host},
        {
            "lease_id": str(lease.pk),
            "kind": "before-end",
            "at": (at(2) - timedelta(seconds=600)).isoformat(),
            "host": host,
        },
    ]
    svg = svg_of(admin_client.get(PAGE, {"start": TUESDAY, "zoom": "day"}))
    assert len(svg.findall(f".//{SVG}line[@class='marker heads-up']")) == 1
    assert len(svg.findall(f".//{SVG}line[@class='marker before-end']")) == 1


def test_now_marker_only_inside_the_window(pool, client, admin_user):
    with time_machine.travel(at(0), tick=False):
        # Logged in at the travelled time, or the session would have expired.
        client.force_login(admin_user)
        admin_client = client
        today = svg_of(admin_client.get(PAGE, {"start": TUESDAY, "zoom": "day"}))
        tomorrow = svg_of(admin_client.get(PAGE, {"start": "2030-01-02", "zoom": "day"}))
    [now] = today.findall(f".//{SVG}line[@class='now']")
    assert float(now.get("x1")) == pytest.approx(150 + 960 / 2)
    assert tomorrow.findall(f".//{SVG}line[@class='now']") == []


def test_query_narrows_the_hosts(pool, admin_client):
    compute = host_lease(pool, name="compute", props='["==", "$node_type", "compute"]')
    storage = host_lease(pool, name="storage", props='["==", "$node_type", "storage"]')
    params = {"start": TUESDAY, "zoom": "day", "query": '["==", "$node_type", "storage"]'}
    body = admin_client.get(DATA, params).json()
    assert [h["name"] for h in body["hosts"]] == ["r3", "r4"]
    assert [b["lease_id"] for b in body["bars"]] == [str(storage.pk)]
    assert str(compute.pk) not in {b["lease_id"] for b in body["bars"]}
    assert {s["free"] for s in body["free"]} == {2, 1}
    svg = svg_of(admin_client.get(PAGE, params))
    labels = [t.text for t in svg.findall(f".//{SVG}text[@class='host-label']")]
    assert labels == ["r3", "r4"]
    numeric = {**params, "query": '[">=", "$gpus", 5]'}
    assert [h["name"] for h in admin_client.get(DATA, numeric).json()["hosts"]] == ["r2"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"query": "node_type=compute"}, "Malformed query"),
        ({"query": '["~", "$node_type", "compute"]'}, "Malformed query"),
        ({"zoom": "year"}, "zoom must be one of day, week, month"),
        ({"start": "tomorrow"}, "start must be a date as YYYY-MM-DD"),
    ],
)
def test_bad_parameters(pool, admin_client, params, message):
    response = admin_client.get(DATA, params)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
    page = admin_client.get(PAGE, params)
    assert page.status_code == 200
    text = page.content.decode()
    assert 'class="errornote"' in text and message in text
    assert 'class="capacity"' not in text


def test_staff_only(pool, client):
    for path in (PAGE, DATA):
        response = client.get(path)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    User.objects.create_user("visitor", password="pw")
    client.login(username="visitor", password="pw")
    assert client.get(PAGE).status_code == 302
    # Staff who may not see leases may not see them drawn either.
    User.objects.create_user("clerk", password="pw", is_staff=True)
    client.login(username="clerk", password="pw")
    assert client.get(PAGE).status_code == 403
    assert client.get(DATA).status_code == 403


def test_which_hosts_are_free_next_tuesday(pool, admin_client):
    # Tuesday 10:00-12:00 holds two hosts, Wednesday 10:00-12:00 one.
    tuesday = hosts_of(host_lease(pool, name="tue", start=166, end=168, min=2, max=2))
    wednesday = hosts_of(host_lease(pool, name="wed", start=190, end=192))
    Host.objects.filter(name="r4").update(enabled=False)
    everyone = ["r1", "r2", "r3"]

    day = admin_client.get(DATA, {"start": NEXT_TUESDAY, "zoom": "day"}).json()
    assert day["free_hosts"] == [h for h in everyone if h not in tuesday]
    week = admin_client.get(DATA, {"start": "2030-01-07", "zoom": "week"}).json()
    assert week["free_hosts"] == [h for h in everyone if h not in tuesday + wednesday]

    page = admin_client.get(PAGE, {"start": "2030-01-07", "zoom": "week"}).content.decode()
    # One click from the week to the day: each day on the axis links to it.
    assert f'href="?start={NEXT_TUESDAY}&amp;zoom=day&amp;query="' in page
    response = admin_client.get(PAGE, {"start": NEXT_TUESDAY, "zoom": "day"})
    listed = re.search(r'<ul class="free-hosts">(.*?)</ul>', response.content.decode(), re.S)
    assert re.findall(r"<li>(.*?)</li>", listed.group(1)) == day["free_hosts"]
    labels = svg_of(response).findall(f".//{SVG}text[@class='host-label']")
    assert [t.text for t in labels if t.get("data-enabled") == "false"] == ["r4 (disabled)"]


def test_links_from_the_app_index_and_the_lease_list(db, admin_client):
    for page in ("admin:app_list", "admin:reservations_lease_changelist"):
        args = ["reservations"] if page == "admin:app_list" else []
        text = admin_client.get(reverse(page, args=args)).content.decode()
        assert f'href="{PAGE}">Capacity calendar</a>' in text


def test_query_count_does_not_grow_with_leases(pool, admin_client, django_assert_max_num_queries):
    host_lease(pool, name="first", start=1, end=2)
    params = {"start": TUESDAY, "zoom": "week"}
    with CaptureQueriesContext(connection) as few:
        svg_of(admin_client.get(PAGE, params))
    other = other_project()
    for n in range(12):
        host_lease(pool if n % 2 else other, name=f"l{n}", start=3 + n * 2, end=4 + n * 2)
    with django_assert_max_num_queries(len(few)):
        svg = svg_of(admin_client.get(PAGE, params))
    assert len(bars_of(svg)) == 13
    # Hosts, allocations, markers, free capacity (two), free hosts and the
    # addresses held per segment; the page adds the session, the user and
    # the capability keys.
    assert len(few) <= 10
    with django_assert_max_num_queries(7):
        calendar.calendar_data(window=calendar.calendar_window(start=TUESDAY, zoom="week"))
