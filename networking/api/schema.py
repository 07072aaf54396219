"""The Neutron v2.0 bodies as the OpenAPI schema describes them (what
``serializers`` renders and accepts, envelopes included)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers as f

from config.schema import (
    InlineChoiceField,
    anything,
    collection,
    envelope,
    hex_id,
    mapping,
    nullable_text,
    shape,
    strings,
    text,
)
from networking.api import serializers as s
from networking.models import IpAllocationMode, NetworkType, PortStatus, VnicType


def standard_attrs(*, revision: bool = True) -> dict:
    fields = {
        "created_at": f.DateTimeField(),
        "updated_at": f.DateTimeField(),
        "tags": strings(),
    }
    if revision:
        fields["revision_number"] = f.IntegerField()
    return fields


def owner() -> dict:
    return {"project_id": hex_id(), "tenant_id": hex_id()}


ProviderAttrs = shape(
    "ProviderAttrs",
    {
        "provider:network_type": InlineChoiceField(NetworkType.choices, allow_null=True),
        "provider:physical_network": nullable_text(),
        "provider:segmentation_id": f.IntegerField(allow_null=True),
    },
)

Network = shape(
    "Network",
    {
        "id": f.UUIDField(),
        "name": text(),
        "description": text(),
        "admin_state_up": f.BooleanField(),
        "shared": f.BooleanField(),
        "mtu": f.IntegerField(),
        "status": InlineChoiceField(["ACTIVE", "DOWN"]),
        "subnets": f.ListField(child=f.UUIDField()),
        "router:external": f.BooleanField(),
        "availability_zones": strings(),
        "availability_zone_hints": strings(),
        "port_security_enabled": f.BooleanField(),
        "l2_adjacency": f.BooleanField(),
        **standard_attrs(),
        **owner(),
        # Admins only: flat provider attributes for one segment (null for
        # several, which are then listed in "segments").
        "provider:network_type": InlineChoiceField(
            NetworkType.choices, allow_null=True, required=False
        ),
        "provider:physical_network": nullable_text(required=False),
        "provider:segmentation_id": f.IntegerField(allow_null=True, required=False),
        "segments": ProviderAttrs(many=True, required=False),
    },
)

Segment = shape(
    "Segment",
    {
        "id": f.UUIDField(),
        "network_id": f.UUIDField(),
        "name": text(),
        "description": text(),
        "network_type": InlineChoiceField(NetworkType.choices),
        "physical_network": nullable_text(),
        "segmentation_id": f.IntegerField(allow_null=True),
        **standard_attrs(revision=False),
    },
)

AllocationPool = shape("AllocationPool", {"start": f.CharField(), "end": f.CharField()})

Subnet = shape(
    "Subnet",
    {
        "id": f.UUIDField(),
        "name": text(),
        "description": text(),
        "network_id": f.UUIDField(),
        "segment_id": f.UUIDField(allow_null=True),
        "ip_version": InlineChoiceField([4, 6]),
        "cidr": f.CharField(),
        "gateway_ip": nullable_text(),
        "allocation_pools": AllocationPool(many=True),
        "enable_dhcp": f.BooleanField(),
        "dns_nameservers": strings(),
        "host_routes": f.ListField(child=mapping()),
        "subnetpool_id": nullable_text(),
        "ipv6_ra_mode": nullable_text(),
        "ipv6_address_mode": nullable_text(),
        "service_types": strings(),
        **standard_attrs(),
        **owner(),
    },
)

FixedIp = shape("PortFixedIp", {"subnet_id": f.UUIDField(), "ip_address": f.CharField()})

Port = shape(
    "Port",
    {
        "id": f.UUIDField(),
        "name": text(),
        "description": text(),
        "network_id": f.UUIDField(),
        "mac_address": f.CharField(),
        "admin_state_up": f.BooleanField(),
        "status": InlineChoiceField(PortStatus.choices),
        "device_id": text(),
        "device_owner": text(),
        "ip_allocation": InlineChoiceField(IpAllocationMode.choices),
        "fixed_ips": FixedIp(many=True),
        "binding:vnic_type": InlineChoiceField(VnicType.choices),
        "security_groups": strings(),
        "allowed_address_pairs": f.ListField(child=mapping()),
        "extra_dhcp_opts": f.ListField(child=mapping()),
        "port_security_enabled": f.BooleanField(),
        **standard_attrs(),
        **owner(),
        # Admins only.
        "binding:host_id": text(required=False),
        "binding:profile": mapping(required=False),
        "binding:vif_type": text(required=False),
        "binding:vif_details": mapping(required=False),
        "binding:failure_reason": text(required=False),
    },
)

SubnetAvailability = shape(
    "SubnetIpAvailability",
    {
        "subnet_id": f.UUIDField(),
        "subnet_name": text(),
        "cidr": f.CharField(),
        "ip_version": InlineChoiceField([4, 6]),
        "segment_id": f.UUIDField(allow_null=True),
        "total_ips": f.IntegerField(),
        "used_ips": f.IntegerField(),
    },
)
SegmentAvailability = shape(
    "SegmentIpAvailability",
    {
        "segment_id": f.UUIDField(),
        "segment_name": text(),
        "physical_network": nullable_text(),
        "total_ips": f.IntegerField(),
        "used_ips": f.IntegerField(),
    },
)
IpAvailability = shape(
    "NetworkIpAvailability",
    {
        "network_id": f.UUIDField(),
        "network_name": text(),
        **owner(),
        "total_ips": f.IntegerField(),
        "used_ips": f.IntegerField(),
        "subnet_ip_availability": SubnetAvailability(many=True),
        # berth's extension: how full each segment of a routed network is.
        "segment_ip_availability": SegmentAvailability(many=True),
    },
)

BaremetalNic = shape(
    "AgentBaremetalNic",
    {
        "mac_address": f.CharField(),
        "physical_network": f.CharField(),
        "switch_id": text(),
        "port_id": text(),
        "switch_info": text(),
    },
)
AgentConfigurations = shape(
    "AgentConfigurations",
    {
        "bridge_mappings": f.DictField(child=f.CharField()),
        "device_mappings": f.DictField(child=strings()),
        "interface_mappings": f.DictField(child=f.CharField()),
        "datapath_type": f.CharField(),
        "ovs_capabilities": shape("OvsCapabilities", {"iface_types": strings()})(),
        "ovs_hybrid_plug": f.BooleanField(),
        "integration_bridge": f.CharField(),
        "tunnel_types": strings(),
        "vnic_types": strings(),
        "baremetal_nics": BaremetalNic(many=True),
    },
)
Agent = shape(
    "Agent",
    {
        "id": f.UUIDField(),
        "host": f.CharField(),
        "admin_state_up": f.BooleanField(),
        "agent_type": f.CharField(),
        "binary": f.CharField(),
        "topic": f.CharField(),
        "alive": f.BooleanField(),
        "heartbeat_timestamp": f.CharField(),
        "created_at": f.CharField(),
        "started_at": f.CharField(),
        "availability_zone": nullable_text(),
        "description": text(),
        "configurations": AgentConfigurations(),
    },
)

Extension = shape(
    "Extension",
    {
        "alias": f.CharField(),
        "name": f.CharField(),
        "description": f.CharField(),
        "updated": f.CharField(),
        "links": f.ListField(child=anything()),
    },
)


def crud(name: str, key: str, plural: str, item, create=None, update=None, paged=True):
    """extend_schema_view arguments for a resource's standard actions."""
    views = {
        "list": extend_schema(responses=collection(f"{name}List", plural, item, paged=paged)),
        "retrieve": extend_schema(responses=envelope(name + "Envelope", key, item)),
        "destroy": extend_schema(responses={204: None}),
    }
    if create is not None:
        views["create"] = extend_schema(
            request=envelope(f"{name}CreateRequest", key, create),
            responses={201: envelope(name + "Envelope", key, item)},
        )
    if update is not None:
        views["update"] = extend_schema(
            request=envelope(f"{name}UpdateRequest", key, update),
            responses=envelope(name + "Envelope", key, item),
        )
    return extend_schema_view(**views)


network_schema = crud(
    "Network",
    "network",
    "networks",
    Network,
    create=s.NetworkCreateSerializer,
    update=s.NetworkWriteSerializer,
)
segment_schema = crud(
    "Segment",
    "segment",
    "segments",
    Segment,
    create=s.SegmentCreateSerializer,
    update=s.SegmentUpdateSerializer,
)
subnet_schema = crud(
    "Subnet",
    "subnet",
    "subnets",
    Subnet,
    create=s.SubnetCreateSerializer,
    update=s.SubnetUpdateSerializer,
)
port_schema = crud(
    "Port", "port", "ports", Port, create=s.PortCreateSerializer, update=s.PortUpdateSerializer
)
agent_schema = crud("Agent", "agent", "agents", Agent, update=s.AgentUpdateSerializer)
ip_availability_schema = extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("network_id", OpenApiTypes.UUID, many=True),
            OpenApiParameter("network_name", str, many=True),
            OpenApiParameter("ip_version", int, enum=[4, 6]),
        ],
        responses=collection(
            "NetworkIpAvailabilityList", "network_ip_availabilities", IpAvailability, paged=False
        ),
    ),
    retrieve=extend_schema(
        responses=envelope(
            "NetworkIpAvailabilityEnvelope", "network_ip_availability", IpAvailability
        )
    ),
)
extension_list_schema = extend_schema(
    operation_id="networking_extension_list",
    responses=collection("ExtensionList", "extensions", Extension, paged=False),
)
extension_detail_schema = extend_schema(
    operation_id="networking_extension_retrieve",
    responses=envelope("ExtensionEnvelope", "extension", Extension),
)
