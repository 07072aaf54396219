"""Users, sign-ins and the client environment of the identity tests."""

import json
import os
import subprocess

import pytest

from identity.services import membership_ensure
from tests.networking.test_clients import OPENSTACK_CLI

V3 = "/identity/v3"


@pytest.fixture
def alice(db):
    """User alice, password "wonderland", member of project "acme"."""
    membership = membership_ensure(project_name="acme", username="alice", role="member")
    membership.user.set_password("wonderland")
    membership.user.save()
    return membership


def password_body(user="alice", password="wonderland", project="acme", scope=None) -> dict:
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"name": "Default"}, "password": password}
                },
            },
            "scope": scope or {"project": {"name": project, "domain": {"id": "default"}}},
        }
    }


def issue(client, body):
    return client.post(f"{V3}/auth/tokens", body, content_type="application/json")


@pytest.fixture
def cloud_env(live_server, transactional_db, tmp_path):
    """The OS_* settings a Keystone user has: auth_url, user, password,
    project; nothing else."""
    membership = membership_ensure(project_name="acme", username="alice", role="admin")
    membership.user.set_password("wonderland")
    membership.user.save()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path),
        OS_AUTH_URL=f"{live_server.url}/identity",
        OS_USERNAME="alice",
        OS_PASSWORD="wonderland",
        OS_PROJECT_NAME="acme",
        OS_USER_DOMAIN_NAME="Default",
        OS_PROJECT_DOMAIN_NAME="Default",
        OS_IDENTITY_API_VERSION="3",
    )
    return env


def as_json(text: str):
    # blazarclient prints "Created a new lease:" before the object.
    return json.loads(text[min(i for i in (text.find("{"), text.find("[")) if i >= 0) :])


def cli(env, *args) -> str:
    done = subprocess.run(
        [str(OPENSTACK_CLI), *args],
        env=env,
        cwd=env["HOME"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
