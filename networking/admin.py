"""The admin console for networking: look at what the API made, edit the
plain fields, and act through the services.

Rows are created through the API (or the services), not here: a network
needs its segments, a subnet its pools, a port its MAC and addresses, and a
host agent is what the host reports. Edits and deletes go through the same
services as the API's, so revision numbers move and in-use checks refuse
as they do for API writes.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import (
    Count,
    IntegerField,
    OuterRef,
    Subquery,
    Value,
    prefetch_related_objects,
)
from django.db.models.functions import Coalesce
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from config.admin import ReadOnlyInline, ServiceAdmin, with_seconds
from config.errors import Invalid
from identity.auth import user_context
from identity.models import Role
from networking import ipam, selectors, services
from networking.models import (
    BaremetalNic,
    HostAgent,
    HostPhysnet,
    HostVnicType,
    IPAllocation,
    Network,
    Port,
    Segment,
    Subnet,
)


def count_of(model, field: str):
    """How many ``model`` rows point at the outer row through ``field``.

    A subquery rather than Count(join): several counts on one list would
    otherwise multiply each other's rows (segments x subnets x ports)."""
    rows = (
        model.objects.filter(**{field: OuterRef("pk")})
        .order_by()
        .values(field)
        .annotate(n=Count("*"))
        .values("n")
    )
    return Coalesce(Subquery(rows, output_field=IntegerField()), Value(0))


def usage(used: int, total: int) -> str:
    return f"{used} / {total}"


def usage_row(label: str, availability: selectors.Availability) -> tuple[str, str]:
    return label, usage(availability.used_ips, availability.total_ips)


class MacSearchMixin:
    """A search term that is a MAC in any common form (FA-16-3E-..., fa16.3e..)
    also matches the stored lower-case colon form."""

    def get_search_results(self, request, queryset, search_term):
        results, duplicates = super().get_search_results(request, queryset, search_term)
        try:
            mac = ipam.parse_mac(search_term.strip())
        except Invalid:
            return results, duplicates
        if mac != search_term:
            more, more_duplicates = super().get_search_results(request, queryset, mac)
            results, duplicates = results | more, duplicates or more_duplicates
        return results, duplicates


# --- networks -----------------------------------------------------------------------


class SegmentInline(ReadOnlyInline):
    model = Segment
    fields = ["name", "network_type", "physical_network", "segmentation_id"]


class SubnetInline(ReadOnlyInline):
    model = Subnet
    fields = ["name", "cidr", "segment", "gateway_ip", "allocation_pools"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("segment")


@admin.register(Network)
class NetworkAdmin(ServiceAdmin):
    list_display = [
        "name",
        "id",
        "project",
        "segment_count",
        "subnet_count",
        "port_count",
        "shared",
        "admin_state_up",
        "view_link",
    ]
    list_filter = ["shared", "admin_state_up", "project"]
    list_select_related = ["project"]
    search_fields = ["name", "id"]
    fields = [
        "id",
        "project",
        "name",
        "description",
        "admin_state_up",
        "shared",
        "mtu",
        "revision_number",
        "created_at",
        "updated_at",
        "ip_availability",
    ]
    change_fields = ("name", "description", "admin_state_up", "shared", "mtu")
    inlines = [SegmentInline, SubnetInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                segment_count=count_of(Segment, "network"),
                subnet_count=count_of(Subnet, "network"),
                port_count=count_of(Port, "network"),
            )
        )

    @admin.display(description="segments", ordering="segment_count")
    def segment_count(self, network):
        return network.segment_count

    @admin.display(description="subnets", ordering="subnet_count")
    def subnet_count(self, network):
        return network.subnet_count

    @admin.display(description="ports", ordering="port_count")
    def port_count(self, network):
        return network.port_count

    @admin.display(description="IP availability (used / total)")
    def ip_availability(self, network):
        prefetch_related_objects([network], "segments", "subnets")
        per_subnet, per_segment = selectors.ip_availability(networks=[network])
        subnets = network.subnets.all()
        rows = []
        for segment in network.segments.all():
            rows.append(usage_row(f"segment {segment}", per_segment[segment.id]))
            rows += [
                usage_row(f"\u2003subnet {s.cidr}", per_subnet[s.id])
                for s in subnets
                if s.segment_id == segment.id
            ]
        rows += [
            usage_row(f"subnet {s.cidr}", per_subnet[s.id]) for s in subnets if s.segment_id is None
        ]
        if not rows:
            return "-"
        return format_html(
            "<table><tbody>{}</tbody></table>",
            format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows),
        )

    @admin.display(description="view")
    def view_link(self, network):
        url = reverse("admin:networking_network_view", args=[network.pk])
        return format_html('<a href="{}">IP usage</a>', url)

    def get_urls(self):
        view = self.admin_site.admin_view(self.network_view)
        return [
            path("<uuid:object_id>/view/", view, name="networking_network_view"),
            *super().get_urls(),
        ]

    def network_view(self, request, object_id):
        """Per segment: its subnets, how full they are and the hosts that
        reach it, fullest first."""
        network = self.get_object(request, str(object_id))
        if network is None:
            raise Http404("No such network.")
        if not self.has_view_permission(request, network):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Network {network}: segments and IP usage",
            "network": network,
            "usage": selectors.segment_usage(network=network),
        }
        return TemplateResponse(request, "admin/networking/network_view.html", context)

    def service_change(self, request, network, changes):
        context = user_context(user=request.user, project=network.project, role=Role.ADMIN)
        return services.network_update(context=context, network=network, **changes)

    def service_delete(self, request, network):
        services.network_delete(network=network)


@admin.register(Segment)
class SegmentAdmin(ServiceAdmin):
    list_display = [
        "__str__",
        "network",
        "network_type",
        "physical_network",
        "segmentation_id",
        "subnet_count",
    ]
    list_filter = ["network_type", "physical_network"]
    list_select_related = ["network"]
    search_fields = ["name", "id", "physical_network", "network__name", "network__id"]
    fields = [
        "id",
        "network",
        "name",
        "description",
        "network_type",
        "physical_network",
        "segmentation_id",
        "created_at",
        "updated_at",
    ]
    # What the segment is cannot change under the ports bound on it.
    change_fields = ("name", "description")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(subnet_count=count_of(Subnet, "segment"))

    @admin.display(description="subnets", ordering="subnet_count")
    def subnet_count(self, segment):
        return segment.subnet_count

    def service_change(self, request, segment, changes):
        return services.segment_update(segment=segment, **changes)

    def service_delete(self, request, segment):
        services.segment_delete(segment=segment)


@admin.register(Subnet)
class SubnetAdmin(ServiceAdmin):
    list_display = [
        "cidr",
        "name",
        "network",
        "segment",
        "ip_version",
        "gateway_ip",
        "ip_usage",
        "project",
    ]
    list_filter = [
        "ip_version",
        "segment__network_type",
        "segment__physical_network",
        "enable_dhcp",
    ]
    list_select_related = ["network", "segment", "project"]
    search_fields = ["name", "id", "cidr", "network__name", "network__id"]
    fields = [
        "id",
        "network",
        "segment",
        "project",
        "name",
        "description",
        "ip_version",
        "cidr",
        "gateway_ip",
        "allocation_pools",
        "ip_usage",
        "enable_dhcp",
        "dns_nameservers",
        "host_routes",
        "revision_number",
        "created_at",
        "updated_at",
    ]
    # Addressing changes go through the API, which checks them against the
    # addresses already handed out.
    change_fields = ("name", "description", "enable_dhcp")

    def get_queryset(self, request):
        # Used counts come with the page's rows and pool sizes from each row's
        # own pools: no query per row. A subquery rather than Count(join) keeps
        # the paginator's COUNT(*) free of the allocations table.
        return super().get_queryset(request).annotate(used_ips=count_of(IPAllocation, "subnet"))

    @admin.display(description="used / total IPs", ordering="used_ips")
    def ip_usage(self, subnet):
        return usage(subnet.used_ips, ipam.pool_size(subnet.allocation_pools))

    def service_change(self, request, subnet, changes):
        return services.subnet_update(subnet=subnet, **changes)

    def service_delete(self, request, subnet):
        services.subnet_delete(subnet=subnet)


# --- ports --------------------------------------------------------------------------


class FixedIpInline(ReadOnlyInline):
    model = IPAllocation
    fields = ["address", "subnet", "created_at"]
    verbose_name = "fixed IP"
    verbose_name_plural = "fixed IPs"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("subnet")


@admin.action(description="Unbind the selected ports", permissions=["change"])
def unbind(modeladmin, request, queryset):
    for port in queryset:
        services.port_unbind(port=port)
        modeladmin.log_change(request, port, "Unbound.")
    modeladmin.message_user(request, f"Unbound {len(queryset)} port(s).", messages.SUCCESS)


@admin.register(Port)
class PortAdmin(MacSearchMixin, ServiceAdmin):
    list_display = [
        "__str__",
        "network",
        "project",
        "mac_address",
        "fixed_ip_list",
        "status",
        "binding",
        "device_owner",
    ]
    list_filter = ["status", "binding_vif_type", "binding_vnic_type", "network"]
    list_select_related = ["network", "project"]
    search_fields = [
        "name",
        "id",
        "mac_address",
        "fixed_ips__address",
        "device_id",
        "binding_host",
    ]
    actions = [unbind]
    inlines = [FixedIpInline]
    fields = [
        "id",
        "network",
        "project",
        "name",
        "description",
        "admin_state_up",
        "mac_address",
        "ip_allocation",
        "status",
        "device_id",
        "device_owner",
        "binding_host",
        "binding_vnic_type",
        "binding_profile",
        "binding_vif_type",
        "binding_vif_details",
        "binding_failure",
        "revision_number",
        "created_at",
        "updated_at",
    ]
    # Addresses, device and binding are set by the API and the binding
    # drivers (a rebind can fail or move the port's addresses); the admin
    # unbinds with the action.
    change_fields = ("name", "description", "admin_state_up")

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("fixed_ips")

    @admin.display(description="bound on (vif type)", ordering="binding_host")
    def binding(self, port):
        return (
            f"{port.binding_host} ({port.binding_vif_type})"
            if port.binding_host
            else port.binding_vif_type
        )

    @admin.display(description="fixed IPs")
    def fixed_ip_list(self, port):
        return ", ".join(a.address for a in port.fixed_ips.all()) or "-"

    def service_change(self, request, port, changes):
        return services.port_update(port=port, **changes)

    def service_delete(self, request, port):
        services.port_delete(port=port)


@admin.register(IPAllocation)
class IPAllocationAdmin(MacSearchMixin, admin.ModelAdmin):
    """View only: an address belongs to its port and changes with it."""

    list_display = ["address", "subnet_cidr", "port_mac", "created"]
    list_filter = ["subnet__ip_version"]
    list_select_related = ["subnet", "port"]
    search_fields = ["address", "port__mac_address", "port__id", "port__name"]
    created = with_seconds("created_at", "created")

    @admin.display(description="subnet", ordering="subnet__cidr")
    def subnet_cidr(self, allocation):
        return allocation.subnet.cidr

    @admin.display(description="port (MAC)", ordering="port__mac_address")
    def port_mac(self, allocation):
        return allocation.port.mac_address

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- host agents --------------------------------------------------------------------


class HostPhysnetInline(ReadOnlyInline):
    model = HostPhysnet
    fields = ["physical_network", "bridge", "sriov_interface", "macvtap_interface"]
    show_change_link = False


class HostVnicTypeInline(ReadOnlyInline):
    model = HostVnicType
    fields = ["vnic_type"]
    show_change_link = False


class BaremetalNicInline(ReadOnlyInline):
    model = BaremetalNic
    fields = ["mac_address", "physical_network", "switch_id", "switch_port", "switch_info"]
    show_change_link = False


class AliveFilter(admin.SimpleListFilter):
    title = "alive"
    parameter_name = "alive"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        since = selectors.agents_alive_since()
        if self.value() == "yes":
            return queryset.filter(heartbeat_at__gte=since)
        if self.value() == "no":
            return queryset.filter(heartbeat_at__lt=since)
        return queryset


@admin.register(HostAgent)
class HostAgentAdmin(MacSearchMixin, ServiceAdmin):
    list_display = [
        "host",
        "alive",
        "admin_state_up",
        "datapath_type",
        "physnet_list",
        "vnic_type_list",
        "heartbeat",
    ]
    list_filter = [AliveFilter, "admin_state_up", "datapath_type", "physnets__physical_network"]
    search_fields = ["host", "baremetal_nics__mac_address"]
    inlines = [HostPhysnetInline, HostVnicTypeInline, BaremetalNicInline]
    heartbeat = with_seconds("heartbeat_at", "heartbeat")
    # Everything but admin_state_up is what the host reported; its next
    # report would overwrite an edit anyway.
    change_fields = ("admin_state_up",)

    def service_change(self, request, agent, changes):
        return services.host_agent_update(agent=agent, **changes)

    def service_delete(self, request, agent):
        services.host_agent_delete(host=agent.host)

    def get_queryset(self, request):
        # No foreign key to join; the agent's own rows come in two prefetches.
        return super().get_queryset(request).prefetch_related("physnets", "vnic_types")

    @admin.display(description="alive", boolean=True, ordering="heartbeat_at")
    def alive(self, agent):
        return agent.heartbeat_at >= selectors.agents_alive_since()

    @admin.display(description="physical networks")
    def physnet_list(self, agent):
        return ", ".join(sorted(p.physical_network for p in agent.physnets.all())) or "-"

    @admin.display(description="vnic types")
    def vnic_type_list(self, agent):
        return ", ".join(sorted(v.vnic_type for v in agent.vnic_types.all())) or "-"
