"""A failed build's fault, as the API shows it: the message says what
failed; the details (admin-only) name the step, host and resource of each
failed attempt, the cause first, then the final step."""

import pytest

from compute import services
from compute.models import Host, Instance
from networking import services as net_services
from tests.compute.conftest import C21, run_pipeline
from tests.factories import HostFactory


@pytest.fixture
def acme_admin(cloud):
    from tests.conftest import Caller

    return Caller("acme", "admin", username="acme-admin")


def failed_build(caller, **server) -> dict:
    """POST /servers, the build run to its end, then GET /servers/ID."""
    response = caller.post(
        f"{C21}/servers", {"server": {"name": "vm", "flavorRef": "small", **server}}
    )
    assert response.status_code == 202, response.json()
    server_id = response.json()["server"]["id"]
    run_pipeline(Instance.objects.get(pk=server_id))
    shown = caller.get(f"{C21}/servers/{server_id}").json()["server"]
    assert shown["status"] == "ERROR"
    return shown["fault"]


def test_the_cause_on_an_earlier_attempt_is_named_with_its_step_host_and_port(acme_admin, cloud):
    # h2 (most RAM) binds the direct port but its hypervisor fails; h3
    # advertises vnic direct without an SR-IOV function; h1 is disabled.
    HostFactory(
        name="h2",
        physnets=["physnet2"],
        sriov=True,
        memory_mb=65536,
        driver_options={"spawn_error": "disk on fire"},
    )
    HostFactory(name="h3", physnets=["physnet2"], vnic_types=["normal", "direct"])
    services.host_set_enabled(host=Host.objects.get(name="h1"), enabled=False)
    port = net_services.port_create(
        project=cloud.project, network=cloud.network, binding_vnic_type="direct"
    )
    fault = failed_build(acme_admin, networks=[{"port": str(port.pk)}])
    bind_failure = (
        f"port {port.pk}: binding failed on h3: "
        "sriovnicswitch: no SR-IOV physical function on physical network physnet2"
    )
    assert fault["message"] == (
        f"{bind_failure}; no other host: every eligible host was tried: h2, h3"
    )
    assert fault["details"] == (
        "attempt 1 spawn on h2: spawn failed on h2: disk on fire; "
        f"attempt 2 bind ports on h3: {bind_failure}; "
        "attempt 3 schedule: every eligible host was tried: h2, h3; "
        "final step: schedule; hosts tried: h2, h3"
    )


def test_the_last_attempts_own_failure_is_its_cause(acme_admin, cloud, settings):
    settings.BERTH_BUILD_MAX_ATTEMPTS = 2
    for name in ("h1", "h2", "h3"):
        physnet = "physnet1" if name == "h1" else "physnet2"
        HostFactory(
            name=name, physnets=[physnet], driver_options={"spawn_error": f"{name} on fire"}
        )
    fault = failed_build(acme_admin, networks=[{"uuid": str(cloud.network.pk)}])
    assert fault["message"] == "spawn failed on h2: h2 on fire"
    assert fault["details"] == (
        "attempt 1 spawn on h1: spawn failed on h1: h1 on fire; "
        "attempt 2 spawn on h2: spawn failed on h2: h2 on fire; "
        "final step: spawn; hosts tried: h1, h2"
    )


def test_segments_out_of_addresses_are_named(acme_admin, cloud):
    network, rack1, rack2 = cloud.network, *map(cloud.segments.get, ("rack1", "rack2"))
    for address in ("10.2.0.10", "10.2.0.11"):  # rack2's whole pool
        net_services.port_create(
            project=cloud.project, network=network, fixed_ips=[{"ip_address": address}]
        )
    services.host_set_enabled(host=Host.objects.get(name="h1"), enabled=False)
    fault = failed_build(acme_admin, networks=[{"uuid": str(network.pk)}])
    why = f"no host reaches a segment of network {network.pk} with a free IP"
    assert fault["message"] == why
    assert fault["details"] == (
        f"attempt 1 schedule: {why} (out of addresses: segment rack2 ({rack2.pk}, physnet2); "
        f"no host left reaches: segment rack1 ({rack1.pk}, physnet1) (253 free)); "
        "final step: schedule; hosts tried: none"
    )


def test_details_stay_admin_only(acme_admin, cloud, caller):
    services.host_set_enabled(host=Host.objects.get(name="h1"), enabled=False)
    for address in ("10.2.0.10", "10.2.0.11"):
        net_services.port_create(
            project=cloud.project, network=cloud.network, fixed_ips=[{"ip_address": address}]
        )
    fault = failed_build(acme_admin, networks=[{"uuid": str(cloud.network.pk)}])
    member = caller("acme", "member")
    [server] = member.get(f"{C21}/servers/detail").json()["servers"]
    assert server["fault"] == {k: fault[k] for k in ("code", "message", "created")}
