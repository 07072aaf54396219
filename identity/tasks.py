"""Celery adapters for identity: load by id, call a service."""

from celery import shared_task

from identity import services


@shared_task(name="identity.purge_expired_tokens")
def purge_expired_tokens() -> int:
    return services.token_purge_expired()
