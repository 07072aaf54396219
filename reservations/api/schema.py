"""The Blazar v1 bodies (and berth's additions) as the OpenAPI schema
describes them. Blazar's request bodies have no envelope; its answers do."""

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers as f

from config.schema import (
    InlineChoiceField,
    collection,
    envelope,
    hex_id,
    mapping,
    nullable_text,
    shape,
    strings,
    text,
    typed,
)
from reservations.models import (
    DeliveryStatus,
    EventStatus,
    EventType,
    LeaseStatus,
    ReservationStatus,
    ResourceType,
)

# Lease and event times as blazarclient parses them (UTC, no zone suffix).
LEASE_DATE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$"
# created_at/updated_at as Blazar writes them.
STAMP = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"


def lease_date(**kwargs) -> f.RegexField:
    return f.RegexField(LEASE_DATE, **kwargs)


def stamp(**kwargs) -> f.RegexField:
    return f.RegexField(STAMP, **kwargs)


HeldAddress = shape(
    "HeldAddress",
    {
        "address": f.IPAddressField(),
        "subnet_id": f.UUIDField(),
        "segment_id": f.UUIDField(allow_null=True),
        "start_date": lease_date(),
        "end_date": lease_date(),
    },
)

ReplacedHost = shape(
    "ReplacedHost",
    {"host": f.CharField(), "replaced_by": f.CharField(), "replaced_at": lease_date()},
)

Reservation = shape(
    "Reservation",
    {
        "id": f.UUIDField(),
        "lease_id": f.UUIDField(),
        "status": InlineChoiceField(ReservationStatus.choices),
        "resource_id": f.UUIDField(),
        "resource_type": InlineChoiceField(ResourceType.choices),
        "missing_resources": f.BooleanField(),
        "resources_changed": f.BooleanField(),
        "created_at": stamp(),
        "updated_at": stamp(),
        # berth: the hosts that hold the reservation, and the ones healing
        # replaced (a host that went away), with their replacement.
        "hosts": strings(),
        "replaced_hosts": ReplacedHost(many=True),
        # physical:host reservations.
        "min": f.IntegerField(required=False, allow_null=True),
        "max": f.IntegerField(required=False, allow_null=True),
        "hypervisor_properties": text(required=False),
        "before_end": f.CharField(required=False),
        # berth: physical:host on a network, and virtual:floatingip (Blazar's
        # addresses alone): the network, the segment the hosts share, and
        # the addresses held for the lease (no other port takes them).
        "network_id": f.UUIDField(required=False),
        "same_segment": f.BooleanField(required=False),
        "addresses_per_host": f.IntegerField(required=False),
        "segment_id": f.UUIDField(required=False, allow_null=True),
        "required_floatingips": strings(required=False),
        "addresses": HeldAddress(many=True, required=False),
        # virtual:instance reservations (amount: also virtual:floatingip).
        "amount": f.IntegerField(required=False, allow_null=True),
        "vcpus": f.IntegerField(required=False, allow_null=True),
        "memory_mb": f.IntegerField(required=False, allow_null=True),
        "disk_gb": f.IntegerField(required=False, allow_null=True),
        "affinity": f.BooleanField(required=False, allow_null=True),
        "flavor_id": nullable_text(required=False),
        "server_group_id": nullable_text(required=False),
        "aggregate_id": nullable_text(required=False),
        "server_template": mapping(required=False, allow_null=True),
        # Both.
        "resource_properties": text(required=False),
    },
)
LeaseEvent = shape(
    "LeaseEvent",
    {
        "id": f.UUIDField(),
        "lease_id": f.UUIDField(),
        "event_type": InlineChoiceField(EventType.choices),
        "time": lease_date(),
        "status": InlineChoiceField(EventStatus.choices),
        "created_at": stamp(),
        "updated_at": stamp(allow_null=True),
    },
)
LeaseFlexibility = shape(
    "LeaseFlexibility",
    {"earliest_start": lease_date(), "latest_end": lease_date()},
)
Lease = shape(
    "Lease",
    {
        "id": f.UUIDField(),
        "name": f.CharField(),
        "start_date": lease_date(),
        "end_date": lease_date(),
        "before_end_date": lease_date(allow_null=True),
        "heads_up": f.IntegerField(),
        "status": InlineChoiceField(LeaseStatus.choices),
        "status_reason": text(),
        "degraded": f.BooleanField(),
        "flexible": LeaseFlexibility(allow_null=True),
        "user_id": text(),
        "project_id": hex_id(),
        "trust_id": nullable_text(),
        "created_at": stamp(),
        "updated_at": stamp(),
        "reservations": Reservation(many=True),
        "events": LeaseEvent(many=True),
    },
)

# Request dates: "YYYY-MM-DD HH:MM" (UTC), "now", or a lease date echoed back.
REQUEST_DATE = {
    "type": "string",
    "pattern": r"^(now|\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{6})?)?)$",
    "example": "2030-01-01 18:44",
}
# The CLI sends integers as numbers and affinity as "False"; both are taken.
INTEGER_OR_TEXT = {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]}
ReservationRequest = shape(
    "ReservationRequest",
    {
        "resource_type": InlineChoiceField(ResourceType.choices),
        "min": typed(INTEGER_OR_TEXT, required=False),
        "max": typed(INTEGER_OR_TEXT, required=False),
        "hypervisor_properties": text(required=False),
        "resource_properties": text(required=False),
        "before_end": text(required=False),
        "amount": typed(INTEGER_OR_TEXT, required=False),
        "vcpus": typed(INTEGER_OR_TEXT, required=False),
        "memory_mb": typed(INTEGER_OR_TEXT, required=False),
        "disk_gb": typed(INTEGER_OR_TEXT, required=False),
        "affinity": typed(
            {"oneOf": [{"type": "boolean"}, {"type": "string"}], "nullable": True},
            required=False,
        ),
        "server_template": mapping(required=False, allow_null=True),
        # berth: hosts that reach a segment of this network with
        # addresses_per_host addresses held for each, all on one segment if
        # same_segment (else spread over them). virtual:floatingip: the
        # network of the addresses, and those wanted by name.
        "network_id": f.CharField(required=False),
        "same_segment": typed({"oneOf": [{"type": "boolean"}, {"type": "string"}]}, required=False),
        "addresses_per_host": typed(INTEGER_OR_TEXT, required=False),
        "required_floatingips": strings(required=False),
    },
)
LeaseCreateRequest = shape(
    "LeaseCreateRequest",
    {
        "name": f.CharField(max_length=80),
        "start_date": typed(REQUEST_DATE),
        "end_date": typed(REQUEST_DATE),
        "before_end_date": typed({**REQUEST_DATE, "nullable": True}, required=False),
        "heads_up": f.IntegerField(min_value=0, required=False, allow_null=True),
        "reservations": ReservationRequest(many=True),
        "events": f.ListField(child=mapping(), required=False),
        # berth: say whether the lease would fit, write nothing.
        "dry_run": f.BooleanField(required=False),
        # berth: a flexible lease of this many seconds, starting as early as
        # fits between start_date and end_date.
        "flex_duration": f.IntegerField(min_value=60, required=False),
    },
)
ReservationChange = shape(
    "ReservationChange",
    {
        "id": f.UUIDField(),
        "min": typed(INTEGER_OR_TEXT, required=False),
        "max": typed(INTEGER_OR_TEXT, required=False),
        "amount": typed(INTEGER_OR_TEXT, required=False),
        "hypervisor_properties": text(required=False),
        "resource_properties": text(required=False),
    },
)
LeaseUpdateRequest = shape(
    "LeaseUpdateRequest",
    {
        "name": f.CharField(max_length=80, required=False),
        "start_date": typed(REQUEST_DATE, required=False),
        "end_date": typed(REQUEST_DATE, required=False),
        "before_end_date": typed({**REQUEST_DATE, "nullable": True}, required=False),
        "heads_up": f.IntegerField(min_value=0, required=False, allow_null=True),
        "reservations": ReservationChange(many=True, required=False),
        # berth: an extension that pending leases block on this lease's
        # hosts moves their holds to equivalent free hosts.
        "swap": f.BooleanField(required=False),
    },
)
# berth's answers to a lease that does not fit (in a dry run, and beside
# Blazar's error on a refused create).
LeaseConstraint = shape(
    "LeaseConstraint",
    {
        "reservation": f.IntegerField(help_text="Its index in the request's reservations."),
        "needed": f.IntegerField(),
        "reservable": f.IntegerField(),
        "with_properties": f.IntegerField(),
        "enabled": f.IntegerField(),
        "free": f.IntegerField(help_text="Free over the whole window."),
        "reason": text(),
    },
)
LeaseSwap = shape(
    "LeaseSwap",
    {
        "lease_id": f.UUIDField(),
        "lease_name": f.CharField(),
        "host": f.CharField(),
        "replacement": f.CharField(),
    },
)
LeaseAlternative = shape(
    "LeaseAlternative",
    {
        "why": f.CharField(),
        "request": mapping(help_text="The request body, changed: send it as is."),
    },
)
ANSWERS = {
    "constraints": LeaseConstraint(many=True, required=False),
    "hosts_fit_now": f.IntegerField(required=False, allow_null=True),
    "alternatives": LeaseAlternative(many=True, required=False),
    # An extension that pending leases block: their holds, and where each
    # would move.
    "swaps": LeaseSwap(many=True, required=False),
}
DryRun = shape(
    "LeaseDryRun",
    {
        "feasible": f.BooleanField(),
        "hosts": strings(),
        "reason": text(),
        "earliest_start": lease_date(allow_null=True),
        **ANSWERS,
    },
)
LeaseAnswers = shape(
    "LeaseAnswers",
    {"reason": text(), "earliest_start": lease_date(allow_null=True), **ANSWERS},
)
LeaseRefused = shape(
    "LeaseRefused",
    {
        "error_code": f.IntegerField(),
        "error_message": text(),
        "error_name": f.IntegerField(),
        "answers": LeaseAnswers(required=False),
    },
)

ReservableHost = shape(
    "ReservableHost",
    {
        "id": f.UUIDField(),
        "hypervisor_hostname": f.CharField(),
        "hypervisor_type": f.CharField(),
        "hypervisor_version": f.IntegerField(),
        "vcpus": f.IntegerField(),
        "cpu_info": f.CharField(),
        "memory_mb": f.IntegerField(),
        "local_gb": f.IntegerField(),
        "service_name": f.CharField(),
        "reservable": f.BooleanField(),
        "status": nullable_text(),
        "trust_id": nullable_text(),
        "created_at": stamp(),
        "updated_at": stamp(),
    },
)
# Extra capabilities are further top-level keys, in requests as in answers.
HostCreateRequest = shape("ReservableHostCreateRequest", {"name": f.CharField()})
HostUpdateRequest = shape("ReservableHostUpdateRequest", {"values": mapping(required=False)})
AllocationEntry = shape(
    "HostAllocationEntry",
    {
        "id": f.UUIDField(),
        "lease_id": f.UUIDField(),
        "start_date": f.DateTimeField(),
        "end_date": f.DateTimeField(),
    },
)
Allocation = shape(
    "HostAllocation",
    {"resource_id": f.UUIDField(), "reservations": AllocationEntry(many=True)},
)
Property = shape(
    "HostProperty",
    {
        "property": f.CharField(),
        # With detail=true.
        "private": f.BooleanField(required=False),
        "values": strings(required=False),
    },
)
FreeCapacityStep = shape("FreeCapacityStep", {"time": lease_date(), "free_hosts": f.IntegerField()})

Notification = shape(
    "Notification",
    {
        "seq": f.IntegerField(),
        "event_type": f.CharField(),
        "project_id": hex_id(),
        "lease_id": f.UUIDField(allow_null=True),
        "created_at": lease_date(),
        "payload": mapping(),
    },
)
NotificationFeed = shape(
    "NotificationFeed",
    {"notifications": Notification(many=True), "last_seq": f.IntegerField()},
)

SUBSCRIPTION_FIELDS = {
    "id": f.UUIDField(),
    "project_id": hex_id(),
    "url": f.CharField(),
    "event_types": strings(),
    "enabled": f.BooleanField(),
    "created_at": stamp(),
    "consecutive_failures": f.IntegerField(),
    "suspended_until": stamp(allow_null=True),
    "disabled_reason": text(),
}
Subscription = shape("Subscription", SUBSCRIPTION_FIELDS)
SubscriptionCreated = shape("SubscriptionCreated", {**SUBSCRIPTION_FIELDS, "secret": f.CharField()})
SubscriptionFields = shape(
    "SubscriptionFields",
    {
        "url": f.URLField(),
        "event_types": strings(required=False),
        "secret": f.CharField(required=False),
    },
)
Delivery = shape(
    "Delivery",
    {
        "seq": f.IntegerField(),
        "event_type": f.CharField(),
        "status": InlineChoiceField(DeliveryStatus.choices),
        "attempts": f.IntegerField(),
        "response_status": f.IntegerField(allow_null=True),
        "last_error": text(),
        "delivered_at": f.DateTimeField(allow_null=True),
    },
)

LEASE = envelope("LeaseEnvelope", "lease", Lease)
FaultyHostRequest = shape(
    "FaultyHostRequest",
    {
        "host": f.CharField(help_text="A host the lease holds now."),
        "reason": text(required=False, max_length=255),
    },
)
FaultyHost = shape(
    "FaultyHost",
    {
        "host": f.CharField(),
        "reason": text(),
        # The free matching host now in the lease, or null: the lease is
        # degraded (a lease.degraded notification names the host).
        "replaced_by": nullable_text(),
    },
)

lease_schema = extend_schema_view(
    list=extend_schema(responses=collection("LeaseList", "leases", Lease)),
    retrieve=extend_schema(responses=LEASE),
    create=extend_schema(
        request=LeaseCreateRequest,
        examples=[
            OpenApiExample(
                "Four hosts on one segment, two addresses each",
                request_only=True,
                value={
                    "name": "rack-local",
                    "start_date": "2030-01-01 12:00",
                    "end_date": "2030-01-02 12:00",
                    "reservations": [
                        {
                            "resource_type": "physical:host",
                            "min": 4,
                            "max": 4,
                            "network_id": "5f2e8c1a-3b4d-4e6f-8a9b-0c1d2e3f4a5b",
                            "same_segment": True,
                            "addresses_per_host": 2,
                        }
                    ],
                    "events": [],
                },
            ),
            OpenApiExample(
                "Addresses alone",
                request_only=True,
                value={
                    "name": "public-ips",
                    "start_date": "2030-01-01 12:00",
                    "end_date": "2030-01-02 12:00",
                    "reservations": [
                        {
                            "resource_type": "virtual:floatingip",
                            "network_id": "5f2e8c1a-3b4d-4e6f-8a9b-0c1d2e3f4a5b",
                            "amount": 2,
                            "required_floatingips": ["203.0.113.10"],
                        }
                    ],
                    "events": [],
                },
            ),
        ],
        responses={
            201: LEASE,
            200: envelope("LeaseDryRunEnvelope", "dry_run", DryRun),
            409: LeaseRefused,
        },
    ),
    update=extend_schema(request=LeaseUpdateRequest, responses={200: LEASE, 409: LeaseRefused}),
    destroy=extend_schema(responses={204: None}),
    report_faulty_host=extend_schema(
        summary="Report a host of this active lease as faulty (berth's extension)",
        description=(
            "The host is disabled for scheduling with the report as its reason, swapped "
            "within the lease for a free host with the reservation's properties (the "
            "lease is degraded if none is free), and the operator's project is notified "
            "(host.faulty). The lease's history gets lease.host_reported_faulty. A member "
            "or admin of the lease's project may report; the host must be one the lease "
            "holds now."
        ),
        request=FaultyHostRequest,
        responses=envelope("FaultyHostEnvelope", "faulty_host", FaultyHost),
        examples=[
            OpenApiExample(
                "A failing disk",
                request_only=True,
                value={"host": "compute-3", "reason": "disk errors in dmesg"},
            ),
            OpenApiExample(
                "Swapped",
                response_only=True,
                value={
                    "faulty_host": {
                        "host": "compute-3",
                        "reason": "disk errors in dmesg",
                        "replaced_by": "compute-5",
                    }
                },
            ),
        ],
    ),
)

HOST = envelope("ReservableHostEnvelope", "host", ReservableHost)
host_schema = extend_schema_view(
    list=extend_schema(responses=collection("ReservableHostList", "hosts", ReservableHost)),
    retrieve=extend_schema(responses=HOST),
    create=extend_schema(request=HostCreateRequest, responses={201: HOST}),
    update=extend_schema(request=HostUpdateRequest, responses=HOST),
    destroy=extend_schema(responses={204: None}),
    allocations=extend_schema(
        responses=collection("HostAllocationList", "allocations", Allocation, paged=False)
    ),
    allocation=extend_schema(
        responses=envelope("HostAllocationEnvelope", "allocation", Allocation)
    ),
    properties=extend_schema(
        parameters=[OpenApiParameter("detail", bool)],
        responses=collection("HostPropertyList", "resource_properties", Property, paged=False),
    ),
    free_capacity=extend_schema(
        parameters=[
            OpenApiParameter("start_date", REQUEST_DATE, description="YYYY-MM-DD HH:MM or now."),
            OpenApiParameter(
                "end_date", REQUEST_DATE, description="Default: a week after the start."
            ),
            OpenApiParameter("resource_properties", str),
            OpenApiParameter("hypervisor_properties", str),
        ],
        responses=collection("FreeCapacity", "free_capacity", FreeCapacityStep, paged=False),
    ),
)

notification_schema = extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("since", int, description="Only notifications after this seq."),
            OpenApiParameter("limit", int, description="At most this many (up to 1000)."),
            OpenApiParameter("lease_id", str, description="Only this lease's notifications."),
        ],
        responses=NotificationFeed,
    ),
    retrieve=extend_schema(
        responses=envelope("NotificationEnvelope", "notification", Notification)
    ),
)

subscription_schema = extend_schema_view(
    list=extend_schema(responses=collection("SubscriptionList", "subscriptions", Subscription)),
    retrieve=extend_schema(
        responses=envelope("SubscriptionEnvelope", "subscription", Subscription)
    ),
    create=extend_schema(
        # berth's own resource, so in an envelope like the OpenStack ones.
        request=envelope("SubscriptionCreateRequest", "subscription", SubscriptionFields),
        responses={
            201: envelope("SubscriptionCreatedEnvelope", "subscription", SubscriptionCreated)
        },
    ),
    update=extend_schema(
        request=envelope(
            "SubscriptionUpdateRequest",
            "subscription",
            shape("SubscriptionUpdate", {"enabled": f.BooleanField()}),
        ),
        responses=envelope("SubscriptionUpdated", "subscription", Subscription),
    ),
    destroy=extend_schema(responses={204: None}),
    deliveries=extend_schema(
        responses=collection("DeliveryList", "deliveries", Delivery, paged=False)
    ),
)
