"""The operator dashboard on the admin index: the counts, the changelists
they open (which must list exactly what was counted), and a query budget."""

import html
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from compute.models import Host, Instance, InstanceStatus
from console.dashboard import dashboard_counts
from identity.models import Project
from reservations.models import Delivery, DeliveryStatus, Lease, Notification, Subscription

pytestmark = pytest.mark.django_db

LINK = re.compile(
    r'<a class="count" data-metric="(?P<metric>\w+)" href="(?P<href>[^"]+)">'
    r'<span class="value">(?P<value>\d+)</span>'
)
EXPECTED = {
    "hosts_up": 2,
    "hosts_down": 1,
    "hosts_disabled": 1,
    "builds_in_flight": 1,
    "builds_failed_last_hour": 1,
    "leases_starting_next_hour": 1,
    "undelivered_notifications": 2,
}


@pytest.fixture
def seeded(db, settings):
    """Hosts up, down (no heartbeat for longer than BERTH_HOST_DOWN_AFTER)
    and disabled-but-up; a build running, one failed now and one failed two
    hours ago; leases starting in 30 minutes and in 3 hours; deliveries
    pending, failed and delivered."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.BERTH_HOST_DOWN_AFTER + 60)
    size = {"vcpus": 8, "memory_mb": 16384, "disk_gb": 100}
    Host.objects.create(name="up", last_heartbeat=now, **size)
    Host.objects.create(name="down", last_heartbeat=stale, **size)
    Host.objects.create(name="off", last_heartbeat=now, enabled=False, **size)

    project = Project.objects.create(name="dash")
    flavor = {"project": project, "vcpus": 1, "memory_mb": 512, "disk_gb": 1}
    Instance.objects.create(name="building", status=InstanceStatus.BUILD, **flavor)
    Instance.objects.create(name="running", status=InstanceStatus.ACTIVE, **flavor)
    Instance.objects.create(name="failed", status=InstanceStatus.ERROR, **flavor)
    old = Instance.objects.create(name="failed-before", status=InstanceStatus.ERROR, **flavor)
    # auto_now sets updated_at on save; an update() leaves it as given.
    Instance.objects.filter(pk=old.pk).update(updated_at=now - timedelta(hours=2))

    for name, starts_in in [("soon", timedelta(minutes=30)), ("later", timedelta(hours=3))]:
        Lease.objects.create(
            project=project,
            name=name,
            start_at=now + starts_in,
            end_at=now + starts_in + timedelta(hours=1),
            heads_up_seconds=0,
        )

    subscription = Subscription.objects.create(
        project=project, url="https://hooks.example.com/berth", secret="s"
    )
    for status in DeliveryStatus:
        notification = Notification.objects.create(
            project=project, event_type="lease.created", payload={}
        )
        Delivery.objects.create(notification=notification, subscription=subscription, status=status)


def dashboard_links(response) -> dict[str, tuple[int, str]]:
    text = response.content.decode()
    assert '<div class="dashboard">' in text
    return {m["metric"]: (int(m["value"]), html.unescape(m["href"])) for m in LINK.finditer(text)}


def test_counts(seeded):
    assert dashboard_counts() == EXPECTED


def test_index_shows_the_counts_and_each_link_lists_them(admin_client, seeded):
    links = dashboard_links(admin_client.get("/admin/"))
    assert {metric: value for metric, (value, _) in links.items()} == EXPECTED
    for metric, (value, href) in links.items():
        response = admin_client.get(href)
        # A lookup the changelist rejects redirects to ?e=1 instead.
        assert response.status_code == 200, (metric, href)
        assert response.context["cl"].result_count == value, (metric, href)


def test_index_query_budget(admin_client, seeded, django_assert_max_num_queries):
    # Session, user, four aggregate counts and the recent-actions sidebar.
    with django_assert_max_num_queries(7):
        response = admin_client.get("/admin/")
    assert response.status_code == 200


def test_staff_see_only_the_counts_they_may_open(client, seeded):
    user = get_user_model().objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_host"))
    client.force_login(user)
    links = dashboard_links(client.get("/admin/"))
    assert sorted(links) == ["hosts_disabled", "hosts_down", "hosts_up"]
