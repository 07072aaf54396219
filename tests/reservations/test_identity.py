"""One user, one user_id: the user's name, the same on a lease, a server and
its instance actions, whether made through the API or by the demo."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from compute import services as compute
from console import demo
from identity.auth import DEMO_USER, user_id_of
from identity.services import token_create
from tests.conftest import Caller
from tests.reservations.test_api import V1, lease_body


def server_of(caller, name: str, flavor: str) -> dict:
    body = {"server": {"name": name, "flavorRef": flavor, "networks": "none"}}
    created = caller.post("/compute/v2.1/servers", body)
    assert created.status_code == 202, created.json()
    return caller.get(f"/compute/v2.1/servers/{created.json()['server']['id']}").json()["server"]


def actions_of(caller, server: dict) -> list[dict]:
    url = f"/compute/v2.1/servers/{server['id']}/os-instance-actions"
    return caller.get(url).json()["instanceActions"]


def test_a_users_lease_server_and_actions_carry_the_users_name(pool):
    compute.flavor_create(id="m1", name="m1", vcpus=1, ram=512, disk=1)
    Caller("lab", "member", username="bob")  # another user first: alice's row number is not 1
    alice = Caller("lab", "member", username="alice")
    identity = user_id_of(get_user_model().objects.get(username="alice"))
    assert identity == "alice"

    lease = alice.post(f"{V1}/leases", lease_body()).json()["lease"]
    server = server_of(alice, "s1", "m1")
    (action,) = actions_of(alice, server)
    assert lease["user_id"] == server["user_id"] == action["user_id"] == identity


@pytest.fixture
def demo_project(settings):
    settings.BERTH_DEMO_PROJECT = "demo-identity"


def test_the_demo_and_its_printed_token_write_the_same_user_id(pool, demo_project):
    """The demo's own lease and one made with the token it prints (for its
    user) name the same user."""
    network = demo.cloud_ensure()
    demo_lease = demo.lease_ensure(starts_in=3600)
    (booted, *_) = demo.servers_boot(network)
    caller = Caller("demo-identity", "admin", username=DEMO_USER)
    token_create(project_name="other", username="someone-else", role="member")
    lease = caller.post(f"{V1}/leases", lease_body(name="by-token", start=120, end=180))
    server = server_of(caller, "by-token", "m1.small")
    assert demo_lease.user_id == booted.user_id == DEMO_USER
    assert lease.json()["lease"]["user_id"] == server["user_id"] == DEMO_USER


def test_noauth_mode_acts_as_the_demo_user(pool, demo_project, settings):
    settings.BERTH_AUTH_MODE = "noauth"
    compute.flavor_create(id="m1", name="m1", vcpus=1, ram=512, disk=1)
    anyone = APIClient()
    anyone.credentials(HTTP_X_AUTH_TOKEN="notused")
    lease = anyone.post(f"{V1}/leases", lease_body(), format="json").json()["lease"]
    body = {"server": {"name": "s", "flavorRef": "m1", "networks": "none"}}
    server = anyone.post("/compute/v2.1/servers", body, format="json").json()["server"]
    shown = anyone.get(f"/compute/v2.1/servers/{server['id']}").json()["server"]
    assert lease["user_id"] == shown["user_id"] == DEMO_USER
