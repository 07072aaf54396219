"""Celery adapters for reservations: load by id, call a service."""

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from reservations import events, notifications, placement

TRANSIENT = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": True,
    "max_retries": 5,
}


@shared_task(name="reservations.events.sweep", **TRANSIENT)
def sweep() -> int:
    return events.sweep()


@shared_task(name="reservations.heal", **TRANSIENT)
def heal() -> int:
    return placement.heal()


@shared_task(name="reservations.notifications.deliver", bind=True, max_retries=None)
def deliver(self, delivery_id: int) -> None:
    if not notifications.delivery_attempt(delivery_id=delivery_id):
        # The attempt count on the row decides when to give up; a retry
        # lost with its message is sent again by resend_lost.
        countdown = notifications.retry_delay(self.request.retries + 1)
        raise self.retry(countdown=countdown, max_retries=settings.BERTH_WEBHOOK_MAX_ATTEMPTS)


@shared_task(name="reservations.notifications.resend_lost", **TRANSIENT)
def resend_lost() -> int:
    return notifications.deliveries_resend()
