"""The pipeline's two hops on real workers and a real broker: the conductor
runs the database-only steps in one message, rescheduling in place; spawn
runs on the chosen host's own queue, and a worker with the database
records its result in the same task; an unexpected error is written on the
build at once."""

import time

import pytest

from compute import services
from compute.models import Host, Instance, InstanceActionEvent
from tests.compute.conftest import sriov_on_h1_only
from tests.conftest import NO_DATABASE
from tests.factories import HostFactory
from tests.reliability.conftest import run_python, wait_for
from tests.reliability.test_faults import assert_built_once, boot, received

pytestmark = [pytest.mark.postgres, pytest.mark.worker]


# Code run in a scenario's process as acme's admin: ``context``.
AS_ADMIN = (
    "from identity.auth import RequestContext\n"
    "from identity.models import Project\n"
    "context = RequestContext(user_id='u1', project=Project.objects.get(name='acme'),"
    " role='admin')\n"
)


def waiting_in(env, queue: str) -> int:
    """Messages waiting in ``queue`` of the scenario's broker."""
    out = run_python(
        f"from compute.tasks import backlog\nprint(backlog({queue!r}))",
        env,
    )
    return int(out.split()[-1])


def only_h1(cloud) -> None:
    for name in ("h2", "h3"):
        services.host_set_enabled(host=Host.objects.get(name=name), enabled=False)


def test_spawn_waits_on_its_hosts_queue_for_a_worker_of_that_host(
    transactional_db, cloud, env, workers
):
    """A worker that serves only the build queue runs the three database
    steps from one message and leaves spawn on host.h1; a worker that
    serves only host.h1, as an agent will, spawns it."""
    only_h1(cloud)
    boot(env, 1, "hop")
    central = workers("-Q", "build", "-c", "1")
    wait_for(
        lambda: Instance.objects.filter(task_state="spawning").exists(), 60, "the conductor's steps"
    )
    time.sleep(1)  # a spawn, if the central worker took one, would show by now
    assert received(central, "conduct") == 1
    assert received(central, "spawn") == 0
    assert waiting_in(env, "host.h1") == 1
    agent = workers("-Q", "host.h1", "-c", "1")
    wait_for(lambda: Instance.objects.filter(status="ACTIVE").exists(), 60, "the spawn")
    assert (received(agent, "spawn"), received(agent, "conduct")) == (1, 0)
    assert_built_once(Instance.objects.get())


def test_a_central_worker_records_its_host_work_in_the_same_task(
    transactional_db, cloud, env, workers
):
    """A build served by a worker with the database is two messages: the
    conductor's and the spawn's, whose task records the result itself; a
    power action is one. One pool process: the fake driver's domains live
    in the process that made them."""
    worker = workers("--host-queues", "-c", "1")
    boot(env, 1, "two")
    wait_for(lambda: Instance.objects.filter(status="ACTIVE").exists(), 60, "the build")
    assert [received(worker, task) for task in ("conduct", "spawn", "spawn_done")] == [1, 1, 0]
    assert_built_once(Instance.objects.get())
    run_python(  # sent on the scenario's broker
        AS_ADMIN + "from compute import services\n"
        "from compute.models import Instance\n"
        "from compute.virt import PowerAction\n"
        "services.server_power(context=context, instance=Instance.objects.get(),"
        " action=PowerAction.STOP)",
        env,
    )
    wait_for(lambda: Instance.objects.filter(status="SHUTOFF").exists(), 60, "the stop")
    assert (received(worker, "power"), received(worker, "power_done")) == (1, 0)


def test_a_result_not_recorded_in_place_is_sent_as_an_agents(transactional_db, cloud, env, workers):
    """The worker serving host.h1 cannot reach the database: it spawns,
    fails to record the result in place, and sends it to the control
    plane's task, as an agent does; the build queue's worker records it."""
    only_h1(cloud)
    central = workers("-Q", "build", "-c", "1")
    host = workers("-Q", "host.h1", "-c", "1", DATABASE_URL=NO_DATABASE)
    boot(env, 1, "sent")
    wait_for(lambda: Instance.objects.filter(status="ACTIVE").exists(), 60, "the build")
    assert (received(host, "spawn"), received(central, "spawn_done")) == (1, 1)
    assert "compute.spawn_done not run in place" in host.log.read_text()
    assert_built_once(Instance.objects.get())


def test_a_burst_of_one_server_requests_is_one_message(transactional_db, cloud, env, workers):
    """Five one-server requests while no worker runs: the first sends the
    conductor a message that takes along the builds waiting, the others
    leave theirs to it (its window is widened so a slow machine's requests
    all fall in it). Once a worker starts, that message builds all five."""
    boot({**env, "BERTH_TAKE_ALONG_WINDOW": "60"}, 5, "burst")
    assert waiting_in(env, "build") == 1
    worker = workers()
    wait_for(lambda: Instance.objects.filter(status="ACTIVE").count() == 5, 60, "the builds")
    assert received(worker, "conduct") == 1
    for instance in Instance.objects.all():
        assert_built_once(instance)


def test_a_host_reported_after_the_worker_started_is_served(transactional_db, cloud, env, workers):
    workers()
    Host.objects.update(enabled=False)
    HostFactory(name="late", physnets=["physnet1"])
    boot(env, 1, "late")
    wait_for(lambda: Instance.objects.filter(status="ACTIVE").exists(), 60, "a build on late")
    assert Instance.objects.get().host.name == "late"


def test_a_failed_bind_is_rescheduled_inside_the_conductor(transactional_db, cloud, env, workers):
    """h2 and h3 cannot bind an SR-IOV port: the conductor tries both and
    lands on h1 from the one message it was sent."""
    port = sriov_on_h1_only(cloud)
    worker = workers()
    run_python(  # sent on the scenario's broker
        AS_ADMIN + "from compute import services\n"
        "from compute.models import Flavor\n"
        "from networking.models import Port\n"
        "services.server_create(context=context, name='sriov',"
        " flavor=Flavor.objects.get(pk='small'),"
        f" nics=[services.NicRequest(port=Port.objects.get(pk='{port.pk}'))])",
        env,
    )
    wait_for(lambda: Instance.objects.filter(status="ACTIVE").exists(), 60, "the build")
    instance = Instance.objects.get()
    assert (instance.host.name, instance.attempt) == ("h1", 3)
    assert received(worker, "conduct") == 1
    assert received(worker, "spawn") == 1


def test_an_unexpected_error_fails_the_build_at_once(transactional_db, cloud, env, workers):
    """A malformed host option makes the fake driver raise a ValueError
    (not a DriverError): the build is ERROR as soon as the task fails,
    naming the step, long before the reaper's deadline; nothing is held."""
    only_h1(cloud)
    Host.objects.filter(name="h1").update(driver_options={"spawn_delay": "soon"})
    workers()
    started = time.monotonic()
    boot(env, 1, "bug")
    wait_for(lambda: Instance.objects.filter(status="ERROR").exists(), 60, "the failed build")
    took = time.monotonic() - started
    instance = Instance.objects.get()
    assert took < 12, "before the spawn's deadline"
    assert instance.resumes == 0
    assert instance.fault["message"] == "spawn failed: unexpected error"
    assert "unexpected ValueError" in instance.fault["details"]
    event = InstanceActionEvent.objects.get(event="compute_spawn")
    assert event.result == "Error"
    assert Host.objects.get(name="h1").running_instances == 0
    assert not instance.nics.get().port_id
