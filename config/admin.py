from django.contrib import admin

from config.dashboard import dashboard_metrics
from config.models import HealthProbe, Membership, Project, Quota, Token
from config.quotas import quota_limits, quota_usage


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class QuotaInline(admin.TabularInline):
    model = Quota
    extra = 0


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "created_at"]
    search_fields = ["name", "id"]
    readonly_fields = ["id", "created_at", "quota_summary"]
    inlines = [MembershipInline, QuotaInline]

    @admin.display(description="quota usage")
    def quota_summary(self, project):
        if project.pk is None:
            return "-"
        limits, usage = quota_limits(project=project), quota_usage(project=project)
        return ", ".join(
            f"{resource} {usage.get(resource, 0)}/{'∞' if limit < 0 else limit}"
            for resource, limit in sorted(limits.items())
        )


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role"]
    list_filter = ["role"]
    list_select_related = ["user", "project"]
    search_fields = ["user__username", "project__name"]


@admin.register(Token)
class TokenAdmin(admin.ModelAdmin):
    # Tokens are made with `manage.py create_token` (the raw value is shown
    # only there, once); the admin can list and revoke them.
    list_display = ["prefix", "membership", "created_at", "expires_at"]
    list_select_related = ["membership__user", "membership__project"]
    list_filter = ["membership__role"]
    search_fields = ["prefix", "membership__user__username", "membership__project__name"]
    readonly_fields = ["prefix", "membership", "created_at"]

    def has_add_permission(self, request):
        return False


@admin.register(HealthProbe)
class HealthProbeAdmin(admin.ModelAdmin):
    list_display = ["id", "created_at", "answered_at", "worker", "request_id"]
    search_fields = ["worker", "request_id"]
    readonly_fields = ["id", "created_at", "answered_at", "worker", "request_id"]


# The index shows the operator dashboard (templates/admin/index.html). The
# default site's index is wrapped to pass the counts in: a custom AdminSite
# would move every app's registrations, and a context processor would count
# on every page. Admin's autodiscovery imports this module before the URLconf
# reads admin.site.urls, so the URL resolves to the wrapper.
_admin_index = admin.site.index


def index_with_dashboard(request, extra_context=None):
    metrics = [m for m in dashboard_metrics() if request.user.has_perm(m.perm)]
    return _admin_index(request, extra_context={"dashboard": metrics, **(extra_context or {})})


admin.site.index = index_with_dashboard
