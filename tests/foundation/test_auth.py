"""X-Auth-Token: valid, wrong, missing, expired; roles; the noauth demo mode."""

import io
from datetime import timedelta

from django.core.management import call_command
from django.utils import timezone

from identity.models import Token
from identity.services import token_create

NETWORKS = "/networking/v2.0/networks"


def test_valid_token_is_accepted(caller):
    alice = caller("alpha", "member")
    response = alice.get(NETWORKS)
    assert response.status_code == 200
    assert response.json() == {"networks": []}


def test_wrong_token_is_401_with_a_json_body(db, client):
    response = client.get(NETWORKS, HTTP_X_AUTH_TOKEN="not-a-token")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {
        "error": {
            "code": 401,
            "title": "Unauthorized",
            "message": "The request you have made requires authentication.",
        }
    }


def test_missing_token_is_401(db, client):
    for url in (NETWORKS, "/compute/v2.1/servers", "/reservation/v1/leases"):
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.json()["error"]["code"] == 401


def test_expired_token_is_401(db, client):
    _, raw = token_create(
        project_name="alpha",
        username="bob",
        role="member",
        expires_at=timezone.now() - timedelta(seconds=1),
    )
    assert client.get(NETWORKS, HTTP_X_AUTH_TOKEN=raw).status_code == 401


def test_noauth_mode_accepts_notused_and_no_token(db, client, noauth):
    assert client.get(NETWORKS, HTTP_X_AUTH_TOKEN="notused").status_code == 200
    assert client.get(NETWORKS).status_code == 200
    created = client.post(NETWORKS, {"network": {"name": "n"}}, content_type="application/json")
    assert created.status_code == 201


def test_reader_reads_but_cannot_write(caller):
    reader = caller("alpha", "reader")
    assert reader.get(NETWORKS).status_code == 200
    response = reader.post(NETWORKS, {"network": {"name": "n"}})
    assert response.status_code == 403
    assert response.json()["NeutronError"]["type"] == "PolicyNotAuthorized"


def test_create_token_prints_the_token_last_and_stores_only_its_digest(db):
    out = io.StringIO()
    call_command("create_token", "--project", "p1", "--user", "u1", "--role", "admin", stdout=out)
    raw = out.getvalue().strip().splitlines()[-1]
    token = Token.objects.get()
    assert raw not in (token.digest, token.prefix)
    assert len(token.digest) == 64 and raw.startswith(token.prefix)
    assert token.membership.role == "admin" and token.membership.project.name == "p1"
    # Running it again reuses the project and user and issues another token.
    call_command("create_token", "--project", "p1", "--user", "u1", "--role", "reader", stdout=out)
    assert Token.objects.count() == 2
    assert Token.objects.filter(membership__role="reader").count() == 2


def test_an_expired_token_stays_expired_beside_a_valid_one(db, client):
    _, expired = token_create(
        project_name="alpha",
        username="bob",
        role="member",
        expires_at=timezone.now() - timedelta(seconds=1),
    )
    _, valid = token_create(project_name="alpha", username="bob", role="member")
    assert client.get(NETWORKS, HTTP_X_AUTH_TOKEN=valid).status_code == 200
    assert client.get(NETWORKS, HTTP_X_AUTH_TOKEN=expired).status_code == 401
