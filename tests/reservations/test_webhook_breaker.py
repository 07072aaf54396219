"""A delivery's whole-answer deadline and each subscription's circuit
breaker, against real receivers on loopback."""

import time

import pytest
import time_machine
from django.utils import timezone

from reservations import notifications
from reservations.models import Delivery, Notification, Subscription
from tests.conftest import Caller
from tests.reservations.conftest import Receiver


def attempt(delivery: Delivery):
    return notifications.delivery_attempt(delivery_id=delivery.pk)


def pending(subscription: Subscription, count: int) -> list[Delivery]:
    for n in range(count):
        notifications.notify(project=subscription.project, event_type="lease.update", n=n)
    return list(Delivery.objects.filter(subscription=subscription).order_by("pk"))


@pytest.fixture
def failing(pool, receiver, settings):
    """A subscription whose receiver answers 500 to everything."""
    settings.BERTH_WEBHOOK_MAX_ATTEMPTS = 8
    settings.BERTH_WEBHOOK_BREAKER_AFTER = 2
    settings.BERTH_WEBHOOK_BREAKER_BACKOFF = 60
    settings.BERTH_WEBHOOK_DISABLE_AFTER = 4
    Receiver.answers = [500] * 50
    return notifications.subscription_create(
        project=pool.project, url=receiver, event_types=[], secret="s"
    )


def test_an_answer_trickled_a_line_at_a_time_is_cut_at_the_deadline(pool, settings, trickler):
    settings.BERTH_WEBHOOK_ALLOWED = [f"127.0.0.1/32:{trickler.port}"]
    settings.BERTH_WEBHOOK_TIMEOUT = 1.5
    subscription = notifications.subscription_create(
        project=pool.project, url=f"http://127.0.0.1:{trickler.port}/", event_types=[], secret="s"
    )
    (delivery,) = pending(subscription, 1)
    started = time.monotonic()
    wait = attempt(delivery)
    took = time.monotonic() - started
    assert 1.5 <= took < 2.5
    delivery.refresh_from_db()
    # A failure like any other: counted, and tried again later.
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.last_error == "no complete answer within 1.5 s"
    assert wait == notifications.retry_delay(1)


def test_the_breaker_holds_deliveries_then_lets_one_probe_through(failing):
    first, second, third = pending(failing, 3)
    assert attempt(first) == notifications.retry_delay(1)
    assert attempt(second) == 60  # the second failure in a row opens the breaker
    failing.refresh_from_db()
    assert failing.consecutive_failures == 2 and failing.suspended_until > timezone.now()
    posts = len(Receiver.received)
    # While it is open nothing is sent, and a held delivery is no attempt.
    assert 59 < attempt(third) <= 60
    third.refresh_from_db()
    assert (third.attempts, third.status, len(Receiver.received)) == (0, "pending", posts)
    assert third.next_attempt_at >= failing.suspended_until
    with time_machine.travel(failing.suspended_until, tick=False):
        # The first attempt when the time is up is the probe; the breaker
        # stays shut to the others while it is under way.
        probe_holds = notifications.breaker_wait(failing, timezone.now())
        assert probe_holds == 0
        assert notifications.breaker_wait(failing, timezone.now()) == notifications.attempt_limit()


def test_a_destination_that_keeps_failing_is_disabled_and_its_project_told(failing):
    deliveries = pending(failing, 6)
    attempt(deliveries[0])
    attempt(deliveries[1])  # opens
    for delivery in deliveries[2:4]:  # probes, each when the breaker's time is up
        failing.refresh_from_db()
        with time_machine.travel(failing.suspended_until, tick=False):
            attempt(delivery)
    failing.refresh_from_db()
    assert not failing.enabled and failing.suspended_until is None
    assert failing.disabled_reason == (
        "Disabled after 4 failed deliveries in a row; the last: HTTP 500"
    )
    statuses = list(Delivery.objects.filter(subscription=failing).values_list("status", flat=True))
    assert statuses == ["failed"] * 6  # none left waiting on a disabled subscription
    (told,) = Notification.objects.filter(event_type="subscription.disabled")
    assert told.project == failing.project
    assert told.payload == {
        "subscription_id": str(failing.pk),
        "url": failing.url,
        "reason": failing.disabled_reason,
    }
    assert len(Receiver.received) == 4


def test_a_success_closes_the_breaker(failing):
    first, second, third = pending(failing, 3)
    attempt(first)
    failing.refresh_from_db()
    assert failing.consecutive_failures == 1
    Receiver.answers = [204]
    assert attempt(second) is None
    failing.refresh_from_db()
    assert (failing.consecutive_failures, failing.suspended_until) == (0, None)


def test_the_owner_enables_a_disabled_subscription_again(failing, lab_member):
    failing.enabled, failing.consecutive_failures = False, 4
    failing.disabled_reason = "Disabled after 4 failed deliveries in a row; the last: HTTP 500"
    failing.save()
    url = f"/reservation/v1/subscriptions/{failing.pk}"
    shown = lab_member.get(url).json()["subscription"]
    assert (shown["enabled"], shown["consecutive_failures"]) == (False, 4)
    assert shown["disabled_reason"] == failing.disabled_reason
    answer = lab_member.put(url, {"subscription": {"enabled": True}})
    assert answer.status_code == 200, answer.content
    shown = answer.json()["subscription"]
    assert (shown["enabled"], shown["consecutive_failures"], shown["disabled_reason"]) == (
        True,
        0,
        "",
    )
    assert shown["suspended_until"] is None


@pytest.mark.parametrize(
    "body", [{}, {"subscription": {}}, {"subscription": {"enabled": "yes"}}, {"enabled": True}]
)
def test_only_enabled_can_be_changed(failing, lab_member, body):
    answer = lab_member.put(f"/reservation/v1/subscriptions/{failing.pk}", body)
    assert answer.status_code == 400
    assert answer.json()["error_code"] == 400 and "subscription" in answer.json()["error_message"]


def test_another_project_cannot_enable_a_subscription(failing, pool):
    other = Caller("elsewhere", "member", username="other-member")
    answer = other.put(f"/reservation/v1/subscriptions/{failing.pk}", {"subscription": {}})
    assert answer.status_code == 404


def test_a_delivery_written_before_its_subscription_was_paused_is_not_sent(failing, lab_member):
    (delivery,) = pending(failing, 1)
    url = f"/reservation/v1/subscriptions/{failing.pk}"
    assert lab_member.put(url, {"subscription": {"enabled": False}}).status_code == 200
    assert attempt(delivery) is None
    delivery.refresh_from_db()
    assert (delivery.status, delivery.last_error) == ("failed", "The subscription is disabled.")
    assert Receiver.received == []
    failing.refresh_from_db()
    assert failing.consecutive_failures == 0  # no failure of the destination's
