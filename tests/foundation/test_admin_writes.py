"""Every write the admin offers goes through the service the API calls:
change forms, add forms, deletes and actions, through Django's test client
as staff users. A refused write shows the service's error and leaves the
database as it was; read-only fields stay read-only whatever is posted;
actions need the change permission and leave a log entry."""

import json
from dataclasses import dataclass
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django import forms
from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from compute import services as compute
from compute.models import Flavor, Host, Instance, InstanceActionEvent, InstanceStatus
from compute.virt import PowerAction
from config.models import HealthProbe
from identity.auth import RequestContext
from identity.models import Project, Quota
from networking.models import HostAgent, IPAllocation, Network, Port, Segment, Subnet
from reservations import events, services
from reservations.models import (
    Delivery,
    DeliveryStatus,
    EventStatus,
    EventType,
    HostAllocation,
    HostProperty,
    Lease,
    LeaseEvent,
    LeaseStatus,
    Notification,
    ReservableHost,
    Reservation,
    Subscription,
)
from tests.compute.conftest import host_power, run_pipeline
from tests.factories import ContextFactory, FlavorFactory, HostFactory, NetworkFactory

pytestmark = pytest.mark.django_db

OUR_APPS = {"identity", "networking", "compute", "reservations"}


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


# --- what a browser would post ---------------------------------------------------------


class _FormFields(HTMLParser):
    """The name/value pairs a browser submits from the admin's object form
    (<form id="..._form">): inputs, checked boxes, selected options and
    textareas, inline management forms included."""

    def __init__(self):
        super().__init__()
        self.data: dict[str, list[str]] = {}
        self._in_form = False
        self._select: str | None = None
        self._options: list[tuple[str, bool]] = []
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self._in_form = (attrs.get("id") or "").endswith("_form")
        if not self._in_form:
            return
        name = attrs.get("name")
        if tag == "input" and name:
            kind = attrs.get("type", "text")
            if kind in ("submit", "button", "reset", "image", "file"):
                return
            box = kind in ("checkbox", "radio")
            if box and "checked" not in attrs:
                return
            self.data.setdefault(name, []).append(attrs.get("value", "on" if box else ""))
        elif tag == "select" and name:
            self._select, self._options = name, []
        elif tag == "option" and self._select:
            self._options.append((attrs.get("value", ""), "selected" in attrs))
        elif tag == "textarea" and name:
            self._textarea = name
            self.data.setdefault(name, []).append("")

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea][-1] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False
        elif tag == "select" and self._select:
            chosen = [v for v, selected in self._options if selected] or [
                v for v, _ in self._options[:1]
            ]
            self.data.setdefault(self._select, []).extend(chosen)
            self._select = None
        elif tag == "textarea" and self._textarea:
            # HTML drops the newline right after <textarea>.
            value = self.data[self._textarea][-1]
            self.data[self._textarea][-1] = value.removeprefix("\n")
            self._textarea = None


def form_fields(response) -> dict[str, list[str]]:
    parser = _FormFields()
    parser.feed(response.content.decode())
    return parser.data


def split(name: str, value) -> dict[str, str]:
    """A datetime as the admin's split date/time widget posts it."""
    value = timezone.localtime(value)
    return {f"{name}_0": f"{value:%Y-%m-%d}", f"{name}_1": f"{value:%H:%M:%S}"}


def post_form(client, url: str, /, **changes):
    """GET the form, change some fields as an operator would, POST it."""
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    data = form_fields(page)
    data.update({k: v if isinstance(v, list) else [v] for k, v in changes.items()})
    data.setdefault("_save", ["Save"])
    return client.post(url, data)


def form_errors(response) -> list[str]:
    """The errors the page shows on its form (non-field and per field)."""
    assert response.status_code == 200, f"expected the form again, got {response.status_code}"
    form = response.context["adminform"].form
    return [str(e) for errors in form.errors.values() for e in errors]


def logged(obj, flag=None) -> list[LogEntry]:
    entries = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(type(obj)), object_id=str(obj.pk)
    )
    return list(entries.filter(action_flag=flag) if flag else entries)


# --- a cloud with one of everything ----------------------------------------------------

T = timezone.now().replace(microsecond=0)


def state() -> dict:
    """What the invariants are about: leases, their allocations and events,
    ports with their MACs, bindings and addresses, hosts' claimed capacity,
    servers, flavors, networks. Equal before and after a refused write."""
    return {
        "leases": set(Lease.objects.values_list("id", "name", "start_at", "end_at", "status")),
        "reservations": set(Reservation.objects.values_list("id", "min", "max", "amount")),
        "allocations": set(HostAllocation.objects.values_list("host__name", "start_at", "end_at")),
        "events": set(LeaseEvent.objects.values_list("lease_id", "event_type", "time", "status")),
        "reservable": {
            (name, json.dumps(capabilities, sort_keys=True))
            for name, capabilities in ReservableHost.objects.values_list(
                "host__name", "capabilities"
            )
        },
        "properties": set(HostProperty.objects.values_list("reservable__host__name", "key")),
        "ports": set(Port.objects.values_list("id", "mac_address", "binding_host", "device_id")),
        "addresses": set(IPAllocation.objects.values_list("port_id", "address")),
        "hosts": set(
            Host.objects.values_list("name", "vcpus", "vcpus_used", "memory_mb_used", "enabled")
        ),
        "servers": set(Instance.objects.values_list("id", "status", "host__name")),
        "flavors": set(Flavor.objects.values_list("id", "vcpus", "ram")),
        "networks": set(Network.objects.values_list("id", "mtu", "shared")),
        "subnets": set(Subnet.objects.values_list("id", "cidr", "gateway_ip")),
        "segments": set(Segment.objects.values_list("id", "segmentation_id")),
        "subscriptions": set(Subscription.objects.values_list("id", "url", "enabled")),
        "notifications": Notification.objects.count(),
    }


def host_lease(context, name, start, end, count=1):
    request = services.LeaseRequest(
        name=name,
        start=start,
        end=end,
        heads_up_seconds=30,
        reservations=[services.HostRequest(min=count, max=count)],
    )
    return services.lease_create(context=context, request=request)


@dataclass
class World:
    project: Project
    context: RequestContext
    hosts: dict[str, Host]
    network: Network
    subnet: Subnet
    segment: Segment
    flavors: dict[str, Flavor]
    vm: Instance
    failed: Instance
    port: Port
    leases: dict[str, Lease]
    subscription: Subscription
    delivery: Delivery


@pytest.fixture
def world(db):
    return build_world()


def build_world() -> World:
    """Project "ops" (admin context). Hosts h1, h2 on physnet1, with a VLAN
    network "net" (10.7.0.0/24) and flavors small and huge (too big for
    any host). Server "vm" ACTIVE with port "vm-port"; server "failed" in
    ERROR. Host h3, the only reservable host (node_type gpu), held by
    lease "running" (started an hour ago, ends in 30 minutes), "first" (in
    1 to 2 hours) and "second" (in 3 to 4 hours). A subscription with a
    failed delivery."""
    context = ContextFactory(user_id="op", project__name="ops")
    project = context.project
    hosts = {
        "h1": HostFactory(name="h1"),
        "h2": HostFactory(name="h2"),
        "h3": HostFactory(name="h3", reservable=True, extra_capabilities={"node_type": "gpu"}),
    }
    network = NetworkFactory(project=project, name="net", vlan=True)
    small = FlavorFactory(name="small", ram=512, disk=1)
    huge = FlavorFactory(name="huge", vcpus=64, ram=512, disk=1)
    nics = [compute.NicRequest(network=network)]
    [vm] = compute.server_create(context=context, name="vm", flavor=small, nics=nics)
    vm = run_pipeline(vm)
    [failed] = compute.server_create(context=context, name="failed", flavor=huge, nics=nics)
    failed = run_pipeline(failed)
    assert (vm.status, failed.status) == (InstanceStatus.ACTIVE, InstanceStatus.ERROR)
    port = Port.objects.get(device_id=str(vm.pk))
    leases = {
        "running": host_lease(
            context, "running", T - timedelta(hours=1), T + timedelta(minutes=30)
        ),
        "first": host_lease(context, "first", T + timedelta(hours=1), T + timedelta(hours=2)),
        "second": host_lease(context, "second", T + timedelta(hours=3), T + timedelta(hours=4)),
    }
    events.sweep()
    assert Lease.objects.get(pk=leases["running"].pk).status == LeaseStatus.ACTIVE
    subscription = Subscription.objects.create(
        project=project, url="https://hooks.example.com/berth", secret="s"
    )
    delivery = Delivery.objects.create(
        notification=Notification.objects.first(),
        subscription=subscription,
        status=DeliveryStatus.FAILED,
        attempts=5,
    )
    return World(
        project=project,
        context=context,
        hosts=hosts,
        network=network,
        subnet=network.subnets.get(),
        segment=network.segments.get(),
        flavors={"small": small, "huge": huge},
        vm=vm,
        failed=failed,
        port=port,
        leases=leases,
        subscription=subscription,
        delivery=delivery,
    )


# --- item 2: the lease's change form goes through lease_update --------------------------


def end_event(lease) -> LeaseEvent:
    return LeaseEvent.objects.get(lease=lease, event_type=EventType.END)


def test_lease_end_change_that_overlaps_another_lease_is_refused(admin_client, world):
    """The issue's case: the only reservable host is held by "second" from
    +3 h; moving "first"'s end to +3.5 h must be refused like the API's."""
    first = world.leases["first"]
    before = state()
    response = post_form(
        admin_client,
        admin_url(Lease, "change", first.pk),
        **split("end_at", T + timedelta(hours=3, minutes=30)),
    )
    [error] = form_errors(response)
    assert "not enough hosts" in error.lower() or "available" in error.lower(), error
    assert state() == before
    assert not logged(first)


def test_lease_end_change_moves_its_allocations_and_end_event(admin_client, world):
    first = world.leases["first"]
    new_end = T + timedelta(hours=2, minutes=30, seconds=15)
    response = post_form(
        admin_client, admin_url(Lease, "change", first.pk), **split("end_at", new_end)
    )
    assert response.status_code == 302, form_errors(response)
    first.refresh_from_db()
    assert first.end_at == new_end
    [allocation] = HostAllocation.objects.filter(reservation__lease=first)
    assert (allocation.start_at, allocation.end_at) == (first.start_at, new_end)
    assert end_event(first).time == new_end
    assert Notification.objects.filter(lease=first, event_type="lease.update").exists()
    [entry] = logged(first, CHANGE)
    assert "End at" in entry.get_change_message()


@pytest.mark.parametrize(
    "lease_name, changes, says",
    [
        ("first", {"heads_up_seconds": "999999"}, "heads_up must be between"),
        ("running", split("start_at", T - timedelta(minutes=30)), "has started cannot change"),
        ("first", split("end_at", T + timedelta(minutes=30)), "end"),
        ("first", {"name": "second"}, "already exists"),
        ("first", split("before_end_at", T + timedelta(hours=5)), "before_end_date"),
    ],
    ids=["heads-up-too-long", "start-of-started", "end-before-start", "name-taken", "before-end"],
)
def test_invalid_lease_changes_show_the_error_and_change_nothing(
    admin_client, world, lease_name, changes, says
):
    lease = world.leases[lease_name]
    before = state()
    response = post_form(admin_client, admin_url(Lease, "change", lease.pk), **changes)
    errors = form_errors(response)
    assert any(says in e for e in errors), errors
    assert state() == before
    assert not logged(lease)


def test_reservation_change_goes_through_the_lease_service(admin_client, world):
    """min 2 on a lease whose pool has one host: refused (409's message);
    min > max: refused; neither changes anything."""
    reservation = world.leases["first"].reservations.get()
    url = admin_url(Reservation, "change", reservation.pk)
    before = state()
    errors = form_errors(post_form(admin_client, url, min="2", max="2"))
    assert errors and "host" in errors[0].lower(), errors
    assert form_errors(post_form(admin_client, url, min="2", max="1"))
    errors = form_errors(post_form(admin_client, url, min=""))
    assert errors == ["This field is required."]
    assert state() == before
    response = post_form(admin_client, url, max="3")
    assert response.status_code == 302, form_errors(response)
    reservation.refresh_from_db()
    assert (reservation.min, reservation.max) == (1, 3)
    assert Notification.objects.filter(lease=reservation.lease, event_type="lease.update").exists()


def test_network_change_is_validated_and_goes_through_the_service(admin_client, world):
    network = world.network
    url = admin_url(Network, "change", network.pk)
    before = state()
    assert form_errors(post_form(admin_client, url, mtu="10"))
    assert state() == before
    response = post_form(admin_client, url, mtu="9000", name="renamed")
    assert response.status_code == 302, form_errors(response)
    network.refresh_from_db()
    assert (network.mtu, network.name, network.revision_number) == (9000, "renamed", 1)


def test_host_change_form_disables_through_the_service(admin_client, world):
    host = world.hosts["h2"]
    response = post_form(
        admin_client, admin_url(Host, "change", host.pk), enabled=[], disabled_reason="broken fan"
    )
    assert response.status_code == 302, form_errors(response)
    host.refresh_from_db()
    assert (host.enabled, host.disabled_reason) == (False, "broken fan")
    assert logged(host, CHANGE)


def test_reservable_host_capabilities_change_rewrites_its_properties(admin_client, world):
    reservable = ReservableHost.objects.get(host__name="h3")
    url = admin_url(ReservableHost, "change", reservable.pk)
    before = state()
    errors = form_errors(post_form(admin_client, url, capabilities="[1, 2]"))
    assert errors == ['capabilities must be a JSON object, e.g. {"node_type": "gpu"}.']
    assert state() == before
    # A key the operator removes goes away, properties (what filters read)
    # included.
    response = post_form(admin_client, url, capabilities=json.dumps({"gpus": 4}))
    assert response.status_code == 302, form_errors(response)
    reservable.refresh_from_db()
    assert reservable.capabilities == {"gpus": 4}
    assert set(reservable.properties.values_list("key", "number")) == {("gpus", 4.0)}


def test_project_quotas_are_validated(admin_client, world):
    """Below -1, twice the same resource, or a resource berth does not
    count: the form says so and no quota is written."""
    project = world.project
    url = admin_url(Project, "change", project.pk)
    rows = {
        "below -1": [("instances", "-5")],
        "twice": [("cores", "4"), ("cores", "8")],
        "unknown": [("instance", "3")],
    }
    for case, quotas in rows.items():
        data = form_fields(admin_client.get(url)) | {"quotas-TOTAL_FORMS": [str(len(quotas))]}
        for n, (resource, limit) in enumerate(quotas):
            data |= {f"quotas-{n}-resource": [resource], f"quotas-{n}-limit": [limit]}
        response = admin_client.post(url, data | {"_save": ["Save"]})
        assert response.status_code == 200, case
        assert not Quota.objects.filter(project=project).exists(), case
    data = form_fields(admin_client.get(url)) | {
        "quotas-TOTAL_FORMS": ["1"],
        "quotas-0-resource": ["cores"],
        "quotas-0-limit": ["8"],
        "_save": ["Save"],
    }
    assert admin_client.post(url, data).status_code == 302
    assert list(Quota.objects.filter(project=project).values_list("resource", "limit")) == [
        ("cores", 8)
    ]


# --- read-only stays read-only, whatever is posted ---------------------------------------


def _crafted(world):
    """(object, field posted although the page shows it read-only, value,
    how to read the field back)."""
    port, vm, lease = world.port, world.vm, world.leases["first"]
    allocation = HostAllocation.objects.filter(reservation__lease=lease).get()
    later = T + timedelta(days=9)
    other = Project.objects.create(name="other")
    return [
        (world.hosts["h1"], {"vcpus": "0"}, lambda h: h.vcpus),
        (world.hosts["h1"], {"name": "renamed"}, lambda h: h.name),
        (world.flavors["small"], {"vcpus": "64"}, lambda f: f.vcpus),
        (vm, {"status": "ERROR", "vcpus": "64"}, lambda i: (i.status, i.vcpus)),
        (port, {"mac_address": "fa:16:3e:00:00:99"}, lambda p: p.mac_address),
        (port, {"binding_host": "h2", "device_id": ""}, lambda p: (p.binding_host, p.device_id)),
        (world.subnet, {"cidr": "10.9.0.0/24"}, lambda s: s.cidr),
        (world.segment, {"segmentation_id": "99"}, lambda s: s.segmentation_id),
        (lease, {"project": str(other.pk), "status": "ACTIVE"}, lambda x: (x.project_id, x.status)),
        (end_event(lease), split("time", later), lambda e: e.time),
        (allocation, split("end_at", later), lambda a: a.end_at),
        (world.subscription, {"url": "http://169.254.169.254/"}, lambda s: s.url),
        (HostAgent.objects.get(host="h1"), {"host": "h9"}, lambda a: a.host),
    ]


def test_read_only_fields_are_not_written_by_a_crafted_post(admin_client, world):
    for obj, posted, read in _crafted(world):
        model = type(obj)
        kept = read(obj)
        before = state()
        response = post_form(admin_client, admin_url(model, "change", obj.pk), **posted)
        assert response.status_code in (200, 302), (model, response.status_code)
        assert read(model.objects.get(pk=obj.pk)) == kept, (model.__name__, posted)
        assert state() == before, (model.__name__, posted)


def test_pages_with_nothing_to_edit_offer_no_save_button(admin_client, world):
    lease = world.leases["first"]
    read_only = [
        world.vm,
        world.flavors["small"],
        end_event(lease),
        HostAllocation.objects.filter(reservation__lease=lease).get(),
        world.delivery,
        Notification.objects.first(),
        InstanceActionEvent.objects.first(),
    ]
    for obj in read_only:
        page = admin_client.get(admin_url(type(obj), "change", obj.pk)).content.decode()
        assert 'name="_save"' not in page, type(obj).__name__
    page = admin_client.get(admin_url(Lease, "change", lease.pk)).content.decode()
    assert 'name="_save"' in page


# --- item 3: add views ---------------------------------------------------------------------


def _value_for(field: forms.Field, name: str) -> dict[str, str]:
    """A plausible value an operator would type into an empty field."""
    if isinstance(field, forms.SplitDateTimeField):
        return split(name, T + timedelta(days=30))
    if isinstance(field, forms.ModelChoiceField):
        first = field.queryset.first()
        return {name: str(first.pk)} if first else {}
    if isinstance(field, forms.ChoiceField):
        offered = [str(v) for v, _ in field.choices if v != ""]
        return {name: offered[0]} if offered else {}
    if isinstance(field, forms.BooleanField):
        return {name: "on"}
    if isinstance(field, forms.IntegerField | forms.FloatField | forms.DecimalField):
        return {name: "1"}
    if isinstance(field, forms.JSONField):
        return {name: "{}"}
    if isinstance(field, forms.URLField):
        return {name: "https://hooks.example.com/x"}
    if isinstance(field, forms.EmailField):
        return {name: "op@example.com"}
    if isinstance(field, forms.UUIDField):
        return {name: "6b6c1ad4-0c3e-4bb4-9d3e-0c6a0c1f0001"}
    return {name: f"new-{name}"}


def filled_add_form(response) -> dict[str, list[str]]:
    data = form_fields(response)
    for name, field in response.context["adminform"].form.fields.items():
        if not any(v for k, vs in data.items() if k.startswith(name) for v in vs):
            data.update({k: [v] for k, v in _value_for(field, name).items()})
    data["_save"] = ["Save"]
    return data


def test_every_add_view_answers_without_a_server_error(admin_client, world):
    """For every registered model: GET the add page and POST it filled in.
    The answer is the form (again, with its errors), the saved object, or
    403 where the admin offers no add; never a 500."""
    for model, model_admin in admin.site._registry.items():
        url = admin_url(model, "add")
        page = admin_client.get(url)
        if not model_admin.has_add_permission(page.wsgi_request):
            assert page.status_code == 403, model
            assert admin_client.post(url, {"_save": "Save"}).status_code == 403, model
            continue
        assert page.status_code == 200, model
        response = admin_client.post(url, filled_add_form(page))
        assert response.status_code in (200, 302), (model, response.status_code)


NO_ADD = [Lease, Reservation, LeaseEvent, HostAllocation, Notification, Delivery, Subscription]
NO_ADD += [Instance, InstanceActionEvent, Host, HealthProbe]
NO_ADD += [Network, Segment, Subnet, Port, IPAllocation, HostAgent]


def test_no_add_button_where_only_the_api_or_the_system_creates(admin_client, world):
    for model in NO_ADD:
        changelist = admin_client.get(admin_url(model, "changelist"))
        assert changelist.status_code == 200, model
        assert admin_url(model, "add") not in changelist.content.decode(), model
        assert admin_client.get(admin_url(model, "add")).status_code == 403, model


def test_flavor_add_goes_through_the_service(admin_client, world):
    page = admin_client.get(admin_url(Flavor, "add"))
    data = form_fields(page) | {
        "id": ["tiny"],
        "name": ["tiny"],
        "vcpus": ["1"],
        "ram": ["256"],
        "disk": ["1"],
        "_save": ["Save"],
    }
    response = admin_client.post(admin_url(Flavor, "add"), data)
    assert response.status_code == 302, form_errors(response)
    tiny = Flavor.objects.get(pk="tiny")
    assert (tiny.vcpus, tiny.ram) == (1, 256)
    assert logged(tiny)
    # The name is taken: the form says so, nothing is written.
    data |= {"id": ["tiny-2"], "name": ["small"]}
    before = state()
    assert form_errors(admin_client.post(admin_url(Flavor, "add"), data))
    assert state() == before


def test_reservable_host_add_writes_its_properties(admin_client, world):
    h2 = world.hosts["h2"]
    page = admin_client.get(admin_url(ReservableHost, "add"))
    data = form_fields(page) | {
        "host": [str(h2.pk)],
        "capabilities": [json.dumps({"node_type": "storage"})],
        "_save": ["Save"],
    }
    response = admin_client.post(admin_url(ReservableHost, "add"), data)
    assert response.status_code == 302, form_errors(response)
    reservable = ReservableHost.objects.get(host=h2)
    assert set(reservable.properties.values_list("key", "text")) == {("node_type", "storage")}


# --- deletes ---------------------------------------------------------------------------------


def delete(client, obj):
    return client.post(admin_url(type(obj), "delete", obj.pk), {"post": "yes"})


def test_deleting_a_reserved_host_from_the_pool_is_refused(admin_client, world):
    reservable = ReservableHost.objects.get(host__name="h3")
    before = state()
    response = delete(admin_client, reservable)
    assert response.status_code == 302
    assert response.url == admin_url(ReservableHost, "change", reservable.pk)
    page = admin_client.get(response.url)
    assert f"Can&#x27;t delete host {reservable.pk}. The host is reserved." in page.content.decode()
    assert state() == before
    assert not logged(reservable)


def test_deleting_a_lease_goes_through_the_service(admin_client, world):
    """lease_delete ends a running lease (its notification) and removes its
    reservations' flavors; the admin's own delete did neither."""
    request = services.LeaseRequest(
        name="slots",
        start=T + timedelta(days=2),
        end=T + timedelta(days=3),
        reservations=[services.InstanceRequest(amount=1, vcpus=1, memory_mb=256, disk_gb=1)],
    )
    lease = services.lease_create(context=world.context, request=request)
    flavor = lease.reservations.get().flavor
    response = delete(admin_client, lease)
    assert response.status_code == 302
    assert not Lease.objects.filter(pk=lease.pk).exists()
    assert not Flavor.objects.filter(pk=flavor.pk).exists()
    assert Notification.objects.filter(event_type="lease.delete").exists()
    assert logged(lease)


def test_deleting_a_network_with_ports_is_refused(admin_client, world):
    network = world.network
    before = state()
    response = delete(admin_client, network)
    assert response.status_code == 200
    assert "would require deleting the following protected" in response.content.decode()
    assert state() == before


def test_no_delete_where_the_api_deletes_through_its_own_path(admin_client, world):
    """A server is deleted by its pipeline (ports, addresses, capacity), an
    allocation or an event with its lease: the admin offers no delete."""
    for model in [Instance, Host, HostAllocation, LeaseEvent, Reservation, Notification, Delivery]:
        obj = model.objects.first()
        before = state()
        assert delete(admin_client, obj).status_code == 403, model
        page = admin_client.post(
            admin_url(model, "changelist"),
            {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"},
        )
        assert page.status_code in (200, 302), model
        assert model.objects.filter(pk=obj.pk).exists(), model
        assert state() == before, model


def test_bulk_delete_is_all_or_nothing(admin_client, world):
    """Deleting two pool hosts, one of them reserved: the service refuses the
    reserved one, and neither is deleted nor logged."""
    free = services.reservable_host_create(name="h2", capabilities={})
    reserved = ReservableHost.objects.get(host__name="h3")
    response = admin_client.post(
        admin_url(ReservableHost, "changelist"),
        {"action": "delete_selected", "_selected_action": [free.pk, reserved.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert ReservableHost.objects.filter(pk__in=[free.pk, reserved.pk]).count() == 2
    assert not logged(free) and not logged(reserved)


# --- actions: permission, service, log ---------------------------------------------------


def _server(world, name: str, *, stopped: bool = False) -> Instance:
    """Another server of the world, ACTIVE, or SHUTOFF if ``stopped``."""
    nics = [compute.NicRequest(network=world.network)]
    [server] = compute.server_create(
        context=world.context, name=name, flavor=world.flavors["small"], nics=nics
    )
    server = run_pipeline(server)
    if stopped:
        compute.server_power(context=world.context, instance=server, action=PowerAction.STOP)
        server = host_power(server)
    return server


def _actions(world):
    """(model, action, object, has it been done?) for every admin action."""
    disabled = compute.host_set_enabled(host=world.hosts["h2"], enabled=False)
    return [
        (Instance, "power_stop", world.vm, lambda i: i.task_state == "powering-off"),
        (
            Instance,
            "power_start",
            _server(world, "stopped", stopped=True),
            lambda i: i.task_state == "powering-on",
        ),
        (
            Instance,
            "power_reboot_hard",
            _server(world, "vm2"),
            lambda i: i.task_state == "rebooting_hard",
        ),
        (Host, "disable_hosts", world.hosts["h1"], lambda h: not h.enabled),
        (Host, "enable_hosts", disabled, lambda h: h.enabled),
        (Instance, "retry_builds", world.failed, lambda i: i.status == InstanceStatus.BUILD),
        (
            Lease,
            "end_now",
            world.leases["running"],
            lambda x: x.status == LeaseStatus.TERMINATED,
        ),
        (
            LeaseEvent,
            "fire_now",
            LeaseEvent.objects.get(lease=world.leases["second"], event_type="heads_up"),
            lambda e: e.status == EventStatus.DONE,
        ),
        (
            Delivery,
            "redeliver",
            world.delivery,
            lambda d: (d.status, d.attempts) == (DeliveryStatus.PENDING, 0),
        ),
        (Port, "unbind", world.port, lambda p: p.binding_host == ""),
    ]


def test_every_action_is_listed():
    """A new action gets a row in _actions (and so the tests below)."""
    names = {
        name
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in OUR_APPS
        for name in (getattr(a, "__name__", a) for a in model_admin.actions or [])
    }
    assert names == {
        "disable_hosts",
        "enable_hosts",
        "retry_builds",
        "power_stop",
        "power_start",
        "power_reboot_hard",
        "end_now",
        "fire_now",
        "redeliver",
        "unbind",
    }
    for model, model_admin in admin.site._registry.items():
        for action in model_admin.actions or []:
            if model._meta.app_label in OUR_APPS:
                assert getattr(action, "allowed_permissions", None) == ["change"], action


@pytest.fixture
def staff(django_user_model):
    """staff(*permissions) -> a client logged in as a staff user holding
    exactly those permissions ("compute.view_host", ...)."""

    def make(*perms):
        user = django_user_model.objects.create_user(
            username=f"staff{django_user_model.objects.count()}", is_staff=True
        )
        for perm in perms:
            app, codename = perm.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app, codename=codename)
            )
        client = Client()
        client.force_login(user)
        return client

    return make


def run_action(client, model, action, obj):
    return client.post(
        admin_url(model, "changelist"), {"action": action, "_selected_action": [str(obj.pk)]}
    )


def test_actions_are_refused_with_view_permission_only(staff, world):
    for model, action, obj, done in _actions(world):
        label = model._meta.app_label
        viewer = staff(f"{label}.view_{model._meta.model_name}")
        before = state()
        response = run_action(viewer, model, action, obj)
        assert response.status_code in (200, 302), (action, response.status_code)
        assert not done(model.objects.get(pk=obj.pk)), action
        assert state() == before, action
        assert not logged(obj), action


def test_actions_run_through_the_service_and_are_logged(staff, world):
    for model, action, obj, done in _actions(world):
        name = model._meta.model_name
        label = model._meta.app_label
        operator = staff(f"{label}.view_{name}", f"{label}.change_{name}")
        response = run_action(operator, model, action, obj)
        assert response.status_code == 302, action
        assert done(model.objects.get(pk=obj.pk)), action
        [entry] = logged(obj, CHANGE)
        assert entry.get_change_message(), action
