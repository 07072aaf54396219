"""Nova's server actions os-stop, os-start and reboot: accepted by the API
with 202, run by the server's host, recorded on the instance and in its
action log; refused with Nova's 409 from a state they do not start from."""

import pytest

from compute import pipeline, services
from compute.models import InstanceActionEvent
from compute.services import NicRequest
from compute.virt import PowerAction, PowerState
from config.errors import Conflict
from tests.compute.conftest import C21, host_power, run_pipeline


@pytest.fixture
def server(cloud):
    (instance,) = services.server_create(
        context=cloud.context,
        name="vm",
        flavor=cloud.flavors["small"],
        nics=[NicRequest(network=cloud.network)],
    )
    return run_pipeline(instance)


def power(cloud, instance, action: PowerAction):
    return services.server_power(context=cloud.context, instance=instance, action=action)


def test_stop_start_and_reboot_change_status_and_power_state(cloud, server):
    assert (server.status, server.power_state) == ("ACTIVE", PowerState.RUNNING)
    stopping = power(cloud, server, PowerAction.STOP)
    assert (stopping.status, stopping.task_state) == ("ACTIVE", "powering-off")
    stopped = host_power(stopping)
    assert (stopped.status, stopped.task_state, stopped.power_state) == (
        "SHUTOFF",
        None,
        PowerState.SHUTDOWN,
    )
    started = host_power(power(cloud, stopped, PowerAction.START))
    assert (started.status, started.power_state) == ("ACTIVE", PowerState.RUNNING)
    rebooted = host_power(power(cloud, started, PowerAction.REBOOT_HARD))
    assert (rebooted.status, rebooted.power_state) == ("ACTIVE", PowerState.RUNNING)
    actions = list(server.actions.order_by("start_time").values_list("action", flat=True))
    assert actions == ["create", "stop", "start", "reboot"]
    events = InstanceActionEvent.objects.filter(action__instance=server, result="Success")
    assert {"compute_stop_instance", "compute_start_instance", "compute_reboot_instance"} <= set(
        events.values_list("event", flat=True)
    )


def test_actions_refused_from_the_wrong_state_in_novas_words(cloud, server):
    with pytest.raises(Conflict, match="Cannot 'start' instance .* in vm_state active"):
        power(cloud, server, PowerAction.START)
    power(cloud, server, PowerAction.STOP)
    with pytest.raises(Conflict, match="Cannot 'reboot' instance .* in task_state powering-off"):
        power(cloud, server, PowerAction.REBOOT)
    host_power(server)
    with pytest.raises(Conflict, match="Cannot 'reboot' instance .* in vm_state stopped"):
        power(cloud, server, PowerAction.REBOOT)  # a soft reboot needs a running guest


def test_a_result_delivered_twice_is_recorded_once(cloud, server):
    power(cloud, server, PowerAction.STOP)
    result = {"power_state": PowerState.SHUTDOWN, "started": "2026-01-01T00:00:00+00:00"}
    pipeline.power_done(server.pk, "stop", result)
    pipeline.power_done(server.pk, "stop", result)
    server.refresh_from_db()
    assert server.status == "SHUTOFF"
    assert server.actions.get(action="stop").events.count() == 1


def test_a_failed_action_is_written_on_the_instance(cloud, server):
    # The host lost the domain (its fake hypervisor has none by that id).
    services.server_delete(context=cloud.context, instance=server)
    pipeline.delete(server.pk)
    (other,) = services.server_create(
        context=cloud.context, name="vm2", flavor=cloud.flavors["small"], nics=[]
    )
    other = run_pipeline(other)
    power(cloud, other, PowerAction.STOP)
    pipeline.power_done(
        other.pk, "stop", {"error": "domain not found", "started": "2026-01-01T00:00:00+00:00"}
    )
    other.refresh_from_db()
    assert (other.status, other.task_state) == ("ACTIVE", None)
    assert "stop failed" in other.last_failure and "domain not found" in other.last_failure
    event = other.actions.get(action="stop").events.get()
    assert (event.result, event.event) == ("Error", "compute_stop_instance")


def test_the_api_accepts_actions_and_shows_the_reboot(cloud, server, admin):
    url = f"{C21}/servers/{server.pk}/action"
    response = admin.post(url, {"reboot": {"type": "SOFT"}})
    assert response.status_code == 202, response.content
    shown = admin.get(f"{C21}/servers/{server.pk}").json()["server"]
    assert (shown["status"], shown["OS-EXT-STS:task_state"]) == ("REBOOT", "rebooting")
    assert admin.post(url, {"os-stop": None}).status_code == 409
    host_power(server)
    shown = admin.get(f"{C21}/servers/{server.pk}").json()["server"]
    assert (shown["status"], shown["OS-EXT-STS:power_state"]) == ("ACTIVE", 1)

    for body, message in [
        ({"os-pause": None}, "There is no such action: os-pause"),
        ({"reboot": {"type": "GENTLE"}}, "'type' must be one of 'SOFT', 'HARD'"),
        ([], "exactly one action"),
    ]:
        response = admin.post(url, body)
        assert response.status_code == 400
        assert message in response.json()["badRequest"]["message"]


def test_diagnostics_show_the_domain_to_admins_only(cloud, server, admin, caller):
    shown = admin.get(f"{C21}/servers/{server.pk}/diagnostics").json()
    assert (shown["state"], shown["driver"], shown["num_nics"]) == ("running", "fake", 1)
    assert shown["berth:domain"] == server.driver_data
    member = caller(cloud.project.name, "member")
    assert member.get(f"{C21}/servers/{server.pk}/diagnostics").status_code == 403
