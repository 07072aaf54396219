"""Lifecycle notifications anyone can subscribe to (seed 002).

Every change is written to the outbox (Notification) in the transaction
that made it, so a notification exists if and only if the change does.
Subscriptions whose filter matches get a Delivery row at the same time; the
delivery task POSTs it after commit, signed with HMAC-SHA256, retrying with
backoff. Destinations outside BERTH_WEBHOOK_ALLOWED are never contacted.
"""

import hashlib
import hmac
import http.client
import ipaddress
import json
import socket
import ssl
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.celery import enqueue_after_commit
from config.errors import Invalid
from config.models import Project
from reservations.models import Delivery, DeliveryStatus, Lease, Notification, Subscription

SIGNATURE_HEADER = "X-Berth-Signature"


def notify(
    *, project: Project, event_type: str, lease: Lease | None = None, **payload
) -> Notification:
    """Write a notification and its deliveries; deliveries go out after commit."""
    if lease is not None:
        payload = {"lease_id": str(lease.pk), "lease_name": lease.name, **payload}
    notification = Notification.objects.create(
        project=project, event_type=event_type, lease=lease, payload=payload
    )
    subscriptions = [
        s
        for s in Subscription.objects.filter(project=project, enabled=True)
        if not s.event_types or any(event_type.startswith(prefix) for prefix in s.event_types)
    ]
    deliveries = Delivery.objects.bulk_create(
        Delivery(notification=notification, subscription=s) for s in subscriptions
    )
    if deliveries:
        from reservations.tasks import deliver

        ids = [d.pk for d in deliveries]
        enqueue_after_commit(lambda: [deliver.delay(i) for i in ids])
    return notification


def body_of(notification: Notification) -> dict:
    return {
        "seq": notification.seq,
        "event_type": notification.event_type,
        "project_id": notification.project_id.hex,
        "created_at": notification.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "payload": notification.payload,
    }


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def destination_allowed(url: str) -> str | None:
    """None if the URL may be contacted, else why not. Every address the
    host name resolves to must be inside an allowed network (or the name
    itself allowed), so a name cannot smuggle in an internal address."""
    return checked_destination(url)[0]


def checked_destination(url: str) -> tuple[str | None, str | None]:
    """(why the URL is refused, or None; the address to connect to: one
    that was checked, or None when the operator allowed the name itself)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a bad IPv6 literal or port
        return f"{url} is not a valid URL", None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url} is not an http(s) URL", None
    allowed = settings.BERTH_WEBHOOK_ALLOWED
    if parts.hostname in allowed:
        return None, None
    networks = []
    for entry in allowed:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue  # a host name, checked above
    if not networks:
        # No address can be allowed: refuse without asking DNS about a name
        # the caller chose.
        return f"{parts.hostname} is not an allowed webhook destination", None
    try:
        # In the resolver's order of preference, without repeats.
        answers = socket.getaddrinfo(parts.hostname, port or 80, proto=socket.IPPROTO_TCP)
        addresses = list(dict.fromkeys(info[4][0] for info in answers))
    except (OSError, UnicodeError):  # UnicodeError: a label IDNA cannot encode
        return f"{parts.hostname} does not resolve", None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not any(ip in network for network in networks):
            return f"{parts.hostname} ({ip}) is not an allowed webhook destination", None
    return None, addresses[0]


def subscription_create(
    *, project: Project, url: str, event_types: list[str], secret: str
) -> Subscription:
    refused = destination_allowed(url)
    if refused:
        raise Invalid(
            f"Webhook URL refused: {refused}. Allowed: {settings.BERTH_WEBHOOK_ALLOWED or 'none'}."
        )
    return Subscription.objects.create(
        project=project, url=url, event_types=event_types, secret=secret
    )


def subscription_delete(*, subscription: Subscription) -> None:
    # Its deliveries go with it; a delivery task that finds none does nothing.
    subscription.delete()


def post(url: str, address: str | None, body: bytes, headers: dict) -> int:
    """POST to ``address``, the one checked_destination checked, not to a
    second lookup of the name (its DNS may answer differently a moment
    later), and follow no redirect (where it points was never checked): a
    3xx is the answer. TLS is still verified against the URL's host name."""
    parts = urlsplit(url)
    timeout = settings.BERTH_WEBHOOK_TIMEOUT
    https = parts.scheme == "https"
    kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
    connection = kind(parts.hostname, parts.port, timeout=timeout)
    # http.client sends on a socket it is given instead of connecting itself.
    connection.sock = socket.create_connection(
        (address or parts.hostname, connection.port), timeout
    )
    try:
        if https:
            context = ssl.create_default_context()
            connection.sock = context.wrap_socket(connection.sock, server_hostname=parts.hostname)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", target, body=body, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def delivery_attempt(*, delivery_id: int) -> bool:
    """POST one delivery. True when it is settled (delivered, or failed for
    good), False when it should be tried again later."""
    delivery = (
        Delivery.objects.select_related("notification", "subscription")
        .filter(pk=delivery_id, status=DeliveryStatus.PENDING)
        .first()
    )
    if delivery is None:
        return True  # already settled: a redelivered task does nothing
    subscription = delivery.subscription
    refused, address = checked_destination(subscription.url)
    status, error = None, refused or ""
    if not refused:
        body = json.dumps(body_of(delivery.notification), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "berth-webhook",
            "X-Berth-Event": delivery.notification.event_type,
            # Receivers drop repeats by this key: a delivery may be
            # retried after the receiver answered but before berth saw it.
            "X-Berth-Delivery": f"{delivery.notification.seq}-{subscription.pk}",
            SIGNATURE_HEADER: sign(subscription.secret, body),
        }
        try:
            status = post(subscription.url, address, body, headers)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except (OSError, http.client.HTTPException, ValueError) as failure:
            error = str(failure)[:500]
    delivered = status is not None and 200 <= status < 300
    attempts = delivery.attempts + 1
    settled = delivered or bool(refused) or attempts >= settings.BERTH_WEBHOOK_MAX_ATTEMPTS
    Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(
        attempts=attempts,
        response_status=status,
        last_error="" if delivered else error,
        status=DeliveryStatus.DELIVERED
        if delivered
        else (DeliveryStatus.FAILED if settled else DeliveryStatus.PENDING),
        delivered_at=timezone.now() if delivered else None,
    )
    return settled


def delivery_retry(*, delivery: Delivery) -> None:
    """Send a delivery again (admin action)."""
    with transaction.atomic():
        Delivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.PENDING, attempts=0)
        from reservations.tasks import deliver

        enqueue_after_commit(lambda: deliver.delay(delivery.pk))
