"""Blazar v1 endpoints, plus berth's notifications feed, webhook
subscriptions, dry runs and the free-capacity query."""

import secrets
import uuid
from datetime import timedelta

import django_filters
from django.utils import timezone
from rest_framework.decorators import action
from rest_framework.response import Response

from config.api import DestroyMixin, OpenStackViewSet, parse_limit
from config.errors import Invalid, NotFound
from reservations import notifications, selectors, services
from reservations.allocation import NoCapacity
from reservations.api import schema as docs
from reservations.api import serializers as s
from reservations.models import Lease, Notification, ReservableHost, Subscription


class LeaseFilter(django_filters.FilterSet):
    name = django_filters.CharFilter()
    status = django_filters.CharFilter(method="by_status")
    project_id = django_filters.UUIDFilter()

    class Meta:
        model = Lease
        fields = []

    def by_status(self, queryset, name, value):
        return queryset.filter(status=value.upper())


def capabilities(values: dict) -> dict:
    """Extra capabilities of a reservable host; each becomes a property row
    whose key column holds 255 characters."""
    for key in values:
        if not key or len(key) > 255:
            raise Invalid(f"Capability names have 1 to 255 characters, not {key[:40]!r}.")
    return values


class BlazarViewSet(OpenStackViewSet):
    def body(self) -> dict:
        # Blazar's request bodies are not wrapped in an envelope.
        if not isinstance(self.request.data, dict):
            raise Invalid("Request body must be a JSON object.")
        return self.request.data


@docs.lease_schema
class LeaseViewSet(DestroyMixin, BlazarViewSet):
    resource = "lease"
    collection = "leases"
    not_found_type = "LeaseNotFound"
    serializer_class = s.LeaseSerializer
    filterset_class = LeaseFilter
    queryset = Lease.objects.none()

    def visible(self, context):
        return selectors.lease_list(context=context)

    def create(self, request):
        body = self.body()
        lease_request = s.lease_request(body)
        if body.get("dry_run"):
            result = services.lease_dry_run(context=self.context, request=lease_request)
            answered = {} if result.feasible else s.answers(body, lease_request, result)
            return Response(
                {
                    "dry_run": {
                        "reason": result.reason,
                        "earliest_start": s.lease_date(result.earliest_start),
                        **answered,
                        "feasible": result.feasible,
                        "hosts": result.hosts,
                    }
                }
            )
        try:
            lease = services.lease_create(context=self.context, request=lease_request)
        except NoCapacity as refusal:
            # Blazar's 409, with what would fit instead.
            result = services.lease_dry_run(context=self.context, request=lease_request)
            refusal.details = {"answers": s.answers(body, lease_request, result)}
            raise
        return self.respond(lease, status=201)

    def update(self, request, pk=None):
        body = self.body()
        lease = self.get_owned_object()
        now = timezone.now()
        changes = {}
        if "name" in body:
            changes["name"] = s.lease_name(body["name"])
        for key, field in (("start_date", "start"), ("end_date", "end")):
            if body.get(key):
                changes[field] = s.parse_date(body[key], field=key, now=now)
        if "before_end_date" in body:
            value = body["before_end_date"]
            changes["before_end"] = (
                s.parse_date(value, field="before_end_date", now=now) if value else None
            )
        if body.get("heads_up") is not None:
            changes["heads_up_seconds"] = s.as_int(body["heads_up"], field="heads_up")
        if "reservations" in body:
            if not isinstance(body["reservations"], list):
                raise Invalid("reservations must be a list.")
            changes["reservations"] = [s.reservation_change(r) for r in body["reservations"]]
        if not changes:
            raise Invalid("No values to update passed.")
        if "swap" in body:
            # berth: move pending leases' holds on this lease's hosts to
            # equivalent free hosts if they block the extension.
            changes["swap"] = s.as_bool(body["swap"], field="swap")
        try:
            return self.respond(services.lease_update(lease=lease, now=now, **changes))
        except services.ExtensionBlocked as refusal:
            refusal.details = {"answers": s.swap_answers(body, refusal.swaps)}
            raise

    def perform_destroy(self, lease):
        services.lease_delete(lease=lease)

    @action(detail=True, methods=["post"], url_path="faulty_hosts")
    def report_faulty_host(self, request, pk=None):
        """berth's extension: a host of this active lease reported faulty."""
        # Another project's lease is 404 whatever the body says.
        lease = self.get_owned_object()
        body = self.body()
        host, reason = body.get("host"), body.get("reason", "")
        if not isinstance(host, str) or not host:
            raise Invalid("Invalid input for field 'host': the name of a host of this lease.")
        if not isinstance(reason, str) or len(reason) > 255:
            raise Invalid("Invalid input for field 'reason': a text of at most 255 characters.")
        report = services.lease_host_report_faulty(
            context=self.context, lease=lease, host=host, reason=reason
        )
        return Response({"faulty_host": report})


@docs.host_schema
class HostViewSet(DestroyMixin, BlazarViewSet):
    """os-hosts: the reservable pool. Changing it is the operator's."""

    resource = "host"
    collection = "hosts"
    not_found_type = "HostNotFound"
    serializer_class = s.HostSerializer
    queryset = ReservableHost.objects.none()
    admin_actions = (
        "create",
        "update",
        "partial_update",
        "destroy",
        "list",
        "retrieve",
        "allocations",
        "allocation",
        # Blazar's policy makes properties the admin's; free capacity, berth's
        # own, says as much about every project's leases. Members plan with
        # a lease's dry_run, which answers for their own request only.
        "properties",
        "free_capacity",
    )

    def visible(self, context):
        return ReservableHost.objects.select_related("host")

    def create(self, request):
        body = dict(self.body())
        name = body.pop("name", None)
        if not name or not isinstance(name, str):
            raise Invalid("name is required.")
        return self.respond(
            services.reservable_host_create(name=name, capabilities=capabilities(body)),
            status=201,
        )

    def update(self, request, pk=None):
        body = self.body()
        values = body.get("values", body)
        if not isinstance(values, dict) or not values:
            raise Invalid("No values to update passed.")
        reservable = services.reservable_host_update(
            reservable=self.get_object(), capabilities=capabilities(values)
        )
        return self.respond(reservable)

    def perform_destroy(self, reservable):
        services.reservable_host_delete(reservable=reservable)

    @action(detail=False)
    def allocations(self, request):
        return Response({"allocations": selectors.host_allocations()})

    @action(detail=True)
    def allocation(self, request, pk=None):
        reservable = self.get_object()
        return Response({"allocation": selectors.host_allocations(host=reservable.host)[0]})

    @action(detail=False)
    def properties(self, request):
        detail = request.query_params.get("detail", "").lower() == "true"
        return Response({"resource_properties": selectors.host_properties(detail=detail)})

    @action(detail=False, url_path="free-capacity")
    def free_capacity(self, request):
        params = request.query_params
        now = timezone.now()
        start = s.parse_date(params.get("start_date", "now"), field="start_date", now=now)
        end = start + timedelta(days=7)
        if params.get("end_date"):
            end = s.parse_date(params["end_date"], field="end_date", now=now)
        steps = selectors.free_capacity(
            start=start,
            end=end,
            resource_properties=params.get("resource_properties", ""),
            hypervisor_properties=params.get("hypervisor_properties", ""),
        )
        return Response(
            {"free_capacity": [{"time": s.lease_date(t), "free_hosts": n} for t, n in steps]}
        )


def sequence_number(text: str) -> int | None:
    """A notification's seq from a URL, or None: ASCII digits only (``²``
    is a digit to str.isdigit, not to int) and within the 64-bit column."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        return None
    return int(text)


def lease_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise Invalid(f"lease_id must be a lease's id, not {text!r}.") from None


@docs.notification_schema
class NotificationViewSet(OpenStackViewSet):
    """The feed: every lifecycle notification of the caller's project after
    ``since`` (a sequence number), oldest first."""

    resource = "notification"
    collection = "notifications"
    paged = False
    serializer_class = s.SubscriptionSerializer
    queryset = Notification.objects.none()

    def visible(self, context):
        return selectors.notification_list(context=context)

    def list(self, request):
        since = sequence_number(request.query_params.get("since", "0"))
        if since is None:
            raise Invalid(
                f"since must be a sequence number, not {request.query_params['since']!r}."
            )
        limit = min(parse_limit(request.query_params.get("limit")) or 100, 1000)
        found = self.get_queryset().filter(seq__gt=since)
        if "lease_id" in request.query_params:
            # One lease's history: its lifecycle, changes and healing.
            found = found.filter(lease_id=lease_id(request.query_params["lease_id"]))
        rows = list(found.order_by("seq")[:limit])
        return Response(
            {
                "notifications": [s.notification(n) for n in rows],
                "last_seq": rows[-1].seq if rows else since,
            }
        )

    def retrieve(self, request, pk=None):
        seq = sequence_number(str(pk))
        found = self.get_queryset().filter(seq=seq).first() if seq is not None else None
        if found is None:
            raise NotFound(f"Notification {pk} could not be found.")
        return Response({"notification": s.notification(found)})


@docs.subscription_schema
class SubscriptionViewSet(DestroyMixin, OpenStackViewSet):
    resource = "subscription"
    collection = "subscriptions"
    not_found_type = "SubscriptionNotFound"
    serializer_class = s.SubscriptionSerializer
    queryset = Subscription.objects.none()

    def visible(self, context):
        return selectors.subscription_list(context=context)

    def create(self, request):
        body = self.body()
        url, types = body.get("url"), body.get("event_types", [])
        if not isinstance(url, str) or not url or len(url) > 500:
            raise Invalid("url is required, at most 500 characters.")
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise Invalid("event_types must be a list of event type prefixes.")
        secret = body.get("secret") or secrets.token_urlsafe(32)
        if not isinstance(secret, str) or len(secret) > 128:
            raise Invalid("secret must be a string of at most 128 characters.")
        subscription = notifications.subscription_create(
            project=self.context.project, url=url, event_types=types, secret=str(secret)
        )
        data = self.get_serializer(subscription).data
        # The secret is shown once: receivers verify signatures with it.
        return Response({"subscription": {**data, "secret": subscription.secret}}, status=201)

    def update(self, request, pk=None):
        subscription = self.get_owned_object()
        enabled = self.body().get("enabled")
        if not isinstance(enabled, bool):
            raise Invalid("enabled (true or false) is the one field a subscription can change.")
        return self.respond(
            notifications.subscription_update(subscription=subscription, enabled=enabled)
        )

    def perform_destroy(self, subscription):
        notifications.subscription_delete(subscription=subscription)

    @action(detail=True)
    def deliveries(self, request, pk=None):
        subscription = self.get_object()
        return Response({"deliveries": selectors.deliveries(subscription=subscription)})
