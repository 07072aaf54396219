"""A request id that follows a request from the API into every Celery task
it causes, and into every log line on the way.

The API takes the caller's ``X-Openstack-Request-Id`` if it looks like one
(``req-<uuid>``) or makes a new one, and answers with it. Publishing a task
copies it into the message headers; a worker restores it before running.
"""

import contextvars
import logging
import re
import uuid

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

HEADER = "X-Openstack-Request-Id"
_VALID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_request_id() -> str:
    return f"req-{uuid.uuid4()}"


def current_request_id() -> str:
    return request_id_var.get()


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get(HEADER, "")
        request_id = incoming if _VALID.match(incoming) else new_request_id()
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response[HEADER] = request_id
        return response


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


# --- Celery signal handlers (connected in config.celery) ----------------------


def stamp_outgoing_task(headers=None, **kwargs):
    if headers is not None and "request_id" not in headers:
        headers["request_id"] = request_id_var.get()


def restore_for_task(task=None, **kwargs):
    request_id = getattr(task.request, "request_id", None) or new_request_id()
    task.request.request_id_token = request_id_var.set(request_id)


def clear_after_task(task=None, **kwargs):
    token = getattr(task.request, "request_id_token", None)
    if token is not None:
        request_id_var.reset(token)
