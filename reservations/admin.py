from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from config.admin import (
    ReadOnlyInline,
    ServiceAdmin,
    bad_news_flag,
    timestamp,
    with_seconds,
)
from config.errors import BerthError, Invalid
from networking import selectors as net_selectors
from reservations import calendar, events, notifications, selectors, services
from reservations.models import (
    Delivery,
    HostAllocation,
    Lease,
    LeaseEvent,
    LeaseStatus,
    Notification,
    ReservableHost,
    Reservation,
    ResourceType,
    Subscription,
)


def window(start, end) -> str:
    return f"{timestamp(start)} \u2192 {timestamp(end)}"


class ReservationInline(ReadOnlyInline):
    model = Reservation
    fields = [
        "resource_type",
        "status",
        "min",
        "max",
        "amount",
        "vcpus",
        "memory_mb",
        "resource_properties",
        "flavor",
    ]


class EventInline(ReadOnlyInline):
    model = LeaseEvent
    fields = ["event_type", "due", "status", "fired", "error"]
    due = with_seconds("time", "due")
    fired = with_seconds("fired_at", "fired at")


class AllocationInline(ReadOnlyInline):
    model = HostAllocation
    fields = ["host", "start", "end", "slots"]
    show_change_link = False
    start = with_seconds("start_at", "from")
    end = with_seconds("end_at", "until")


@admin.action(description="End the selected leases now", permissions=["change"])
def end_now(modeladmin, request, queryset):
    ended = 0
    for lease in queryset:
        pending = lease.status == LeaseStatus.PENDING
        try:
            services.lease_end_now(lease=lease)
        except BerthError as error:
            modeladmin.message_user(request, f"{lease}: {error.message}", messages.WARNING)
            continue
        message = "Deleted: it had not started." if pending else "Ended now."
        modeladmin.log_change(request, lease, message)
        ended += 1
    if ended:
        modeladmin.message_user(request, f"{ended} lease(s) ended.", messages.SUCCESS)


@admin.register(Lease)
class LeaseAdmin(ServiceAdmin):
    """A lease's dates and name change through the lease service, as through
    the API: its hosts are re-allocated and its events moved with them, or
    the change is refused and nothing is saved."""

    list_display = ["name", "project", "status", "degraded_flag", "start", "end", "created"]
    list_filter = ["status", "degraded", "project"]
    list_select_related = ["project"]
    search_fields = ["name", "id", "reservations__allocations__host__name"]
    fields = [
        "id",
        "project",
        "user_id",
        "name",
        "start_at",
        "end_at",
        "before_end_at",
        "heads_up_seconds",
        "status",
        "status_reason",
        "degraded_flag",
        "reserved_hosts",
        "created_at",
        "updated_at",
    ]
    # The form's fields and the lease_update arguments they are.
    ARGUMENTS = {
        "name": "name",
        "start_at": "start",
        "end_at": "end",
        "before_end_at": "before_end",
        "heads_up_seconds": "heads_up_seconds",
    }
    change_fields = tuple(ARGUMENTS)
    inlines = [ReservationInline, EventInline]
    actions = [end_now]
    degraded_flag = bad_news_flag("degraded")
    start = with_seconds("start_at", "start")
    end = with_seconds("end_at", "end")
    created = with_seconds("created_at", "created")

    def service_change(self, request, lease, changes):
        arguments = {self.ARGUMENTS[name]: value for name, value in changes.items()}
        return services.lease_update(lease=lease, **arguments)

    def service_delete(self, request, lease):
        services.lease_delete(lease=lease)

    @admin.display(description="reserved hosts")
    def reserved_hosts(self, lease):
        """Each host the lease holds, over which window, and whether that
        window is under way, to come or over (a host replaced while the
        lease ran keeps the part it served)."""
        now = timezone.now()
        allocations = (
            HostAllocation.objects.filter(reservation__lease=lease)
            .select_related("host")
            .order_by("start_at", "host__name")
        )
        rows = [
            (
                reverse("admin:compute_host_change", args=[a.host_id]),
                a.host.name,
                window(a.start_at, a.end_at),
                "ended" if a.end_at <= now else ("to come" if a.start_at > now else "current"),
            )
            for a in allocations
        ]
        if not rows:
            return "-"
        return format_html(
            '<table class="reserved-hosts"><tbody>{}</tbody></table>',
            format_html_join(
                "", '<tr><th><a href="{}">{}</a></th><td>{}</td><td>{}</td></tr>', rows
            ),
        )


@admin.register(Reservation)
class ReservationAdmin(ServiceAdmin):
    """What a reservation asks for changes through the lease service (its
    hosts are re-allocated to fit, or the change is refused)."""

    list_display = ["id", "lease", "resource_type", "status", "min", "max", "amount"]
    list_filter = ["resource_type", "status"]
    list_select_related = ["lease"]
    search_fields = ["id", "lease__name"]
    fields = [
        "id",
        "lease",
        "resource_type",
        "status",
        "min",
        "max",
        "hypervisor_properties",
        "resource_properties",
        "before_end",
        "network",
        "hosts_placed",
        "addresses_per_host",
        "segment",
        "required_floatingips",
        "held_addresses",
        "amount",
        "vcpus",
        "memory_mb",
        "disk_gb",
        "affinity",
        "flavor",
        "server_template",
        "missing",
        "changed",
        "created_at",
        "updated_at",
    ]
    inlines = [AllocationInline]
    missing = bad_news_flag("missing_resources")
    changed = bad_news_flag("resources_changed")

    def get_change_fields(self, request, reservation):
        if reservation.resource_type == ResourceType.HOST:
            return ("min", "max", "hypervisor_properties", "resource_properties")
        if reservation.resource_type == ResourceType.FLOATINGIP:
            return ("amount",)
        return ("amount", "resource_properties")

    @admin.display(description="hosts placed")
    def hosts_placed(self, reservation) -> str:
        # same_segment as what it means, not as a red cross when false.
        if reservation.network_id is None:
            return "-"
        return "on one segment" if reservation.same_segment else "spread over the segments"

    @admin.display(description="addresses held")
    def held_addresses(self, reservation) -> str:
        holds = net_selectors.address_holds(holders=[reservation.pk])
        return ", ".join(hold.address for hold in holds) or "-"

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        # Blank in the model (each applies to one resource type), required
        # by the reservation type they belong to.
        for name in ("min", "max", "amount"):
            if name in form.base_fields:
                form.base_fields[name].required = True
        return form

    def service_change(self, request, reservation, changes):
        services.lease_update(
            lease=reservation.lease, reservations=[{"id": reservation.pk, **changes}]
        )
        return Reservation.objects.get(pk=reservation.pk)


@admin.action(description="Fire the selected events now", permissions=["change"])
def fire_now(modeladmin, request, queryset):
    for event in queryset:
        events.fire_now(event=event)
        modeladmin.log_change(request, event, "Fired now.")
    modeladmin.message_user(request, f"{len(queryset)} event(s) fired.", messages.SUCCESS)


@admin.register(LeaseEvent)
class LeaseEventAdmin(ServiceAdmin):
    """Events follow their lease's dates (the lease service moves them); the
    operator can only fire one early."""

    list_display = ["event_type", "lease", "due", "status", "fired"]
    list_filter = ["event_type", "status"]
    list_select_related = ["lease"]
    search_fields = ["lease__name", "id"]
    fields = ["id", "lease", "event_type", "due", "status", "fired", "error"]
    actions = [fire_now]
    due = with_seconds("time", "due")
    fired = with_seconds("fired_at", "fired at")


@admin.register(ReservableHost)
class ReservableHostAdmin(ServiceAdmin):
    list_display = ["host", "capabilities", "created"]
    list_select_related = ["host"]
    search_fields = ["host__name"]
    add_fields = ("host", "capabilities")
    created = with_seconds("created_at", "created")
    change_fields = ("capabilities",)

    @staticmethod
    def _checked(capabilities):
        if not isinstance(capabilities, dict):
            raise Invalid('capabilities must be a JSON object, e.g. {"node_type": "gpu"}.')
        return capabilities

    def service_add(self, request, values):
        return services.reservable_host_create(
            name=values["host"].name, capabilities=self._checked(values["capabilities"])
        )

    def service_change(self, request, reservable, changes):
        wanted = self._checked(changes["capabilities"])
        # The service merges what it is given; a key the operator removed
        # is passed as None, which the service drops.
        stored = ReservableHost.objects.get(pk=reservable.pk).capabilities
        removed = dict.fromkeys(stored.keys() - wanted.keys())
        return services.reservable_host_update(
            reservable=reservable, capabilities={**removed, **wanted}
        )

    def service_delete(self, request, reservable):
        services.reservable_host_delete(reservable=reservable)


@admin.register(HostAllocation)
class HostAllocationAdmin(ServiceAdmin):
    """Written by the lease service only (it keeps one host out of two
    overlapping allocations)."""

    list_display = ["host", "reservation", "start", "end", "slots"]
    list_filter = ["host"]
    list_select_related = ["host", "reservation__lease"]
    search_fields = ["host__name", "reservation__lease__name"]
    fields = ["id", "host", "reservation", "start", "end", "slots"]
    start = with_seconds("start_at", "from")
    end = with_seconds("end_at", "until")


@admin.register(Notification)
class NotificationAdmin(ServiceAdmin):
    """The outbox: written with each lifecycle change, read by the feed."""

    list_display = ["seq", "event_type", "project", "lease", "created"]
    list_filter = ["event_type"]
    list_select_related = ["project", "lease"]
    search_fields = ["event_type", "lease__name"]
    created = with_seconds("created_at", "created")


@admin.register(Subscription)
class SubscriptionAdmin(ServiceAdmin):
    """Webhooks are made through the API, which checks the destination and
    shows the signing secret once; here one is paused or deleted. The
    secret is never shown, and the URL without credentials."""

    list_display = [
        "display_url",
        "project",
        "event_types",
        "enabled",
        "consecutive_failures",
        "created",
    ]
    list_filter = ["enabled"]
    list_select_related = ["project"]
    search_fields = ["url"]
    fields = [
        "id",
        "project",
        "display_url",
        "event_types",
        "enabled",
        "disabled_reason",
        "consecutive_failures",
        "suspended_until",
        "created_at",
    ]
    change_fields = ("enabled",)
    created = with_seconds("created_at", "created")

    @admin.display(description="URL")
    def display_url(self, subscription):
        return subscription.display_url

    def service_change(self, request, subscription, changes):
        return notifications.subscription_update(subscription=subscription, **changes)

    def service_delete(self, request, subscription):
        notifications.subscription_delete(subscription=subscription)


@admin.action(description="Deliver the selected notifications again", permissions=["change"])
def redeliver(modeladmin, request, queryset):
    for delivery in queryset:
        notifications.delivery_retry(delivery=delivery)
        modeladmin.log_change(request, delivery, "Queued for delivery again.")
    modeladmin.message_user(request, f"{len(queryset)} delivery(ies) queued.", messages.SUCCESS)


@admin.register(Delivery)
class DeliveryAdmin(ServiceAdmin):
    list_display = [
        "notification",
        "subscription",
        "status",
        "attempts",
        "response_status",
        "delivered",
    ]
    list_filter = ["status"]
    list_select_related = ["notification", "subscription"]
    search_fields = ["subscription__url", "last_error"]
    actions = [redeliver]
    delivered = with_seconds("delivered_at", "delivered")


# --- capacity calendar ---------------------------------------------------------------


def _calendar(request) -> calendar.Calendar:
    """The calendar the request's parameters ask for (Invalid if malformed)."""
    # Staff who may not see leases may not see them drawn either.
    if not request.user.has_perm("reservations.view_lease"):
        raise PermissionDenied
    window = calendar.calendar_window(start=request.GET.get("start"), zoom=request.GET.get("zoom"))
    return calendar.calendar_data(window=window, query=request.GET.get("query", ""))


def calendar_view(request):
    try:
        chart = calendar.calendar_chart(calendar=_calendar(request), now=timezone.now())
    except Invalid as error:
        chart = {"error": error.message}
    context = {
        **admin.site.each_context(request),
        "title": "Capacity calendar",
        "zooms": list(calendar.ZOOMS),
        "start": request.GET.get("start", ""),
        "zoom": request.GET.get("zoom") or "week",
        "query": request.GET.get("query", ""),
        "keys": [p["property"] for p in selectors.host_properties(detail=False)],
        **chart,
    }
    return TemplateResponse(request, "admin/reservations/calendar.html", context)


def calendar_data_view(request):
    try:
        data = _calendar(request)
    except Invalid as error:
        return JsonResponse({"error": error.message}, status=400)
    return JsonResponse(calendar.calendar_json(calendar=data))


def _with_calendar(get_urls):
    # The calendar spans every host and lease, so it sits beside the app's
    # models rather than under one model's URLs; the project uses the default
    # admin site, whose URL list is extended here rather than replaced.
    def urls():
        return [
            path(
                "reservations/calendar/",
                admin.site.admin_view(calendar_view),
                name="reservations_calendar",
            ),
            path(
                "reservations/calendar/data",
                admin.site.admin_view(calendar_data_view),
                name="reservations_calendar_data",
            ),
            *get_urls(),
        ]

    return urls


admin.site.get_urls = _with_calendar(admin.site.get_urls)
