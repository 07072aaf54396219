"""The counts an operator checks first, shown on the admin index. Read-only.

Each metric is counted and linked through the same field lookups, so the
number on the index and the changelist it opens always agree. Plain field
lookups (``status__exact``, ``start_at__gte``) are accepted by every
ModelAdmin's changelist without a list_filter for them."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple
from urllib.parse import urlencode

from django.db.models import Count, Model, Q
from django.urls import reverse
from django.utils import timezone

from compute.models import Host, Instance, InstanceStatus
from compute.scheduler import alive_since
from reservations.models import Delivery, DeliveryStatus, Lease, LeaseStatus


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    # The tiles shown together: hosts, builds, leases.
    group: str
    value: int
    url: str
    # The permission a user needs to open the link.
    perm: str
    # A number above zero needs the operator's attention.
    alarming: bool


class _Definition(NamedTuple):
    key: str
    label: str
    group: str
    model: type[Model]
    lookups: dict
    alarming: bool = False


def _definitions(now: datetime) -> list[_Definition]:
    since = alive_since()
    hour = timedelta(hours=1)
    return [
        _Definition("hosts_up", "hosts up", "hosts", Host, {"last_heartbeat__gte": since}),
        _Definition("hosts_down", "hosts down", "hosts", Host, {"last_heartbeat__lt": since}, True),
        _Definition("hosts_disabled", "hosts disabled", "hosts", Host, {"enabled__exact": False}),
        _Definition(
            "builds_in_flight",
            "builds in flight",
            "builds",
            Instance,
            {"status__exact": InstanceStatus.BUILD},
        ),
        # An ERROR instance is saved again only when it is retried (back to
        # BUILD) or deleted, so its updated_at is when the build failed; the
        # fault's own time is text inside JSON, not a column to filter on.
        _Definition(
            "builds_failed_last_hour",
            "builds failed in the last hour",
            "builds",
            Instance,
            {"status__exact": InstanceStatus.ERROR, "updated_at__gte": now - hour},
            True,
        ),
        _Definition(
            "leases_starting_next_hour",
            "leases starting in the next hour",
            "leases",
            Lease,
            {
                "status__exact": LeaseStatus.PENDING,
                "start_at__gte": now,
                "start_at__lt": now + hour,
            },
        ),
        # Webhook deliveries still pending or given up on; a notification no
        # one subscribed to has nothing to deliver (the feed serves it).
        _Definition(
            "undelivered_notifications",
            "undelivered notifications",
            "leases",
            Delivery,
            {"status__in": [DeliveryStatus.PENDING, DeliveryStatus.FAILED]},
            True,
        ),
    ]


def _query_value(value) -> str:
    """A lookup value as the admin changelist parses it from the URL."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def dashboard_metrics(*, now: datetime | None = None) -> list[Metric]:
    """Every metric with its count and changelist link: one aggregate query
    per model (four in all)."""
    definitions = _definitions(now or timezone.now())
    aggregates: dict[type[Model], dict] = {}
    for d in definitions:
        aggregates.setdefault(d.model, {})[d.key] = Count("pk", filter=Q(**d.lookups))
    counts = {}
    for model, counters in aggregates.items():
        counts |= model.objects.aggregate(**counters)
    metrics = []
    for d in definitions:
        opts = d.model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        query = urlencode({name: _query_value(value) for name, value in d.lookups.items()})
        metrics.append(
            Metric(
                key=d.key,
                label=d.label,
                group=d.group,
                value=counts[d.key],
                url=f"{url}?{query}",
                perm=f"{opts.app_label}.view_{opts.model_name}",
                alarming=d.alarming,
            )
        )
    return metrics


def dashboard_counts(*, now: datetime | None = None) -> dict[str, int]:
    return {metric.key: metric.value for metric in dashboard_metrics(now=now)}
