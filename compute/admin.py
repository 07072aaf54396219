from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from compute import selectors, services
from compute.models import Flavor, Host, Instance, InstanceAction, InstanceActionEvent, InstanceNic
from compute.selectors import host_is_up
from config.errors import BerthError


@admin.action(description="Disable the selected hosts (no new builds)")
def disable_hosts(modeladmin, request, queryset):
    for host in queryset:
        services.host_set_enabled(host=host, enabled=False, reason=f"disabled by {request.user}")
    modeladmin.message_user(request, f"{len(queryset)} host(s) disabled.", messages.SUCCESS)


@admin.action(description="Enable the selected hosts")
def enable_hosts(modeladmin, request, queryset):
    for host in queryset:
        services.host_set_enabled(host=host, enabled=True)
    modeladmin.message_user(request, f"{len(queryset)} host(s) enabled.", messages.SUCCESS)


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "up",
        "enabled",
        "baremetal",
        "vcpu_usage",
        "ram_usage",
        "disk_usage",
        "running_instances",
        "service_version",
        "last_heartbeat",
    ]
    list_filter = ["enabled", "baremetal", "hypervisor_type", "virt_driver", "service_version"]
    search_fields = ["name"]
    actions = [disable_hosts, enable_hosts]
    readonly_fields = [
        "id",
        "vcpus_used",
        "memory_mb_used",
        "disk_gb_used",
        "running_instances",
        "last_heartbeat",
        "created_at",
        "updated_at",
    ]

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
class FlavorAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "vcpus", "ram", "disk", "baremetal", "is_public", "disabled"]
    list_filter = ["baremetal", "is_public", "disabled"]
    search_fields = ["name", "id"]


class NicInline(admin.TabularInline):
    model = InstanceNic
    extra = 0
    fields = ["index", "network", "requested_port_id", "fixed_ip", "port", "created_by_compute"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class ActionInline(admin.TabularInline):
    model = InstanceAction
    extra = 0
    fields = ["action", "request_id", "user_id", "start_time", "steps"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

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


@admin.action(description="Retry the selected failed builds")
def retry_builds(modeladmin, request, queryset):
    retried = 0
    for instance in queryset:
        try:
            services.server_retry(instance=instance)
            retried += 1
        except BerthError as error:
            modeladmin.message_user(request, error.message, messages.WARNING)
    if retried:
        modeladmin.message_user(request, f"{retried} build(s) started again.", messages.SUCCESS)


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "id",
        "project",
        "status",
        "task_state",
        "host",
        "attempt",
        "fault_message",
        "created_at",
        "history_link",
    ]
    list_filter = ["status", "task_state", "baremetal", "host"]
    list_select_related = ["project", "host"]
    search_fields = ["name", "id", "host__name", "reservation_id"]
    actions = [retry_builds]
    inlines = [NicInline, ActionInline]
    readonly_fields = [
        "id",
        "project",
        "user_id",
        "flavor",
        "vcpus",
        "memory_mb",
        "disk_gb",
        "baremetal",
        "status",
        "task_state",
        "host",
        "claimed_host",
        "attempt",
        "excluded_hosts",
        "alternate_hosts",
        "fault",
        "last_failure",
        "resumes",
        "step_deadline",
        "reservation_id",
        "driver_data",
        "launched_at",
        "deleted_at",
        "created_at",
        "updated_at",
    ]

    @admin.display(description="fault")
    def fault_message(self, instance):
        return (instance.fault or {}).get("message", "")

    @admin.display(description="build history")
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
class InstanceActionEventAdmin(admin.ModelAdmin):
    list_display = ["event", "attempt", "host", "result", "start_time", "finish_time", "action"]
    list_filter = ["event", "result"]
    list_select_related = ["action"]
    search_fields = ["action__instance__name", "action__request_id", "host"]
    readonly_fields = [f.name for f in InstanceActionEvent._meta.fields]
