"""A request's builds conducted as one batch: each step once for all of
them, each build still its own story (its host, its failure, its log)."""

import threading
import time

import pytest
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from compute import pipeline, services, tasks
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


def test_one_server_requests_are_conducted_together(cloud):
    """Three requests for one server each: the first one's message takes
    the two others along (they wait for the same first step), and their
    ports are made together. The others' messages then find their builds
    on their way and write nothing."""
    ids = [request(cloud, 1)[0] for _ in range(3)]
    with CaptureQueriesContext(connection) as together:
        pipeline.conduct([ids[0]], "preparing_ports", 1, take_along=True)
    assert set(states(ids).values()) == {("BUILD", "spawning")}
    inserts = [
        q for q in together.captured_queries if q["sql"].startswith('INSERT INTO "networking_port"')
    ]
    assert len(inserts) == 1
    with CaptureQueriesContext(connection) as late:
        for other in ids[1:]:
            pipeline.conduct([other], "preparing_ports", 1, take_along=True)
    writes = ("INSERT", "UPDATE", "DELETE")
    assert [q["sql"] for q in late.captured_queries if q["sql"].startswith(writes)] == []
    assert InstanceActionEvent.objects.filter(action__instance_id__in=ids).count() == 9
    assert Port.objects.count() == 3
    # A build resumed by the reaper (its message does not take builds
    # along) goes alone.
    resumed, waiting = request(cloud, 1)[0], request(cloud, 1)[0]
    pipeline.conduct([resumed], "preparing_ports", 1)
    assert states([resumed, waiting]) == {
        resumed: ("BUILD", "spawning"),
        waiting: ("BUILD", "preparing_ports"),
    }


def test_an_unexpected_error_in_a_build_taken_along_is_not_its_takers(cloud, monkeypatch):
    """Making the port of a build taken along raises what no step expects:
    the batch is rolled back, the message's own build is prepared alone
    and goes on, and the builds taken along are left waiting for their
    own messages (where the faulty one fails alone)."""
    ids = [request(cloud, 1)[0] for _ in range(3)]
    ports_create, port_create = (
        pipeline.net_services.ports_create,
        pipeline.net_services.port_create,
    )

    def faulty(made, **fields):
        devices = [port["device_id"] for port in fields.get("ports", [fields])]
        if ids[2] in devices:
            raise RuntimeError("a bug in making ports")
        return made(**fields)

    monkeypatch.setattr(
        pipeline.net_services, "ports_create", lambda **f: faulty(ports_create, **f)
    )
    monkeypatch.setattr(pipeline.net_services, "port_create", lambda **f: faulty(port_create, **f))
    pipeline.conduct([ids[0]], "preparing_ports", 1, take_along=True)
    assert states(ids) == {
        ids[0]: ("BUILD", "spawning"),
        ids[1]: ("BUILD", "preparing_ports"),
        ids[2]: ("BUILD", "preparing_ports"),
    }
    for own in ids[1:]:
        pipeline.conduct([own], "preparing_ports", 1, take_along=True)
    assert states(ids)[ids[1]] == ("BUILD", "spawning")
    assert states(ids)[ids[2]] == ("ERROR", None)


def test_a_lost_connection_names_every_build_in_hand(cloud, monkeypatch):
    """The database goes away at schedule, after the first message's
    batch (its build and two taken along) prepared their ports: the error
    names the three builds, and a message for each (which names no step,
    as the task sends them) takes it on from where it is."""
    ids = [request(cloud, 1)[0] for _ in range(3)]
    ranking = pipeline.scheduler.Ranking

    def lost(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(pipeline.scheduler, "Ranking", lost)
    with pytest.raises(pipeline.Interrupted) as interrupted:
        pipeline.conduct([ids[0]], "preparing_ports", 1, take_along=True)
    assert sorted(interrupted.value.builds) == sorted(ids)
    assert set(states(ids).values()) == {("BUILD", "scheduling")}
    monkeypatch.setattr(pipeline.scheduler, "Ranking", ranking)
    for build in interrupted.value.builds:
        pipeline.conduct(build)
    assert set(states(ids).values()) == {("BUILD", "spawning")}
    assert Port.objects.count() == 3


@pytest.mark.postgres
def test_a_build_another_transaction_holds_is_left_to_its_own_message(
    transactional_db, cloud, monkeypatch
):
    """Another transaction holds the second build's row: the first
    message's batch neither waits for it nor takes it, and goes on with
    the third. The second's own message, delivered while the row is still
    held, waits for it (alone, after taking nothing else) and builds it."""
    # The requests and steps commit here: their messages would reach the
    # worker another test may have left running, which must neither
    # conduct the builds nor spawn them (recording a spawn while this
    # test's tables are emptied deadlocks the emptying).
    monkeypatch.setattr(tasks, "send_builds", lambda instances: None)
    monkeypatch.setattr(tasks, "send_step", lambda instance, nics=None: None)
    ids = [request(cloud, 1)[0] for _ in range(3)]
    held, release = threading.Event(), threading.Event()
    released_at = []

    def hold() -> None:
        with transaction.atomic():
            Instance.objects.select_for_update().get(pk=ids[1])
            held.set()
            release.wait(10)
            released_at.append(time.monotonic())
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    pipeline.conduct([ids[0]], "preparing_ports", 1, take_along=True)
    assert states(ids) == {
        ids[0]: ("BUILD", "spawning"),
        ids[1]: ("BUILD", "preparing_ports"),
        ids[2]: ("BUILD", "spawning"),
    }
    threading.Timer(0.5, release.set).start()
    pipeline.conduct([ids[1]], "preparing_ports", 1, take_along=True)
    finished = time.monotonic()
    holder.join(10)
    assert states([ids[1]]) == {ids[1]: ("BUILD", "spawning")}
    assert released_at and released_at[0] <= finished


@pytest.mark.parametrize("ahead", [0, 1, 2])
def test_a_redelivered_batch_goes_on_from_where_each_build_is(cloud, ahead):
    """The message names the state the batch was sent in; some of its
    builds went further (their first steps ran before a worker died): each
    goes on from where it is, none runs a step twice."""
    ids = request(cloud, 3)
    for built in ids[:ahead]:
        pipeline.prepare_ports([built], 1)
        pipeline.schedule([built], 1)
    pipeline.conduct(ids, "preparing_ports", 1, again=True)
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


def test_new_builds_are_left_to_a_conductors_message_on_its_way(
    cloud, monkeypatch, django_capture_on_commit_callbacks
):
    """A one-server request sends the conductor a message that takes along
    the builds waiting; a request while it is on its way sends none, and
    that message builds both. Once it has started, a request sends its own
    again; a request that fills a batch always does, and its message, which
    takes none along, leaves the flag of the message on its way."""
    monkeypatch.setattr(pipeline, "BATCH", 3)
    sent = []
    monkeypatch.setattr(tasks.conduct, "delay", lambda *message: sent.append(message))

    def requested(count: int) -> list[str]:
        with django_capture_on_commit_callbacks(execute=True):
            return request(cloud, count)

    first, second = requested(1), requested(1)
    assert sent == [(first, "preparing_ports", 1, True)]
    tasks.conduct(*sent[0])  # as the worker runs it
    assert set(states(first + second).values()) == {("BUILD", "spawning")}
    third = requested(1)
    full = requested(3)
    assert sent[1:] == [(third, "preparing_ports", 1, True), (full, "preparing_ports", 1, False)]
    tasks.conduct(*sent[2])
    fourth = requested(1)
    assert len(sent) == 3
    tasks.conduct(*sent[1])
    assert set(states(third + full + fourth).values()) == {("BUILD", "spawning")}


def test_a_full_batch_sends_a_message_for_the_builds_still_waiting(
    cloud, monkeypatch, django_capture_on_commit_callbacks
):
    """Five builds wait, left to one message, and a batch takes three: the
    batch's first step sends a message of no build of its own, which takes
    the other two."""
    monkeypatch.setattr(pipeline, "BATCH", 3)
    sent = []
    monkeypatch.setattr(tasks.conduct, "delay", lambda *message: sent.append(message))
    ids = [request(cloud, 1)[0] for _ in range(5)]
    with django_capture_on_commit_callbacks(execute=True):
        pipeline.conduct([ids[0]], "preparing_ports", 1, take_along=True)
    assert [state for _, state in states(ids).values()].count("spawning") == 3
    assert sent == [([], "preparing_ports", 1, True)]
    with django_capture_on_commit_callbacks(execute=True):
        tasks.conduct(*sent[0])  # as the worker runs it
    assert set(states(ids).values()) == {("BUILD", "spawning")}
    assert len(sent) == 1  # the second batch was not full


def test_builds_the_reaper_resumes_in_one_step_go_on_as_one_batch(
    cloud, monkeypatch, django_capture_on_commit_callbacks
):
    """A batch's worker died after its builds' first step: the reaper
    resumes the three, overdue in scheduling, in one message, and that
    batch spreads them as a request's builds are spread."""
    ids = request(cloud, 3)
    pipeline.prepare_ports(ids, 1)
    Instance.objects.filter(pk__in=ids).update(step_deadline=timezone.now())
    sent = []
    monkeypatch.setattr(tasks.conduct, "delay", lambda *message: sent.append(message))
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.reap_stuck_builds() == 3
    assert [(sorted(batch), *rest) for batch, *rest in sent] == [(sorted(ids), "scheduling", 1)]
    tasks.conduct(*sent[0])
    assert set(states(ids).values()) == {("BUILD", "spawning")}
    hosts = Instance.objects.filter(pk__in=ids).values_list("host__name", flat=True)
    assert sorted(hosts) == ["h1", "h2", "h3"]
