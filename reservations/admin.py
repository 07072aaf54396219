from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from config.errors import BerthError, Invalid
from reservations import calendar, events, notifications, selectors, services
from reservations.models import (
    Delivery,
    HostAllocation,
    Lease,
    LeaseEvent,
    Notification,
    ReservableHost,
    Reservation,
    Subscription,
)


class ReservationInline(admin.TabularInline):
    model = Reservation
    extra = 0
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
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


class EventInline(admin.TabularInline):
    model = LeaseEvent
    extra = 0
    fields = ["event_type", "time", "status", "fired_at", "error"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class AllocationInline(admin.TabularInline):
    model = HostAllocation
    extra = 0
    fields = ["host", "start_at", "end_at", "slots"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.action(description="End the selected leases now")
def end_now(modeladmin, request, queryset):
    ended = 0
    for lease in queryset:
        try:
            services.lease_end_now(lease=lease)
            ended += 1
        except BerthError as error:
            modeladmin.message_user(request, f"{lease}: {error.message}", messages.WARNING)
    if ended:
        modeladmin.message_user(request, f"{ended} lease(s) ended.", messages.SUCCESS)


@admin.register(Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "status", "degraded", "start_at", "end_at", "created_at"]
    list_filter = ["status", "degraded", "project"]
    list_select_related = ["project"]
    search_fields = ["name", "id", "reservations__allocations__host__name"]
    readonly_fields = [
        "id",
        "project",
        "user_id",
        "status",
        "status_reason",
        "degraded",
        "created_at",
        "updated_at",
    ]
    inlines = [ReservationInline, EventInline]
    actions = [end_now]


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    list_display = ["id", "lease", "resource_type", "status", "min", "max", "amount"]
    list_filter = ["resource_type", "status"]
    list_select_related = ["lease"]
    search_fields = ["id", "lease__name"]
    readonly_fields = ["status", "flavor", "missing_resources", "resources_changed"]
    inlines = [AllocationInline]


@admin.action(description="Fire the selected events now")
def fire_now(modeladmin, request, queryset):
    for event in queryset:
        events.fire_now(event=event)
    modeladmin.message_user(request, f"{len(queryset)} event(s) fired.", messages.SUCCESS)


@admin.register(LeaseEvent)
class LeaseEventAdmin(admin.ModelAdmin):
    list_display = ["event_type", "lease", "time", "status", "fired_at"]
    list_filter = ["event_type", "status"]
    list_select_related = ["lease"]
    search_fields = ["lease__name", "id"]
    readonly_fields = ["lease", "event_type", "rank", "status", "fired_at", "error"]
    actions = [fire_now]


@admin.register(ReservableHost)
class ReservableHostAdmin(admin.ModelAdmin):
    list_display = ["host", "capabilities", "created_at"]
    list_select_related = ["host"]
    search_fields = ["host__name"]
    readonly_fields = ["host", "created_at", "updated_at"]

    def save_model(self, request, obj, form, change):
        services.reservable_host_update(reservable=obj, capabilities=obj.capabilities)


@admin.register(HostAllocation)
class HostAllocationAdmin(admin.ModelAdmin):
    list_display = ["host", "reservation", "start_at", "end_at", "slots"]
    list_filter = ["host"]
    list_select_related = ["host", "reservation__lease"]
    search_fields = ["host__name", "reservation__lease__name"]
    readonly_fields = ["host", "reservation", "start_at", "end_at", "slots"]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["seq", "event_type", "project", "lease", "created_at"]
    list_filter = ["event_type"]
    list_select_related = ["project", "lease"]
    search_fields = ["event_type", "lease__name"]
    readonly_fields = ["seq", "project", "event_type", "lease", "payload", "created_at"]


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["url", "project", "event_types", "enabled", "created_at"]
    list_filter = ["enabled"]
    list_select_related = ["project"]
    search_fields = ["url"]


@admin.action(description="Deliver the selected notifications again")
def redeliver(modeladmin, request, queryset):
    for delivery in queryset:
        notifications.delivery_retry(delivery=delivery)
    modeladmin.message_user(request, f"{len(queryset)} delivery(ies) queued.", messages.SUCCESS)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "notification",
        "subscription",
        "status",
        "attempts",
        "response_status",
        "delivered_at",
    ]
    list_filter = ["status"]
    list_select_related = ["notification", "subscription"]
    search_fields = ["subscription__url", "last_error"]
    readonly_fields = [
        "notification",
        "subscription",
        "status",
        "attempts",
        "last_error",
        "response_status",
        "delivered_at",
    ]
    actions = [redeliver]


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
