"""Celery adapters for the health check: load by id, call a service."""

from celery import shared_task

from config import services
from config.request_id import current_request_id


@shared_task(name="config.answer_health_probe", bind=True)
def answer_health_probe(self, probe_id: str) -> None:
    services.health_probe_answer(
        probe_id=probe_id, worker=self.request.hostname or "", request_id=current_request_id()
    )
