"""Celery adapters for identity: load by id, call a service."""

from celery import shared_task

from config import services
from config.request_id import current_request_id


@shared_task(name="identity.purge_expired_tokens")
def purge_expired_tokens() -> int:
    return services.token_purge_expired()


@shared_task(name="identity.answer_health_probe", bind=True)
def answer_health_probe(self, probe_id: str) -> None:
    services.health_probe_answer(
        probe_id=probe_id, worker=self.request.hostname or "", request_id=current_request_id()
    )
