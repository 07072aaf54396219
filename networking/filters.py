"""Neutron list filters. A repeated key means OR; names with ':' are mapped."""

import django_filters

from config.errors import Invalid
from config.filters import AnyOf, OpenStackBoolean
from networking import ipam
from networking.models import HostAgent, Network, Port, Segment, Subnet


class ProjectFilters(django_filters.FilterSet):
    id = AnyOf(field_name="id")
    name = AnyOf(field_name="name")
    project_id = AnyOf(field_name="project_id")
    tenant_id = AnyOf(field_name="project_id")


class NetworkFilter(ProjectFilters):
    shared = OpenStackBoolean(field_name="shared")
    admin_state_up = OpenStackBoolean(field_name="admin_state_up")

    class Meta:
        model = Network
        fields = []


class SegmentFilter(django_filters.FilterSet):
    id = AnyOf(field_name="id")
    name = AnyOf(field_name="name")
    network_id = AnyOf(field_name="network_id")
    network_type = AnyOf(field_name="network_type")
    physical_network = AnyOf(field_name="physical_network")
    segmentation_id = AnyOf(field_name="segmentation_id")

    class Meta:
        model = Segment
        fields = []


class SubnetFilter(ProjectFilters):
    network_id = AnyOf(field_name="network_id")
    segment_id = AnyOf(field_name="segment_id")
    cidr = AnyOf(field_name="cidr")
    ip_version = AnyOf(field_name="ip_version")
    gateway_ip = AnyOf(field_name="gateway_ip")

    class Meta:
        model = Subnet
        fields = []


class MacAddresses(AnyOf):
    """MACs in any spelling match the stored lower-case form."""

    def filter(self, qs, value):
        return super().filter(qs, [ipam.parse_mac(mac) for mac in value or []])


class FixedIps(AnyOf):
    """``fixed_ips=ip_address=10.0.0.5`` / ``fixed_ips=subnet_id=S``, as the
    Neutron client sends them; repeated keys must all match."""

    KEYS = {"ip_address": "fixed_ips__address", "subnet_id": "fixed_ips__subnet_id"}

    def filter(self, qs, value):
        if not value:
            return qs
        for item in value:
            key, sep, wanted = item.partition("=")
            if not sep or key not in self.KEYS:
                raise Invalid(
                    f"Invalid fixed_ips filter {item!r}: use ip_address=... or subnet_id=..."
                )
            if key == "ip_address":
                wanted = str(ipam.parse_ip(wanted))
            qs = qs.filter(**{self.KEYS[key]: wanted})
        return qs.distinct()


class PortFilter(ProjectFilters):
    """The binding filters on what only admins read are dropped for others,
    as if unknown (as every unknown filter is): a filter is a read, and
    ``binding:host_id=<host>`` would tell a member where a port runs."""

    network_id = AnyOf(field_name="network_id")
    mac_address = MacAddresses(field_name="mac_address")
    device_id = AnyOf(field_name="device_id")
    device_owner = AnyOf(field_name="device_owner")
    status = AnyOf(field_name="status")
    ip_allocation = AnyOf(field_name="ip_allocation")
    fixed_ips = FixedIps(field_name="fixed_ips")
    admin_state_up = OpenStackBoolean(field_name="admin_state_up")

    class Meta:
        model = Port
        fields = []

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, request=request, **kwargs)
        if not getattr(getattr(request, "auth", None), "is_admin", False):
            for name in ADMIN_ONLY_PORT_FILTERS:
                self.filters.pop(name)


# Wire names with ':' cannot be class attributes; the metaclass-built
# filter table takes them directly.
PortFilter.base_filters.update(
    {
        "binding:host_id": AnyOf(field_name="binding_host"),
        "binding:vnic_type": AnyOf(field_name="binding_vnic_type"),
        "binding:vif_type": AnyOf(field_name="binding_vif_type"),
    }
)
# Neutron shows these on a port to admins only.
ADMIN_ONLY_PORT_FILTERS = ("binding:host_id", "binding:vif_type")


class AgentFilter(django_filters.FilterSet):
    id = AnyOf(field_name="id")
    host = AnyOf(field_name="host")
    admin_state_up = OpenStackBoolean(field_name="admin_state_up")

    class Meta:
        model = HostAgent
        fields = []
