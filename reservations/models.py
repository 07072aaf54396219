"""Blazar's model, done right: leases of whole hosts or of instance slots
over time, lifecycle events as rows swept by one task, and an outbox of
notifications anyone can subscribe to."""

import uuid
from urllib.parse import urlsplit, urlunsplit

from django.db import models
from django.db.models import F, Q
from django.utils import timezone


class ReservableHost(models.Model):
    """A compute host in the reservable pool (Blazar's os-hosts). It takes
    only instances of a lease that holds it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    host = models.OneToOneField("compute.Host", on_delete=models.PROTECT, related_name="reservable")
    # Extra capabilities, shown as top-level keys on the wire.
    capabilities = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["host__name"]

    def __str__(self) -> str:
        return self.host.name


class HostProperty(models.Model):
    """One capability of a reservable host, typed for SQL: property filters
    compare numerically where both sides are numbers, as text otherwise."""

    reservable = models.ForeignKey(
        ReservableHost, on_delete=models.CASCADE, related_name="properties"
    )
    key = models.CharField(max_length=255)
    text = models.CharField(max_length=255)
    number = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["reservable", "key"], name="host_property_once"),
        ]
        indexes = [models.Index(fields=["key", "text"]), models.Index(fields=["key", "number"])]

    def __str__(self) -> str:
        return f"{self.key}={self.text}"


class LeaseStatus(models.TextChoices):
    PENDING = "PENDING"
    STARTING = "STARTING"
    ACTIVE = "ACTIVE"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"


class Lease(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey("identity.Project", on_delete=models.PROTECT, related_name="leases")
    # identity.auth.user_id_of: the user name, as long as Django allows one.
    user_id = models.CharField(max_length=150, blank=True)
    name = models.CharField(max_length=80)
    start_at = models.DateTimeField(db_index=True)
    end_at = models.DateTimeField(db_index=True)
    before_end_at = models.DateTimeField(null=True, blank=True)
    # Seconds between the heads-up notification and the start.
    heads_up_seconds = models.PositiveIntegerField()
    status = models.CharField(
        max_length=16, choices=LeaseStatus.choices, default=LeaseStatus.PENDING, db_index=True
    )
    status_reason = models.TextField(blank=True)
    # A reserved host went away and no free one could replace it.
    degraded = models.BooleanField(default=False)
    # A flexible lease (berth's extension): it lasts end - start and may
    # start anywhere from flex_earliest_start on as long as it ends by
    # flex_latest_end; berth took the earliest start that fitted, and moves
    # it earlier while it is pending if capacity frees up. None: fixed.
    flex_earliest_start = models.DateTimeField(null=True, blank=True)
    flex_latest_end = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["start_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="lease_name_once_per_project"),
            models.CheckConstraint(
                condition=Q(end_at__gt=F("start_at")), name="lease_ends_after_start"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ResourceType(models.TextChoices):
    HOST = "physical:host"
    INSTANCE = "virtual:instance"
    # Addresses alone (Blazar's floating IP reservations), on any network.
    FLOATINGIP = "virtual:floatingip"


class ReservationStatus(models.TextChoices):
    PENDING = "pending"
    ACTIVE = "active"
    DELETED = "deleted"
    ERROR = "error"


# The id (and name) of a reservation's flavor: this prefix, then the
# reservation's id. The scheduler reads it to skip the lookup of a
# reservation for the instances of every other flavor.
RESERVATION_FLAVOR = "reservation:"


class Reservation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    lease = models.ForeignKey(Lease, on_delete=models.CASCADE, related_name="reservations")
    resource_type = models.CharField(max_length=32, choices=ResourceType.choices)
    status = models.CharField(
        max_length=16, choices=ReservationStatus.choices, default=ReservationStatus.PENDING
    )
    # physical:host
    min = models.PositiveIntegerField(null=True, blank=True)
    max = models.PositiveIntegerField(null=True, blank=True)
    hypervisor_properties = models.TextField(blank=True)
    resource_properties = models.TextField(blank=True)
    before_end = models.CharField(max_length=16, default="default")
    # physical:host on a network (berth's extension): every host reaches a
    # segment of it with addresses_per_host addresses held there for the
    # lease; all on one segment (recorded in ``segment``) if same_segment,
    # spread over its segments otherwise. virtual:floatingip: the network.
    network = models.ForeignKey(
        "networking.Network",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="reservations",
    )
    same_segment = models.BooleanField(default=False)
    addresses_per_host = models.PositiveIntegerField(default=0)
    segment = models.ForeignKey(
        "networking.Segment",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="reservations",
    )
    # virtual:floatingip: addresses asked for by name (amount counts them).
    required_floatingips = models.JSONField(default=list, blank=True)
    # virtual:instance, virtual:floatingip
    amount = models.PositiveIntegerField(null=True, blank=True)
    vcpus = models.PositiveIntegerField(null=True, blank=True)
    memory_mb = models.PositiveIntegerField(null=True, blank=True)
    disk_gb = models.PositiveIntegerField(null=True, blank=True)
    affinity = models.BooleanField(null=True, blank=True)
    # The flavor instances of this reservation boot with (Blazar makes one).
    # It goes with the lease (lease_delete); until then it cannot be deleted
    # alone, which would leave the lease's servers nothing to boot with.
    flavor = models.OneToOneField(
        "compute.Flavor",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="reservation",
    )
    # Servers to boot at start and delete at end: {"name", "networks", "count"}.
    server_template = models.JSONField(null=True, blank=True)
    missing_resources = models.BooleanField(default=False)
    resources_changed = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                name="reservation_min_le_max",
                condition=Q(min__isnull=True) | Q(max__isnull=True) | Q(min__lte=F("max")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.resource_type} of {self.lease}"


class HostAllocation(models.Model):
    """A host held by a reservation over [start_at, end_at). Never two
    overlapping allocations of one host: on PostgreSQL an exclusion
    constraint (migration 0002) forbids it; everywhere the allocating
    service checks it under the host rows' locks.

    For instance reservations ``slots`` is how many instances of the
    reservation's size the host keeps for it; host reservations take the
    host whole (slots is 0).

    Healing ends the allocation of a host that went away at the moment it
    is replaced and points it at its replacement: such a row is history
    (the host was held until then), not one of the reservation's hosts."""

    reservation = models.ForeignKey(
        Reservation, on_delete=models.CASCADE, related_name="allocations"
    )
    host = models.ForeignKey("compute.Host", on_delete=models.PROTECT, related_name="allocations")
    start_at = models.DateTimeField()
    # The end including the operator's cleaning buffer: the next lease on
    # this host may start only then.
    end_at = models.DateTimeField()
    slots = models.PositiveIntegerField(default=0)
    replaced_by = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="replaced"
    )

    class Meta:
        indexes = [models.Index(fields=["host", "start_at", "end_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(end_at__gt=F("start_at")), name="allocation_ends_after_start"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.host} for {self.reservation_id}"


class EventType(models.TextChoices):
    HEADS_UP = "heads_up"
    START = "start_lease"
    BEFORE_END = "before_end_lease"
    END = "end_lease"


# At one instant an end fires before a start (back-to-back leases on one
# host), and a heads-up before the start it announces.
EVENT_ORDER = {EventType.END: 0, EventType.BEFORE_END: 1, EventType.HEADS_UP: 2, EventType.START: 3}


class EventStatus(models.TextChoices):
    UNDONE = "UNDONE"
    IN_PROGRESS = "IN_PROGRESS"
    DONE = "DONE"
    ERROR = "ERROR"


class LeaseEvent(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    lease = models.ForeignKey(Lease, on_delete=models.CASCADE, related_name="events")
    event_type = models.CharField(max_length=32, choices=EventType.choices)
    time = models.DateTimeField()
    # EVENT_ORDER of the type, so the sweep orders by (time, rank) in SQL.
    rank = models.PositiveSmallIntegerField()
    status = models.CharField(
        max_length=16, choices=EventStatus.choices, default=EventStatus.UNDONE
    )
    fired_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["time", "rank"]
        indexes = [models.Index(fields=["status", "time", "rank"], name="event_due")]
        constraints = [
            models.UniqueConstraint(fields=["lease", "event_type"], name="event_once_per_lease"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} of {self.lease_id} at {self.time}"


class Notification(models.Model):
    """The outbox: every lifecycle change, written in the transaction that
    made it. ``seq`` grows monotonically; the feed reads ``since`` it."""

    seq = models.BigAutoField(primary_key=True)
    project = models.ForeignKey(
        "identity.Project", on_delete=models.CASCADE, related_name="notifications"
    )
    event_type = models.CharField(max_length=64, db_index=True)
    lease = models.ForeignKey(Lease, on_delete=models.SET_NULL, null=True, blank=True)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"#{self.seq} {self.event_type}"


class Subscription(models.Model):
    """A webhook: notifications of the project whose type matches the
    filter are POSTed to the URL, signed with the secret."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(
        "identity.Project", on_delete=models.CASCADE, related_name="subscriptions"
    )
    url = models.URLField(max_length=500)
    # Event type prefixes, e.g. ["lease.event."]; empty means all.
    event_types = models.JSONField(default=list, blank=True)
    secret = models.CharField(max_length=128)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The circuit breaker: attempts that failed in a row. From
    # BERTH_WEBHOOK_BREAKER_AFTER on, nothing is sent before
    # suspended_until, then one probe; at BERTH_WEBHOOK_DISABLE_AFTER
    # berth disables the subscription and says why in disabled_reason.
    consecutive_failures = models.PositiveIntegerField(default=0)
    suspended_until = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return self.display_url

    @property
    def display_url(self) -> str:
        """The URL without credentials: readers of the project see it, and
        rows from before URLs with credentials were refused may hold some."""
        scheme, netloc, *rest = urlsplit(self.url)
        if "@" not in netloc:
            return self.url
        return urlunsplit((scheme, "***@" + netloc.rpartition("@")[2], *rest))


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Delivery(models.Model):
    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="deliveries"
    )
    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default="pending")
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # When its task should next attempt it: a pending delivery long past
    # this lost its message, and the resend sweep sends it again.
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # Set while an attempt is under way (until the task's hard time limit):
    # a second message for the delivery does not POST it again meanwhile.
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["notification", "subscription"], name="delivery_once"),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="delivery_pending_due",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.notification_id} -> {self.subscription_id}"
