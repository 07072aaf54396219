"""Where a webhook may point, and what a subscription shows: the allow-list
by address and port, guarded addresses, credentials and control characters
in URLs, the per-project limit, the admin."""

import socket

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from identity.quotas import quota_set
from reservations import notifications
from reservations.models import Delivery, Subscription
from tests.conftest import Caller
from tests.reservations.conftest import Receiver, host_lease

SUBSCRIPTIONS = "/reservation/v1/subscriptions"


def subscribe(caller: Caller, url: str):
    return caller.post(SUBSCRIPTIONS, {"subscription": {"url": url}})


def refused(response, why: str) -> bool:
    body = response.json()
    return (
        response.status_code == 400
        and body["error_code"] == 400
        and why in body["error_message"]
        and "Traceback" not in body["error_message"]
    )


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        # The address is allowed, not every service on it.
        (["127.0.0.1/32"], "http://127.0.0.1:6379/"),
        (["127.0.0.1/32"], "http://127.0.0.1:5432/"),
        (["127.0.0.1/32:8080"], "http://127.0.0.1/hook"),
        (["127.0.0.1/32:8080"], "https://127.0.0.1:8443/hook"),
        (["[::1]:8080"], "http://[::1]:8081/hook"),
        # A broad range does not open this host, its link or the metadata service.
        (["0.0.0.0/0"], "http://127.0.0.1/hook"),
        (["0.0.0.0/0"], "http://127.1.2.3/hook"),
        (["0.0.0.0/0"], "http://0.0.0.0/hook"),
        (["0.0.0.0/0"], "http://localhost/hook"),
        (["0.0.0.0/0"], "http://2130706433/hook"),  # 127.0.0.1 as a number
        (["0.0.0.0/0"], "http://169.254.169.254/latest/meta-data/"),
        (["0.0.0.0/0"], "http://169.254.10.1/hook"),
        (["::/0"], "http://[::1]/hook"),
        (["::/0"], "http://[::ffff:127.0.0.1]/hook"),
        (["::/0"], "http://[fe80::1]/hook"),
        (["::/0"], "http://[fd00:ec2::254]/hook"),
        (["0.0.0.0/0", "::/0"], "http://169.254.169.254:80/"),
        # Naming the link-local range is not naming the metadata address in it.
        (["169.254.0.0/16"], "http://169.254.169.254/"),
        # A name allowed by the operator still may not resolve to a guarded address.
        (["localhost"], "http://localhost/hook"),
        (["localhost:8080"], "http://localhost:8080/hook"),
    ],
)
def test_refused_destinations(lab_member, settings, allowed, url):
    settings.BERTH_WEBHOOK_ALLOWED = allowed
    assert refused(subscribe(lab_member, url), "not an allowed webhook destination")
    assert not Subscription.objects.exists()


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        (["127.0.0.1/32"], "http://127.0.0.1/hook"),
        (["127.0.0.1/32"], "https://127.0.0.1/hook"),
        (["127.0.0.1/32:8080"], "http://127.0.0.1:8080/hook"),
        (["127.0.0.0/8:9"], "http://127.0.0.1:9/hook"),
        (["[::1]:8080"], "http://[::1]:8080/hook"),
        (["[2001:db8::/32]:8443"], "https://[2001:db8::1]:8443/hook"),
        (["0.0.0.0/0"], "http://192.0.2.10/hook"),
        (["169.254.0.0/16"], "http://169.254.10.1/hook"),
        (["169.254.169.254/32"], "http://169.254.169.254/latest/meta-data/"),
        (["localhost:8080", "127.0.0.1/32:8080"], "http://localhost:8080/hook"),
    ],
)
def test_allowed_destinations(lab_member, settings, allowed, url):
    settings.BERTH_WEBHOOK_ALLOWED = allowed
    response = subscribe(lab_member, url)
    assert response.status_code == 201, response.json()


@pytest.fixture
def dns(monkeypatch):
    """Names resolved by the test; others by the system."""
    names: dict[str, str] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in names:
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


def deliver_once(pool) -> Delivery:
    host_lease(pool)
    delivery = Delivery.objects.get()
    assert notifications.delivery_attempt(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    return delivery


def test_the_port_is_checked_again_at_delivery(pool, settings, listener):
    # A subscription that got in under an older allow-list.
    Subscription.objects.create(
        project=pool.project, url=f"http://127.0.0.1:{listener}/hook", secret="x"
    )
    settings.BERTH_WEBHOOK_ALLOWED = ["127.0.0.1/32"]
    delivery = deliver_once(pool)
    assert delivery.status == "failed" and "not an allowed" in delivery.last_error
    assert Receiver.received == []


def test_a_name_that_turns_into_loopback_is_not_contacted(pool, settings, listener, dns):
    settings.BERTH_WEBHOOK_ALLOWED = [f"hooks.test:{listener}"]
    dns["hooks.test"] = "192.0.2.10"
    notifications.subscription_create(
        project=pool.project, url=f"http://hooks.test:{listener}/hook", event_types=[], secret="x"
    )
    dns["hooks.test"] = "127.0.0.1"  # its DNS changed since
    delivery = deliver_once(pool)
    assert delivery.status == "failed" and "(127.0.0.1)" in delivery.last_error
    assert Receiver.received == []
    # Named explicitly, loopback is reached, at the address that was checked.
    settings.BERTH_WEBHOOK_ALLOWED = [f"hooks.test:{listener}", f"127.0.0.1/32:{listener}"]
    notifications.delivery_retry(delivery=delivery)
    assert notifications.delivery_attempt(delivery_id=delivery.pk) is None
    assert len(Receiver.received) == 1
    assert Receiver.received[0][0]["Host"] == f"hooks.test:{listener}"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        # Shown to every reader of the project.
        ("http://user:password@127.0.0.1/hook", "credentials"),
        ("http://token@127.0.0.1/hook", "credentials"),
        ("http://:password@127.0.0.1/hook", "credentials"),
        # Header injection, or a URL checked other than it is stored.
        ("http://127.0.0.1/hook\r\nX-Injected: 1", "control character"),
        ("http://127.0.0.1/ho\nok", "control character"),
        ("http://127.0.0.1/ho\tok", "control character"),
        ("http://127.0.0.1/hook\x1b[0m", "control character"),
        ("http://127.0.0.1/ho ok", "control character"),
        ("http://127.0.0.1/hook\x7f", "control character"),
    ],
)
def test_urls_with_credentials_or_control_characters_are_refused(lab_member, settings, url, why):
    settings.BERTH_WEBHOOK_ALLOWED = ["127.0.0.1/32"]
    assert refused(subscribe(lab_member, url), why)
    assert not Subscription.objects.exists()


def test_subscriptions_per_project_are_limited(lab_member, settings):
    settings.BERTH_WEBHOOK_ALLOWED = ["127.0.0.1/32"]
    settings.BERTH_QUOTA_DEFAULTS = {**settings.BERTH_QUOTA_DEFAULTS, "subscriptions": 2}
    for n in range(2):
        assert subscribe(lab_member, f"http://127.0.0.1/{n}").status_code == 201
    over = subscribe(lab_member, "http://127.0.0.1/3")
    assert over.status_code == 409 and "subscriptions" in over.json()["error_message"]
    assert Subscription.objects.count() == 2
    # Another project has its own count; an override raises this one.
    assert subscribe(Caller("other", "member"), "http://127.0.0.1/o").status_code == 201
    quota_set(project=lab_member.project, resource="subscriptions", limit=3)
    assert subscribe(lab_member, "http://127.0.0.1/3").status_code == 201


@pytest.fixture
def subscription(pool):
    # Written before URLs with credentials were refused.
    return Subscription.objects.create(
        project=pool.project,
        url="http://hook-user:hunter2@127.0.0.1/hook",
        secret="very-secret-signing-key",
    )


def test_stored_credentials_are_not_shown_to_readers(subscription):
    reader = Caller("lab", "reader", username="lab-reader")
    listed = reader.get(SUBSCRIPTIONS).json()["subscriptions"]
    shown = reader.get(f"{SUBSCRIPTIONS}/{subscription.pk}").json()["subscription"]
    assert [s["url"] for s in listed] == [shown["url"]] == ["http://***@127.0.0.1/hook"]


def test_the_admin_never_shows_the_secret(admin_client, subscription):
    pages = [
        reverse("admin:reservations_subscription_changelist"),
        reverse("admin:reservations_subscription_change", args=[subscription.pk]),
        reverse("admin:reservations_subscription_history", args=[subscription.pk]),
        reverse("admin:reservations_subscription_delete", args=[subscription.pk]),
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200
        assert b"very-secret-signing-key" not in response.content, page
        assert b"hunter2" not in response.content, page
    change = admin_client.get(pages[1])
    assert "secret" not in change.context["adminform"].form.fields


def test_the_admin_pauses_a_subscription_through_the_service(admin_client, subscription):
    page = reverse("admin:reservations_subscription_change", args=[subscription.pk])
    # Only "enabled" can change: a posted secret or URL is ignored.
    response = admin_client.post(
        page, {"enabled": "", "secret": "chosen", "url": "http://10.0.0.1/"}
    )
    assert response.status_code == 302
    subscription.refresh_from_db()
    assert (subscription.enabled, subscription.secret, subscription.url) == (
        False,
        "very-secret-signing-key",
        "http://hook-user:hunter2@127.0.0.1/hook",
    )
    assert LogEntry.objects.filter(object_id=str(subscription.pk)).exists()


def test_a_view_only_user_cannot_change_or_delete_a_subscription(client, subscription):
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_subscription"))
    client.force_login(viewer)
    page = reverse("admin:reservations_subscription_change", args=[subscription.pk])
    shown = client.get(page).content
    assert b"very-secret-signing-key" not in shown and b"hunter2" not in shown
    client.post(page, {"enabled": ""})
    delete = reverse("admin:reservations_subscription_delete", args=[subscription.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    subscription.refresh_from_db()
    assert subscription.enabled


def test_a_malformed_allow_list_entry_stops_berth_at_start(tmp_path):
    from tests.foundation.test_secret_key import manage_check

    refused = manage_check(tmp_path, BERTH_WEBHOOK_ALLOWED="127.0.0.1/32:99999")
    assert refused.returncode != 0
    assert "BERTH_WEBHOOK_ALLOWED: '127.0.0.1/32:99999' has no valid port." in refused.stderr
    assert manage_check(tmp_path, BERTH_WEBHOOK_ALLOWED="127.0.0.1/32:8080").returncode == 0
