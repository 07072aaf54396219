"""Isolation and security as a matrix: every route of the three APIs, found
in the URL resolver (so a new route is tried the day it appears), called by
every kind of caller that must not get what it asks for.

Project "alpha" owns one of everything. Each call runs in a savepoint that
is rolled back afterwards, so every caller meets the same seeded state and a
write that should have been refused shows up as a difference in the
database. The policy (what is a project's, what is the admin's) is written
here from OpenStack's default policies, not read from the views: the test
must not trust what it checks.
"""

import hashlib
import hmac
import http.server
import json
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern, RoutePattern
from django.utils import timezone
from rest_framework.test import APIClient

from compute import services as compute
from compute.models import Host, Instance, InstanceAction
from identity.auth import RequestContext
from identity.models import Project, Token
from identity.services import token_create
from networking import services as net
from networking.models import HostAgent, Network, Port, Segment, Subnet
from reservations import notifications
from reservations import services as reservations
from reservations.models import (
    Delivery,
    HostAllocation,
    Lease,
    Notification,
    ReservableHost,
    Subscription,
)
from tests.compute.conftest import run_pipeline
from tests.conftest import Caller
from tests.factories import HostFactory

# --- the policy under test ------------------------------------------------------

# Rows of one project: others get 404 on their ids, never 403 (a 403 would
# confirm that the id exists; Neutron, Nova and Blazar all answer 404).
OWNED = {"network", "segment", "subnet", "port", "server", "lease", "notification", "subscription"}
# Cloud-wide resources only an admin reads or changes.
ADMIN_ONLY = {
    "agent",
    "hypervisor",
    "service",
    "host-report",
    "network-ip-availability",
    "os-host",
}
# Routes of an owned resource that only admins call (Nova's policy on
# server diagnostics: admin only, whoever owns the server).
ADMIN_ONLY_ROUTES = {"GET /compute/v2.1/servers/{pk}/diagnostics"}
# Readable by every authenticated caller; written by admins only.
SHARED = {"flavor", "extension"}
# Provider configuration inside a project's resource: only admins change it.
ADMIN_WRITES = {"segment", "flavor"}
# Rows of a project that only admins read (Neutron's policy on segments):
# others get an empty list and 404, as Neutron drops what policy hides.
ADMIN_READS = {"segment"}
# Routes that create a row of the caller's own project and cannot name
# another project: another project's member may use them (its row is its own).
OWN_PROJECT_CREATE = {"lease", "subscription"}
# Fields a non-admin never sees, in a show or a list (OpenStack policy).
ADMIN_ONLY_KEYS = {
    "binding:host_id",
    "binding:profile",
    "binding:vif_type",
    "binding:vif_details",
    "binding:failure_reason",
    "provider:network_type",
    "provider:physical_network",
    "provider:segmentation_id",
    "OS-EXT-SRV-ATTR:host",
    "OS-EXT-SRV-ATTR:hypervisor_hostname",
    "OS-EXT-SRV-ATTR:instance_name",
    "host",
    "traceback",
    "details",
}
# Never in a response after creation, whoever asks (shown once, at create).
SECRET_KEYS = {"secret", "digest", "token"}

HOSTS = ("mxhost-good", "mxhost-bad")
# Ports are part of the allow-list: the tests' receivers add their own.
ALLOWED_HOOKS = ["127.0.0.1/32:9"]

SAFE = {"GET", "HEAD", "OPTIONS"}


# --- routes, from the resolver ----------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    api: str  # networking, compute or reservation
    template: str  # the path with {name} for each URL argument
    resource: str  # the router's basename; "discovery"/"unknown"/"extension" otherwise
    method: str
    action: str
    detail: bool  # names one object

    @property
    def kind(self) -> str:
        return f"{self.method} {self.template}"


def _piece(pattern) -> str:
    """One level of a URL pattern as a path template."""
    if isinstance(pattern, RoutePattern):
        return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern))
    assert isinstance(pattern, RegexPattern), pattern
    text = str(pattern).lstrip("^").rstrip("$")
    text = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", text)
    return text.replace("/?", "").replace("\\.", ".").replace("^", "")


def _walk(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + _piece(p.pattern))
        else:
            yield prefix + _piece(p.pattern), p


# HEAD and OPTIONS answer as GET does, without a body to check (DRF also
# adds "head" to a viewset's actions on its first request).
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _methods(pattern: URLPattern) -> dict[str, str]:
    callback = pattern.callback
    if getattr(callback, "actions", None):  # a DRF viewset route
        actions = {m.upper(): a for m, a in callback.actions.items()}
        return {m: a for m, a in actions.items() if m in METHODS}
    cls = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if cls is not None:
        return {m: m.lower() for m in METHODS if hasattr(cls, m.lower())}
    return {"GET": callback.__name__}


def discover_endpoints() -> list[Endpoint]:
    prefixes = {
        settings.BERTH_NETWORKING_PREFIX: "networking",
        settings.BERTH_COMPUTE_PREFIX: "compute",
        settings.BERTH_RESERVATION_PREFIX: "reservation",
    }
    found = []
    for template, pattern in _walk(get_resolver().url_patterns):
        api = prefixes.get(template.split("/", 1)[0])
        if api is None:
            continue  # the Django admin and the schema are not the OpenStack APIs
        callback = pattern.callback
        cls = getattr(callback, "cls", None)
        initkwargs = getattr(callback, "initkwargs", {})
        if cls is None:
            resource = "discovery"
        elif cls.__name__ == "UnknownResourceView":
            resource = "unknown"
        elif "basename" in initkwargs:
            resource = initkwargs["basename"]
        else:
            resource = "extension"
        for method, action in _methods(pattern).items():
            found.append(
                Endpoint(
                    api=api,
                    template="/" + template,
                    resource=resource,
                    method=method,
                    action=action,
                    detail=bool(initkwargs.get("detail")) or "{alias}" in template,
                )
            )
    return found


# --- seed: project alpha owns one of everything ---------------------------------------


@dataclass
class Seed:
    alpha: Project
    beta: Project
    ids: dict = field(default_factory=dict)  # URL argument values per (resource, name)
    markers: set = field(default_factory=set)  # strings only alpha (or admins) may see
    listed: dict = field(default_factory=dict)  # resource -> id alpha's lists must show


def seed_world(settings) -> Seed:
    """Everything as the services make it, with the build pipeline run in
    this process: a bound port, an ACTIVE server, a server whose port failed
    to bind (its fault and action events say why), a lease holding a host,
    notifications, a subscription with a delivery; and a network and a lease
    of beta's own, which the probes name."""
    settings.BERTH_WEBHOOK_ALLOWED = ALLOWED_HOOKS
    alpha = Project.objects.create(name="alpha")
    beta = Project.objects.create(name="beta")
    admin = RequestContext(user_id="seed-admin", project=alpha, role="admin")
    member = RequestContext(user_id="seed-member", project=alpha, role="member")
    good, bad = HOSTS
    # SR-IOV on one host only: a "direct" port fails to bind on the other.
    HostFactory(name=good, sriov=True)
    HostFactory(name=bad, vnic_types=["normal", "direct"])
    public = compute.flavor_create(id="mx-public", name="mx-public", vcpus=1, ram=512, disk=1)
    compute.flavor_set_extra_specs(flavor=public, specs={"mx:spec": "1"})
    compute.flavor_create(
        id="mx-private", name="mx-private", vcpus=1, ram=512, disk=1, is_public=False
    )
    network = net.network_create(
        context=admin,
        project=alpha,
        name="alpha-only-net",
        segments=[
            {
                "network_type": "vlan",
                "physical_network": "physnet1",
                "segmentation_id": 3101,
                "name": "alpha-only-seg",
            }
        ],
    )
    segment = network.segments.get()
    subnet = net.subnet_create(
        project=alpha, network=network, segment=segment, cidr="10.77.0.0/24", name="alpha-only-sub"
    )
    subscription = notifications.subscription_create(
        project=alpha, url="http://127.0.0.1:9/alpha-only", event_types=[], secret="alpha-secret"
    )
    server = compute.server_create(
        context=member,
        name="alpha-only-server",
        flavor=public,
        nics=[compute.NicRequest(network=network)],
    )[0]
    run_pipeline(server)
    # The second build may only land on the host that cannot bind it.
    compute.host_set_enabled(host=Host.objects.get(name=good), enabled=False)
    direct = net.port_create(
        project=alpha, network=network, name="alpha-only-direct", binding_vnic_type="direct"
    )
    failed = compute.server_create(
        context=member,
        name="alpha-only-failed",
        flavor=public,
        nics=[compute.NicRequest(port=direct)],
    )[0]
    run_pipeline(failed)
    compute.host_set_enabled(host=Host.objects.get(name=good), enabled=True)
    port = net.port_create(project=alpha, network=network, name="alpha-only-port")
    for name in HOSTS:
        reservations.reservable_host_create(name=name, capabilities={"node_type": "mx"})
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(days=1)
    lease = reservations.lease_create(
        context=member,
        request=reservations.LeaseRequest(
            name="alpha-only-lease",
            start=start,
            end=start + timedelta(hours=2),
            reservations=[reservations.HostRequest(min=1, max=1)],
        ),
    )
    beta_context = RequestContext(user_id="seed-beta", project=beta, role="member")
    beta_network = net.network_create(context=beta_context, project=beta, name="beta-net")
    beta_lease = reservations.lease_create(
        context=beta_context,
        request=reservations.LeaseRequest(
            name="beta-lease",
            start=start + timedelta(days=2),
            end=start + timedelta(days=2, hours=1),
            reservations=[reservations.HostRequest(min=1, max=1)],
        ),
    )
    server.refresh_from_db()
    failed.refresh_from_db()
    assert (server.status, failed.status) == ("ACTIVE", "ERROR"), server.fault
    action = InstanceAction.objects.filter(instance=server).first()
    host = Host.objects.get(name=good)
    notification = Notification.objects.filter(project=alpha).order_by("seq").first()
    assert Delivery.objects.filter(subscription=subscription).exists()
    server_port = server.nics.get().port
    # Both leases hold the other host: deleting this one from the
    # reservable pool succeeds (a held one is 409).
    assert not HostAllocation.objects.filter(host=host).exists()

    seed = Seed(alpha=alpha, beta=beta)
    seed.ids = {
        ("network", "pk"): network.pk,
        ("segment", "pk"): segment.pk,
        ("subnet", "pk"): subnet.pk,
        ("port", "pk"): port.pk,
        ("network-ip-availability", "pk"): network.pk,
        ("agent", "pk"): HostAgent.objects.get(host=good).pk,
        ("flavor", "pk"): public.pk,
        ("flavor", "key"): "mx:spec",
        ("server", "pk"): server.pk,
        ("server", "port_id"): server_port.pk,
        ("server", "request_id"): action.request_id,
        ("hypervisor", "pk"): host.pk,
        ("service", "pk"): host.pk,
        ("host-report", "pk"): host.pk,
        ("lease", "pk"): lease.pk,
        ("os-host", "pk"): ReservableHost.objects.get(host=host).pk,
        ("notification", "pk"): notification.seq,
        ("subscription", "pk"): subscription.pk,
        ("extension", "alias"): "binding",
        # Not URL arguments: what the probes below name.
        ("beta", "network"): beta_network.pk,
        ("beta", "lease"): beta_lease.pk,
        ("alpha", "reservation"): lease.reservations.get().pk,
        ("alpha", "direct-port"): direct.pk,
    }
    seed.listed = {
        "network": network.pk,
        "segment": segment.pk,
        "subnet": subnet.pk,
        "port": port.pk,
        "server": server.pk,
        "lease": lease.pk,
        "subscription": subscription.pk,
        "flavor": public.pk,
    }
    owned_rows = [
        *Network.objects.filter(project=alpha),
        *Segment.objects.filter(network__project=alpha),
        *Subnet.objects.filter(project=alpha),
        *Port.objects.filter(project=alpha),
        *Instance.objects.filter(project=alpha),
        *Lease.objects.filter(project=alpha),
        *Subscription.objects.filter(project=alpha),
    ]
    seed.markers = {str(row.pk) for row in owned_rows} | {
        alpha.pk.hex,
        str(alpha.pk),
        "alpha-only",
        "mx-private",
    }
    return seed


# --- callers and what each must get ----------------------------------------------------


def api_client(token: str | None) -> APIClient:
    client = APIClient()
    if token is not None:
        client.credentials(HTTP_X_AUTH_TOKEN=token)
    return client


NON_ADMINS = {"beta-member", "alpha-reader", "alpha-member"}
# Roles under test; alpha-member and admin are the comparison.
UNDER_TEST = ("anonymous", "bogus-token", "beta-member", "alpha-reader")


def make_callers(seed: Seed) -> dict[str, APIClient]:
    return {
        "anonymous": api_client(None),
        "bogus-token": api_client("not-a-token-" + "x" * 32),
        "beta-member": Caller("beta", "member").client,
        "alpha-reader": Caller("alpha", "reader").client,
        "alpha-member": Caller("alpha", "member").client,
        "admin": Caller("operators", "admin").client,
    }


@dataclass(frozen=True)
class Expect:
    status: int  # the one right answer
    why: str
    may_write: bool = False  # the database may change (the call is allowed)


# The status of a call that succeeds, as the peer services answer it
# (openstack_wire.md 2.6): per method, except where Nova has its own code
# for one call.
SUCCESS = {"GET": 200, "PUT": 200, "POST": 201, "DELETE": 204}
OWN_CODES = {
    "POST /compute/v2.1/servers": 202,
    "POST /compute/v2.1/servers/{pk}/action": 202,
    "POST /compute/v2.1/flavors": 200,
    "DELETE /compute/v2.1/flavors/{pk}": 202,
    "POST /compute/v2.1/flavors/{pk}/os-extra_specs": 200,
    "DELETE /compute/v2.1/flavors/{pk}/os-extra_specs/{key}": 200,
    # berth's: a host report replaces the host's last one.
    "POST /compute/v2.1/os-host-reports": 200,
}
# Calls the seeded world makes conflict, whoever is allowed to make them:
# 409 is their one right answer, and they change nothing.
CONFLICTS = {
    "DELETE /networking/v2.0/networks/{pk}": "NetworkInUse: the server's port is on it",
    "DELETE /networking/v2.0/subnets/{pk}": "SubnetInUse: ports hold its addresses",
    "DELETE /networking/v2.0/segments/{pk}": "SegmentInUse: the subnet is on it",
    "POST /reservation/v1/os-hosts": "the host is reservable already",
    "POST /reservation/v1/leases/{pk}/faulty_hosts": "the lease has not started yet",
}
# Another project's member creating with alpha's rows in the body, answered
# as the peer answers a row the caller cannot see or may not name: Neutron
# refuses a foreign project_id (403) and hides a network that is not the
# caller's (404, as if there were none); Nova calls an unknown network on a
# server create bad input (400).
FOREIGN_CREATE = {
    ("network", "create"): 403,
    ("subnet", "create"): 404,
    ("port", "create"): 404,
    ("server", "create"): 400,
}


def allowed(ep: Endpoint, why: str) -> Expect:
    """A call its caller may make: its success code, or the conflict the
    seeded world makes it run into."""
    if ep.kind in CONFLICTS:
        return Expect(409, CONFLICTS[ep.kind])
    return Expect(OWN_CODES.get(ep.kind, SUCCESS[ep.method]), why, may_write=True)


def expect(ep: Endpoint, caller: str) -> Expect:
    safe = ep.method in SAFE
    if ep.resource == "discovery":
        # Blazar answers its version list with 300 Multiple Choices.
        versions = ep.template == "/" + settings.BERTH_RESERVATION_PREFIX
        return Expect(300 if versions else 200, "discovery documents are public")
    if caller in ("anonymous", "bogus-token"):
        return Expect(401, "no valid token")
    if ep.resource == "unknown":
        return Expect(404, "unknown URL")
    if caller == "admin":
        # Every project's rows and every endpoint.
        return allowed(ep, "admin")
    reader = caller == "alpha-reader"
    if ep.resource in ADMIN_ONLY or ep.kind in ADMIN_ONLY_ROUTES:
        return Expect(403, "admin-only endpoint")
    if not safe and ep.resource in ADMIN_WRITES:
        return Expect(403, "admin-only write")
    if not safe and reader:
        return Expect(403, "readers do not write")
    if ep.resource in SHARED:
        return Expect(200, "readable by every project")
    if ep.resource in ADMIN_READS:
        return Expect(404 if ep.detail else 200, "admin-only rows: none listed, none found")
    assert ep.resource in OWNED, f"unclassified resource {ep.resource!r}: add it to the policy"
    if caller == "beta-member":
        if ep.detail:
            return Expect(404, "another project's id")
        if safe:
            return Expect(200, "its own list")
        if ep.resource in OWN_PROJECT_CREATE:
            return Expect(201, "creates in its own project", may_write=True)
        key = (ep.resource, ep.action)
        assert key in FOREIGN_CREATE, f"{ep.kind}: add its answer to FOREIGN_CREATE"
        return Expect(FOREIGN_CREATE[key], "create naming another project's rows")
    if safe:
        return Expect(200, "own project's row")
    return allowed(ep, "own project's row")


def bodies(seed: Seed) -> dict:
    """A request body per (resource, action) that alpha's member may send
    (so a refusal to others is isolation, not a bad body); creates name
    alpha's rows, or alpha itself, wherever the API lets them."""
    ids = {k[0]: str(v) for k, v in seed.ids.items() if k[1] == "pk"}
    alpha = seed.alpha.pk.hex
    start = (timezone.now() + timedelta(days=3)).strftime("%Y-%m-%d %H:%M")
    end = (timezone.now() + timedelta(days=4)).strftime("%Y-%m-%d %H:%M")
    return {
        ("network", "create"): {"network": {"name": "mx-new", "project_id": alpha}},
        ("network", "update"): {"network": {"name": "mx-renamed"}},
        ("segment", "create"): {
            "segment": {
                "network_id": ids["network"],
                "network_type": "vlan",
                "physical_network": "physnet1",
                "segmentation_id": 9,
            }
        },
        ("segment", "update"): {"segment": {"name": "mx-renamed"}},
        ("subnet", "create"): {
            "subnet": {
                "network_id": ids["network"],
                "segment_id": ids["segment"],
                "cidr": "10.77.1.0/24",
                "ip_version": 4,
                "tenant_id": alpha,
            }
        },
        ("subnet", "update"): {"subnet": {"name": "mx-renamed"}},
        ("port", "create"): {"port": {"network_id": ids["network"], "project_id": alpha}},
        ("port", "update"): {"port": {"name": "mx-renamed"}},
        ("agent", "update"): {"agent": {"admin_state_up": False}},
        ("flavor", "create"): {"flavor": {"name": "mx-new", "vcpus": 1, "ram": 64, "disk": 1}},
        ("flavor", "extra_specs"): {"extra_specs": {"mx:new": "1"}},
        ("server", "create"): {
            "server": {
                "name": "mx-new",
                "flavorRef": "mx-public",
                "networks": [{"uuid": ids["network"]}],
            }
        },
        ("server", "server_action"): {"os-stop": None},
        ("service", "update"): {"status": "disabled", "disabled_reason": "mx"},
        ("service", "disable"): {"host": HOSTS[0], "binary": "nova-compute"},
        ("service", "enable"): {"host": HOSTS[0], "binary": "nova-compute"},
        ("service", "disable_log_reason"): {
            "host": HOSTS[0],
            "binary": "nova-compute",
            "disabled_reason": "mx",
        },
        ("host-report", "create"): {
            "host_report": {"name": "mx-new-host", "vcpus": 1, "memory_mb": 1, "disk_gb": 1}
        },
        ("lease", "create"): {
            "name": "mx-new",
            "start_date": start,
            "end_date": end,
            "project_id": alpha,
            "reservations": [{"resource_type": "physical:host", "min": 1, "max": 1}],
            "events": [],
        },
        ("lease", "update"): {"name": "mx-renamed"},
        ("lease", "report_faulty_host"): {"host": HOSTS[0], "reason": "mx"},
        ("os-host", "create"): {"name": HOSTS[0]},
        ("os-host", "update"): {"values": {"node_type": "mx-changed"}},
        ("subscription", "create"): {
            "subscription": {
                "url": "http://127.0.0.1:9/mx-new",
                "event_types": [],
                "project_id": alpha,
            }
        },
        ("subscription", "update"): {"subscription": {"enabled": False}},
    }


def url_of(ep: Endpoint, seed: Seed) -> str:
    if ep.resource == "unknown":
        return ep.template + "v9/no-such-resource"
    names = re.findall(r"{(\w+)}", ep.template)
    values = {}
    for name in names:
        key = (ep.resource, name)
        assert key in seed.ids, f"no seeded value for {name} of {ep.kind}: seed one"
        values[name] = seed.ids[key]
    return ep.template.format(**values)


# --- what a response may contain ------------------------------------------------------


def api_error_shape(api: str, status: int, body) -> bool:
    """The error body of the API that was called (openstack_wire.md 2.5)."""
    if not isinstance(body, dict):
        return False
    if status == 401:
        error = body.get("error", {})
        return error.get("code") == 401 and error.get("title") == "Unauthorized"
    if api == "networking":
        error = body.get("NeutronError", {})
        return bool(error.get("type")) and "message" in error
    if api == "compute":
        fault = {
            403: "forbidden",
            404: "itemNotFound",
            400: "badRequest",
            409: "conflictingRequest",
        }
        return body.get(fault.get(status, ""), {}).get("code") == status
    return body.get("error_code") == status and "error_message" in body


def keys_in(value, path=""):
    """(path, key, value) for every key of a JSON document."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield path, key, inner
            yield from keys_in(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from keys_in(item, f"{path}[]")


def strings_in(value, skip_keys=()):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield str(key)
            if key not in skip_keys:
                yield from strings_in(inner, skip_keys)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item, skip_keys)
    elif value is not None:
        yield str(value)


def snapshot() -> dict:
    """Every row of berth's own tables, for before/after comparisons."""
    labels = {"identity", "networking", "compute", "reservations", "auth"}
    return {
        model._meta.label: list(model.objects.order_by("pk").values_list())
        for model in apps.get_models()
        if model._meta.app_label in labels
    }


def changed_tables(before: dict, after: dict) -> list[str]:
    return [label for label in before if before[label] != after[label]]


# --- the matrix ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    ep: Endpoint
    caller: str
    path: str
    body: dict | None
    expectation: Expect
    # (one of alpha's values the request names, a value naming nothing):
    # the answer must be the one for a row that does not exist.
    named: tuple[str, str] | None = None


@dataclass
class Outcome:
    caller: str
    method: str
    path: str
    status: int
    problem: str

    def __str__(self) -> str:
        return f"{self.caller:13} {self.method:6} {self.path} -> {self.status}: {self.problem}"


# Ways a caller might ask for more than its project's rows: Nova's
# all_tenants/all_projects and Neutron's project_id/tenant_id filters.
SCOPE_ESCAPES = ("all_tenants", "all_projects", "project_id", "tenant_id")

# Findings berth keeps on purpose: (caller, method, path template, problem
# prefix) -> why. Each must still occur, so an entry goes when it changes.
FAULT_NAMES_HOSTS = (
    "by design (seed 000): a failed build's fault names the step, the host "
    'and the reason ("binding failed on h3: no driver supports vnic direct") so its '
    'owner can act on it, where Nova says only "No valid host"; port binding fields '
    "stay admin-only"
)
KNOWN = {
    (caller, "GET", "/compute/v2.1/servers/detail", "host names shown to a non-admin"): (
        FAULT_NAMES_HOSTS
    )
    for caller in ("alpha-reader", "alpha-member")
}


def call(client: APIClient, method: str, path: str, body, params=None):
    if method in ("POST", "PUT", "PATCH"):
        return getattr(client, method.lower())(path, body or {}, format="json")
    return getattr(client, method.lower())(path, params or {})


def check(ep: Endpoint, caller: str, response, seed: Seed, expectation: Expect) -> list[str]:
    """Everything wrong with one response."""
    problems = []
    status = response.status_code
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = response.content[:200]
    if status != expectation.status:
        shown = json.dumps(body)[:240] if body is not None else ""
        problems.append(f"expected {expectation.status} ({expectation.why}); body {shown}")
    if status >= 500:
        return problems
    if status >= 400 and ep.resource != "discovery":
        if not api_error_shape(ep.api, status, body):
            problems.append(f"error body not in the {ep.api} shape: {str(body)[:200]}")
        if status == 401 and response.get("WWW-Authenticate") != "Token":
            problems.append("401 without WWW-Authenticate (keystoneauth will not retry)")
    if body is None or status >= 300:
        return problems
    if ep.method == "GET":
        secrets_shown = {k for _, k, _ in keys_in(body) if k in SECRET_KEYS}
        if secrets_shown:
            problems.append(f"secret fields in a read: {sorted(secrets_shown)}")
    if caller in NON_ADMINS:
        shown = sorted({f"{p}.{k}" for p, k, _ in keys_in(body) if k in ADMIN_ONLY_KEYS})
        if shown:
            problems.append(f"admin-only fields shown: {shown[:6]}")
        # A lease's own "hosts" are its holder's to know (berth's extension).
        skip = ("hosts",) if ep.resource == "lease" else ()
        leaked = {h for s in strings_in(body, skip) for h in HOSTS if h in s}
        if leaked:
            problems.append(f"host names shown to a non-admin: {sorted(leaked)}")
    if caller == "beta-member":
        text = json.dumps(body)
        seen = sorted(m for m in seed.markers if m in text)
        if seen:
            problems.append(f"alpha's data in the answer: {seen[:4]}")
    if caller in ("alpha-member", "alpha-reader") and ep.method == "GET" and not ep.detail:
        wanted = seed.listed.get(ep.resource)
        if ep.resource in ADMIN_READS:
            if body.get(ep.resource + "s"):
                problems.append("admin-only rows listed")
        elif wanted is not None and str(wanted) not in json.dumps(body):
            problems.append(f"own row {wanted} missing from the list")
    return problems


def matrix_cases(seed: Seed, which: tuple) -> list[Case]:
    request_bodies = bodies(seed)
    cases = []
    for ep in discover_endpoints():
        path = url_of(ep, seed)
        body = request_bodies.get((ep.resource, ep.action))
        for caller in which:
            cases.append(Case(ep, caller, path, body, expect(ep, caller)))
            if caller == "beta-member" and ep.method == "GET" and not ep.detail:
                alpha = seed.alpha.pk.hex
                query = "&".join(
                    f"{name}={alpha if 'id' in name else 'True'}" for name in SCOPE_ESCAPES
                )
                cases.append(Case(ep, caller, f"{path}?{query}", body, expect(ep, caller)))
    return cases


def probe_cases(seed: Seed) -> list[Case]:
    """Cross-project references inside request bodies and filters, which a
    route-by-route walk cannot see: each names one of alpha's rows from a
    place beta owns, and is answered as if that row did not exist (the
    peer's answer for an unknown id, found again with an id of nothing)."""
    ids = {k: str(v) for k, v in seed.ids.items()}
    v2, c21, r1 = "/networking/v2.0", "/compute/v2.1", "/reservation/v1"
    nothing = str(uuid.uuid4())
    cases = [
        (
            "beta-member",
            "POST",
            f"{v2}/subnets",
            {
                "subnet": {
                    "network_id": ids[("beta", "network")],
                    "segment_id": ids[("segment", "pk")],
                    "cidr": "10.78.0.0/24",
                }
            },
            404,
            "alpha's segment must look like no segment at all",
            (ids[("segment", "pk")], nothing),
        ),
        (
            "beta-member",
            "POST",
            f"{v2}/ports",
            {
                "port": {
                    "network_id": ids[("beta", "network")],
                    "fixed_ips": [{"subnet_id": ids[("subnet", "pk")]}],
                }
            },
            # Neutron too: beta's network has no subnet, so no address of
            # it can be asked for.
            400,
            "an address from alpha's subnet",
            (ids[("subnet", "pk")], nothing),
        ),
        (
            "beta-member",
            "POST",
            f"{c21}/servers",
            {
                "server": {
                    "name": "mx",
                    "flavorRef": "mx-public",
                    "networks": [{"port": ids[("alpha", "direct-port")]}],
                }
            },
            400,
            "booting on alpha's port (Nova: Port id ... could not be found)",
            (ids[("alpha", "direct-port")], nothing),
        ),
        (
            "beta-member",
            "POST",
            f"{c21}/servers",
            {"server": {"name": "mx", "flavorRef": "mx-private", "networks": "none"}},
            400,
            "a private flavor (Nova: Flavor ... could not be found)",
            ("mx-private", "mx-no-such-flavor"),
        ),
        (
            "beta-member",
            "PUT",
            f"{r1}/leases/{ids[('beta', 'lease')]}",
            {"reservations": [{"id": ids[("alpha", "reservation")], "max": 2}]},
            400,
            "changing alpha's reservation through beta's own lease (Blazar: invalid "
            "reservation ids are bad input)",
            (ids[("alpha", "reservation")], nothing),
        ),
        (
            "alpha-member",
            "PUT",
            f"{v2}/ports/{ids[('port', 'pk')]}",
            {"port": {"binding:host_id": HOSTS[0]}},
            403,
            "binding:host_id is the admin's to set",
            None,
        ),
        (
            "alpha-member",
            "POST",
            f"{v2}/ports",
            {"port": {"network_id": ids[("network", "pk")], "binding:profile": {"a": 1}}},
            403,
            "binding:profile is the admin's to set",
            None,
        ),
        (
            "alpha-member",
            "POST",
            f"{v2}/networks",
            {"network": {"name": "mx", "provider:network_type": "vlan"}},
            403,
            "provider attributes are the admin's to set",
            None,
        ),
    ]
    network, server = ids[("network", "pk")], ids[("server", "pk")]
    filters = [
        (f"{v2}/ports?network_id={network}", (network, nothing)),
        (f"{v2}/ports?device_id={server}", (server, nothing)),
        (f"{v2}/subnets?network_id={network}", (network, nothing)),
        (f"{v2}/segments?network_id={network}", (network, nothing)),
        (
            f"{c21}/servers/detail?all_tenants=1&project_id={seed.alpha.pk.hex}",
            (seed.alpha.pk.hex, uuid.UUID(nothing).hex),
        ),
        (f"{r1}/leases?project_id={seed.alpha.pk}", (str(seed.alpha.pk), nothing)),
        (f"{r1}/notifications?since=0", None),
    ]
    cases += [
        ("beta-member", "GET", path, None, 200, "filtering for alpha's rows", named)
        for path, named in filters
    ]
    return [
        Case(
            Endpoint(
                api=path.split("/")[1],
                template=path,
                resource="probe",
                method=method,
                action="probe",
                detail=False,
            ),
            caller,
            path,
            body,
            Expect(status, why),
            named,
        )
        for caller, method, path, body, status, why, named in cases
    ]


def as_if_missing(case: Case, response, callers: dict) -> list[str]:
    """The probe again with the value naming nothing: the same answer, but
    for the value, or the first answer told that alpha's row exists."""
    value, stand_in = case.named
    path = case.path.replace(value, stand_in)
    body = json.loads(json.dumps(case.body).replace(value, stand_in)) if case.body else None
    missing = call(callers[case.caller], case.ep.method, path, body)
    seen = (response.status_code, response.content.decode().replace(value, stand_in))
    if seen == (missing.status_code, missing.content.decode()):
        return []
    return [f"answered otherwise than for nothing: {missing.status_code} {missing.content[:200]}"]


def run(cases: list[Case], seed: Seed, callers: dict) -> tuple[list[Outcome], int]:
    """Each case in a savepoint rolled back afterwards; a case that must not
    write is compared with the state before it."""
    baseline = snapshot()
    violations = []
    for case in cases:
        with transaction.atomic():
            response = call(callers[case.caller], case.ep.method, case.path, case.body)
            problems = check(case.ep, case.caller, response, seed, case.expectation)
            if not case.expectation.may_write:
                changed = changed_tables(baseline, snapshot())
                if changed:
                    problems.append(f"refused call changed {changed}")
            if case.named is not None:
                problems += as_if_missing(case, response, callers)
            transaction.set_rollback(True)
        violations += [
            Outcome(case.caller, case.ep.method, case.path, response.status_code, p)
            for p in problems
        ]
    return violations, len(cases)


def split_known(violations: list[Outcome]) -> tuple[list[Outcome], dict]:
    """(unexpected violations, {known key: reason} of the known ones seen)."""
    unexpected, seen = [], {}
    for v in violations:
        template = re.sub(r"/[0-9a-f-]{36}", "/{id}", v.path)
        key = next(
            (
                k
                for k in KNOWN
                if k[:3] == (v.caller, v.method, template) and v.problem.startswith(k[3])
            ),
            None,
        )
        if key is None:
            unexpected.append(v)
        else:
            seen[key] = KNOWN[key]
    return unexpected, seen


def summary(title: str, cases: list[Case], violations, known: dict) -> str:
    routes = [c for c in cases if c.ep.resource != "probe"]
    endpoints = {(c.ep.method, c.ep.template) for c in routes}
    callers = sorted({c.caller for c in routes})
    lines = [
        f"{title}: {len(endpoints)} endpoints x methods, {len(callers)} callers "
        f"({', '.join(callers)}): {len(routes)} requests, and {len(cases) - len(routes)} "
        f"cross-project probes; {len(violations)} violations, "
        f"{len(known)} kept on purpose (see KNOWN)",
        *(str(v) for v in violations),
        *(f"known: {k[0]} {k[1]} {k[2]}: {k[3]} ({reason})" for k, reason in known.items()),
    ]
    return "\n".join(lines)


@pytest.fixture
def world(db, settings):
    seed = seed_world(settings)
    return seed, make_callers(seed)


def test_matrix_covers_every_route_of_the_three_apis(world):
    seed, _ = world
    endpoints = discover_endpoints()
    resources = {ep.resource for ep in endpoints}
    policy = OWNED | ADMIN_ONLY | SHARED | {"discovery", "unknown"}
    assert resources <= policy, f"routes without a policy here: {resources - policy}"
    assert {"network", "server", "lease", "service", "subscription"} <= resources
    for ep in endpoints:
        url_of(ep, seed)  # every URL argument has a seeded value
        if ep.method in ("POST", "PUT") and ep.resource not in ("discovery", "unknown"):
            assert (ep.resource, ep.action) in bodies(seed), f"no body for {ep.kind}"


def test_isolation_matrix(world, capsys):
    """Other projects, readers and anonymous callers, on every route."""
    seed, callers = world
    cases = matrix_cases(seed, UNDER_TEST) + probe_cases(seed)
    violations, _ = run(cases, seed, callers)
    unexpected, known = split_known(violations)
    report = summary("isolation", cases, unexpected, known)
    with capsys.disabled():
        print("\n" + report)
    assert not unexpected, report
    assert set(known) == {k for k in KNOWN if k[0] in UNDER_TEST}, "a known violation is fixed"


def test_owner_and_admin_comparison(world, capsys):
    """The same calls succeed for alpha's member and for an admin: the
    refusals above are isolation, not broken bodies or routes."""
    seed, callers = world
    which = ("alpha-member", "admin")
    cases = matrix_cases(seed, which)
    violations, _ = run(cases, seed, callers)
    unexpected, known = split_known(violations)
    report = summary("comparison", cases, unexpected, known)
    with capsys.disabled():
        print("\n" + report)
    assert not unexpected, report
    assert set(known) == {k for k in KNOWN if k[0] in which}, "a known violation is fixed"


def test_admin_only_fields_are_there_for_admins(world):
    """The field checks above are not vacuous: an admin sees every one."""
    seed, callers = world
    admin = callers["admin"]
    ids = {k[0]: v for k, v in seed.ids.items() if k[1] == "pk"}
    server = admin.get(f"/compute/v2.1/servers/{ids['server']}").json()["server"]
    assert server["OS-EXT-SRV-ATTR:host"] in HOSTS
    port = admin.get(f"/networking/v2.0/ports/{seed.ids[('server', 'port_id')]}").json()["port"]
    assert port["binding:host_id"] == server["OS-EXT-SRV-ATTR:host"]
    assert "binding:failure_reason" in port and "binding:vif_details" in port
    network = admin.get(f"/networking/v2.0/networks/{ids['network']}").json()["network"]
    assert network["provider:segmentation_id"] == 3101
    segment = admin.get(f"/networking/v2.0/segments/{ids['segment']}").json()["segment"]
    assert segment["segmentation_id"] == 3101
    action = seed.ids[("server", "request_id")]
    events = admin.get(f"/compute/v2.1/servers/{ids['server']}/os-instance-actions/{action}")
    assert {"host", "details"} <= set(events.json()["instanceAction"]["events"][0])
    hypervisors = admin.get("/compute/v2.1/os-hypervisors/detail").json()["hypervisors"]
    assert {h["hypervisor_hostname"] for h in hypervisors} == set(HOSTS)


# --- tokens ---------------------------------------------------------------------------------


def test_tokens_are_stored_only_as_their_sha256(db):
    token, raw = token_create(project_name="alpha", username="tokens", role="member")
    assert Token.objects.get(pk=token.pk).digest == hashlib.sha256(raw.encode()).hexdigest()
    # Used once, so anything that records a request had its chance to keep it.
    assert api_client(raw).get("/networking/v2.0/networks").status_code == 200
    assert api_client(raw).post("/networking/v2.0/networks", {}, format="json").status_code == 400
    # The digest is not a token: presenting it is a 401.
    assert api_client(token.digest).get("/networking/v2.0/networks").status_code == 401
    # Every value of every table, as the database holds it: the token is
    # nowhere (its first 8 characters are kept to tell tokens apart).
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            found += [table for row in cursor.fetchall() if any(raw in str(v) for v in row)]
    assert found == []
    assert len(token.prefix) <= 8 and raw.startswith(token.prefix)


# --- webhooks ---------------------------------------------------------------------------------


class Listener:
    """A TCP port that records who connected and answers nothing useful:
    where a delivery must never arrive."""

    def __init__(self, host: str, port: int = 0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(8)
        self.sock.settimeout(0.05)
        self.address = self.sock.getsockname()
        self.connections: list = []
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(peer)
            conn.close()

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


class Receiver:
    """A subscriber's endpoint on 127.0.0.1, checking each delivery as a
    third party would from the documentation alone: X-Berth-Signature is
    "sha256=" and the hex HMAC-SHA256 of the raw body under the secret it
    was given; anything else is refused with 401."""

    def __init__(self, secret: str):
        self.secret = secret
        self.received: list[dict] = []
        self.redirect: tuple[int, str] | None = None
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                verified = receiver.verify(self.headers.get("X-Berth-Signature", ""), body)
                receiver.received.append(
                    {"headers": dict(self.headers), "body": body, "verified": verified}
                )
                if receiver.redirect is not None:
                    status, location = receiver.redirect
                    self.send_response(status)
                    self.send_header("Location", location)
                else:
                    self.send_response(204 if verified else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def verify(self, header: str, body: bytes) -> bool:
        digest = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(header, f"sha256={digest}")

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# Names the tests resolve themselves, as a DNS server under someone else's
# control may answer: one list of addresses per lookup, the last one again
# from then on.
FAKE_DNS: dict[str, list[list[str]]] = {}


@pytest.fixture
def network_spy(monkeypatch, settings):
    """The names of FAKE_DNS, and a record of every outgoing TCP connect."""
    settings.BERTH_WEBHOOK_ALLOWED = ALLOWED_HOOKS
    settings.BERTH_WEBHOOK_TIMEOUT = 2
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection
    connects = []

    def getaddrinfo(host, port, *args, **kwargs):
        answers = FAKE_DNS.get(host)
        if answers is None:
            return real_getaddrinfo(host, port, *args, **kwargs)
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 80)) for a in addresses]

    def create_connection(address, *args, **kwargs):
        connects.append(address)
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    FAKE_DNS.clear()
    yield connects
    FAKE_DNS.clear()


@pytest.fixture
def receiver():
    server = Receiver("receiver-secret")
    yield server
    server.close()


@pytest.fixture
def trap():
    """A port on 127.0.0.2, outside the allow-list (127.0.0.1/32)."""
    listener = Listener("127.0.0.2")
    yield listener
    listener.close()


def lease_for(project: Project, name: str):
    """A lease of the project, which notifies its subscribers."""
    if not ReservableHost.objects.exists():
        HostFactory(name="hook-host", reservable=True)
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(days=1)
    context = RequestContext(user_id="u", project=project, role="member")
    request = reservations.LeaseRequest(
        name=name,
        start=start + timedelta(hours=3 * Lease.objects.count()),
        end=start + timedelta(hours=3 * Lease.objects.count() + 1),
        reservations=[reservations.HostRequest(min=1, max=1)],
    )
    return reservations.lease_create(context=context, request=request)


def deliver_all(subscription) -> list[Delivery]:
    for delivery in Delivery.objects.filter(subscription=subscription, status="pending"):
        notifications.delivery_attempt(delivery_id=delivery.pk)
    return list(Delivery.objects.filter(subscription=subscription).order_by("pk"))


SUBSCRIPTIONS = "/reservation/v1/subscriptions"


def test_deliveries_verify_at_a_third_party_receiver(caller, receiver, network_spy, settings):
    settings.BERTH_WEBHOOK_ALLOWED = [*ALLOWED_HOOKS, f"127.0.0.1/32:{receiver.port}"]
    alice = caller("alpha", "member")
    created = alice.post(
        SUBSCRIPTIONS,
        {"subscription": {"url": receiver.url(), "event_types": [], "secret": receiver.secret}},
    )
    assert created.status_code == 201, created.json()
    body = created.json()["subscription"]
    assert body["secret"] == receiver.secret  # shown once, at creation
    assert "secret" not in alice.get(f"{SUBSCRIPTIONS}/{body['id']}").json()["subscription"]
    subscription = Subscription.objects.get(pk=body["id"])
    lease_for(alice.project, "hooked")
    deliveries = deliver_all(subscription)
    assert deliveries and all(d.status == "delivered" for d in deliveries)
    assert receiver.received and all(r["verified"] for r in receiver.received)
    first = receiver.received[0]
    assert json.loads(first["body"])["payload"]["lease_name"] == "hooked"
    # The receiver does refuse what it cannot verify: a forged signature,
    # and a genuine one over a changed body.
    forged = hmac.new(b"guess", first["body"], hashlib.sha256).hexdigest()
    assert not receiver.verify(f"sha256={forged}", first["body"])
    genuine = first["headers"]["X-Berth-Signature"]
    assert not receiver.verify(genuine, first["body"].replace(b"hooked", b"hacked"))
    # A subscription whose secret the receiver does not know: berth signs,
    # the receiver refuses, the delivery is not counted as delivered.
    stranger = notifications.subscription_create(
        project=alice.project, url=receiver.url("/other"), event_types=[], secret="not-shared"
    )
    lease_for(alice.project, "second")
    (refused,) = deliver_all(stranger)
    assert (refused.status, refused.response_status, refused.last_error) == (
        "pending",
        401,
        "HTTP 401",
    )
    assert receiver.received[-1]["verified"] is False


REFUSED_AT_CREATION = [
    # (allowed networks, URL)
    (ALLOWED_HOOKS, "http://10.0.0.1/hook"),
    (ALLOWED_HOOKS, "http://169.254.169.254/latest/meta-data/"),
    (ALLOWED_HOOKS, "http://127.0.0.2:8080/hook"),
    (ALLOWED_HOOKS, "http://[::1]/hook"),
    (ALLOWED_HOOKS, "http://[::ffff:10.0.0.1]/hook"),
    (ALLOWED_HOOKS, "http://127.0.0.1@10.0.0.1/hook"),  # the host is after the @
    (ALLOWED_HOOKS, "http://internal.test/hook"),  # resolves to 10.0.0.5
    (ALLOWED_HOOKS, "http://mixed.test/hook"),  # one allowed address is not enough
    (ALLOWED_HOOKS, "http://127.0.0.1:99999/hook"),
    (ALLOWED_HOOKS, "http://127.0.0.1:port/hook"),
    (ALLOWED_HOOKS, "ftp://127.0.0.1/hook"),
    (ALLOWED_HOOKS, "file:///etc/passwd"),
    (ALLOWED_HOOKS, "gopher://127.0.0.1:70/_"),
    (ALLOWED_HOOKS, "//127.0.0.1/hook"),
    (ALLOWED_HOOKS, "http:///hook"),
    (["192.0.2.0/24"], "http://localhost:8080/hook"),
    (["192.0.2.0/24"], "http://2130706433/hook"),  # 127.0.0.1, spelled as a number
    ([], "http://127.0.0.1/hook"),
]


def test_destinations_outside_the_allow_list_are_refused_at_creation(caller, settings, network_spy):
    alice = caller("alpha", "member")
    FAKE_DNS.update({"internal.test": [["10.0.0.5"]], "mixed.test": [["127.0.0.1", "10.0.0.5"]]})
    wrong = []
    for allowed, url in REFUSED_AT_CREATION:
        settings.BERTH_WEBHOOK_ALLOWED = allowed
        response = alice.post(SUBSCRIPTIONS, {"subscription": {"url": url}})
        body = response.json()
        if response.status_code != 400 or body.get("error_code") != 400:
            wrong.append(f"{url} with {allowed}: {response.status_code} {body}")
    assert wrong == [], "\n".join(wrong)
    assert not Subscription.objects.exists()
    assert network_spy == []  # deciding never opens a connection
    # What is allowed still is: the allow-list is not "refuse everything".
    settings.BERTH_WEBHOOK_ALLOWED = ALLOWED_HOOKS
    for url in ("http://127.0.0.1:9/hook", "http://localhost:9/hook"):
        assert alice.post(SUBSCRIPTIONS, {"subscription": {"url": url}}).status_code == 201


def test_a_disallowed_destination_is_never_contacted(db, trap, network_spy):
    """Subscriptions that got in some other way (the admin, an older
    allow-list, a row written by hand) are refused at delivery time,
    before any connection."""
    project = Project.objects.create(name="alpha")
    host, port = trap.address
    FAKE_DNS["internal.test"] = [[host]]
    urls = [
        f"http://{host}:{port}/hook",
        f"http://internal.test:{port}/hook",
        f"http://10.0.0.1:{port}/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
    ]
    subscriptions = [
        Subscription.objects.create(project=project, url=url, event_types=[], secret="s")
        for url in urls
    ]
    lease_for(project, "never")
    for subscription in subscriptions:
        (delivery,) = deliver_all(subscription)
        assert delivery.status == "failed", subscription.url
        assert "not an allowed webhook destination" in delivery.last_error, delivery.last_error
    assert trap.connections == []
    assert network_spy == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_to_a_disallowed_destination_are_not_followed(
    db, receiver, trap, network_spy, status, settings
):
    settings.BERTH_WEBHOOK_ALLOWED = [*ALLOWED_HOOKS, f"127.0.0.1/32:{receiver.port}"]
    project = Project.objects.create(name="alpha")
    host, port = trap.address
    receiver.redirect = (status, f"http://{host}:{port}/stolen")
    subscription = notifications.subscription_create(
        project=project, url=receiver.url(), event_types=[], secret=receiver.secret
    )
    lease_for(project, "redirected")
    (delivery,) = deliver_all(subscription)
    assert len(receiver.received) == 1 and receiver.received[0]["verified"]
    assert trap.connections == []
    # One connection, to the receiver: none to where the redirect points.
    assert network_spy == [("127.0.0.1", receiver.port)]
    # A redirect is not a delivery: it is retried, and the reason is kept.
    assert (delivery.status, delivery.response_status) == ("pending", status)
    assert str(status) in delivery.last_error


def test_a_name_is_not_resolved_again_between_check_and_connect(
    db, receiver, network_spy, settings
):
    """DNS rebinding: a name that answers an allowed address when checked
    and a disallowed one a moment later must reach the address checked."""
    settings.BERTH_WEBHOOK_ALLOWED = [*ALLOWED_HOOKS, f"127.0.0.1/32:{receiver.port}"]
    project = Project.objects.create(name="alpha")
    trap = Listener("127.0.0.2", receiver.port)
    try:
        FAKE_DNS["rebind.test"] = [["127.0.0.1"], ["127.0.0.2"]]
        subscription = Subscription.objects.create(
            project=project,
            url=f"http://rebind.test:{receiver.port}/hook",
            event_types=[],
            secret=receiver.secret,
        )
        lease_for(project, "rebound")
        (delivery,) = deliver_all(subscription)
    finally:
        trap.close()
    assert trap.connections == []
    assert delivery.status == "delivered", delivery.last_error
    assert receiver.received[0]["headers"]["Host"] == f"rebind.test:{receiver.port}"


# --- deferred writes ------------------------------------------------------------------------


def template_lease(n: int, nic: dict) -> dict:
    """A lease body whose instance reservation boots a server on ``nic``."""
    start = timezone.now() + timedelta(days=5 + n)
    return {
        "name": f"template-{n}",
        "start_date": start.strftime("%Y-%m-%d %H:%M"),
        "end_date": (start + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M"),
        "reservations": [
            {
                "resource_type": "virtual:instance",
                "amount": 1,
                "vcpus": 1,
                "memory_mb": 256,
                "disk_gb": 1,
                "server_template": {"name": f"stolen-{n}", "networks": [nic]},
            }
        ],
    }


def test_a_lease_template_cannot_name_another_projects_network_or_port(world):
    """A server template names networks and ports as POST /servers does, and
    is answered as Nova answers one the caller cannot see: 400, exactly as
    for an id of nothing, and no lease is made."""
    seed, callers = world
    beta = callers["beta-member"]
    nothing = str(uuid.uuid4())
    for key, alpha_id, words in [
        ("uuid", str(seed.ids[("network", "pk")]), "Network {} could not be found."),
        ("port", str(seed.ids[("port", "pk")]), "Port id {} could not be found."),
    ]:
        for named in (alpha_id, nothing):
            refused = call(beta, "POST", "/reservation/v1/leases", template_lease(0, {key: named}))
            assert refused.json() == {
                "error_code": 400,
                "error_message": words.format(named),
                "error_name": 400,
            }
            assert refused.status_code == 400
    assert not Lease.objects.filter(project=seed.beta, name__startswith="template").exists()


def test_a_lease_template_is_resolved_again_when_the_lease_starts(world):
    """The template is resolved when the lease starts, long after the
    request, and sees only what the lease's project sees then: alpha's
    network, shared when beta's lease was made and no longer when it
    starts, boots nothing there, and the lease says why."""
    from reservations import events
    from reservations.models import LeaseEvent

    seed, callers = world
    beta, admin = callers["beta-member"], callers["admin"]
    network = str(seed.ids[("network", "pk")])
    url = f"/networking/v2.0/networks/{network}"
    assert call(admin, "PUT", url, {"network": {"shared": True}}).status_code == 200
    created = call(beta, "POST", "/reservation/v1/leases", template_lease(1, {"uuid": network}))
    assert created.status_code == 201, created.json()
    assert call(admin, "PUT", url, {"network": {"shared": False}}).status_code == 200
    lease_id = created.json()["lease"]["id"]
    start = LeaseEvent.objects.get(lease_id=lease_id, event_type="start_lease")
    with transaction.atomic():
        events.fire(LeaseEvent.objects.select_for_update().get(pk=start.pk))
    lease = Lease.objects.get(pk=lease_id)
    assert (lease.status, lease.status_reason) == (
        "ERROR",
        f"start_lease failed: Network {network} could not be found.",
    )
    assert not Instance.objects.filter(name__startswith="stolen").exists()
    assert not Port.objects.filter(project=seed.beta, network_id=network).exists()


def test_a_lease_end_deletes_only_its_own_projects_servers(world):
    """A scheduler hint is a free-form id: beta may name alpha's reservation
    (the build then fails: the reservation is not beta's). When alpha's
    lease ends, berth deletes the lease's servers, and only alpha's."""
    from reservations import events
    from reservations.models import LeaseEvent

    seed, callers = world
    reservation = str(seed.ids[("alpha", "reservation")])
    body = {
        "server": {"name": "hinted", "flavorRef": "mx-public", "networks": "none"},
        "os:scheduler_hints": {"reservation": reservation},
    }
    created = call(callers["beta-member"], "POST", "/compute/v2.1/servers", body)
    assert created.status_code == 202, created.json()
    hinted = run_pipeline(Instance.objects.get(pk=created.json()["server"]["id"]))
    assert hinted.status == "ERROR" and "not found" in hinted.fault["message"]
    end = LeaseEvent.objects.get(lease_id=seed.ids[("lease", "pk")], event_type="end_lease")
    with transaction.atomic():
        events.fire(LeaseEvent.objects.select_for_update().get(pk=end.pk), now=end.time)
    assert Lease.objects.get(pk=seed.ids[("lease", "pk")]).status == "TERMINATED"
    hinted.refresh_from_db()
    assert (hinted.status, hinted.task_state) == ("ERROR", None)
