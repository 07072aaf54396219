"""A request's builds conducted as one batch: each step once for all of
them, each build still its own story (its host, its failure, its log)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from compute import pipeline, services
from compute.models import Instance, InstanceActionEvent
from compute.services import NicRequest
from identity.quotas import quota_set
from networking.models import Port


def request(cloud, count: int) -> list[str]:
    """A request for ``count`` servers (as --min-count), not yet conducted."""
    instances = services.server_create(
        context=cloud.context,
        name="batch",
        flavor=cloud.flavors["small"],
        nics=[NicRequest(network=cloud.network)],
        min_count=count,
        max_count=count,
    )
    return [str(i.pk) for i in instances]


def states(ids: list[str]) -> dict[str, tuple]:
    return {
        str(pk): (status, state)
        for pk, status, state in Instance.objects.filter(pk__in=ids).values_list(
            "pk", "status", "task_state"
        )
    }


def test_a_requests_builds_are_spread_as_if_scheduled_one_by_one(cloud):
    ids = request(cloud, 3)
    with CaptureQueriesContext(connection) as batch:
        pipeline.conduct(ids, "preparing_ports", 1)
    assert set(states(ids).values()) == {("BUILD", "spawning")}
    # One search for the three: each claim weighs the hosts as the claims
    # before it left them, so the three land on three hosts.
    hosts = Instance.objects.filter(pk__in=ids).values_list("host__name", flat=True)
    assert sorted(hosts) == ["h1", "h2", "h3"]
    events = InstanceActionEvent.objects.filter(action__instance_id__in=ids, result="Success")
    assert events.count() == 9
    # Their ports are made together: one insert for the three.
    inserts = [
        q for q in batch.captured_queries if q["sql"].startswith('INSERT INTO "networking_port"')
    ]
    assert len(inserts) == 1
    # Alone, one build costs about as many statements as the batch of three.
    [one] = request(cloud, 1)
    with CaptureQueriesContext(connection) as alone:
        pipeline.conduct([one], "preparing_ports", 1)
    assert len(batch) < 2 * len(alone)


def test_a_mac_drawn_twice_in_a_batch_makes_its_ports_one_by_one(cloud, monkeypatch):
    """The batch's ports draw the same MAC: the network refuses the insert,
    nothing of it is kept, and each build makes its own port with a MAC
    drawn again."""
    draws = iter(["fa:16:3e:00:00:01"] * 3)
    random_mac = pipeline.net_services.ipam.random_mac
    monkeypatch.setattr(
        pipeline.net_services.ipam,
        "random_mac",
        lambda base, rng: next(draws, None) or random_mac(base, rng),
    )
    ids = request(cloud, 3)
    pipeline.conduct(ids, "preparing_ports", 1)
    assert set(states(ids).values()) == {("BUILD", "spawning")}
    macs = Port.objects.values_list("mac_address", flat=True)
    assert len(set(macs)) == 3 and "fa:16:3e:00:00:01" not in macs


def test_a_build_that_fails_in_a_batch_fails_alone(cloud):
    """Room for two ports: the third build of the request fails in
    prepare, naming why; the other two go on."""
    quota_set(project=cloud.project, resource="port", limit=2)
    ids = request(cloud, 3)
    pipeline.conduct(ids, "preparing_ports", 1)
    found = states(ids)
    assert sorted(found.values()) == [("BUILD", "spawning")] * 2 + [("ERROR", None)]
    [failed] = [i for i, (status, _) in found.items() if status == "ERROR"]
    fault = Instance.objects.get(pk=failed).fault
    assert fault["message"].startswith("preparing ports failed: ")
    assert Port.objects.count() == 2


def test_an_unexpected_error_in_a_batch_fails_only_its_build(cloud, monkeypatch):
    """One build's bind raises what no step expects: the batch's bind is
    rolled back and run again build by build; that build fails at once,
    naming the step, and the others are bound once."""
    ids = request(cloud, 3)
    bind = pipeline.net_services.port_bind

    def port_bind(*, port, host, **options):
        if port.device_id == ids[1]:
            raise RuntimeError("a bug in binding")
        return bind(port=port, host=host, **options)

    monkeypatch.setattr(pipeline.net_services, "port_bind", port_bind)
    pipeline.conduct(ids, "preparing_ports", 1)
    found = states(ids)
    assert found[ids[1]] == ("ERROR", None)
    assert found[ids[0]] == found[ids[2]] == ("BUILD", "spawning")
    fault = Instance.objects.get(pk=ids[1]).fault
    assert fault["message"] == "bind ports failed: unexpected error"
    for built in (ids[0], ids[2]):
        bound = InstanceActionEvent.objects.filter(
            action__instance_id=built, event="compute_bind_ports"
        )
        assert list(bound.values_list("result", flat=True)) == ["Success"]


@pytest.mark.parametrize("ahead", [0, 1, 2])
def test_a_redelivered_batch_goes_on_from_where_each_build_is(cloud, ahead):
    """The message names the state the batch was sent in; some of its
    builds went further (their first step ran before a worker died): each
    goes on from where it is, none runs a step twice."""
    ids = request(cloud, 3)
    for built in ids[:ahead]:
        pipeline.conduct([built], "preparing_ports", 1)
    pipeline.conduct(ids, "preparing_ports", 1)
    assert set(states(ids).values()) == {("BUILD", "spawning")}
    assert Port.objects.count() == 3
    events = InstanceActionEvent.objects.filter(action__instance_id__in=ids)
    assert events.count() == 9


def test_a_batch_counts_the_addresses_its_builds_take(cloud):
    """rack2 (h2, h3) has two addresses and the most free RAM. Scheduled
    one after another, the third build would find rack2 dry and go to h1;
    in a batch its hosts are picked before any bind takes an address, so
    the batch counts them: the third goes to h1 at once, no bind fails."""
    from tests.factories import HostFactory

    HostFactory(name="h1", physnets=["physnet1"], memory_mb=4096)
    ids = request(cloud, 3)
    pipeline.conduct(ids, "preparing_ports", 1)
    built = Instance.objects.filter(pk__in=ids).order_by("host__name")
    assert [(i.host.name, i.attempt) for i in built] == [("h1", 1), ("h2", 1), ("h3", 1)]
    assert not InstanceActionEvent.objects.filter(result="Error").exists()
