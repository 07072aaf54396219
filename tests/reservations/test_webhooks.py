"""Webhook deliveries to a real receiver on loopback: signed, retried,
limited to the allow-list."""

import hashlib
import hmac
import json

from reservations import notifications
from reservations.models import Delivery, Subscription
from tests.reservations.conftest import Receiver, host_lease


def test_signed_delivery_verified_by_the_receiver(pool, receiver):
    subscription = notifications.subscription_create(
        project=pool.project, url=receiver, event_types=["lease."], secret="s3cret"
    )
    host_lease(pool)
    delivery = Delivery.objects.get(subscription=subscription)
    assert notifications.delivery_attempt(delivery_id=delivery.pk) is None
    headers, body = Receiver.received[0]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Berth-Signature"], expected)
    payload = json.loads(body)
    assert payload["event_type"] == "lease.create" and payload["payload"]["lease_name"] == "l1"
    assert headers["X-Berth-Delivery"] == f"{payload['seq']}-{subscription.pk}"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.response_status) == ("delivered", 204)
    # A redelivered task does nothing more.
    assert notifications.delivery_attempt(delivery_id=delivery.pk) is None
    assert len(Receiver.received) == 1


def test_failures_are_retried_then_given_up(pool, receiver):
    notifications.subscription_create(
        project=pool.project, url=receiver, event_types=[], secret="x"
    )
    host_lease(pool)
    delivery = Delivery.objects.get()
    Receiver.answers = [500, 502, 500]
    assert notifications.delivery_attempt(delivery_id=delivery.pk) is not None
    assert notifications.delivery_attempt(delivery_id=delivery.pk) is not None
    assert notifications.delivery_attempt(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("failed", 3, "HTTP 500")


def test_filter_and_allow_list_at_delivery_time(pool, receiver, settings):
    only_events = notifications.subscription_create(
        project=pool.project, url=receiver, event_types=["lease.event."], secret="x"
    )
    host_lease(pool)
    assert not Delivery.objects.filter(subscription=only_events).exists()
    anything = notifications.subscription_create(
        project=pool.project, url=receiver, event_types=[], secret="x"
    )
    host_lease(pool, name="l2", start=5, end=6)
    settings.BERTH_WEBHOOK_ALLOWED = []  # the operator closed it since
    delivery = Delivery.objects.get(subscription=anything)
    assert notifications.delivery_attempt(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert (
        delivery.status == "failed" and "not an allowed webhook destination" in delivery.last_error
    )
    assert Receiver.received == []
    assert Subscription.objects.count() == 2
