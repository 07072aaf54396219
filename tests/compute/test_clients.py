"""The compute commands of the `openstack` CLI (docs/clients.md) against a
live server, signed in with a token at the identity API."""

import pytest

from compute import services
from compute.models import Flavor
from identity.auth import user_context
from identity.models import Membership
from tests.factories import HostFactory
from tests.networking.test_clients import OpenStackCLI, command, token


@pytest.fixture
def cli(live_server, transactional_db, tmp_path):
    HostFactory(name="c1")
    HostFactory(name="c2")
    services.flavor_create(id="m1.small", name="m1.small", vcpus=1, ram=2048, disk=20)
    return OpenStackCLI(live_server.url, token("admin", "ops"), tmp_path)


def test_flavors_hypervisors_and_services(cli):
    services.flavor_create(id="spare", name="spare", vcpus=1, ram=512, disk=1)
    assert {f["ID"] for f in cli(*command("flavor list"))} == {"m1.small", "spare"}
    assert cli(*command("flavor show m1.small"))["ram"] == 2048
    assert cli("flavor", "delete", "spare") is None
    assert [f["ID"] for f in cli(*command("flavor list"))] == ["m1.small"]
    hypervisors = cli(*command("hypervisor list"))
    assert sorted(h["Hypervisor Hostname"] for h in hypervisors) == ["c1", "c2"]
    disable = "compute service set --disable --disable-reason maintenance c1 nova-compute"
    assert cli(*disable.split()) is None
    shown = {s["Host"]: s["Status"] for s in cli(*command("compute service list"))}
    assert shown == {"c1": "disabled", "c2": "enabled"}
    assert cli("compute", "service", "set", "--enable", "c1", "nova-compute") is None
    assert {s["Status"] for s in cli(*command("compute service list"))} == {"enabled"}


def test_server_list_show_events_and_delete(cli):
    membership = Membership.objects.get(user__username="admin-ops")
    context = user_context(user=membership.user, project=membership.project, role="admin")
    flavor = Flavor.objects.get(pk="m1.small")
    (server,) = services.server_create(context=context, name="s1", flavor=flavor, nics=[])
    assert [s["Name"] for s in cli(*command("server list"))] == ["s1"]
    assert cli(*command("server show s1"))["id"] == str(server.pk)
    (created,) = cli(*command(f"server event list {server.pk}"))
    assert (created["Action"], created["Server ID"]) == ("create", str(server.pk))
    shown = cli(*command(f"server event show s1 {created['Request ID']}"))
    assert shown["action"] == "create"
    assert cli("server", "delete", "s1") is None
    # Accepted and recorded; whether a worker has finished it yet does not
    # matter to the client (once it has, the server is gone from the API:
    # microversion 2.1 lists no deleted server's events).
    assert list(server.actions.values_list("action", flat=True)) == ["create", "delete"]
