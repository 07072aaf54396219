"""A real worker process, on the configured broker and database."""

import io
import logging

import pytest
from django.core.management import call_command

from config.models import HealthProbe
from config.request_id import HEADER, request_id_var


@pytest.mark.worker
def test_task_run_by_a_real_worker_writes_to_the_database(worker, transactional_db):
    out = io.StringIO()
    call_command("healthcheck", "--timeout", "30", "--skip-periodic", stdout=out)
    probe = HealthProbe.objects.get()
    assert probe.answered_at is not None
    assert probe.worker.startswith("test-")
    assert "worker: ok" in out.getvalue()


@pytest.mark.worker
def test_request_id_follows_the_request_into_the_task(worker, transactional_db):
    # The API middleware puts the request id in this context variable;
    # publishing copies it into the task headers, the worker restores it.
    token = request_id_var.set("req-11111111-2222-3333-4444-555555555555")
    try:
        call_command("healthcheck", "--timeout", "30", "--skip-periodic", stdout=io.StringIO())
    finally:
        request_id_var.reset(token)
    assert HealthProbe.objects.get().request_id == "req-11111111-2222-3333-4444-555555555555"


def test_api_echoes_or_makes_a_request_id(caller, caplog):
    alice = caller("alpha", "member")
    given = "req-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    response = alice.client.get("/networking/v2.0/networks", HTTP_X_OPENSTACK_REQUEST_ID=given)
    assert response[HEADER] == given
    fresh = alice.client.get("/networking/v2.0/networks", HTTP_X_OPENSTACK_REQUEST_ID="bogus")
    assert fresh[HEADER].startswith("req-") and fresh[HEADER] != given


def test_log_records_carry_the_request_id():
    from config.request_id import RequestIdFilter

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    token = request_id_var.set("req-test")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    assert record.request_id == "req-test"
