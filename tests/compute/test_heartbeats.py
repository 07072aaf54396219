"""Agents' heartbeats, taken in batches: the messages compute.agent sends,
through a real broker to the deployment's agents worker, and the service
that records a batch."""

import time
from datetime import timedelta

import pytest
from celery import current_app
from django.utils import timezone

from compute import services
from compute.models import Host
from compute.services import Heartbeat
from tests.conftest import wait_for
from tests.factories import HostFactory


def send(*args) -> None:
    """A message as compute.agent.Reporter sends it."""
    current_app.send_task("compute.heartbeat", args, queue="agents")


def heartbeats_of(names) -> dict:
    return dict(Host.objects.filter(name__in=names).values_list("name", "last_heartbeat"))


@pytest.mark.worker
def test_many_heartbeats_are_written_together_and_strays_are_dropped(transactional_db, worker):
    names = [f"hb-{n}" for n in range(40)]
    for name in names:
        HostFactory(name=name)
    Host.objects.update(last_heartbeat=timezone.now() - timedelta(minutes=5))
    before = timezone.now()
    now = timezone.now().isoformat()
    send("hb-ghost", None, now)  # a host berth does not know
    send("hb-0", "not enough arguments")  # malformed
    for name in names:
        send(name, None, now)

    wait_for(
        lambda: all(at > before for at in heartbeats_of(names).values()), what="the heartbeats"
    )
    # One update per batch, and the 40 messages, sent within a flush
    # interval, fill one batch or two.
    assert len(set(heartbeats_of(names).values())) <= 2
    assert not Host.objects.filter(name="hb-ghost").exists()


@pytest.mark.worker
def test_a_heartbeat_records_the_newest_power_states(transactional_db, worker):
    HostFactory(name="hb-power")
    sent = timezone.now()
    # Taken in one batch, or the later first: the earlier report never wins.
    send("hb-power", {"dom-a": 1}, sent.isoformat())
    send("hb-power", {"dom-a": 4, "dom-b": 1}, (sent - timedelta(seconds=10)).isoformat())
    send("hb-power", None, (sent + timedelta(seconds=10)).isoformat())
    wait_for(lambda: Host.objects.get(name="hb-power").domains_at, what="the power states")
    time.sleep(1.5)  # past the next flush
    host = Host.objects.get(name="hb-power")
    assert (host.domains, host.domains_at) == ({"dom-a": 1}, sent)


def test_a_batch_updates_known_hosts_once_and_keeps_the_newest_states(db):
    HostFactory(name="hb-x")
    HostFactory(name="hb-y")
    sent = timezone.now()
    found = services.hosts_heartbeat(
        beats=[
            Heartbeat("hb-x", None, sent),
            Heartbeat("hb-y", {"d": 1}, sent - timedelta(seconds=5)),
            Heartbeat("hb-y", {"d": 4}, sent),
            Heartbeat("hb-y", None, sent + timedelta(seconds=5)),
            Heartbeat("hb-gone", {"d": 1}, sent),
        ]
    )
    assert found == 2
    x, y = Host.objects.get(name="hb-x"), Host.objects.get(name="hb-y")
    assert x.last_heartbeat == y.last_heartbeat > sent
    assert (y.domains, y.domains_at) == ({"d": 4}, sent)
    assert not Host.objects.filter(name="hb-gone").exists()

    # A report older than the one recorded is not applied.
    services.hosts_heartbeat(beats=[Heartbeat("hb-y", {}, sent - timedelta(seconds=1))])
    assert Host.objects.get(name="hb-y").domains == {"d": 4}
