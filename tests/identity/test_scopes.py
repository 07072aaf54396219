"""Scopes and the rules around them: unscoped tokens and rescoping, no way
into another project, no credential above its maker's role, and revocation
felt at once by every API."""

import json

import pytest
from blazarclient import client as client_of_blazar
from keystoneauth1 import loading, session

from identity.services import membership_ensure
from tests.identity.conftest import V3, cli, issue, password_body

NEUTRON, NOVA, BLAZAR = (
    "/networking/v2.0/networks",
    "/compute/v2.1/servers",
    "/reservation/v1/leases",
)


def unscoped_body(user="alice", password="wonderland") -> dict:
    body = password_body(user=user, password=password)
    del body["auth"]["scope"]
    return body


def rescope(client, raw: str, project: dict):
    body = {
        "auth": {
            "identity": {"methods": ["token"], "token": {"id": raw}},
            "scope": {"project": project},
        }
    }
    return issue(client, body)


def test_a_sign_in_without_a_scope_is_unscoped_and_can_be_rescoped(client, alice):
    membership_ensure(project_name="other", username="alice", role="reader")
    response = issue(client, unscoped_body())
    assert response.status_code == 201
    token = response.json()["token"]
    assert token["user"]["name"] == "alice" and token["methods"] == ["password"]
    assert not {"project", "roles", "catalog"} & set(token)
    raw = response["X-Subject-Token"]
    # It proves who alice is: her projects, and a token scoped to one.
    projects = client.get(f"{V3}/auth/projects", HTTP_X_AUTH_TOKEN=raw).json()["projects"]
    assert [p["name"] for p in projects] == ["acme", "other"]
    mine = client.get(f"{V3}/users/alice/projects", HTTP_X_AUTH_TOKEN=raw)
    assert [p["name"] for p in mine.json()["projects"]] == ["acme", "other"]
    shown = client.get(f"{V3}/auth/tokens", HTTP_X_AUTH_TOKEN=raw, HTTP_X_SUBJECT_TOKEN=raw)
    assert shown.status_code == 200 and "project" not in shown.json()["token"]
    # It acts in no project: every service refuses it in its own words.
    for path in (NEUTRON, NOVA, BLAZAR, f"{V3}/auth/catalog"):
        refused = client.get(path, HTTP_X_AUTH_TOKEN=raw)
        assert refused.status_code == 403, (path, refused.content)
    made = client.post(
        f"{V3}/users/alice/application_credentials",
        {"application_credential": {"name": "ci"}},
        content_type="application/json",
        HTTP_X_AUTH_TOKEN=raw,
    )
    assert made.status_code == 403
    scoped = rescope(client, raw, {"name": "other", "domain": {"id": "default"}})
    assert scoped.status_code == 201
    assert scoped.json()["token"]["project"]["name"] == "other"
    assert [r["name"] for r in scoped.json()["token"]["roles"]] == ["reader"]
    assert client.get(NEUTRON, HTTP_X_AUTH_TOKEN=scoped["X-Subject-Token"]).status_code == 200
    # The token method without a scope renews the scope it is given.
    renewed = issue(
        client,
        {
            "auth": {
                "identity": {
                    "methods": ["token"],
                    "token": {"id": scoped["X-Subject-Token"]},
                }
            }
        },
    )
    assert renewed.json()["token"]["project"]["name"] == "other"


def test_no_token_is_scoped_into_a_project_its_user_has_no_role_in(client, alice):
    bob = membership_ensure(project_name="bobs", username="bob", role="admin")
    bob.user.set_password("builder")
    bob.user.save()
    alices = issue(client, password_body())["X-Subject-Token"]
    unscoped = issue(client, unscoped_body())["X-Subject-Token"]
    for raw in (alices, unscoped):
        for project in ({"id": bob.project.pk.hex}, {"name": "bobs", "domain": {"id": "default"}}):
            refused = rescope(client, raw, project)
            assert refused.status_code == 401
            assert refused.json()["error"]["title"] == "Unauthorized"
    # Not even with bob's own token in the header: the body's token counts.
    bobs = issue(client, password_body(user="bob", password="builder", project="bobs"))
    body = {
        "auth": {
            "identity": {"methods": ["token"], "token": {"id": alices}},
            "scope": {"project": {"id": bob.project.pk.hex}},
        }
    }
    refused = client.post(
        f"{V3}/auth/tokens",
        body,
        content_type="application/json",
        HTTP_X_AUTH_TOKEN=bobs["X-Subject-Token"],
    )
    assert refused.status_code == 401


def credential_create(client, raw: str, user: str, **fields):
    return client.post(
        f"{V3}/users/{user}/application_credentials",
        {"application_credential": {"name": "ci", **fields}},
        content_type="application/json",
        HTTP_X_AUTH_TOKEN=raw,
    )


def test_no_credential_has_more_roles_than_the_token_that_makes_it(client, alice):
    reader = membership_ensure(project_name="acme", username="rita", role="reader")
    reader.user.set_password("reads")
    reader.user.save()
    raw = issue(client, password_body(user="rita", password="reads"))["X-Subject-Token"]
    for role in ("member", "admin"):
        refused = credential_create(client, raw, "rita", roles=[{"name": role}])
        assert refused.status_code == 403, role
        assert "not one of the user's roles" in refused.json()["error"]["message"]
    made = credential_create(client, raw, "rita", roles=[{"name": "reader"}], secret="s")
    assert made.status_code == 201
    # A member's credential capped at reader signs in as a reader, and makes
    # no credential of its own (Keystone: restricted credentials do not).
    capped = credential_create(
        client,
        issue(client, password_body())["X-Subject-Token"],
        "alice",
        name="capped",
        secret="s",
        roles=[{"name": "reader"}],
    )
    by_credential = issue(
        client,
        {
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {
                        "id": capped.json()["application_credential"]["id"],
                        "secret": "s",
                    },
                }
            }
        },
    )
    assert [r["name"] for r in by_credential.json()["token"]["roles"]] == ["reader"]
    refused = credential_create(
        client, by_credential["X-Subject-Token"], "alice", name="more", roles=[{"name": "member"}]
    )
    assert refused.status_code == 403


def test_a_revoked_token_is_refused_at_once_by_every_api(client, alice):
    raw = issue(client, password_body())["X-Subject-Token"]
    other = issue(client, password_body())["X-Subject-Token"]
    for path in (NEUTRON, NOVA, BLAZAR):
        assert client.get(path, HTTP_X_AUTH_TOKEN=raw).status_code == 200, path
    revoked = client.delete(f"{V3}/auth/tokens", HTTP_X_AUTH_TOKEN=other, HTTP_X_SUBJECT_TOKEN=raw)
    assert revoked.status_code == 204
    for path in (NEUTRON, NOVA, BLAZAR, f"{V3}/auth/projects"):
        assert client.get(path, HTTP_X_AUTH_TOKEN=raw).status_code == 401, path
    # The other token of the same sign-in goes on.
    assert client.get(NEUTRON, HTTP_X_AUTH_TOKEN=other).status_code == 200


@pytest.mark.parametrize("plugin", ["v3password", "v3applicationcredential"])
def test_keystoneauth_plugins_find_every_service_in_the_catalog(cloud_env, client, plugin):
    options = {"auth_url": cloud_env["OS_AUTH_URL"]}
    if plugin == "v3password":
        options |= {
            "username": "alice",
            "password": "wonderland",
            "project_name": "acme",
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        }
    else:
        made = credential_create(
            client, issue(client, password_body())["X-Subject-Token"], "alice", secret="s"
        )
        credential = made.json()["application_credential"]
        options |= {"application_credential_id": credential["id"]}
        options |= {"application_credential_secret": "s"}
    auth = loading.get_plugin_loader(plugin).load_from_options(**options)
    sess = session.Session(auth=auth)
    for service, path, key in [
        ("network", "/v2.0/networks", "networks"),
        ("compute", "/servers", "servers"),
        ("reservation", "/leases", "leases"),
    ]:
        found = sess.get(path, endpoint_filter={"service_type": service, "interface": "public"})
        assert found.json()[key] == [], service
    # python-blazarclient finds its service in the same catalog.
    assert client_of_blazar.Client(version="1", session=sess).lease.list() == []


def test_the_cli_signs_in_unscoped_without_a_project(cloud_env):
    env = {k: v for k, v in cloud_env.items() if not k.startswith("OS_PROJECT")}
    issued = json.loads(cli(env, "token", "issue", "-f", "json"))
    assert issued["user_id"] == "alice" and "project_id" not in issued
    listed = cli(cloud_env, "project", "list", "--my-projects", "-f", "value", "-c", "Name")
    assert listed.split() == ["acme"]
