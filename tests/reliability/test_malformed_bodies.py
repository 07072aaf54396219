"""Bodies no client should send are refused at the door, in the called API's
own error shape: too large is 413 before a byte is parsed; not JSON, not an
object, the wrong envelope, too deep, not UTF-8, or text the database
cannot store is 400; a body that is not JSON at all is 415."""

import json

import pytest

NETWORKS = "/networking/v2.0/networks"
FLAVORS = "/compute/v2.1/flavors"
LEASES = "/reservation/v1/leases"
# One write per API, with a body that is valid there.
VALID = {
    "networking": (NETWORKS, {"network": {"name": "n"}}),
    "compute": (FLAVORS, {"flavor": {"name": "f", "vcpus": 1, "ram": 512, "disk": 1}}),
    "reservation": (LEASES, {"name": "l", "start_date": "now", "end_date": "now"}),
}
APIS = list(VALID)


def error(api: str, response) -> tuple[int, str]:
    """(code, message) from the API's own error shape; fails on any other."""
    body = response.json()
    if api == "networking":
        (detail,) = body.values()
        assert set(body) == {"NeutronError"} and set(detail) == {"type", "message", "detail"}
        return response.status_code, detail["message"]
    if api == "compute":
        (fault,) = body.values()
        assert set(fault) == {"code", "message"}, body
        return fault["code"], fault["message"]
    assert set(body) == {"error_code", "error_message", "error_name"}, body
    return body["error_code"], body["error_message"]


def post(caller, api: str, data: bytes, content_type="application/json", **extra):
    url = VALID[api][0]
    return caller.client.generic("POST", url, data, content_type=content_type, **extra)


@pytest.fixture
def admin(caller):
    return caller("admin-project", "admin")


def test_valid_bodies_still_pass(admin):
    # The baseline the other tests bend: each API takes its body as sent,
    # with its peer's code (Neutron creates with 201, Nova a flavor with 200).
    for api, status in (("networking", 201), ("compute", 200)):
        url, body = VALID[api]
        assert post(admin, api, json.dumps(body).encode()).status_code == status


@pytest.mark.parametrize("api", APIS)
def test_a_body_over_the_limit_is_413_before_parsing(admin, api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    # Not even JSON: had it been parsed, the answer would be a 400.
    response = post(admin, api, b"{" * 1025)
    assert response.status_code == 413
    code, message = error(api, response)
    assert code == 413 and "too large" in message
    if api == "compute":
        assert "overLimit" in response.json()


@pytest.mark.parametrize("api", APIS)
def test_the_default_limit_is_one_mebibyte(admin, api):
    url, body = VALID[api]
    padded = json.dumps({**body, "padding": "x" * (1024 * 1024)}).encode()
    assert post(admin, api, padded).status_code == 413


@pytest.mark.parametrize("api", APIS)
def test_size_is_checked_before_the_token(db, client, api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 16
    response = client.generic("POST", VALID[api][0], b"x" * 17, content_type="application/json")
    assert response.status_code == 413


@pytest.mark.parametrize("api", APIS)
def test_a_content_length_that_is_no_number_is_400(admin, api):
    response = post(admin, api, b"{}", CONTENT_LENGTH="lots")
    assert error(api, response)[0] == 400


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"{not json", "JSON parse error"),
        (b'{"network": {"name": "n"}', "JSON parse error"),
        (b"", "must be a JSON object"),
        (b"[]", "must be a JSON object"),
        (b'[{"network": {}}]', "must be a JSON object"),
        (b"42", "must be a JSON object"),
        (b'"network"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": Infinity}', "Infinity is not a JSON number"),
        (b'{"name": "\xff\xfe"}', "JSON parse error"),
        (b"\xef\xbb\xbf{}", "JSON parse error"),
        ('{"name": "caf\u00e9"}'.encode("latin-1"), "JSON parse error"),
        (b'{"name": "a\\u0000b"}', "NUL character"),
        (b'{"a\\u0000": 1}', "NUL character"),
        (b'{"name": "\\ud800"}', "lone surrogate"),
        (b'{"x": ["\\udfff"]}', "lone surrogate"),
    ],
)
def test_malformed_bodies_are_400_in_the_apis_shape(admin, api, data, words):
    response = post(admin, api, data)
    code, message = error(api, response)
    assert (response.status_code, code) == (400, 400), message
    if (api, data) == ("reservation", b""):
        # An empty Blazar body is an object without any field.
        words = "name is required"
    assert words in message


@pytest.mark.parametrize("api", APIS)
def test_the_wrong_envelope_is_400(admin, api):
    wrong = {
        "networking": {"port": {"name": "n"}},
        "compute": {"server": {"name": "f", "vcpus": 1, "ram": 1, "disk": 1}},
        # Blazar bodies have no envelope: one is a body without a name.
        "reservation": {"lease": {"name": "l", "start_date": "now", "end_date": "now"}},
    }[api]
    response = post(admin, api, json.dumps(wrong).encode())
    code, message = error(api, response)
    assert code == 400
    assert {"networking": "'network' object", "compute": "'flavor' object"}.get(
        api, "name is required"
    ) in message


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("depth", [33, 5000, 100_000])
def test_deeply_nested_json_is_400(admin, api, depth):
    # Past the interpreter's recursion limit too: json itself gives up there.
    data = b'{"a": ' * depth + b"1" + b"}" * depth
    response = post(admin, api, data)
    code, message = error(api, response)
    assert code == 400 and "nests deeper than 32 levels" in message


def test_nesting_an_openstack_body_uses_is_taken(admin):
    profile = {"level": 1}
    for level in range(2, 20):
        profile = {"level": level, "inner": profile}
    net = admin.post(NETWORKS, {"network": {"name": "n"}}).json()["network"]
    port = admin.post(
        "/networking/v2.0/ports",
        {"port": {"network_id": net["id"], "binding:profile": profile}},
    )
    assert port.status_code == 201
    assert port.json()["port"]["binding:profile"] == profile


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_a_body_that_is_not_json_is_415(admin, api, content_type):
    # As Nova and Neutron answer an unsupported Content-Type: the body is
    # not read at all, so it is not a malformed JSON body (400).
    url, body = VALID[api]
    response = post(admin, api, json.dumps(body).encode(), content_type=content_type)
    assert response.status_code == 415
    code, message = error(api, response)
    assert code == 415 and content_type in message


@pytest.mark.parametrize("api", APIS)
def test_a_malformed_host_header_is_400_in_the_apis_shape(admin, api):
    # Django refuses it before any view; its own answer was an HTML page.
    body = json.dumps(VALID[api][1]).encode()
    response = post(admin, api, body, HTTP_HOST="bad host;")
    assert response["Content-Type"] == "application/json"
    assert error(api, response)[0] == 400
