"""Version discovery, driven by the real clients against a live server."""

import re
import uuid

import openstack
import pytest
from blazarclient import client as blazar_client
from blazarclient import exception as blazar_exception
from keystoneauth1 import noauth, session, token_endpoint

from identity.services import token_create
from tests.conftest import sdk_connection


@pytest.fixture
def admin_token(transactional_db):
    return token_create(project_name="ops", username="operator", role="admin")[1]


def test_openstacksdk_with_admin_token(live_server, admin_token):
    conn = sdk_connection(live_server.url, admin_token)
    created = conn.network.create_network(name="discovered")
    assert [n.name for n in conn.network.networks()] == ["discovered"]
    assert conn.network.find_network("discovered").id == created.id
    compute = conn.compute.get_endpoint_data()
    assert compute.url == live_server.url + "/compute/v2.1/"
    assert compute.max_microversion == (2, 1)


def test_openstacksdk_with_none_auth(live_server, transactional_db, noauth):
    conn = sdk_connection(live_server.url, None)
    conn.network.create_network(name="demo-net")
    assert [n.name for n in conn.network.networks()] == ["demo-net"]


def test_openstacksdk_wrong_token_is_unauthorized(live_server, transactional_db):
    conn = sdk_connection(live_server.url, "wrong")
    with pytest.raises(openstack.exceptions.HttpException) as raised:
        list(conn.network.networks())
    assert raised.value.status_code == 401


def test_versioned_networking_override_works_too(live_server, admin_token):
    conn = openstack.connect(
        auth_type="admin_token",
        auth={"endpoint": live_server.url, "token": admin_token},
        network_endpoint_override=live_server.url + "/networking/v2.0",
        load_yaml_config=False,
        load_envvars=False,
    )
    assert list(conn.network.networks()) == []


@pytest.mark.parametrize("mode", ["token", "none"])
def test_blazarclient_reaches_the_reservation_api(live_server, admin_token, mode, settings):
    if mode == "none":
        settings.BERTH_AUTH_MODE = "noauth"
        auth = noauth.NoAuth()
    else:
        auth = token_endpoint.Token(live_server.url, admin_token)
    bz = blazar_client.Client(
        version="1",
        session=session.Session(auth=auth),
        endpoint_override=live_server.url + "/reservation/v1",
    )
    missing = str(uuid.uuid4())
    with pytest.raises(blazar_exception.BlazarClientException) as raised:
        bz.lease.get(missing)
    # Authenticated (not 401), and the error came back in Blazar's shape.
    assert raised.value.kwargs["code"] == 404
    assert "could not be found" in str(raised.value)


def test_discovery_documents(client):
    assert (
        client.get("/networking").json()["versions"][0]["links"][0]["href"]
        == "http://testserver/networking/v2.0/"
    )
    assert client.get("/networking/").status_code == 200
    assert client.get("/networking/v2.0").json()["version"]["id"] == "v2.0"
    assert client.get("/networking/v2.0/").json()["version"]["id"] == "v2.0"
    for url in ("/compute/v2.1", "/compute/v2.1/"):
        version = client.get(url).json()["version"]
        assert (version["version"], version["min_version"]) == ("2.1", "2.1")
    assert client.get("/compute/").json()["versions"][0]["id"] == "v2.1"
    root = client.get("/reservation/")
    assert root.status_code == 300
    assert root.json()["versions"][0]["links"][0]["href"] == "http://testserver/reservation/v1"


def test_openapi_schema_is_served_offline(client):
    schema = client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert "/networking/v2.0/networks/{id}" in schema["paths"]
    assert schema["components"]["securitySchemes"]["XAuthToken"]["name"] == "X-Auth-Token"
    docs = client.get("/api/docs")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content
    # Every asset comes from our own static files, none from a CDN. (Matching
    # "cdn" in the page failed once in ~500 runs: the random CSRF token held it.)
    assets = re.findall(r'(?:src|href)="([^"]*)"', docs.content.decode())
    assert assets and all(url.startswith("/static/") for url in assets), assets
