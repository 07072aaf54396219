"""Neutron v2.0 shapes. Output serializers render; input serializers only
validate what a client may send. Wire names with ':' (``binding:host_id``,
``provider:network_type``) are mapped explicitly."""

import copy

from rest_framework import serializers

from config.api import MAX_DB_INT
from config.errors import WireChoiceField
from config.schema import InlineChoiceField
from networking.models import HostAgent, Network, NetworkType, Port, Segment, Subnet, VnicType
from networking.selectors import agents_alive_since


class OpenStackDateTimeField(serializers.DateTimeField):
    """ISO-8601 UTC with a Z and no fraction, as Neutron and Nova send."""

    def __init__(self, **kwargs):
        super().__init__(format="%Y-%m-%dT%H:%M:%SZ", **kwargs)


def _is_admin(serializer) -> bool:
    context = serializer.context.get("context")
    return bool(context and context.is_admin)


class ColonFieldsMixin:
    """Declare wire fields whose names DRF cannot spell as attributes:
    ``colon_fields = {"binding:host_id": Field(source="binding_host")}``."""

    colon_fields: dict = {}

    def get_fields(self):
        fields = super().get_fields()
        for name, field in self.colon_fields.items():
            fields[name] = copy.deepcopy(field)
        return fields


class StandardAttrs(serializers.Serializer):
    """Fields every Neutron resource has."""

    created_at = OpenStackDateTimeField(read_only=True)
    updated_at = OpenStackDateTimeField(read_only=True)
    revision_number = serializers.IntegerField(read_only=True, default=0)

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["tags"] = []
        if hasattr(instance, "project_id"):
            data["project_id"] = data["tenant_id"] = instance.project_id.hex
        return data


# --- networks -------------------------------------------------------------------


def provider_attrs(segment: Segment | None) -> dict:
    return {
        "provider:network_type": segment.network_type if segment else None,
        "provider:physical_network": (segment.physical_network or None) if segment else None,
        "provider:segmentation_id": segment.segmentation_id if segment else None,
    }


class NetworkSerializer(StandardAttrs, serializers.ModelSerializer):
    class Meta:
        model = Network
        fields = [
            "id",
            "name",
            "description",
            "admin_state_up",
            "shared",
            "mtu",
            "created_at",
            "updated_at",
            "revision_number",
        ]

    def to_representation(self, network):
        data = super().to_representation(network)
        segments = list(network.segments.all())
        data.update(
            {
                "status": "ACTIVE" if network.admin_state_up else "DOWN",
                "subnets": [str(s.id) for s in network.subnets.all()],
                "router:external": False,
                "availability_zones": [],
                "availability_zone_hints": [],
                "port_security_enabled": True,
                # A routed network's segments are not one L2 domain.
                "l2_adjacency": len(segments) <= 1,
            }
        )
        if _is_admin(self):
            # Neutron shows provider attributes to admins: flat for one
            # segment, as the multi-provider "segments" list for several.
            if len(segments) == 1:
                data.update(provider_attrs(segments[0]))
            else:
                data.update(provider_attrs(None))
                data["segments"] = [provider_attrs(s) for s in segments]
        return data


class ProviderSerializer(ColonFieldsMixin, serializers.Serializer):
    colon_fields = {
        "provider:network_type": InlineChoiceField(NetworkType.choices, source="network_type"),
        "provider:physical_network": serializers.CharField(
            max_length=64,
            source="physical_network",
            required=False,
            allow_null=True,
            allow_blank=True,
        ),
        "provider:segmentation_id": serializers.IntegerField(
            source="segmentation_id", max_value=MAX_DB_INT, required=False, allow_null=True
        ),
    }


class NetworkWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255, allow_blank=True, required=False)
    description = serializers.CharField(max_length=255, allow_blank=True, required=False)
    admin_state_up = serializers.BooleanField(required=False)
    shared = serializers.BooleanField(required=False)
    mtu = serializers.IntegerField(min_value=68, max_value=65535, required=False)


class NetworkCreateSerializer(ColonFieldsMixin, NetworkWriteSerializer):
    project_id = serializers.UUIDField(required=False)
    tenant_id = serializers.UUIDField(required=False)
    segments = ProviderSerializer(many=True, required=False)
    # The same provider attributes, flat on the network and optional.
    colon_fields = {
        name: type(field)(*field._args, **{**field._kwargs, "required": False})
        for name, field in ProviderSerializer.colon_fields.items()
    }

    def validate(self, data):
        provider = {
            key: data.pop(key)
            for key in ("network_type", "physical_network", "segmentation_id")
            if key in data
        }
        if provider and data.get("segments"):
            raise serializers.ValidationError("Give provider attributes or segments, not both.")
        if provider:
            if "network_type" not in provider:
                raise serializers.ValidationError("provider:network_type is required.")
            data["segments"] = [provider]
        return data


# --- segments -------------------------------------------------------------------


class SegmentSerializer(StandardAttrs, serializers.ModelSerializer):
    network_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = Segment
        fields = [
            "id",
            "network_id",
            "name",
            "description",
            "network_type",
            "physical_network",
            "segmentation_id",
            "created_at",
            "updated_at",
        ]

    def to_representation(self, segment):
        data = super().to_representation(segment)
        data["physical_network"] = segment.physical_network or None
        return data


class SegmentCreateSerializer(serializers.Serializer):
    network_id = serializers.UUIDField()
    name = serializers.CharField(max_length=255, allow_blank=True, allow_null=True, required=False)
    description = serializers.CharField(max_length=255, allow_blank=True, required=False)
    network_type = WireChoiceField(NetworkType.choices)
    physical_network = serializers.CharField(
        max_length=64, required=False, allow_null=True, allow_blank=True
    )
    segmentation_id = serializers.IntegerField(
        max_value=MAX_DB_INT, required=False, allow_null=True
    )


class SegmentUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255, allow_blank=True, required=False)
    description = serializers.CharField(max_length=255, allow_blank=True, required=False)


# --- subnets --------------------------------------------------------------------


class SubnetSerializer(StandardAttrs, serializers.ModelSerializer):
    network_id = serializers.UUIDField(read_only=True)
    segment_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = Subnet
        fields = [
            "id",
            "name",
            "description",
            "network_id",
            "segment_id",
            "ip_version",
            "cidr",
            "gateway_ip",
            "allocation_pools",
            "enable_dhcp",
            "dns_nameservers",
            "host_routes",
            "created_at",
            "updated_at",
            "revision_number",
        ]

    def to_representation(self, subnet):
        data = super().to_representation(subnet)
        data.update(
            {
                "subnetpool_id": None,
                "ipv6_ra_mode": None,
                "ipv6_address_mode": None,
                "service_types": [],
            }
        )
        return data


class PoolSerializer(serializers.Serializer):
    start = serializers.CharField()
    end = serializers.CharField()


class SubnetUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255, allow_blank=True, required=False)
    description = serializers.CharField(max_length=255, allow_blank=True, required=False)
    gateway_ip = serializers.CharField(allow_null=True, allow_blank=True, required=False)
    allocation_pools = PoolSerializer(many=True, required=False)
    enable_dhcp = serializers.BooleanField(required=False)
    dns_nameservers = serializers.ListField(child=serializers.CharField(), required=False)
    host_routes = serializers.ListField(child=serializers.DictField(), required=False)


class SubnetCreateSerializer(SubnetUpdateSerializer):
    network_id = serializers.UUIDField()
    segment_id = serializers.UUIDField(required=False, allow_null=True)
    project_id = serializers.UUIDField(required=False)
    tenant_id = serializers.UUIDField(required=False)
    ip_version = WireChoiceField([4, 6], required=False)
    cidr = serializers.CharField()


# --- ports ----------------------------------------------------------------------

ADMIN_PORT_FIELDS = (
    "binding:host_id",
    "binding:profile",
    "binding:vif_type",
    "binding:vif_details",
    "binding:failure_reason",
)


class PortSerializer(StandardAttrs, serializers.ModelSerializer):
    network_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = Port
        fields = [
            "id",
            "name",
            "description",
            "network_id",
            "mac_address",
            "admin_state_up",
            "status",
            "device_id",
            "device_owner",
            "ip_allocation",
            "created_at",
            "updated_at",
            "revision_number",
        ]

    def to_representation(self, port):
        data = super().to_representation(port)
        data.update(
            {
                "fixed_ips": [
                    {"subnet_id": str(a.subnet_id), "ip_address": a.address}
                    for a in port.fixed_ips.all()
                ],
                "binding:vnic_type": port.binding_vnic_type,
                "security_groups": [],
                "allowed_address_pairs": [],
                "extra_dhcp_opts": [],
                "port_security_enabled": True,
            }
        )
        if _is_admin(self):
            data.update(
                {
                    "binding:host_id": port.binding_host,
                    "binding:profile": port.binding_profile,
                    "binding:vif_type": port.binding_vif_type,
                    "binding:vif_details": port.binding_vif_details,
                    "binding:failure_reason": port.binding_failure,
                }
            )
        return data


class FixedIpSerializer(serializers.Serializer):
    subnet_id = serializers.UUIDField(required=False)
    ip_address = serializers.CharField(required=False)


class PortUpdateSerializer(ColonFieldsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=255, allow_blank=True, required=False)
    description = serializers.CharField(max_length=255, allow_blank=True, required=False)
    admin_state_up = serializers.BooleanField(required=False)
    device_id = serializers.CharField(max_length=255, allow_blank=True, required=False)
    device_owner = serializers.CharField(max_length=255, allow_blank=True, required=False)
    mac_address = serializers.CharField(required=False)
    fixed_ips = FixedIpSerializer(many=True, required=False)
    colon_fields = {
        "binding:host_id": serializers.CharField(
            source="binding_host",
            max_length=255,
            allow_blank=True,
            allow_null=True,
            required=False,
        ),
        "binding:vnic_type": WireChoiceField(
            VnicType.choices, source="binding_vnic_type", required=False
        ),
        "binding:profile": serializers.DictField(
            source="binding_profile", required=False, allow_null=True
        ),
    }

    def validate(self, data):
        if "binding_host" in data and data["binding_host"] is None:
            # As in Neutron, a null host unbinds: `openstack port unset
            # --host` sends it.
            data["binding_host"] = ""
        if "binding_profile" in data and data["binding_profile"] is None:
            data["binding_profile"] = {}
        return data


class PortCreateSerializer(PortUpdateSerializer):
    network_id = serializers.UUIDField()
    project_id = serializers.UUIDField(required=False)
    tenant_id = serializers.UUIDField(required=False)

    def validate(self, data):
        if data.get("binding_host") is None:
            data.pop("binding_host", None)  # a new port is unbound anyway
        return super().validate(data)


# --- IP availability ----------------------------------------------------------------


def ip_availability(network, per_subnet: dict, per_segment: dict) -> dict:
    subnets = list(network.subnets.all())
    return {
        "network_id": str(network.id),
        "network_name": network.name,
        "project_id": network.project_id.hex,
        "tenant_id": network.project_id.hex,
        "total_ips": sum(per_subnet[s.id].total_ips for s in subnets),
        "used_ips": sum(per_subnet[s.id].used_ips for s in subnets),
        "subnet_ip_availability": [
            {
                "subnet_id": str(s.id),
                "subnet_name": s.name,
                "cidr": s.cidr,
                "ip_version": s.ip_version,
                "segment_id": str(s.segment_id) if s.segment_id else None,
                "total_ips": per_subnet[s.id].total_ips,
                "used_ips": per_subnet[s.id].used_ips,
            }
            for s in subnets
        ],
        # berth's extension: how full each segment of a routed network is.
        "segment_ip_availability": [
            {
                "segment_id": str(seg.id),
                "segment_name": seg.name,
                "physical_network": seg.physical_network or None,
                "total_ips": per_segment[seg.id].total_ips,
                "used_ips": per_segment[seg.id].used_ips,
            }
            for seg in network.segments.all()
        ],
    }


# --- agents ---------------------------------------------------------------------------


class AgentSerializer(serializers.ModelSerializer):
    class Meta:
        model = HostAgent
        fields = ["id", "host", "admin_state_up"]

    def to_representation(self, agent):
        data = super().to_representation(agent)
        physnets = list(agent.physnets.all())
        data.update(
            {
                "agent_type": "berth host agent",
                "binary": "berth-host-report",
                "topic": "N/A",
                "alive": agent.heartbeat_at >= agents_alive_since(),
                "heartbeat_timestamp": agent.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S"),
                "created_at": agent.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                "started_at": agent.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                "availability_zone": None,
                "description": "",
                "configurations": {
                    "bridge_mappings": {p.physical_network: p.bridge for p in physnets if p.bridge},
                    "device_mappings": {
                        p.physical_network: [p.sriov_interface]
                        for p in physnets
                        if p.sriov_interface
                    },
                    "interface_mappings": {
                        p.physical_network: p.macvtap_interface
                        for p in physnets
                        if p.macvtap_interface
                    },
                    "datapath_type": agent.datapath_type,
                    "ovs_capabilities": {"iface_types": agent.interface_types},
                    "ovs_hybrid_plug": agent.ovs_hybrid_plug,
                    "integration_bridge": agent.bridge_name,
                    "tunnel_types": agent.tunnel_types,
                    "vnic_types": sorted(v.vnic_type for v in agent.vnic_types.all()),
                    "baremetal_nics": [
                        {
                            "mac_address": n.mac_address,
                            "physical_network": n.physical_network,
                            "switch_id": n.switch_id,
                            "port_id": n.switch_port,
                            "switch_info": n.switch_info,
                        }
                        for n in agent.baremetal_nics.all()
                    ],
                },
            }
        )
        return data


class AgentUpdateSerializer(serializers.Serializer):
    admin_state_up = serializers.BooleanField(required=False)
