"""Deliveries whose message was lost are sent again by the resend sweep,
each exactly once, by a real worker to a real receiver."""

import http.server
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from identity.models import Project
from reservations import notifications
from reservations.models import Delivery, Subscription
from tests.conftest import process_env, worker_start, worker_stop
from tests.reliability.conftest import RedisServer, run_python, wait_for
from tests.reservations.conftest import Receiver


@pytest.fixture
def sent(monkeypatch):
    """Delivery ids enqueued; the messages themselves are lost."""
    ids: list[int] = []
    monkeypatch.setattr("reservations.tasks.deliver.delay", ids.append)
    return ids


def deliveries(project: Project, count: int) -> list[Delivery]:
    for n in range(count):
        notifications.notify(project=project, event_type="lease.update", n=n)
    return list(Delivery.objects.order_by("pk"))


def test_only_stale_unclaimed_pending_deliveries_are_resent(
    db, settings, sent, django_capture_on_commit_callbacks
):
    settings.BERTH_WEBHOOK_RESEND_AFTER = 300
    project = Project.objects.create(name="p")
    Subscription.objects.create(project=project, url="http://192.0.2.1/h", secret="s")
    lost, recent, held, delivered, failed = deliveries(project, 5)
    sent.clear()
    now = timezone.now()
    old = now - timedelta(seconds=301)
    Delivery.objects.update(next_attempt_at=old)
    Delivery.objects.filter(pk=recent.pk).update(next_attempt_at=now - timedelta(seconds=298))
    Delivery.objects.filter(pk=held.pk).update(claimed_until=now + timedelta(seconds=60))
    Delivery.objects.filter(pk=delivered.pk).update(status="delivered")
    Delivery.objects.filter(pk=failed.pk).update(status="failed")

    def resend(now) -> int:
        with django_capture_on_commit_callbacks(execute=True):
            return notifications.deliveries_resend(now=now)

    assert resend(now) == 1
    assert sent == [lost.pk]
    # Sent again, it is not stale until the threshold passes once more.
    assert resend(now + timedelta(seconds=1)) == 0
    # Later all are stale; a claim that lapsed (its worker died mid-attempt)
    # no longer holds its delivery.
    later = now + timedelta(seconds=301)
    assert resend(later) == 3
    assert sorted(sent) == sorted([lost.pk, lost.pk, recent.pk, held.pk])


def test_a_held_delivery_is_not_posted_by_a_second_message(db, settings, listener):
    settings.BERTH_WEBHOOK_ALLOWED = [f"127.0.0.1/32:{listener}"]
    project = Project.objects.create(name="p")
    Subscription.objects.create(project=project, url=f"http://127.0.0.1:{listener}/h", secret="s")
    (delivery,) = deliveries(project, 1)
    Delivery.objects.update(claimed_until=timezone.now() + timedelta(seconds=60))
    assert notifications.delivery_attempt(delivery_id=delivery.pk) is None
    assert Receiver.received == []
    Delivery.objects.update(claimed_until=None)
    assert notifications.delivery_attempt(delivery_id=delivery.pk) is None
    assert notifications.delivery_attempt(delivery_id=delivery.pk) is None
    assert len(Receiver.received) == 1


class SlowCounter(http.server.BaseHTTPRequestHandler):
    """Counts each delivery key; takes a moment, so attempts overlap sweeps."""

    seen: Counter = Counter()

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(0.2)
        SlowCounter.seen[self.headers["X-Berth-Delivery"]] += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@dataclass
class Receiving:
    """A project subscribed twice to a real receiver, and a private broker."""

    project: Project
    redis: RedisServer
    port: int

    def env(self, *, resend_after: int) -> dict:
        return process_env(
            CELERY_BROKER_URL=self.redis.url,
            BERTH_WEBHOOK_ALLOWED=f"127.0.0.1/32:{self.port}",
            BERTH_WEBHOOK_RESEND_AFTER=str(resend_after),
        )


@pytest.fixture
def receiving(transactional_db, tmp_path):
    SlowCounter.seen = Counter()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowCounter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    redis = RedisServer(tmp_path)
    redis.start()
    project = Project.objects.create(name="p")
    for path in ("/a", "/b"):
        Subscription.objects.create(
            project=project, url=f"http://127.0.0.1:{server.server_port}{path}", secret="s"
        )
    yield Receiving(project, redis, server.server_port)
    redis.kill()
    server.shutdown()


RESEND = "from reservations import notifications; print(notifications.deliveries_resend())"


@pytest.mark.postgres
@pytest.mark.worker
def test_lost_messages_are_delivered_exactly_once_by_the_sweep(receiving, tmp_path, sent):
    env = receiving.env(resend_after=1)
    worker = None
    try:
        lost = deliveries(receiving.project, 15)  # 30 deliveries, no message reached any broker
        assert len(sent) == 30
        worker = worker_start(tmp_path / "worker.log", env)
        time.sleep(1.5)
        assert Delivery.objects.filter(status="pending").count() == 30  # nothing re-sends them
        # Sweeps, two at a time, again and again while the deliveries are
        # queued and under way: a delivery queued or in flight is not POSTed
        # a second time.
        resent = 0
        deadline = time.monotonic() + 90
        with ThreadPoolExecutor(2) as sweepers:
            while Delivery.objects.filter(status="pending").exists():
                assert time.monotonic() < deadline, "deliveries still pending"
                runs = [sweepers.submit(run_python, RESEND, env) for _ in range(2)]
                resent += sum(int(run.result()) for run in runs)
                time.sleep(0.5)
        wait_for(lambda: sum(SlowCounter.seen.values()) >= 30, 10, "the receiver's counts")
        time.sleep(2)  # any duplicate still queued would arrive by now
    finally:
        if worker is not None:
            worker_stop(worker)
    assert resent >= 30
    assert set(Delivery.objects.values_list("status", flat=True)) == {"delivered"}
    assert len(SlowCounter.seen) == len(lost)
    assert set(SlowCounter.seen.values()) == {1}
    assert all(d.attempts == 1 for d in Delivery.objects.all())


BURST = """
import time
from identity.models import Project
from reservations import notifications
project = Project.objects.get(name="p")
for n in range(20):
    notifications.notify(project=project, event_type="lease.update", n=n)
    time.sleep(0.05)
"""


@pytest.mark.postgres
@pytest.mark.worker
def test_deliveries_lost_with_the_broker_are_delivered_once(receiving, tmp_path):
    """The broker is killed in the middle of a burst and comes back empty:
    every delivery ends delivered, each POSTed once."""
    env, redis = receiving.env(resend_after=2), receiving.redis
    worker = worker_start(tmp_path / "worker.log", env)
    try:
        with ThreadPoolExecutor(1) as client:
            burst = client.submit(run_python, BURST, env)
            wait_for(lambda: Delivery.objects.count() >= 10, 60, "the burst to begin")
            redis.kill()
            time.sleep(1)
            redis.start()  # on the same port, without the messages it held
            burst.result()
        assert Delivery.objects.count() == 40
        lost_at_restart = Delivery.objects.filter(status="pending").count()
        deadline = time.monotonic() + 120
        while Delivery.objects.filter(status="pending").exists():
            assert time.monotonic() < deadline, "deliveries still pending"
            run_python(RESEND, env)  # as beat's entry does, once a minute
            time.sleep(1)
        time.sleep(2)  # any duplicate still queued would arrive by now
    finally:
        worker_stop(worker)
    print(f"pending after the broker came back: {lost_at_restart} of 40")
    assert set(Delivery.objects.values_list("status", flat=True)) == {"delivered"}
    assert len(SlowCounter.seen) == 40 and set(SlowCounter.seen.values()) == {1}
