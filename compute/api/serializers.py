"""Nova v2.1 shapes (microversion 2.1)."""

import hashlib

import netaddr
from django.conf import settings
from rest_framework import serializers

from compute import selectors
from compute.models import Flavor, Host, Instance, InstanceStatus, TaskState
from compute.services import VM_STATES
from compute.virt import PowerAction
from config.api import MAX_DB_INT
from config.errors import Invalid, WireChoiceField
from config.schema import typed

# Allocation ratios multiply capacity; past this the products stop being
# numbers a host could have.
MAX_RATIO = 10_000.0

NOVA_TIME = "%Y-%m-%dT%H:%M:%SZ"

# The status Nova shows while a reboot runs, whatever the instance's own.
REBOOT_STATUS = {TaskState.REBOOTING: "REBOOT", TaskState.REBOOTING_HARD: "HARD_REBOOT"}


def power_action(body) -> PowerAction:
    """The power action a POST /servers/{id}/action body asks for, or
    Invalid as Nova answers it."""
    if not isinstance(body, dict) or len(body) != 1:
        raise Invalid("Action body must be a JSON object with exactly one action.")
    ((name, argument),) = body.items()
    if name == "os-stop":
        return PowerAction.STOP
    if name == "os-start":
        return PowerAction.START
    if name != "reboot":
        raise Invalid(f"There is no such action: {name}")
    kind = argument.get("type") if isinstance(argument, dict) else None
    if not isinstance(kind, str) or kind.upper() not in ("SOFT", "HARD"):
        raise Invalid(
            "Invalid input for field/attribute type. Value: "
            f"{kind}. 'type' must be one of 'SOFT', 'HARD'"
        )
    return PowerAction.REBOOT_HARD if kind.upper() == "HARD" else PowerAction.REBOOT


def diagnostics(instance: Instance) -> dict:
    """Nova's standard diagnostics (microversion 2.48) from what berth
    knows, and the virt driver's domain (libvirt: its XML)."""
    nics = [nic.port for nic in instance.nics.select_related("port") if nic.port is not None]
    host = instance.host
    return {
        "state": selectors.power_state_name(instance.power_state),
        "driver": host.virt_driver if host else None,
        "hypervisor": host.hypervisor_type.lower() if host else None,
        "hypervisor_os": None,
        "uptime": None,
        "config_drive": False,
        "num_cpus": instance.vcpus,
        "num_nics": len(nics),
        "num_disks": 1,
        "memory_details": {"maximum": instance.memory_mb, "used": None},
        "cpu_details": [],
        "nic_details": [{"mac_address": port.mac_address} for port in nics],
        "disk_details": [],
        "berth:domain": instance.driver_data,
    }


def _time(value) -> str | None:
    return value.strftime(NOVA_TIME) if value else None


def links(request, collection: str, pk) -> list[dict]:
    base = request.build_absolute_uri(f"/{settings.BERTH_COMPUTE_PREFIX}")
    return [
        {"rel": "self", "href": f"{base}/v2.1/{collection}/{pk}"},
        {"rel": "bookmark", "href": f"{base}/{collection}/{pk}"},
    ]


class FlavorSerializer(serializers.Serializer):
    def to_representation(self, flavor: Flavor) -> dict:
        request = self.context["request"]
        return {
            "id": flavor.id,
            "name": flavor.name,
            "vcpus": flavor.vcpus,
            "ram": flavor.ram,
            "disk": flavor.disk,
            "OS-FLV-EXT-DATA:ephemeral": flavor.ephemeral,
            "swap": flavor.swap or "",
            "rxtx_factor": flavor.rxtx_factor,
            "os-flavor-access:is_public": flavor.is_public,
            "OS-FLV-DISABLED:disabled": flavor.disabled,
            "berth:baremetal": flavor.baremetal,
            "links": links(request, "flavors", flavor.id),
        }


class FlavorCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255)
    id = serializers.CharField(max_length=255, required=False, allow_null=True)
    vcpus = serializers.IntegerField(min_value=1, max_value=MAX_DB_INT)
    ram = serializers.IntegerField(min_value=1, max_value=MAX_DB_INT)
    disk = serializers.IntegerField(min_value=0, max_value=MAX_DB_INT)
    swap = serializers.IntegerField(min_value=0, max_value=MAX_DB_INT, required=False)
    rxtx_factor = serializers.FloatField(min_value=0, required=False)

    def get_fields(self):
        fields = super().get_fields()
        fields["OS-FLV-EXT-DATA:ephemeral"] = serializers.IntegerField(
            min_value=0, max_value=MAX_DB_INT, required=False, source="ephemeral"
        )
        fields["os-flavor-access:is_public"] = serializers.BooleanField(
            required=False, source="is_public"
        )
        fields["berth:baremetal"] = serializers.BooleanField(required=False, source="baremetal")
        return fields


def _addresses(instance: Instance) -> dict:
    addresses: dict[str, list] = {}
    for nic in instance.nics.all():
        port = nic.port
        if port is None:
            continue
        for allocation in port.fixed_ips.all():
            addresses.setdefault(port.network.name or str(port.network_id), []).append(
                {
                    "addr": allocation.address,
                    "version": netaddr.IPAddress(allocation.address).version,
                    "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": port.mac_address,
                }
            )
    return addresses


class ServerSerializer(serializers.Serializer):
    def to_representation(self, instance: Instance) -> dict:
        request = self.context["request"]
        context = self.context["context"]
        host = instance.host.name if instance.host else None
        data = {
            "id": str(instance.id),
            "name": instance.name,
            "status": REBOOT_STATUS.get(instance.task_state, instance.status),
            "tenant_id": instance.project_id.hex,
            "user_id": instance.user_id,
            "metadata": instance.metadata,
            "hostId": hashlib.sha224(f"{instance.project_id.hex}{host}".encode()).hexdigest()
            if host
            else "",
            "image": {"id": instance.image_ref, "links": []} if instance.image_ref else "",
            "flavor": {
                "id": instance.flavor_id,
                "links": links(request, "flavors", instance.flavor_id),
            },
            "created": _time(instance.created_at),
            "updated": _time(instance.updated_at),
            "addresses": _addresses(instance),
            "accessIPv4": "",
            "accessIPv6": "",
            "links": links(request, "servers", instance.id),
            "OS-DCF:diskConfig": "MANUAL",
            "progress": 100 if instance.status == InstanceStatus.ACTIVE else 0,
            "OS-EXT-AZ:availability_zone": "nova",
            "config_drive": "",
            "key_name": None,
            "OS-SRV-USG:launched_at": _time(instance.launched_at),
            "OS-SRV-USG:terminated_at": _time(instance.deleted_at),
            "security_groups": [{"name": "default"}],
            "OS-EXT-STS:task_state": instance.task_state,
            "OS-EXT-STS:vm_state": VM_STATES[instance.status],
            "OS-EXT-STS:power_state": instance.power_state,
            "os-extended-volumes:volumes_attached": [],
        }
        if instance.status == InstanceStatus.ERROR and instance.fault:
            fault = {k: instance.fault[k] for k in ("code", "message", "created")}
            if context.is_admin:
                fault["details"] = instance.fault.get("details", "")
            data["fault"] = fault
        if context.is_admin:
            data.update(
                {
                    "OS-EXT-SRV-ATTR:host": host,
                    "OS-EXT-SRV-ATTR:hypervisor_hostname": host,
                    "OS-EXT-SRV-ATTR:instance_name": f"instance-{instance.id.hex[:8]}",
                }
            )
        return data


class ServerBriefSerializer(serializers.Serializer):
    def to_representation(self, instance: Instance) -> dict:
        request = self.context["request"]
        return {
            "id": str(instance.id),
            "name": instance.name,
            "links": links(request, "servers", instance.id),
        }


class NetworkRequestSerializer(serializers.Serializer):
    uuid = serializers.UUIDField(required=False)
    port = serializers.UUIDField(required=False)
    fixed_ip = serializers.IPAddressField(required=False)

    def validate(self, data):
        if "uuid" not in data and "port" not in data:
            raise serializers.ValidationError("Each network needs a 'uuid' or a 'port'.")
        return data


class ServerCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255, trim_whitespace=False)
    flavorRef = serializers.CharField(max_length=255)
    imageRef = serializers.CharField(max_length=255, required=False, allow_blank=True)
    networks = typed(
        {
            "oneOf": [
                {"type": "string", "enum": ["auto", "none"]},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "uuid": {"type": "string", "format": "uuid"},
                            "port": {"type": "string", "format": "uuid"},
                            "fixed_ip": {"type": "string"},
                        },
                    },
                },
            ]
        },
        required=False,
    )
    metadata = serializers.DictField(child=serializers.CharField(max_length=255), required=False)
    min_count = serializers.IntegerField(min_value=1, required=False, default=1)
    max_count = serializers.IntegerField(min_value=1, required=False)

    def validate_networks(self, value):
        if value in ("auto", "none"):
            return value
        if not isinstance(value, list):
            raise serializers.ValidationError("must be a list, 'auto' or 'none'.")
        nested = NetworkRequestSerializer(data=value, many=True)
        nested.is_valid(raise_exception=True)
        return nested.validated_data

    def validate(self, data):
        data.setdefault("max_count", data["min_count"])
        if data["min_count"] > data["max_count"]:
            raise serializers.ValidationError("min_count must be <= max_count.")
        return data


class InterfaceSerializer(serializers.Serializer):
    def to_representation(self, port) -> dict:
        return {
            "port_id": str(port.id),
            "net_id": str(port.network_id),
            "mac_addr": port.mac_address,
            "port_state": port.status,
            "fixed_ips": [
                {"subnet_id": str(a.subnet_id), "ip_address": a.address}
                for a in port.fixed_ips.all()
            ],
            "tag": None,
        }


def hypervisor(host: Host, *, detail: bool) -> dict:
    data = {
        "id": str(host.id),
        "hypervisor_hostname": host.name,
        "state": "up" if selectors.host_is_up(host) else "down",
        "status": "enabled" if host.enabled else "disabled",
    }
    if detail:
        data.update(
            {
                "hypervisor_type": host.hypervisor_type,
                "hypervisor_version": 1,
                "host_ip": None,
                "vcpus": host.vcpus,
                "vcpus_used": host.vcpus_used,
                "memory_mb": host.memory_mb,
                "memory_mb_used": host.memory_mb_used,
                "free_ram_mb": host.memory_mb - host.memory_mb_used,
                "local_gb": host.disk_gb,
                "local_gb_used": host.disk_gb_used,
                "free_disk_gb": host.disk_gb - host.disk_gb_used,
                "running_vms": host.running_instances,
                "current_workload": 0,
                "disk_available_least": host.disk_gb - host.disk_gb_used,
                "cpu_info": "{}",
                "service": {
                    "host": host.name,
                    "id": str(host.id),
                    "disabled_reason": host.disabled_reason or None,
                },
                "berth:allocation_ratios": {
                    "cpu": host.cpu_allocation_ratio,
                    "ram": host.ram_allocation_ratio,
                    "disk": host.disk_allocation_ratio,
                },
                "berth:baremetal": host.baremetal,
                "berth:capabilities": host.capabilities,
            }
        )
    return data


def service(host: Host) -> dict:
    return {
        "id": str(host.id),
        "binary": "nova-compute",
        "host": host.name,
        "zone": "nova",
        "status": "enabled" if host.enabled else "disabled",
        "state": "up" if selectors.host_is_up(host) else "down",
        "updated_at": _time(host.last_heartbeat),
        "disabled_reason": host.disabled_reason or None,
        "forced_down": False,
    }


def instance_action(action, *, with_events: bool, is_admin: bool) -> dict:
    data = {
        "action": action.action,
        "instance_uuid": str(action.instance_id),
        "request_id": action.request_id,
        "user_id": action.user_id,
        "project_id": action.project_id.hex,
        "start_time": _time(action.start_time),
        "updated_at": _time(action.updated_at),
        "message": action.message or None,
    }
    if with_events:
        data["events"] = [
            {
                "event": event.event,
                "start_time": _time(event.start_time),
                "finish_time": _time(event.finish_time),
                "result": event.result or None,
                "berth:attempt": event.attempt,
                # Why a step failed names hosts and repeats the port's
                # binding:failure_reason: admin-only, as Nova's
                # os-instance-actions:events:details policy has it.
                **(
                    {"details": event.details or None, "host": event.host, "traceback": None}
                    if is_admin
                    else {}
                ),
            }
            for event in action.events.all()
        ]
    return data


class PhysnetLinksSerializer(serializers.Serializer):
    """How a host reaches one physical network."""

    bridge = serializers.CharField(max_length=64, allow_blank=True, required=False)
    sriov_interface = serializers.CharField(max_length=64, allow_blank=True, required=False)
    macvtap_interface = serializers.CharField(max_length=64, allow_blank=True, required=False)


class BaremetalNicSerializer(serializers.Serializer):
    """A baremetal node's NIC and the switch port it is cabled to."""

    mac_address = serializers.CharField(max_length=64)
    physical_network = serializers.CharField(max_length=64)
    switch_id = serializers.CharField(max_length=64, allow_blank=True, required=False)
    switch_port = serializers.CharField(max_length=64, allow_blank=True, required=False)
    switch_info = serializers.CharField(max_length=255, allow_blank=True, required=False)


class HostReportSerializer(serializers.Serializer):
    """The body of POST os-host-reports: a host reporting itself."""

    name = serializers.CharField(max_length=255)
    vcpus = serializers.IntegerField(min_value=0, max_value=MAX_DB_INT)
    memory_mb = serializers.IntegerField(min_value=0, max_value=MAX_DB_INT)
    disk_gb = serializers.IntegerField(min_value=0, max_value=MAX_DB_INT)
    hypervisor_type = serializers.CharField(max_length=32, required=False)
    virt_driver = serializers.CharField(max_length=32, required=False)
    baremetal = serializers.BooleanField(required=False)
    cpu_allocation_ratio = serializers.FloatField(
        min_value=0.0001, max_value=MAX_RATIO, required=False
    )
    ram_allocation_ratio = serializers.FloatField(
        min_value=0.0001, max_value=MAX_RATIO, required=False
    )
    disk_allocation_ratio = serializers.FloatField(
        min_value=0.0001, max_value=MAX_RATIO, required=False
    )
    service_version = serializers.IntegerField(min_value=0, max_value=MAX_DB_INT, required=False)
    capabilities = serializers.DictField(required=False)
    driver_options = serializers.DictField(required=False)
    # Network side, as networking's HostNetworkReport, typed to its columns:
    # the service compares and stores these values as given.
    physnets = serializers.DictField(child=PhysnetLinksSerializer(), required=False)
    vnic_types = serializers.ListField(child=serializers.CharField(), required=False)
    datapath_type = WireChoiceField(["system", "netdev"], required=False)
    interface_types = serializers.ListField(child=serializers.CharField(), required=False)
    ovs_hybrid_plug = serializers.BooleanField(required=False)
    tunnel_types = serializers.ListField(child=serializers.CharField(), required=False)
    baremetal_nics = BaremetalNicSerializer(many=True, required=False)

    def validate_physnets(self, value):
        for name in value:
            if not name or len(name) > 64:
                raise serializers.ValidationError(
                    f"physical network names have 1 to 64 characters, not {name!r}."
                )
        return {name: dict(links) for name, links in value.items()}

    def validate_baremetal_nics(self, value):
        return [dict(nic) for nic in value]
