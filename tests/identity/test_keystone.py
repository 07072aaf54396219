"""The Keystone v3 subset: stock clients find every berth service from an
auth_url, a user, a password and a project, with no endpoint override."""

import json
import os
import subprocess
from datetime import timedelta

import openstack
import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from compute import services as compute
from compute.models import Instance
from console.demo import clouds_yaml
from identity.services import membership_ensure
from tests.factories import HostFactory
from tests.identity.conftest import V3, as_json, cli, issue, password_body
from tests.networking.test_clients import OPENSTACK_CLI


def test_version_discovery(client):
    root = client.get("/identity")
    assert root.status_code == 300
    (version,) = root.json()["versions"]["values"]
    assert version["id"].startswith("v3") and version["status"] == "stable"
    assert version["links"][0]["href"].endswith("/identity/v3/")
    assert client.get("/identity/v3").json()["version"]["id"] == version["id"]


def test_a_password_token_carries_the_catalog_and_scope(client, alice):
    response = issue(client, password_body())
    assert response.status_code == 201, response.content
    raw = response["X-Subject-Token"]
    token = response.json()["token"]
    assert token["methods"] == ["password"]
    assert (token["user"]["name"], token["project"]["name"]) == ("alice", "acme")
    assert token["project"]["id"] == alice.project.pk.hex
    assert {r["name"] for r in token["roles"]} == {"member", "reader"}
    assert token["expires_at"].endswith("Z")
    urls = {(s["type"], e["interface"]): e["url"] for s in token["catalog"] for e in s["endpoints"]}
    assert urls[("compute", "public")] == "http://testserver/compute/v2.1"
    assert urls[("network", "internal")] == "http://testserver/networking"
    assert urls[("reservation", "admin")] == "http://testserver/reservation/v1"
    assert urls[("identity", "public")] == "http://testserver/identity"
    # The token works on every API, and scoping by project id works too.
    assert client.get("/networking/v2.0/networks", HTTP_X_AUTH_TOKEN=raw).status_code == 200
    by_id = password_body(scope={"project": {"id": alice.project.pk.hex}})
    assert issue(client, by_id).status_code == 201


def test_validate_then_revoke(client, alice):
    raw = issue(client, password_body())["X-Subject-Token"]
    headers = {"HTTP_X_AUTH_TOKEN": raw, "HTTP_X_SUBJECT_TOKEN": raw}
    shown = client.get(f"{V3}/auth/tokens", **headers)
    assert shown.status_code == 200 and shown["X-Subject-Token"] == raw
    assert shown.json()["token"]["user"]["name"] == "alice"
    assert "catalog" not in client.get(f"{V3}/auth/tokens?nocatalog", **headers).json()["token"]
    assert client.head(f"{V3}/auth/tokens", **headers).status_code == 200
    projects = client.get(f"{V3}/auth/projects", HTTP_X_AUTH_TOKEN=raw).json()["projects"]
    assert [p["name"] for p in projects] == ["acme"]
    # The token method: a new token from this one.
    again = issue(client, {"auth": {"identity": {"methods": ["token"], "token": {"id": raw}}}})
    assert again.status_code == 201 and again.json()["token"]["methods"] == ["token"]
    assert client.delete(f"{V3}/auth/tokens", **headers).status_code == 204
    assert client.get("/networking/v2.0/networks", HTTP_X_AUTH_TOKEN=raw).status_code == 401
    other = again["X-Subject-Token"]
    gone = client.get(f"{V3}/auth/tokens", HTTP_X_AUTH_TOKEN=other, HTTP_X_SUBJECT_TOKEN=raw)
    assert gone.status_code == 404
    assert gone.json()["error"]["title"] == "Not Found"


@pytest.mark.parametrize(
    "body",
    [
        password_body(password="wrong"),
        password_body(user="nobody"),
        password_body(project="not-alices"),
        {"auth": {"identity": {"methods": ["token"], "token": {"id": "forged"}}}},
    ],
    ids=["wrong password", "unknown user", "foreign project", "unknown token"],
)
def test_bad_credentials_are_keystones_401(client, alice, body):
    get_user_model().objects.create(username="bob")
    membership_ensure(project_name="not-alices", username="bob", role="member")
    response = issue(client, body)
    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["code"], error["title"]) == (401, "Unauthorized")


@pytest.mark.parametrize("body", [[], {"auth": []}, {"auth": {"identity": {"methods": "pw"}}}])
def test_malformed_requests_are_400(client, body):
    response = issue(client, body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400


def test_the_openstack_cli_needs_only_an_auth_url(cloud_env):
    issued = cli(cloud_env, "token", "issue", "-f", "value", "-c", "project_id")
    assert len(issued.strip()) == 32
    cli(cloud_env, "network", "create", "via-keystone")
    assert "via-keystone" in cli(cloud_env, "network", "list", "-f", "value", "-c", "Name")
    assert cli(cloud_env, "server", "list", "-f", "json").strip() == "[]"
    assert cli(cloud_env, "reservation", "lease", "list", "-f", "json").strip() == "[]"
    cli(cloud_env, "flavor", "create", "--ram", "512", "--vcpus", "1", "--disk", "1", "tiny")
    assert "tiny" in cli(cloud_env, "flavor", "list", "-f", "value", "-c", "Name")
    # The CLI finds the image in the image API before it asks compute.
    image = ["image", "create", "--disk-format", "qcow2", "--container-format", "bare", "cirros"]
    cli(cloud_env, *image)
    assert cli(cloud_env, "image", "list", "-f", "value", "-c", "Name").split() == ["cirros"]
    create = ["server", "create", "--flavor", "tiny", "--image", "cirros", "--network"]
    cli(cloud_env, *create, "via-keystone", "vm1")
    shown = json.loads(cli(cloud_env, "server", "show", "vm1", "-f", "json"))
    assert (shown["name"], shown["image"].split()[0]) == ("vm1", "cirros")
    cli(cloud_env, "server", "delete", "vm1")


def test_openstacksdk_and_the_cli_connect_from_a_clouds_yaml(cloud_env, tmp_path, monkeypatch):
    """The clouds.yaml the demo writes (and docs/clients.md shows) is all
    either needs."""
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(clouds_yaml(cloud_env))
    for name in [k for k in os.environ if k.startswith("OS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    conn = openstack.connect(cloud="berth")
    assert list(conn.compute.servers()) == []
    assert conn.network.create_network(name="sdk-net").name == "sdk-net"
    leases = conn.session.get("/leases", endpoint_filter={"service_type": "reservation"})
    assert leases.json()["leases"] == []
    env = {k: v for k, v in cloud_env.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = str(clouds)
    names = cli(env, "--os-cloud", "berth", "network", "list", "-f", "value", "-c", "Name")
    assert names.split() == ["sdk-net"]


def test_create_user_sets_the_password_the_identity_api_checks(client, db):
    call_command("create_user", "dave", "--project", "lab", "--role", "reader", "--password", "pw")
    body = password_body(user="dave", password="pw", project="lab")
    token = issue(client, body).json()["token"]
    assert [r["name"] for r in token["roles"]] == ["reader"]
    # Again: a new password and role replace the old ones.
    call_command("create_user", "dave", "--project", "lab", "--role", "member", "--password", "p2")
    assert issue(client, body).status_code == 401
    body = password_body(user="dave", password="p2", project="lab")
    assert {r["name"] for r in issue(client, body).json()["token"]["roles"]} == {
        "member",
        "reader",
    }


def test_admins_manage_projects_users_and_roles_with_the_cli(cloud_env):
    project = cli(cloud_env, "project", "create", "lab", "-f", "value", "-c", "id").strip()
    cli(cloud_env, "user", "create", "--password", "s3cret", "bob")
    cli(cloud_env, "role", "add", "--project", "lab", "--user", "bob", "member")
    assert {"acme", "lab"} <= set(
        cli(cloud_env, "project", "list", "-f", "value", "-c", "Name").split()
    )
    assert "bob" in cli(cloud_env, "user", "list", "-f", "value", "-c", "Name").split()
    assignments = cli(cloud_env, "role", "assignment", "list", "--user", "bob", "-f", "json")
    assert [(a["Role"], a["Project"]) for a in json.loads(assignments)] == [("member", project)]
    # bob signs in to his new project with what the admin gave him.
    bob = {**cloud_env, "OS_USERNAME": "bob", "OS_PASSWORD": "s3cret", "OS_PROJECT_NAME": "lab"}
    assert cli(bob, "token", "issue", "-f", "value", "-c", "project_id").strip() == project
    assert cli(bob, "network", "list", "-f", "json").strip() == "[]"
    # Only admins manage identity (Keystone's default policy).
    done = subprocess.run(
        [str(OPENSTACK_CLI), "project", "create", "mine"], env=bob, capture_output=True, text=True
    )
    assert done.returncode != 0 and "403" in done.stderr
    # A new password replaces the old; a disabled user is refused.
    cli(cloud_env, "user", "set", "--password", "n3w", "bob")
    assert cli({**bob, "OS_PASSWORD": "n3w"}, "token", "issue", "-f", "value", "-c", "id")
    cli(cloud_env, "user", "set", "--disable", "bob")
    done = subprocess.run(
        [str(OPENSTACK_CLI), "token", "issue"],
        env={**bob, "OS_PASSWORD": "n3w"},
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "401" in done.stderr
    cli(cloud_env, "project", "set", "--description", "the lab", "lab")
    shown = json.loads(cli(cloud_env, "project", "show", "lab", "-f", "json"))
    assert shown["description"] == "the lab"
    cli(cloud_env, "role", "remove", "--project", "lab", "--user", "bob", "member")
    assert (
        cli(cloud_env, "role", "assignment", "list", "--user", "bob", "-f", "json").strip() == "[]"
    )
    cli(cloud_env, "project", "delete", "lab")
    assert "lab" not in cli(cloud_env, "project", "list", "-f", "value", "-c", "Name").split()
    cli(cloud_env, "user", "delete", "bob")
    assert "bob" not in cli(cloud_env, "user", "list", "-f", "value", "-c", "Name").split()


def test_identity_admin_calls_refuse_bad_input_in_keystones_words(client, db):
    membership_ensure(project_name="acme", username="root", role="admin")
    membership = membership_ensure(project_name="acme", username="root", role="admin")
    membership.user.set_password("pw")
    membership.user.save()
    raw = issue(client, password_body(user="root", password="pw"))["X-Subject-Token"]
    headers = {"HTTP_X_AUTH_TOKEN": raw, "content_type": "application/json"}
    duplicate = client.post(f"{V3}/projects", {"project": {"name": "acme"}}, **headers)
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["title"] == "Conflict"
    assert client.post(f"{V3}/projects", {"project": []}, **headers).status_code == 400
    assert client.post(f"{V3}/users", {"user": {"name": ""}}, **headers).status_code == 400
    missing = client.get(f"{V3}/projects/{'0' * 32}", HTTP_X_AUTH_TOKEN=raw)
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "code": 404,
        "title": "Not Found",
        "message": f"Could not find project: {'0' * 32}.",
    }
    url = f"{V3}/projects/{membership.project.pk.hex}/users/root/roles/owner"
    assert client.put(url, HTTP_X_AUTH_TOKEN=raw).status_code == 404


def test_repeated_failures_lock_that_user_out_for_a_while(client, alice, settings):
    settings.BERTH_LOCKOUT_FAILURES, settings.BERTH_LOCKOUT_SECONDS = 3, 60
    membership_ensure(project_name="acme", username="bob", role="member")
    bob = get_user_model().objects.get(username="bob")
    bob.set_password("builder")
    bob.save()
    for _ in range(3):
        assert issue(client, password_body(password="guess")).status_code == 401
    locked = issue(client, password_body())
    assert locked.status_code == 401
    assert locked.json()["error"]["message"] == "The account is locked for user: alice."
    # Only alice waits: the API and the other users go on.
    assert issue(client, password_body(user="bob", password="builder")).status_code == 201
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        assert issue(client, password_body()).status_code == 201


def test_application_credentials_sign_in_without_the_password(cloud_env, tmp_path):
    made = cli(
        cloud_env,
        *("application", "credential", "create", "--secret", "for-ci", "--role", "reader"),
        *("--description", "read-only CI", "ci", "-f", "json"),
    )
    credential = json.loads(made)
    assert (credential["Name"], credential["Secret"]) == ("ci", "for-ci")
    assert [role["name"] for role in credential["Roles"]] == ["reader"]
    listed = cli(cloud_env, "application", "credential", "list", "-f", "value", "-c", "Name")
    assert listed.split() == ["ci"]
    keys = ("OS_AUTH_URL", "HOME", "PATH", "XDG_CONFIG_HOME")
    ci = {k: v for k, v in cloud_env.items() if k in keys or not k.startswith("OS_")}
    ci.update(
        OS_AUTH_TYPE="v3applicationcredential",
        OS_APPLICATION_CREDENTIAL_ID=credential["ID"],
        OS_APPLICATION_CREDENTIAL_SECRET="for-ci",
        OS_AUTH_URL=cloud_env["OS_AUTH_URL"],
    )
    assert cli(ci, "network", "list", "-f", "json").strip() == "[]"
    # The credential's role, not the user's: a reader does not write.
    refused = subprocess.run(
        [str(OPENSTACK_CLI), "network", "create", "nope"], env=ci, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "403" in refused.stderr
    cli(cloud_env, "application", "credential", "delete", "ci")
    gone = subprocess.run(
        [str(OPENSTACK_CLI), "network", "list"], env=ci, capture_output=True, text=True
    )
    assert gone.returncode != 0 and "401" in gone.stderr


def test_networks_ports_leases_and_servers_from_an_auth_url(cloud_env):
    """The rest of what a user does, each client finding its service in the
    token's catalog: subnets and ports (Neutron), a lease (Blazar's
    plugin), servers on a port and with a reservation hint (Nova)."""
    HostFactory(name="r1", reservable=True, extra_capabilities={"node_type": "compute"})
    compute.flavor_create(id="tiny", name="tiny", vcpus=1, ram=512, disk=1)
    compute.image_create(name="cirros")
    cli(cloud_env, "network", "create", "n1")
    cli(cloud_env, "subnet", "create", "--network", "n1", "--subnet-range", "10.9.0.0/24", "s1")
    port = json.loads(cli(cloud_env, "port", "create", "--network", "n1", "p1", "-f", "json"))
    assert port["network_id"] and cli(cloud_env, "port", "list", "-f", "value", "-c", "Name") == (
        "p1\n"
    )
    start = (timezone.now() + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")
    end = (timezone.now() + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M")
    lease = as_json(
        cli(
            cloud_env,
            *("reservation", "lease", "create", "--reservation"),
            "resource_type=physical:host,min=1,max=1",
            *("--start-date", start, "--end-date", end, "l1", "-f", "json"),
        )
    )
    assert lease["status"] == "PENDING"
    cli(cloud_env, "reservation", "lease", "set", "--prolong-for", "1h", "l1")
    shown = json.loads(cli(cloud_env, "reservation", "lease", "show", "l1", "-f", "json"))
    # The CLI prints each reservation as a JSON object of its own.
    reservation = json.loads(shown["reservations"])
    assert reservation["hosts"] == ["r1"]
    base = ["server", "create", "--image", "cirros", "--flavor", "tiny"]
    cli(cloud_env, *base, "--port", "p1", "on-port")
    cli(cloud_env, *base, "--network", "n1", "--hint", f"reservation={reservation['id']}", "held")
    servers = json.loads(cli(cloud_env, "server", "list", "-f", "json"))
    assert sorted(s["Name"] for s in servers) == ["held", "on-port"]
    held = Instance.objects.get(name="held")
    assert held.reservation_id == reservation["id"]
    on_port = Instance.objects.get(name="on-port")
    assert str(on_port.nics.get().requested_port_id) == port["id"]
    cli(cloud_env, "server", "delete", "held", "on-port")
    assert cli(cloud_env, "reservation", "lease", "delete", "l1").strip() == "Deleted lease: l1"
