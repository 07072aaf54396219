"""The Nova v2.1 bodies as the OpenAPI schema describes them (what
``serializers`` renders and accepts, envelopes included)."""

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers as f

from compute.api import serializers as s
from compute.models import InstanceStatus, TaskState
from compute.virt import PowerState
from config.schema import (
    InlineChoiceField,
    Link,
    collection,
    envelope,
    hex_id,
    mapping,
    nullable_text,
    shape,
    text,
    typed,
)


def links() -> f.ListField:
    return Link(many=True)


FlavorBrief = shape("FlavorBrief", {"id": f.CharField(), "name": f.CharField(), "links": links()})
Flavor = shape(
    "Flavor",
    {
        "id": f.CharField(),
        "name": f.CharField(),
        "vcpus": f.IntegerField(),
        "ram": f.IntegerField(),
        "disk": f.IntegerField(),
        "OS-FLV-EXT-DATA:ephemeral": f.IntegerField(),
        # Nova writes no swap as "".
        "swap": typed({"oneOf": [{"type": "integer"}, {"type": "string", "enum": [""]}]}),
        "rxtx_factor": f.FloatField(),
        "os-flavor-access:is_public": f.BooleanField(),
        "OS-FLV-DISABLED:disabled": f.BooleanField(),
        "berth:baremetal": f.BooleanField(),
        "links": links(),
    },
)
ExtraSpecs = shape("FlavorExtraSpecs", {"extra_specs": f.DictField(child=text())})
# GET os-extra_specs/{key} answers {key: value}.
EXTRA_SPEC = {
    "type": "object",
    "additionalProperties": {"type": "string"},
    "minProperties": 1,
    "maxProperties": 1,
}

Address = shape(
    "ServerAddress",
    {
        "addr": f.CharField(),
        "version": InlineChoiceField([4, 6]),
        "OS-EXT-IPS:type": f.CharField(),
        "OS-EXT-IPS-MAC:mac_addr": f.CharField(),
    },
)
Fault = shape(
    "ServerFault",
    {
        "code": f.IntegerField(),
        "message": text(),
        "created": f.CharField(),
        # Admins only.
        "details": text(required=False),
    },
)
SecurityGroupName = shape("SecurityGroupName", {"name": f.CharField()})
Server = shape(
    "Server",
    {
        "id": f.UUIDField(),
        "name": text(),
        # While a reboot runs: REBOOT or HARD_REBOOT.
        "status": InlineChoiceField([*InstanceStatus.values, "REBOOT", "HARD_REBOOT"]),
        "tenant_id": hex_id(),
        "user_id": text(),
        "metadata": f.DictField(child=text()),
        "hostId": text(),
        # "" when booted without an image.
        "image": typed(
            {
                "oneOf": [
                    {"type": "string", "enum": [""]},
                    {
                        "type": "object",
                        "properties": {"id": {"type": "string"}, "links": {"type": "array"}},
                        "required": ["id", "links"],
                    },
                ]
            }
        ),
        "flavor": shape("ServerFlavor", {"id": f.CharField(), "links": links()})(),
        "created": f.DateTimeField(),
        "updated": f.DateTimeField(),
        "addresses": f.DictField(child=Address(many=True)),
        "accessIPv4": text(),
        "accessIPv6": text(),
        "links": links(),
        "OS-DCF:diskConfig": f.CharField(),
        "progress": f.IntegerField(),
        "OS-EXT-AZ:availability_zone": f.CharField(),
        "config_drive": text(),
        "key_name": nullable_text(),
        "OS-SRV-USG:launched_at": f.DateTimeField(allow_null=True),
        "OS-SRV-USG:terminated_at": f.DateTimeField(allow_null=True),
        "security_groups": SecurityGroupName(many=True),
        "OS-EXT-STS:task_state": InlineChoiceField(TaskState.choices, allow_null=True),
        "OS-EXT-STS:vm_state": f.CharField(),
        "OS-EXT-STS:power_state": InlineChoiceField([state.value for state in PowerState]),
        "os-extended-volumes:volumes_attached": f.ListField(child=mapping()),
        # Only while status is ERROR.
        "fault": Fault(required=False),
        # Admins only.
        "OS-EXT-SRV-ATTR:host": nullable_text(required=False),
        "OS-EXT-SRV-ATTR:hypervisor_hostname": nullable_text(required=False),
        "OS-EXT-SRV-ATTR:instance_name": f.CharField(required=False),
    },
)
# POST /servers/{id}/action: exactly one of these keys.
SERVER_ACTION = {
    "type": "object",
    "oneOf": [
        {"required": ["os-stop"], "properties": {"os-stop": {"type": "object", "nullable": True}}},
        {
            "required": ["os-start"],
            "properties": {"os-start": {"type": "object", "nullable": True}},
        },
        {
            "required": ["reboot"],
            "properties": {
                "reboot": {
                    "type": "object",
                    "properties": {"type": {"type": "string", "enum": ["SOFT", "HARD"]}},
                    "required": ["type"],
                }
            },
        },
    ],
    "minProperties": 1,
    "maxProperties": 1,
}
Diagnostics = shape(
    "ServerDiagnostics",
    {
        "state": f.CharField(),
        "driver": nullable_text(),
        "hypervisor": nullable_text(),
        "hypervisor_os": nullable_text(),
        "uptime": f.IntegerField(allow_null=True),
        "config_drive": f.BooleanField(),
        "num_cpus": f.IntegerField(),
        "num_nics": f.IntegerField(),
        "num_disks": f.IntegerField(),
        "memory_details": mapping(),
        "cpu_details": f.ListField(child=mapping()),
        "nic_details": f.ListField(child=mapping()),
        "disk_details": f.ListField(child=mapping()),
        # The virt driver's domain (libvirt: its XML).
        "berth:domain": text(),
    },
)
ServerBrief = shape("ServerBrief", {"id": f.UUIDField(), "name": text(), "links": links()})
ServerCreated = shape(
    "ServerCreated",
    {
        "id": f.UUIDField(),
        "links": links(),
        "OS-DCF:diskConfig": f.CharField(),
        "security_groups": SecurityGroupName(many=True),
        "adminPass": f.CharField(),
    },
)
ServerCreateRequest = shape(
    "ServerCreateRequest",
    {
        "server": s.ServerCreateSerializer(),
        "os:scheduler_hints": shape("SchedulerHints", {"reservation": f.CharField()})(
            required=False
        ),
    },
)

Interface = shape(
    "InterfaceAttachment",
    {
        "port_id": f.UUIDField(),
        "net_id": f.UUIDField(),
        "mac_addr": f.CharField(),
        "port_state": f.CharField(),
        "fixed_ips": shape(
            "InterfaceFixedIp", {"subnet_id": f.UUIDField(), "ip_address": f.CharField()}
        )(many=True),
        "tag": nullable_text(),
    },
)

ActionEvent = shape(
    "InstanceActionEvent",
    {
        "event": f.CharField(),
        "start_time": f.DateTimeField(),
        "finish_time": f.DateTimeField(allow_null=True),
        "result": nullable_text(),
        "details": nullable_text(),
        "berth:attempt": f.IntegerField(),
        # Admins only.
        "host": text(required=False),
        "traceback": nullable_text(required=False),
    },
)
ACTION_FIELDS = {
    "action": f.CharField(),
    "instance_uuid": f.UUIDField(),
    "request_id": f.CharField(),
    "user_id": text(),
    "project_id": hex_id(),
    "start_time": f.DateTimeField(),
    "updated_at": f.DateTimeField(allow_null=True),
    "message": nullable_text(),
}
InstanceAction = shape("InstanceAction", ACTION_FIELDS)
InstanceActionDetail = shape(
    "InstanceActionDetail", {**ACTION_FIELDS, "events": ActionEvent(many=True)}
)

HYPERVISOR_FIELDS = {
    "id": f.UUIDField(),
    "hypervisor_hostname": f.CharField(),
    "state": InlineChoiceField(["up", "down"]),
    "status": InlineChoiceField(["enabled", "disabled"]),
}
HypervisorBrief = shape("HypervisorBrief", HYPERVISOR_FIELDS)
Hypervisor = shape(
    "Hypervisor",
    {
        **HYPERVISOR_FIELDS,
        "hypervisor_type": f.CharField(),
        "hypervisor_version": f.IntegerField(),
        "host_ip": nullable_text(),
        "vcpus": f.IntegerField(),
        "vcpus_used": f.IntegerField(),
        "memory_mb": f.IntegerField(),
        "memory_mb_used": f.IntegerField(),
        "free_ram_mb": f.IntegerField(),
        "local_gb": f.IntegerField(),
        "local_gb_used": f.IntegerField(),
        "free_disk_gb": f.IntegerField(),
        "running_vms": f.IntegerField(),
        "current_workload": f.IntegerField(),
        "disk_available_least": f.IntegerField(),
        "cpu_info": f.CharField(),
        "service": shape(
            "HypervisorService",
            {"host": f.CharField(), "id": f.UUIDField(), "disabled_reason": nullable_text()},
        )(),
        "berth:allocation_ratios": shape(
            "AllocationRatios",
            {"cpu": f.FloatField(), "ram": f.FloatField(), "disk": f.FloatField()},
        )(),
        "berth:baremetal": f.BooleanField(),
        "berth:capabilities": mapping(),
    },
)

Service = shape(
    "ComputeService",
    {
        "id": f.UUIDField(),
        "binary": f.CharField(),
        "host": f.CharField(),
        "zone": f.CharField(),
        "status": InlineChoiceField(["enabled", "disabled"]),
        "state": InlineChoiceField(["up", "down"]),
        "updated_at": f.DateTimeField(allow_null=True),
        "disabled_reason": nullable_text(),
        "forced_down": f.BooleanField(),
    },
)
ServiceStatus = shape(
    "ComputeServiceStatus",
    {
        "host": f.CharField(),
        "binary": f.CharField(),
        "status": InlineChoiceField(["enabled", "disabled"]),
        "disabled_reason": text(required=False),
    },
)
ServiceHostRequest = shape(
    "ComputeServiceHostRequest", {"host": f.CharField(), "binary": f.CharField(required=False)}
)
ServiceReasonRequest = shape(
    "ComputeServiceReasonRequest",
    {
        "host": f.CharField(),
        "binary": f.CharField(required=False),
        "disabled_reason": text(required=False),
    },
)
ServiceUpdateRequest = shape(
    "ComputeServiceUpdateRequest",
    {
        "status": InlineChoiceField(["enabled", "disabled"]),
        "disabled_reason": text(required=False),
    },
)

flavor_schema = extend_schema_view(
    list=extend_schema(
        parameters=[OpenApiParameter("is_public", str, description="true, false or None (all).")],
        responses=collection("FlavorList", "flavors", FlavorBrief),
    ),
    list_detail=extend_schema(
        parameters=[OpenApiParameter("is_public", str, description="true, false or None (all).")],
        responses=collection("FlavorDetailList", "flavors", Flavor),
    ),
    retrieve=extend_schema(responses=envelope("FlavorEnvelope", "flavor", Flavor)),
    create=extend_schema(
        request=envelope("FlavorCreateRequest", "flavor", s.FlavorCreateSerializer),
        responses={200: envelope("FlavorEnvelope", "flavor", Flavor)},
    ),
    destroy=extend_schema(responses={202: None}),
    extra_specs=[
        extend_schema(methods=["GET"], responses=ExtraSpecs),
        extend_schema(methods=["POST"], request=ExtraSpecs, responses=ExtraSpecs),
    ],
    extra_spec=[
        extend_schema(methods=["GET"], responses={200: EXTRA_SPEC}),
        extend_schema(methods=["DELETE"], responses={200: None}),
    ],
)

ALL_PROJECTS = [
    OpenApiParameter("all_tenants", str, description="Any project's servers (admins)."),
    OpenApiParameter("all_projects", str, description="The same as all_tenants."),
]
server_schema = extend_schema_view(
    list=extend_schema(
        parameters=ALL_PROJECTS, responses=collection("ServerList", "servers", ServerBrief)
    ),
    list_detail=extend_schema(
        parameters=ALL_PROJECTS, responses=collection("ServerDetailList", "servers", Server)
    ),
    retrieve=extend_schema(responses=envelope("ServerEnvelope", "server", Server)),
    create=extend_schema(
        request=ServerCreateRequest,
        responses={202: envelope("ServerCreatedEnvelope", "server", ServerCreated)},
    ),
    destroy=extend_schema(responses={204: None}),
    server_action=extend_schema(request={"application/json": SERVER_ACTION}, responses={202: None}),
    diagnostics=extend_schema(responses=Diagnostics),
    interfaces=extend_schema(
        responses=collection(
            "InterfaceAttachmentList", "interfaceAttachments", Interface, paged=False
        )
    ),
    interface=extend_schema(
        responses=envelope("InterfaceAttachmentEnvelope", "interfaceAttachment", Interface)
    ),
    instance_actions=extend_schema(
        responses=collection("InstanceActionList", "instanceActions", InstanceAction, paged=False)
    ),
    instance_action=extend_schema(
        responses=envelope("InstanceActionEnvelope", "instanceAction", InstanceActionDetail)
    ),
)

hypervisor_schema = extend_schema_view(
    list=extend_schema(
        responses=collection("HypervisorList", "hypervisors", HypervisorBrief, paged=False)
    ),
    list_detail=extend_schema(
        responses=collection("HypervisorDetailList", "hypervisors", Hypervisor, paged=False)
    ),
    retrieve=extend_schema(responses=envelope("HypervisorEnvelope", "hypervisor", Hypervisor)),
)

SERVICE_STATUS = envelope("ComputeServiceStatusEnvelope", "service", ServiceStatus)
service_schema = extend_schema_view(
    list=extend_schema(
        responses=collection("ComputeServiceList", "services", Service, paged=False)
    ),
    disable=extend_schema(request=ServiceHostRequest, responses=SERVICE_STATUS),
    enable=extend_schema(request=ServiceHostRequest, responses=SERVICE_STATUS),
    disable_log_reason=extend_schema(request=ServiceReasonRequest, responses=SERVICE_STATUS),
    update=extend_schema(
        request=ServiceUpdateRequest,
        responses=envelope("ComputeServiceEnvelope", "service", Service),
    ),
)

host_report_schema = extend_schema_view(
    create=extend_schema(
        request=envelope("HostReportRequest", "host_report", s.HostReportSerializer),
        responses={200: envelope("HypervisorEnvelope", "hypervisor", Hypervisor)},
    ),
)
