"""Neutron v2.0 shapes. Output serializers render; input serializers only
validate what a client may send."""

from rest_framework import serializers

from networking.models import Network


class OpenStackDateTimeField(serializers.DateTimeField):
    """ISO-8601 UTC with a Z and no fraction, as Neutron and Nova send."""

    def __init__(self, **kwargs):
        super().__init__(format="%Y-%m-%dT%H:%M:%SZ", **kwargs)


class NetworkSerializer(serializers.ModelSerializer):
    project_id = serializers.SerializerMethodField()
    tenant_id = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()
    subnets = serializers.SerializerMethodField()
    created_at = OpenStackDateTimeField()
    updated_at = OpenStackDateTimeField()

    class Meta:
        model = Network
        fields = [
            "id",
            "name",
            "description",
            "status",
            "admin_state_up",
            "shared",
            "mtu",
            "subnets",
            "project_id",
            "tenant_id",
            "revision_number",
            "created_at",
            "updated_at",
        ]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data.update(
            {
                "router:external": False,
                "availability_zones": [],
                "availability_zone_hints": [],
                "tags": [],
                "port_security_enabled": True,
            }
        )
        return data

    def get_project_id(self, network) -> str:
        return network.project_id.hex

    get_tenant_id = get_project_id

    def get_status(self, network) -> str:
        return "ACTIVE" if network.admin_state_up else "DOWN"

    def get_subnets(self, network) -> list[str]:
        return []


class NetworkWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255, allow_blank=True, required=False)
    description = serializers.CharField(max_length=255, allow_blank=True, required=False)
    admin_state_up = serializers.BooleanField(required=False)
    shared = serializers.BooleanField(required=False)
    mtu = serializers.IntegerField(min_value=68, max_value=65535, required=False)


class NetworkCreateSerializer(NetworkWriteSerializer):
    project_id = serializers.UUIDField(required=False)
    tenant_id = serializers.UUIDField(required=False)
