"""Celery adapters for reservations: load by id, call a service."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from reservations import events, notifications, placement, services

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


@shared_task(name="reservations.flex_advance", **TRANSIENT)
def flex_advance() -> int:
    return services.flex_advance()


@shared_task(
    name="reservations.notifications.deliver",
    bind=True,
    max_retries=None,
    soft_time_limit=notifications.attempt_limit() - 5,
    time_limit=notifications.attempt_limit(),
)
def deliver(self, delivery_id: int) -> None:
    wait = notifications.delivery_attempt(delivery_id=delivery_id)
    if wait is not None:
        # The row's attempts and its subscription's breaker decide when to
        # give up; a retry lost with its message is sent again by resend_lost.
        raise self.retry(countdown=wait)


@shared_task(name="reservations.notifications.resend_lost", **TRANSIENT)
def resend_lost() -> int:
    return notifications.deliveries_resend()
