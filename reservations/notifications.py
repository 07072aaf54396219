"""Lifecycle notifications anyone can subscribe to (seed 002).

Every change is written to the outbox (Notification) in the transaction
that made it, so a notification exists if and only if the change does.
Subscriptions whose filter matches get a Delivery row at the same time; the
delivery task POSTs it after commit, signed with HMAC-SHA256, retrying with
backoff. Destinations outside BERTH_WEBHOOK_ALLOWED are never contacted.
"""

import contextlib
import hashlib
import hmac
import http.client
import json
import socket
import ssl
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import netaddr
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from config.celery import enqueue_after_commit
from config.errors import Invalid
from identity.models import Project
from identity.quotas import quota_enforce
from reservations.models import Delivery, DeliveryStatus, Lease, Notification, Subscription

SIGNATURE_HEADER = "X-Berth-Signature"


# The notifications a batch (notifications_batched) holds back, in the
# order notify() was called; None outside one.
_batched: ContextVar[list[Notification] | None] = ContextVar("batched_notifications", default=None)


def notify(
    *,
    event_type: str,
    project: Project | None = None,
    lease: Lease | None = None,
    **payload,
) -> Notification:
    """Write a notification and its deliveries; deliveries go out after commit.
    Within notifications_batched the rows are written when it ends. The
    project is the lease's unless given (by id: the lease's project need
    not be read)."""
    if lease is not None:
        payload = {"lease_id": str(lease.pk), "lease_name": lease.name, **payload}
    notification = Notification(
        project_id=project.pk if project is not None else lease.project_id,
        event_type=event_type,
        lease=lease,
        payload=payload,
    )
    batched = _batched.get()
    if batched is None:
        _write([notification])
    else:
        batched.append(notification)
    return notification


@contextlib.contextmanager
def notifications_batched():
    """The notifications made inside written together when it ends, still
    inside the caller's transaction: one INSERT for them, one for their
    deliveries, one subscriptions query per project, rather than three
    statements each (the event sweep writes hundreds per transaction). They
    get their seq in the order notify() was called. Use atomic() below, not
    transaction.atomic(), for a savepoint inside it that may roll back."""
    batched: list[Notification] = []
    token = _batched.set(batched)
    try:
        yield
    finally:
        _batched.reset(token)
    _write(batched)


@contextlib.contextmanager
def atomic():
    """transaction.atomic() whose rollback also drops the notifications that
    notifications_batched holds back from inside it, as it would their rows."""
    batched = _batched.get()
    mark = None if batched is None else len(batched)
    try:
        with transaction.atomic():
            yield
    except BaseException:
        if mark is not None:
            del batched[mark:]
        raise


def _write(notifications: list[Notification]) -> None:
    Notification.objects.bulk_create(notifications)
    subscribed: dict = {}
    deliveries = []
    for notification in notifications:
        project_id = notification.project_id
        if project_id not in subscribed:
            subscribed[project_id] = list(
                Subscription.objects.filter(project_id=project_id, enabled=True)
            )
        deliveries += [
            Delivery(notification=notification, subscription=s)
            for s in subscribed[project_id]
            if not s.event_types
            or any(notification.event_type.startswith(prefix) for prefix in s.event_types)
        ]
    deliveries = Delivery.objects.bulk_create(deliveries)
    if deliveries:
        from reservations.tasks import deliver

        ids = [d.pk for d in deliveries]
        enqueue_after_commit(lambda: [deliver.delay(i) for i in ids])


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


# Reachable only through an allow-list entry that lies inside them: an
# operator who allows a broad range (even 0.0.0.0/0) for tenants' receivers
# does not mean berth's own host, its link or the cloud's metadata service.
GUARDED_NETWORKS = [
    netaddr.IPNetwork(network)
    for network in (
        "0.0.0.0/8",  # "this host": connecting to 0.0.0.0 reaches loopback
        "127.0.0.0/8",
        "::/128",
        "::1/128",
        "169.254.0.0/16",
        "fe80::/10",
        "169.254.169.254/32",  # metadata services: EC2, OpenStack, GCE, Azure
        "fd00:ec2::254/128",
    )
]
# An allow-list entry without a port opens these only: an address allowed
# for a web server is not allowed for its Redis or PostgreSQL.
DEFAULT_PORTS = frozenset({80, 443})


@dataclass(frozen=True)
class AllowedDestination:
    """One BERTH_WEBHOOK_ALLOWED entry: a network or a host name, and ports."""

    network: netaddr.IPNetwork | None
    host: str | None
    ports: frozenset[int]

    def names(self, ip: netaddr.IPAddress) -> bool:
        """Whether this entry lets ``ip`` be contacted: ``ip`` is inside it,
        and inside every guarded network holding ``ip`` (so 127.0.0.1/32
        opens loopback, 0.0.0.0/0 does not)."""
        return (
            self.network is not None
            and ip in self.network
            and all(self.network in guarded for guarded in GUARDED_NETWORKS if ip in guarded)
        )


def allowed_destination(entry: str) -> AllowedDestination:
    """Parse ``network-or-host[:port]``; an IPv6 network with a port is
    written in brackets, ``[fd00::/8]:8080``."""
    where, port = entry.strip(), None
    if where.startswith("["):
        where, _, rest = where[1:].partition("]")
        port = rest.removeprefix(":") or None
    elif where.count(":") == 1:
        where, port = where.split(":")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise ImproperlyConfigured(f"BERTH_WEBHOOK_ALLOWED: {entry!r} has no valid port.")
    ports = frozenset({int(port)}) if port else DEFAULT_PORTS
    try:
        return AllowedDestination(netaddr.IPNetwork(where), None, ports)
    except (netaddr.AddrFormatError, ValueError):
        return AllowedDestination(None, where.lower(), ports)


def destination_allowed(url: str) -> str | None:
    """None if the URL may be contacted, else why not. Every address the
    host name resolves to must be inside an allowed network for the URL's
    port (or the name itself allowed for it, and the address not guarded),
    so a name cannot smuggle in an internal address."""
    return checked_destination(url)[0]


def checked_destination(url: str) -> tuple[str | None, str | None]:
    """(why the URL is refused, or None; the checked address to connect to)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a bad IPv6 literal or port
        return f"{url} is not a valid URL", None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url} is not an http(s) URL", None
    entries = [
        entry
        for entry in map(allowed_destination, settings.BERTH_WEBHOOK_ALLOWED)
        if port in entry.ports
    ]
    by_name = any(entry.host == parts.hostname.lower() for entry in entries)
    refused = f"{parts.hostname} port {port} is not an allowed webhook destination"
    if not by_name and all(entry.network is None for entry in entries):
        # Nothing can be allowed: refuse without asking DNS about a name
        # the caller chose.
        return refused, None
    try:
        # In the resolver's order of preference, without repeats.
        answers = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
        addresses = list(dict.fromkeys(info[4][0] for info in answers))
    except (OSError, UnicodeError):  # UnicodeError: a label IDNA cannot encode
        return f"{parts.hostname} does not resolve", None
    for address in addresses:
        ip = netaddr.IPAddress(address.split("%")[0])
        if ip.is_ipv4_mapped():  # ::ffff:127.0.0.1 is loopback too
            ip = ip.ipv4()
        guarded = any(ip in network for network in GUARDED_NETWORKS)
        if not (any(entry.names(ip) for entry in entries) or (by_name and not guarded)):
            return f"{refused} ({ip})", None
    return None, addresses[0]


def subscription_create(
    *, project: Project, url: str, event_types: list[str], secret: str
) -> Subscription:
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        # urlsplit drops CR, LF and tabs silently: the URL checked would not
        # be the one stored and shown.
        raise Invalid("Webhook URL refused: it contains a space or control character.")
    refused = destination_allowed(url)
    if refused:
        raise Invalid(
            f"Webhook URL refused: {refused}. Allowed: {settings.BERTH_WEBHOOK_ALLOWED or 'none'}."
        )
    if "@" in urlsplit(url).netloc:
        # Stored URLs are shown to every reader of the project, and berth
        # never sends credentials from a URL anyway.
        raise Invalid(
            "Webhook URL refused: it must not carry credentials (user:password@); "
            "verify deliveries with the signature instead."
        )
    with transaction.atomic():
        quota_enforce(project=project, requested={"subscriptions": 1})
        return Subscription.objects.create(
            project=project, url=url, event_types=event_types, secret=secret
        )


def subscription_update(*, subscription: Subscription, enabled: bool) -> Subscription:
    """Pause or resume a subscription; its URL and secret never change.
    Resuming one gives it a fresh start: its breaker is closed."""
    with transaction.atomic():
        locked = Subscription.objects.select_for_update().get(pk=subscription.pk)
        locked.enabled = enabled
        if enabled:
            locked.consecutive_failures, locked.suspended_until = 0, None
            locked.disabled_reason = ""
        locked.save(
            update_fields=["enabled", "consecutive_failures", "suspended_until", "disabled_reason"]
        )
    return locked


def subscription_delete(*, subscription: Subscription) -> None:
    # Its deliveries go with it; a delivery task that finds none does nothing.
    subscription.delete()


def post(url: str, address: str, body: bytes, headers: dict) -> int:
    """POST to ``address``, the one checked_destination checked, not to a
    second lookup of the name (its DNS may answer differently a moment
    later), and follow no redirect (where it points was never checked): a
    3xx is the answer. TLS is still verified against the URL's host name.

    The whole exchange, connect to the last header of the answer, has
    BERTH_WEBHOOK_TIMEOUT seconds. A socket timeout bounds each read only,
    so a receiver that trickles its answer a line at a time would hold the
    worker for ever; a watchdog shuts the socket when the time is up."""
    parts = urlsplit(url)
    limit = settings.BERTH_WEBHOOK_TIMEOUT
    started = time.monotonic()
    https = parts.scheme == "https"
    kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
    connection = kind(parts.hostname, parts.port, timeout=limit)
    # http.client sends on a socket it is given instead of connecting itself.
    raw = socket.create_connection((address, connection.port), limit)
    cut = threading.Event()

    def cut_off():
        cut.set()
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(max(0.0, limit - (time.monotonic() - started)), cut_off)
    watchdog.start()
    try:
        connection.sock = raw
        if https:
            context = ssl.create_default_context()
            connection.sock = context.wrap_socket(raw, server_hostname=parts.hostname)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", target, body=body, headers=headers)
        status = connection.getresponse().status
        if cut.is_set():
            # http.client takes the end of the stream for the end of the
            # headers: what it parsed after the cut is no answer.
            raise TimeoutError
        return status
    except (OSError, http.client.HTTPException, ValueError):
        if cut.is_set():
            raise TimeoutError(f"no complete answer within {limit:g} s") from None
        raise
    finally:
        watchdog.cancel()
        connection.close()
        raw.close()


def retry_delay(attempts: int) -> int:
    """Seconds before the next attempt after ``attempts`` failed ones:
    2, 4, 8 ... capped at 10 minutes."""
    return min(600, 2**attempts)


def attempt_limit() -> float:
    """Seconds one attempt may take, the POST and its bookkeeping: the
    deliver task's time limit, and how long an attempt's claims last."""
    return settings.BERTH_WEBHOOK_TIMEOUT + 30


def delivery_attempt(*, delivery_id: int) -> float | None:
    """POST one delivery. None when this task has no more to do with it
    (delivered, failed for good, or held by another attempt); else the
    seconds to wait before trying again."""
    now = timezone.now()
    # The claim: one attempt at a time, whatever the number of messages
    # (a redelivered task, the resend sweep's) asking for it. A worker lost
    # mid-attempt leaves a claim that lapses with the attempt's time limit.
    claimed = (
        Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=now + timedelta(seconds=attempt_limit()))
    )
    if not claimed:
        return None
    delivery = Delivery.objects.select_related("notification", "subscription").get(pk=delivery_id)
    subscription = delivery.subscription
    wait = breaker_wait(subscription, now)
    if wait:
        Delivery.objects.filter(pk=delivery_id).update(
            claimed_until=None, next_attempt_at=now + timedelta(seconds=wait)
        )
        return wait
    if not subscription.enabled:
        # Disabled after this delivery was written (a notice racing the
        # breaker, or its owner pausing it): its destination is not called.
        reason = subscription.disabled_reason or "The subscription is disabled."
        return _record_attempt(delivery, status=None, error=reason, refused=True)
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
    return _record_attempt(delivery, status=status, error=error, refused=bool(refused))


def _record_attempt(delivery: Delivery, *, status: int | None, error: str, refused: bool):
    """Write an attempt's outcome on the delivery and on its subscription's
    breaker, together; the seconds before the next attempt, or None."""
    delivered = status is not None and 200 <= status < 300
    attempts = delivery.attempts + 1
    settled = delivered or refused or attempts >= settings.BERTH_WEBHOOK_MAX_ATTEMPTS
    now = timezone.now()
    with transaction.atomic():
        # NO KEY UPDATE: the notice a tripped breaker sends inserts
        # deliveries for the project's other subscriptions, whose foreign
        # keys take KEY SHARE locks; two breakers tripping at once would
        # deadlock on a plain FOR UPDATE.
        locked = Subscription.objects.select_for_update(no_key=True).filter(
            pk=delivery.subscription_id
        )
        subscription = locked.first()
        if subscription is None:  # deleted meanwhile, with its deliveries
            return None
        wait, disabled = retry_delay(attempts), False
        if delivered:
            breaker_close(subscription)
        elif not refused and subscription.enabled:
            # A destination never contacted has not failed; one disabled
            # meanwhile (by an attempt beside this one) has had its count.
            backoff = breaker_trip(subscription, error=error, now=now)
            disabled = backoff is None
            wait = max(wait, backoff or 0)
        Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(
            attempts=attempts,
            response_status=status,
            last_error="" if delivered else error,
            status=DeliveryStatus.DELIVERED
            if delivered
            else (DeliveryStatus.FAILED if settled else DeliveryStatus.PENDING),
            delivered_at=now if delivered else None,
            next_attempt_at=now + timedelta(seconds=wait),
            claimed_until=None,
        )
        if disabled:
            _fail_pending(subscription)
            return None
    return None if settled else wait


def breaker_wait(subscription: Subscription, now: datetime) -> float:
    """Seconds an attempt must wait for the subscription's breaker, 0 to go
    ahead. When an open breaker's time is up, one attempt (the probe) goes
    and holds it open meanwhile; the probe's outcome closes or reopens it."""
    until = subscription.suspended_until
    if until is None:
        return 0
    if until > now:
        return (until - now).total_seconds()
    probe = Subscription.objects.filter(pk=subscription.pk, suspended_until=until).update(
        suspended_until=now + timedelta(seconds=attempt_limit())
    )
    return 0 if probe else attempt_limit()


def breaker_close(subscription: Subscription) -> None:
    if subscription.consecutive_failures or subscription.suspended_until:
        subscription.consecutive_failures, subscription.suspended_until = 0, None
        subscription.save(update_fields=["consecutive_failures", "suspended_until"])


def breaker_trip(subscription: Subscription, *, error: str, now: datetime) -> float | None:
    """Count a failed attempt on the locked ``subscription``: open its
    breaker when it failed often enough (the seconds it stays open, else 0)
    or, after too many failures in a row, disable it and tell its project
    (None)."""
    subscription.consecutive_failures += 1
    failures = subscription.consecutive_failures
    backoff = 0.0
    if failures >= settings.BERTH_WEBHOOK_DISABLE_AFTER:
        subscription.enabled = False
        subscription.suspended_until = None
        subscription.disabled_reason = (
            f"Disabled after {failures} failed deliveries in a row; the last: {error}"
        )[:300]
        backoff = None
    elif failures >= settings.BERTH_WEBHOOK_BREAKER_AFTER:
        exponent = failures - settings.BERTH_WEBHOOK_BREAKER_AFTER
        backoff = min(3600.0, settings.BERTH_WEBHOOK_BREAKER_BACKOFF * 2**exponent)
        subscription.suspended_until = now + timedelta(seconds=backoff)
    subscription.save(
        update_fields=["consecutive_failures", "suspended_until", "enabled", "disabled_reason"]
    )
    if backoff is None:
        # Saved first: the notice goes to the project's other subscriptions.
        notify(
            project=subscription.project,
            event_type="subscription.disabled",
            subscription_id=str(subscription.pk),
            url=subscription.display_url,
            reason=subscription.disabled_reason,
        )
    return backoff


def _fail_pending(subscription: Subscription) -> None:
    Delivery.objects.filter(subscription=subscription, status=DeliveryStatus.PENDING).update(
        status=DeliveryStatus.FAILED,
        last_error=subscription.disabled_reason or "The subscription is disabled.",
        claimed_until=None,
    )


def deliveries_resend(*, now: datetime | None = None, batch: int = 500) -> int:
    """Send again the pending deliveries whose message was lost (a broker
    restarted without its queues, a send that failed after commit): those
    not attempted for BERTH_WEBHOOK_RESEND_AFTER seconds past their due
    time and not held by an attempt. Returns how many were sent."""
    from reservations.tasks import deliver

    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.BERTH_WEBHOOK_RESEND_AFTER)
    sent = 0
    while True:
        with transaction.atomic():
            # SKIP LOCKED: two sweeps never pick the same rows, and the new
            # due time keeps the next sweep off them until they are stale again.
            ids = list(
                Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lt=stale)
                .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
                .select_for_update(skip_locked=True)
                .order_by("next_attempt_at")
                .values_list("pk", flat=True)[:batch]
            )
            Delivery.objects.filter(pk__in=ids).update(next_attempt_at=now)
            enqueue_after_commit(lambda ids=ids: [deliver.delay(i) for i in ids])
        sent += len(ids)
        if len(ids) < batch:
            return sent


def delivery_retry(*, delivery: Delivery) -> None:
    """Send a delivery again (admin action)."""
    with transaction.atomic():
        Delivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=timezone.now()
        )
        from reservations.tasks import deliver

        enqueue_after_commit(lambda: deliver.delay(delivery.pk))
