from django.contrib import admin

from networking.models import Network


@admin.register(Network)
class NetworkAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "project", "shared", "admin_state_up", "mtu", "created_at"]
    list_filter = ["shared", "admin_state_up", "project"]
    list_select_related = ["project"]
    search_fields = ["name", "id", "description"]
    readonly_fields = ["id", "revision_number", "created_at", "updated_at"]
