from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from compute import selectors, services
from compute.models import (
    Flavor,
    Host,
    Image,
    Instance,
    InstanceAction,
    InstanceActionEvent,
    InstanceNic,
)
from compute.selectors import host_is_up
from compute.virt import PowerAction
from config.admin import ReadOnlyInline, ServiceAdmin, bad_news_flag, with_seconds
from config.errors import BerthError
from identity.auth import user_context
from identity.models import Role


@admin.action(description="Disable the selected hosts (no new builds)", permissions=["change"])
def disable_hosts(modeladmin, request, queryset):
    for host in queryset:
        reason = f"disabled by {request.user}"
        services.host_set_enabled(host=host, enabled=False, reason=reason)
        modeladmin.log_change(request, host, f"Disabled: {reason}.")
    modeladmin.message_user(request, f"{len(queryset)} host(s) disabled.", messages.SUCCESS)


@admin.action(description="Enable the selected hosts", permissions=["change"])
def enable_hosts(modeladmin, request, queryset):
    for host in queryset:
        services.host_set_enabled(host=host, enabled=True)
        modeladmin.log_change(request, host, "Enabled.")
    modeladmin.message_user(request, f"{len(queryset)} host(s) enabled.", messages.SUCCESS)


@admin.register(Host)
class HostAdmin(ServiceAdmin):
    """Hosts report themselves (capacity, networks, driver); the operator
    only disables and enables them, as Nova's os-services API does."""

    list_display = [
        "name",
        "up",
        "has_agent",
        "enabled",
        "vcpu_usage",
        "ram_usage",
        "disk_usage",
        "running_instances",
        "service_version",
        "heartbeat",
    ]
    list_filter = [
        "enabled",
        "has_agent",
        "baremetal",
        "hypervisor_type",
        "virt_driver",
        "service_version",
    ]
    search_fields = ["name"]
    actions = [disable_hosts, enable_hosts]
    change_fields = ("enabled", "disabled_reason")
    heartbeat = with_seconds("last_heartbeat", "last heartbeat")

    def service_change(self, request, host, changes):
        return services.host_set_enabled(
            host=host,
            enabled=changes.get("enabled", host.enabled),
            reason=changes.get("disabled_reason", host.disabled_reason),
        )

    @admin.display(boolean=True)
    def up(self, host):
        return host_is_up(host)

    @staticmethod
    def _usage(used, total, ratio):
        return f"{used} / {total * ratio:g}"

    @admin.display(description="vCPUs used / allowed")
    def vcpu_usage(self, host):
        return self._usage(host.vcpus_used, host.vcpus, host.cpu_allocation_ratio)

    @admin.display(description="RAM MB used / allowed")
    def ram_usage(self, host):
        return self._usage(host.memory_mb_used, host.memory_mb, host.ram_allocation_ratio)

    @admin.display(description="disk GB used / allowed")
    def disk_usage(self, host):
        return self._usage(host.disk_gb_used, host.disk_gb, host.disk_allocation_ratio)


@admin.register(Flavor)
class FlavorAdmin(ServiceAdmin):
    """Made and deleted as through the API; a flavor never changes after
    (Nova's flavors are immutable: instances and reservations copy them)."""

    list_display = ["name", "id", "vcpus", "ram", "disk", "baremetal", "is_public", "disabled_flag"]
    list_filter = ["baremetal", "is_public", "disabled"]
    search_fields = ["name", "id"]
    add_fields = (
        "id",
        "name",
        "vcpus",
        "ram",
        "disk",
        "ephemeral",
        "swap",
        "rxtx_factor",
        "is_public",
        "disabled",
        "baremetal",
    )
    disabled_flag = bad_news_flag("disabled")

    def service_add(self, request, values):
        return services.flavor_create(**values)

    def service_delete(self, request, flavor):
        services.flavor_delete(flavor=flavor)


@admin.register(Image)
class ImageAdmin(ServiceAdmin):
    """The image records servers boot from (the identity API's catalog
    lists the image API, which reads them)."""

    list_display = ["name", "id", "disk_format", "visibility", "project", "created"]
    list_filter = ["visibility", "disk_format"]
    search_fields = ["name", "id"]
    add_fields = ("name", "disk_format", "container_format", "min_disk", "min_ram", "visibility")
    created = with_seconds("created_at", "created")

    def service_add(self, request, values):
        return services.image_create(**values)

    def service_delete(self, request, image):
        services.image_delete(image=image)


class NicInline(ReadOnlyInline):
    model = InstanceNic
    fields = ["index", "network", "requested_port_id", "fixed_ip", "port", "created_by_compute"]
    show_change_link = False


class ActionInline(ReadOnlyInline):
    model = InstanceAction
    fields = ["action", "request_id", "user_id", "start_time", "steps"]

    @admin.display(description="steps (attempt: event on host -> result)")
    def steps(self, action):
        return format_html_join(
            mark_safe("<br>"),
            "{}: {} on {} -> {}{}",
            (
                (
                    e.attempt,
                    e.event,
                    e.host or "-",
                    e.result or "running",
                    f" ({e.details})" if e.details else "",
                )
                for e in action.events.all()
            ),
        )


@admin.action(description="Retry the selected failed builds", permissions=["change"])
def retry_builds(modeladmin, request, queryset):
    retried = 0
    for instance in queryset:
        try:
            services.server_retry(instance=instance)
        except BerthError as error:
            modeladmin.message_user(request, error.message, messages.WARNING)
            continue
        modeladmin.log_change(request, instance, "Build retried.")
        retried += 1
    if retried:
        modeladmin.message_user(request, f"{retried} build(s) started again.", messages.SUCCESS)


def _power_action(action: PowerAction, description: str, done: str):
    """An admin action that runs ``action`` on each selected server, through
    the service the API calls (os-stop, os-start, reboot)."""

    @admin.action(description=description, permissions=["change"])
    def run(modeladmin, request, queryset):
        accepted = 0
        for instance in queryset.select_related("project"):
            context = user_context(user=request.user, project=instance.project, role=Role.ADMIN)
            try:
                services.server_power(context=context, instance=instance, action=action)
            except BerthError as error:
                modeladmin.message_user(request, error.message, messages.WARNING)
                continue
            modeladmin.log_change(request, instance, f"{done}.")
            accepted += 1
        if accepted:
            modeladmin.message_user(request, f"{accepted} server(s): {done}.", messages.SUCCESS)

    run.__name__ = f"power_{action.value}"
    return run


stop_servers = _power_action(PowerAction.STOP, "Stop the selected servers", "stop requested")
start_servers = _power_action(PowerAction.START, "Start the selected servers", "start requested")
reboot_servers = _power_action(
    PowerAction.REBOOT_HARD, "Reboot the selected servers (hard)", "hard reboot requested"
)


@admin.register(Instance)
class InstanceAdmin(ServiceAdmin):
    """Servers are made, changed and deleted through the compute API (their
    ports, addresses and host capacity go with them); here they are read,
    and a failed build is retried."""

    # Few and narrow columns: the list must fit a 1280 px screen beside the
    # admin's navigation (an id column, a step column and a long fault
    # pushed it past 1400 px); the id is searched, the rest is a click away.
    list_display = [
        "name",
        "project",
        "state",
        "power",
        "host",
        "fault_message",
        "created",
        "history_link",
    ]
    list_filter = ["status", "task_state", "power_state", "baremetal", "host"]
    list_select_related = ["project", "host"]
    search_fields = ["name", "id", "host__name", "reservation_id"]
    actions = [retry_builds, stop_servers, start_servers, reboot_servers]
    inlines = [NicInline, ActionInline]
    created = with_seconds("created_at", "created")

    @admin.display(description="status", ordering="status")
    def state(self, instance):
        text = instance.get_status_display()
        if instance.task_state:
            text += f": {instance.get_task_state_display().lower()}"
        if instance.attempt > 1:
            text += f" (attempt {instance.attempt})"
        return text

    @admin.display(description="power", ordering="power_state")
    def power(self, instance):
        return selectors.power_state_name(instance.power_state)

    @admin.display(description="fault")
    def fault_message(self, instance):
        message = (instance.fault or {}).get("message", "")
        return format_html('<span title="{}">{}</span>', message, Truncator(message).chars(80))

    @admin.display(description="history")
    def history_link(self, instance):
        url = reverse("admin:compute_instance_build_history", args=[instance.pk])
        return format_html('<a href="{}">build history</a>', url)

    def get_urls(self):
        # history/ is where the admin keeps its own change log; for an
        # instance the history worth reading is its action log, so that path
        # shows it and the admin's log moves to log/ (linked beside it).
        wrap = self.admin_site.admin_view
        return [
            path(
                "<uuid:object_id>/history/",
                wrap(self.build_history_view),
                name="compute_instance_build_history",
            ),
            path("<path:object_id>/log/", wrap(self.history_view), name="compute_instance_log"),
            *super().get_urls(),
        ]

    def build_history_view(self, request, object_id):
        """Every action on the instance, its steps per attempt and where the
        time went: why a build failed, in one page."""
        instance = self.get_object(request, str(object_id))
        if instance is None:
            raise Http404("No such instance.")
        if not self.has_view_permission(request, instance):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Build history of {instance}",
            "instance": instance,
            "max_attempts": settings.BERTH_BUILD_MAX_ATTEMPTS,
            "actions": selectors.build_history(instance=instance),
        }
        return TemplateResponse(request, "admin/compute/build_history.html", context)


@admin.register(InstanceActionEvent)
class InstanceActionEventAdmin(ServiceAdmin):
    """The build log: written by the pipeline only."""

    list_display = ["event", "attempt", "host", "result", "started", "finished", "server"]
    list_filter = ["event", "result"]
    list_select_related = ["action__instance"]
    search_fields = ["action__instance__name", "action__request_id", "host"]
    started = with_seconds("start_time", "started")
    finished = with_seconds("finish_time", "finished")

    @admin.display(description="server", ordering="action__instance__name")
    def server(self, event):
        return f"{event.action.action} {event.action.instance}"
