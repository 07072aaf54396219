"""Blazar v1 shapes. Lease and event dates go out exactly as
``%Y-%m-%dT%H:%M:%S.%f`` (blazarclient parses them for prolong/defer);
created/updated as ``%Y-%m-%d %H:%M:%S``; request dates are
``%Y-%m-%d %H:%M`` (UTC) or ``now``."""

import json
import uuid
from datetime import UTC, datetime, timedelta

from django.utils import timezone
from rest_framework import serializers

from config.api import MAX_DB_INT
from config.errors import Invalid, one_of, shown
from reservations import selectors, services
from reservations.models import Lease, ResourceType

LEASE_DATE = "%Y-%m-%dT%H:%M:%S.%f"
STAMP = "%Y-%m-%d %H:%M:%S"
REQUEST_DATE = "%Y-%m-%d %H:%M"
# No reservation is planned a millennium ahead. The bound keeps the date
# arithmetic done with request dates (durations, cleaning buffers, the dry
# run shifting a window by its own length) inside datetime's range (9999).
LATEST_DATE = datetime(3000, 1, 1, tzinfo=UTC)


def lease_date(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime(LEASE_DATE) if value else None


def stamp(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime(STAMP) if value else None


def parse_date(value, *, field: str, now: datetime) -> datetime:
    """A request date: ``now``, ``YYYY-MM-DD HH:MM`` (UTC), or the lease
    format blazarclient echoes back."""
    if value == "now":
        return now
    if isinstance(value, str):
        for fmt in (REQUEST_DATE, LEASE_DATE, "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"):
            try:
                parsed = datetime.strptime(value, fmt).replace(tzinfo=UTC)
            except ValueError:
                continue
            if parsed >= LATEST_DATE:
                raise Invalid(
                    f"{value} is too far ahead: dates end before {LATEST_DATE:%Y} ({field})."
                )
            return parsed
    text = value if isinstance(value, str) else shown(value)
    raise Invalid(f"{text} is an invalid date. Required format: %Y-%m-%d %H:%M ({field}).")


def as_int(value, *, field: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise Invalid(f"{field} must be an integer, not {shown(value)}.") from None
    if number < 0:
        raise Invalid(f"{field} must not be negative.")
    if number > MAX_DB_INT:
        raise Invalid(f"{field} must be at most {MAX_DB_INT}.")
    return number


def as_affinity(value, *, field: str = "affinity") -> bool | None:
    """The CLI sends "False"/"True" as strings, the SDK booleans, or none."""
    if value in (None, "", "None", "none"):
        return None
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise Invalid(f"{field} must be true, false or none, not {shown(value)}.")


def as_network_id(value, *, required: bool) -> str | None:
    if value in (None, "") and not required:
        return None
    if not isinstance(value, str) or not value:
        raise Invalid("Invalid input for field 'network_id': a network's id is required.")
    return value


def as_addresses(value) -> list[str]:
    """required_floatingips: a list of addresses (the CLI may send one
    address, or the list as JSON text)."""
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        value = json.loads(value) if value.startswith("[") else [value]
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise Invalid("Invalid input for field 'required_floatingips': a list of IP addresses.")
    return value


def as_text(value, *, field: str) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise Invalid(f"{field} must be a JSON-encoded string.")
    return value


def before_end_action(value) -> str:
    """What happens at before_end_date: Blazar knows "default" and
    "snapshot"; anything else short is kept as given."""
    if value in (None, ""):
        return "default"
    if not isinstance(value, str) or len(value) > 16:
        raise Invalid("before_end must be a string of at most 16 characters.")
    return value


def server_template(template) -> dict | None:
    """The servers an instance reservation boots at its start. Checked now:
    at the start it is read by the event worker, where a bad value would
    fail the lease instead of answering 400."""
    if template is None:
        return None
    if not isinstance(template, dict):
        raise Invalid("server_template must be an object.")
    checked = dict(template)
    if "count" in template:
        checked["count"] = as_int(template["count"], field="server_template count")
        if checked["count"] < 1:
            raise Invalid("server_template count must be at least 1.")
    name = template.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 255):
        raise Invalid("server_template name must be a string of at most 255 characters.")
    networks = template.get("networks", [])
    if not isinstance(networks, list) or not all(
        isinstance(n, dict) and ("port" in n or "uuid" in n) for n in networks
    ):
        raise Invalid("server_template networks must be a list of {'uuid'} or {'port'} objects.")
    return checked


def reservation_request(body: dict):
    if not isinstance(body, dict):
        raise Invalid("Each reservation must be an object.")
    kind = body.get("resource_type")
    if kind == ResourceType.HOST:
        return services.HostRequest(
            min=as_int(body.get("min", 1), field="min"),
            max=as_int(body.get("max", body.get("min", 1)), field="max"),
            hypervisor_properties=as_text(
                body.get("hypervisor_properties"), field="hypervisor_properties"
            ),
            resource_properties=as_text(
                body.get("resource_properties"), field="resource_properties"
            ),
            before_end=before_end_action(body.get("before_end")),
            network_id=as_network_id(body.get("network_id"), required=False),
            same_segment=bool(as_affinity(body.get("same_segment"), field="same_segment")),
            addresses_per_host=as_int(
                body.get("addresses_per_host", 0), field="addresses_per_host"
            ),
        )
    if kind == ResourceType.FLOATINGIP:
        try:
            required = as_addresses(body.get("required_floatingips"))
        except ValueError:
            raise Invalid(
                "Invalid input for field 'required_floatingips': a list of IP addresses."
            ) from None
        return services.FloatingIpRequest(
            network_id=as_network_id(body.get("network_id"), required=True),
            amount=as_int(body.get("amount", len(required) or 1), field="amount"),
            required_floatingips=required,
        )
    if kind == ResourceType.INSTANCE:
        template = server_template(body.get("server_template"))
        return services.InstanceRequest(
            amount=as_int(body.get("amount"), field="amount"),
            vcpus=as_int(body.get("vcpus"), field="vcpus"),
            memory_mb=as_int(body.get("memory_mb"), field="memory_mb"),
            disk_gb=as_int(body.get("disk_gb", 0), field="disk_gb"),
            affinity=as_affinity(body.get("affinity")),
            resource_properties=as_text(
                body.get("resource_properties"), field="resource_properties"
            ),
            server_template=template,
        )
    raise Invalid(f"Invalid resource type {shown(kind)}; use {one_of(ResourceType)}.")


def lease_name(value) -> str:
    if not isinstance(value, str) or not value or len(value) > 80:
        raise Invalid("name must be a string of 1 to 80 characters.")
    return value


def reservation_change(body) -> dict:
    """One entry of a lease update's ``reservations``: the reservation's id
    and the values to change, checked as a new reservation's are."""
    if not isinstance(body, dict):
        raise Invalid("Each reservation must be an object.")
    try:
        change = {"id": uuid.UUID(str(body.get("id")))}
    except ValueError:
        raise Invalid(f"Reservation id {shown(body.get('id'))} is not a valid id.") from None
    for key in ("min", "max", "amount"):
        if key in body:
            change[key] = as_int(body[key], field=key)
    for key in ("hypervisor_properties", "resource_properties"):
        if key in body:
            change[key] = as_text(body[key], field=key)
    return change


def minute_now() -> datetime:
    # Request dates have minute resolution: "12:00" asked at 12:00:30 is now.
    return timezone.now().replace(second=0, microsecond=0)


def lease_request(body: dict) -> services.LeaseRequest:
    now = minute_now()
    for key in ("name", "start_date", "end_date"):
        if not body.get(key):
            raise Invalid(f"{key} is required.")
    lease_name(body["name"])
    start = parse_date(body["start_date"], field="start_date", now=timezone.now())
    if body["start_date"] != "now":
        services.start_checked(start, now=now)
    reservations = body.get("reservations")
    if not isinstance(reservations, list):
        raise Invalid("reservations must be a list.")
    before_end = body.get("before_end_date")
    heads_up = body.get("heads_up")
    end = parse_date(body["end_date"], field="end_date", now=timezone.now())
    latest_end = None
    if body.get("flex_duration") is not None:
        # berth's flexible lease: flex_duration seconds, starting as early as
        # fits within [start_date, end_date].
        seconds = as_int(body["flex_duration"], field="flex_duration")
        if seconds < 60:
            raise Invalid("Invalid input for field 'flex_duration': at least 60 seconds.")
        if before_end:
            raise Invalid(
                "Invalid input for field 'before_end_date': a flexible lease has no fixed end; "
                "its before-end notice is the default one."
            )
        latest_end, end = end, start + timedelta(seconds=seconds)
    return services.LeaseRequest(
        name=body["name"],
        start=start,
        end=end,
        flex_latest_end=latest_end,
        before_end=parse_date(before_end, field="before_end_date", now=now) if before_end else None,
        heads_up_seconds=as_int(heads_up, field="heads_up") if heads_up is not None else None,
        reservations=[reservation_request(r) for r in reservations],
    )


def held_addresses(holds: list) -> list[dict]:
    return [
        {
            "address": hold.address,
            "subnet_id": str(hold.subnet_id),
            "segment_id": str(hold.subnet.segment_id) if hold.subnet.segment_id else None,
            "start_date": lease_date(hold.start_at),
            "end_date": lease_date(hold.end_at),
        }
        for hold in holds
    ]


class LeaseSerializer(serializers.Serializer):
    def to_representation(self, lease: Lease) -> dict:
        reservations = []
        hosts = selectors.reservation_hosts(lease=lease)
        addresses = selectors.reservation_addresses(lease=lease)
        for r in lease.reservations.all():
            held = hosts.get(r.id, selectors.ReservationHosts())
            data = {
                "id": str(r.id),
                "lease_id": str(lease.id),
                "status": r.status,
                "resource_id": str(r.id),
                "resource_type": r.resource_type,
                "missing_resources": r.missing_resources,
                "resources_changed": r.resources_changed,
                "created_at": stamp(r.created_at),
                "updated_at": stamp(r.updated_at),
                "hosts": held.current,
                "replaced_hosts": [
                    {
                        "host": replaced.host,
                        "replaced_by": replaced.replaced_by,
                        "replaced_at": lease_date(replaced.replaced_at),
                    }
                    for replaced in held.replaced
                ],
            }
            if r.resource_type == ResourceType.HOST:
                data.update(
                    min=r.min,
                    max=r.max,
                    hypervisor_properties=r.hypervisor_properties,
                    resource_properties=r.resource_properties,
                    before_end=r.before_end,
                )
                if r.network_id:
                    # berth's network-aware hosts: the addresses held for them.
                    data.update(
                        network_id=str(r.network_id),
                        same_segment=r.same_segment,
                        addresses_per_host=r.addresses_per_host,
                        segment_id=str(r.segment_id) if r.segment_id else None,
                        addresses=held_addresses(addresses.get(r.id, [])),
                    )
            elif r.resource_type == ResourceType.FLOATINGIP:
                data.update(
                    network_id=str(r.network_id),
                    amount=r.amount,
                    required_floatingips=r.required_floatingips,
                    addresses=held_addresses(addresses.get(r.id, [])),
                )
            else:
                data.update(
                    amount=r.amount,
                    vcpus=r.vcpus,
                    memory_mb=r.memory_mb,
                    disk_gb=r.disk_gb,
                    affinity=r.affinity,
                    resource_properties=r.resource_properties,
                    flavor_id=r.flavor_id,
                    server_group_id=None,
                    aggregate_id=None,
                    server_template=r.server_template,
                )
            reservations.append(data)
        return {
            "id": str(lease.id),
            "name": lease.name,
            "start_date": lease_date(lease.start_at),
            "end_date": lease_date(lease.end_at),
            "before_end_date": lease_date(lease.before_end_at),
            "heads_up": lease.heads_up_seconds,
            "status": lease.status,
            "status_reason": lease.status_reason,
            "degraded": lease.degraded,
            # berth's flexible lease: where it may start and end by, or null.
            "flexible": {
                "earliest_start": lease_date(lease.flex_earliest_start),
                "latest_end": lease_date(lease.flex_latest_end),
            }
            if lease.flex_latest_end
            else None,
            "user_id": lease.user_id,
            "project_id": lease.project_id.hex,
            "trust_id": None,
            "created_at": stamp(lease.created_at),
            "updated_at": stamp(lease.updated_at),
            "reservations": reservations,
            "events": [
                {
                    "id": str(e.id),
                    "lease_id": str(lease.id),
                    "event_type": e.event_type,
                    "time": lease_date(e.time),
                    "status": e.status,
                    "created_at": stamp(lease.created_at),
                    "updated_at": stamp(e.fired_at),
                }
                for e in lease.events.all()
            ],
        }


class HostSerializer(serializers.Serializer):
    def to_representation(self, reservable) -> dict:
        host = reservable.host
        return {
            **{k: v for k, v in reservable.capabilities.items()},
            "id": str(reservable.id),
            "hypervisor_hostname": host.name,
            "hypervisor_type": host.hypervisor_type,
            "hypervisor_version": 1,
            "vcpus": host.vcpus,
            "cpu_info": "{}",
            "memory_mb": host.memory_mb,
            "local_gb": host.disk_gb,
            "service_name": host.name,
            "reservable": host.enabled,
            "status": None,
            "trust_id": None,
            "created_at": stamp(reservable.created_at),
            "updated_at": stamp(reservable.updated_at),
        }


def notification(n) -> dict:
    return {
        "seq": n.seq,
        "event_type": n.event_type,
        "project_id": n.project_id.hex,
        "lease_id": str(n.lease_id) if n.lease_id else None,
        "created_at": lease_date(n.created_at),
        "payload": n.payload,
    }


class SubscriptionSerializer(serializers.Serializer):
    def to_representation(self, s) -> dict:
        return {
            "id": str(s.id),
            "project_id": s.project_id.hex,
            "url": s.display_url,
            "event_types": s.event_types,
            "enabled": s.enabled,
            "created_at": stamp(s.created_at),
            "consecutive_failures": s.consecutive_failures,
            "suspended_until": stamp(s.suspended_until) if s.suspended_until else None,
            "disabled_reason": s.disabled_reason,
        }


def alternative_body(
    original: dict, asked: services.LeaseRequest, changed: services.LeaseRequest
) -> dict:
    """The request body the caller sent, changed as an alternative says,
    ready to be sent as is."""
    body = {key: value for key, value in original.items() if key != "dry_run"}
    if changed.start != asked.start:
        body |= {
            "start_date": lease_date(changed.start),
            "end_date": lease_date(changed.end),
            "before_end_date": None,
        }
    body["reservations"] = [
        {
            **sent,
            "min": wanted.min,
            "max": wanted.max,
            "resource_properties": wanted.resource_properties,
            **({"same_segment": wanted.same_segment} if wanted.network_id else {}),
        }
        if isinstance(wanted, services.HostRequest)
        else sent
        for sent, wanted in zip(original["reservations"], changed.reservations, strict=True)
    ]
    return body


def answers(original: dict, asked: services.LeaseRequest, result: services.DryRun) -> dict:
    """berth's answers to a lease that does not fit: why (per constraint),
    how many hosts fit now, the earliest start, and alternatives that fit
    now, each a request body."""
    return {
        "reason": result.reason,
        "constraints": result.constraints,
        "hosts_fit_now": result.hosts_fit_now,
        "earliest_start": lease_date(result.earliest_start),
        "alternatives": [
            {
                "why": alternative.why,
                "request": alternative_body(original, asked, alternative.request),
            }
            for alternative in result.alternatives
        ],
    }


def as_bool(value, *, field: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"Invalid input for field '{field}': true or false, not {shown(value)}.")
    return value


def swap_answers(original: dict, swaps: list) -> dict:
    """An extension that pending leases block: the swaps that would free
    this lease's hosts, and the request that performs them."""
    found = {
        "swaps": [
            {
                "lease_id": swap.lease_id,
                "lease_name": swap.lease_name,
                "host": swap.host,
                "replacement": swap.replacement,
            }
            for swap in swaps
        ],
        "alternatives": [],
    }
    if swaps:
        found["alternatives"].append(
            {
                "why": "the blocking leases move to equivalent free hosts",
                "request": {**original, "swap": True},
            }
        )
    return found
