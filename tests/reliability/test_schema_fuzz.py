"""Every operation of the three APIs, driven by schemathesis from berth's own
OpenAPI schema with an admin token: no answer is ever a 5xx, and every
answer has a status, content type and body the schema declares.

A few rows exist first (network, subnet, port, flavor, host, server,
reservable host, lease, subscription) and path parameters name them part
of the time, so generated requests reach the code behind a found object
and not only its 404.

Fast by default (a few examples per operation, for CI). Deeper:
``BERTH_FUZZ_EXAMPLES=200 pytest tests/reliability/test_schema_fuzz.py``;
``BERTH_FUZZ_SEED`` replays a run.
"""

import io
import json
import os
import time
from collections import Counter
from datetime import timedelta

import pytest
import schemathesis
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from drf_spectacular.drainage import GENERATOR_STATS
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from tests.conftest import Caller

EXAMPLES = int(os.environ.get("BERTH_FUZZ_EXAMPLES", "3"))
SEED = os.environ.get("BERTH_FUZZ_SEED")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
N2, C21, R1 = "/networking/v2.0", "/compute/v2.1", "/reservation/v1"

# What each run did, reported at the end of the module.
STATS: Counter = Counter()
# Ids of the seeded rows, by the path they are found under.
REAL_IDS: dict[str, list[str]] = {}


def test_schema_generates_without_warnings_and_validates(tmp_path):
    """What ``manage.py spectacular --validate --fail-on-warn`` checks: every
    view described (none skipped for want of a serializer), no name
    collisions, valid OpenAPI 3."""
    GENERATOR_STATS.reset()  # warnings of earlier generations in this process
    out, err = io.StringIO(), io.StringIO()
    path = tmp_path / "schema.json"
    try:
        call_command(
            "spectacular",
            "--validate",
            "--fail-on-warn",
            "--format=openapi-json",
            f"--file={path}",
            stdout=out,
            stderr=err,
        )
    except Exception as exc:
        pytest.fail(f"{exc}\n{err.getvalue()}")
    paths = json.loads(path.read_text())["paths"]
    operations = [(p, m, op) for p, item in paths.items() for m, op in item.items()]
    by_api = Counter(p.split("/")[1] for p, _, _ in operations)
    assert set(by_api) == {"networking", "compute", "reservation"}
    for path_, method, op in operations:
        codes = set(op["responses"])
        assert codes & {"200", "201", "202", "204"}, (method, path_)
        # Every operation says how it refuses: bad input and no token.
        assert {"400", "401"} <= codes, (method, path_)


def fuzz_config() -> schemathesis.Config:
    settings = {
        "generation": {
            "max-examples": EXAMPLES,
            # Both schema-valid and schema-violating requests.
            "mode": "all",
            # No example database under the project folder.
            "database": "none",
        },
        "phases": {
            # The coverage phase adds boundary and invalid values for every
            # parameter; the stateful phase needs links the schema has not.
            "examples": {"enabled": False},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        # The test database and the app run in this process: nothing is slow
        # because of the network, and a data-dependent branch is expected.
        "suppress-health-check": ["all"],
    }
    if SEED:
        settings["seed"] = int(SEED)
    return schemathesis.Config.from_dict(settings)


def seed_rows(admin: Caller) -> None:
    """One of each resource, through the APIs."""

    def made(response, key, status=201):
        # Neutron and Blazar create with 201; Nova with 200 or 202 (below).
        assert response.status_code == status, response.content
        return str(response.json()[key]["id"])

    net = made(admin.post(f"{N2}/networks", {"network": {"name": "fuzz-net"}}), "network")
    subnet = made(
        admin.post(
            f"{N2}/subnets",
            {"subnet": {"network_id": net, "cidr": "10.99.0.0/24", "ip_version": 4}},
        ),
        "subnet",
    )
    port = made(admin.post(f"{N2}/ports", {"port": {"network_id": net, "name": "p"}}), "port")
    segment = admin.get(f"{N2}/segments", network_id=net).json()["segments"][0]["id"]
    flavor = made(
        admin.post(
            f"{C21}/flavors",
            {"flavor": {"name": "fuzz", "id": "fuzz", "vcpus": 1, "ram": 512, "disk": 1}},
        ),
        "flavor",
        200,
    )
    report = {
        "name": "fuzz-host",
        "vcpus": 8,
        "memory_mb": 16384,
        "disk_gb": 100,
        "physnets": {"physnet1": {"bridge": "br-ex"}},
    }
    host = made(admin.post(f"{C21}/os-host-reports", {"host_report": report}), "hypervisor", 200)
    agent = admin.get(f"{N2}/agents").json()["agents"][0]["id"]
    server = made(
        admin.post(
            f"{C21}/servers",
            {"server": {"name": "fuzz-vm", "flavorRef": flavor, "networks": [{"uuid": net}]}},
        ),
        "server",
        202,
    )
    reservable = made(
        admin.post(f"{R1}/os-hosts", {"name": "fuzz-host", "node_type": "compute"}), "host"
    )
    start = timezone.now() + timedelta(days=1)
    lease = made(
        admin.post(
            f"{R1}/leases",
            {
                "name": "fuzz-lease",
                "start_date": start.strftime("%Y-%m-%d %H:%M"),
                "end_date": (start + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M"),
                "reservations": [{"resource_type": "physical:host", "min": 1, "max": 1}],
                "events": [],
                "before_end_date": None,
            },
        ),
        "lease",
    )
    subscription = made(
        admin.post(f"{R1}/subscriptions", {"subscription": {"url": "http://127.0.0.1:9/fuzz"}}),
        "subscription",
    )
    seq = admin.get(f"{R1}/notifications").json()["notifications"][0]["seq"]
    REAL_IDS.clear()
    REAL_IDS.update(
        {
            f"{N2}/networks/": [net],
            f"{N2}/network-ip-availabilities/": [net],
            f"{N2}/subnets/": [subnet],
            f"{N2}/ports/": [port],
            f"{N2}/segments/": [segment],
            f"{N2}/agents/": [agent],
            f"{N2}/extensions/": ["binding", "segment"],
            f"{C21}/flavors/": [flavor],
            f"{C21}/servers/": [server],
            f"{C21}/os-hypervisors/": [host],
            f"{C21}/os-services/": [host],
            f"{R1}/leases/": [lease],
            f"{R1}/os-hosts/": [reservable],
            f"{R1}/notifications/": [str(seq)],
            f"{R1}/subscriptions/": [subscription],
            # Second-level ids.
            "port_id": [port],
            "key": ["hw:cpu_policy"],
        }
    )


def real_ids_for(path: str, name: str) -> list[str]:
    if name in REAL_IDS:
        return REAL_IDS[name]
    prefix = path.split("{", 1)[0]
    return REAL_IDS.get(prefix, [])


def flatmap_path_parameters(context, path_parameters):
    """Half the time, each path parameter names a seeded row."""
    if not path_parameters:
        return st.just(path_parameters)
    path = context.operation.path
    choices = {}
    for name, value in path_parameters.items():
        known = real_ids_for(path, name)
        choices[name] = st.sampled_from([value, *known]) if known else st.just(value)
    return st.fixed_dictionaries(choices)


@pytest.fixture
def admin_token(db, settings):
    """Seeded rows and an admin token; Django keeps the test's connection."""
    settings.BERTH_WEBHOOK_ALLOWED = ["127.0.0.0/8:9"]
    admin = Caller("fuzz-admin", "admin")
    seed_rows(admin)
    # The app is called in this thread, inside the test's transaction: keep
    # Django from closing that connection at each request's start and end,
    # as its test client does.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield admin.token
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(scope="module")
def fuzz_report(request):
    """One line at the end: what the fuzzing did."""
    STATS.clear()
    started = time.monotonic()
    yield
    statuses = " ".join(f"{k}:{v}" for k, v in sorted(STATS.items()) if k.endswith("xx"))
    line = (
        f"schema fuzz: {len(STATS) and STATS['operations']} operations, "
        f"{STATS['requests']} requests ({statuses}), {EXAMPLES} examples each, "
        f"{time.monotonic() - started:.1f} s"
    )
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


# Loaded from the app itself: what /api/schema serves is what is tested.
schema = schemathesis.openapi.from_wsgi("/api/schema", application, config=fuzz_config())
schema.hook(flatmap_path_parameters)
# Paths without parameters (/servers/detail). OpenAPI matches them before a
# templated one (/servers/{id}), so an {id} of "detail" is that operation.
CONCRETE_PATHS = {path for path in schema.raw_schema["paths"] if "{" not in path}


@schema.parametrize()
def test_no_server_errors_and_answers_match_the_schema(case, admin_token, fuzz_report):
    STATS["operations"] += case.operation.label not in SEEN_OPERATIONS
    SEEN_OPERATIONS.add(case.operation.label)
    response = case.call(headers={"X-Auth-Token": admin_token})
    STATS["requests"] += 1
    STATS[f"{response.status_code // 100}xx"] += 1
    if "{" in case.operation.path and case.formatted_path in CONCRETE_PATHS:
        # Another operation answered; only its status class can be judged.
        case.validate_response(response, checks=[not_a_server_error])
        return
    case.validate_response(response, checks=CHECKS)


SEEN_OPERATIONS: set[str] = set()
