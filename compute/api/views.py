"""Nova v2.1 endpoints: thin views over compute's services and selectors."""

import re
import uuid

from rest_framework.decorators import action
from rest_framework.response import Response

from compute import selectors, services
from compute.api import schema as docs
from compute.api import serializers as s
from compute.filters import FlavorFilter, HostFilter, ServerFilter
from compute.models import Flavor, Host, Instance
from config.api import OpenStackGenericViewSet, OpenStackViewSet
from config.discovery import COMPUTE_MAX_MICROVERSION
from config.errors import BerthError, Invalid, NotFound
from networking.services import HostNetworkReport

SUPPORTED_MICROVERSIONS = {"2.1", "latest"}


class NotAcceptable(BerthError):
    status = 406
    type = "HTTPNotAcceptable"


def requested_microversion(request) -> str | None:
    header = request.headers.get("OpenStack-API-Version", "")
    match = re.match(r"\s*compute\s+(\S+)", header)
    if match:
        return match.group(1)
    return request.headers.get("X-OpenStack-Nova-API-Version")


class NovaMixin:
    """Microversion negotiation: berth implements 2.1 only; anything else
    asked for is 406, as Nova answers an unsupported version."""

    def initial(self, request, *args, **kwargs):
        version = requested_microversion(request)
        if version is not None and version not in SUPPORTED_MICROVERSIONS:
            raise NotAcceptable(
                f"Version {version} is not supported by the API. Minimum is 2.1 and maximum "
                f"is {COMPUTE_MAX_MICROVERSION}."
            )
        super().initial(request, *args, **kwargs)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["OpenStack-API-Version"] = f"compute {COMPUTE_MAX_MICROVERSION}"
        response["X-OpenStack-Nova-API-Version"] = COMPUTE_MAX_MICROVERSION
        response["Vary"] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
        return response


class NovaViewSet(NovaMixin, OpenStackViewSet):
    """A Nova collection: list and show, with microversion negotiation."""


@docs.flavor_schema
class FlavorViewSet(NovaViewSet):
    resource = "flavor"
    collection = "flavors"
    serializer_class = s.FlavorSerializer
    filterset_class = FlavorFilter
    admin_actions = ("create", "destroy", "extra_specs_write", "extra_spec_delete")
    queryset = Flavor.objects.none()

    def visible(self, context):
        return selectors.flavor_list(context=context)

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        wanted = self.request.query_params.get("is_public", "true").lower()
        if wanted in ("true", "1", "yes"):
            return queryset.filter(is_public=True)
        if wanted in ("false", "0", "no"):
            return queryset.filter(is_public=False)
        return queryset  # "None": every flavor the caller may see

    def get_object(self):
        flavor = self.get_queryset().filter(pk=self.kwargs["pk"]).first()
        if flavor is None:
            raise NotFound(f"Flavor {self.kwargs['pk']} could not be found.")
        return flavor

    def list(self, request):
        response = super().list(request)
        response.data["flavors"] = [
            {k: f[k] for k in ("id", "name", "links")} for f in response.data["flavors"]
        ]
        return response

    @action(detail=False, url_path="detail")
    def list_detail(self, request):
        return super().list(request)

    def create(self, request):
        fields = self.validated(s.FlavorCreateSerializer, self.body())
        # No id (or null) means the service picks one, as Nova does.
        fields.setdefault("id", None)
        return self.respond(services.flavor_create(**fields))

    def destroy(self, request, pk=None):
        services.flavor_delete(flavor=self.get_object())
        return Response(status=202)

    @action(detail=True, methods=["get", "post"], url_path="os-extra_specs")
    def extra_specs(self, request, pk=None):
        flavor = self.get_object()
        if request.method == "POST":
            self.action = "extra_specs_write"
            self.check_permissions(request)
            specs = request.data.get("extra_specs") if isinstance(request.data, dict) else None
            if not isinstance(specs, dict):
                raise Invalid("Request body must be {'extra_specs': {...}}.")
            flavor = services.flavor_set_extra_specs(flavor=flavor, specs=specs)
        return Response({"extra_specs": flavor.extra_specs})

    @action(detail=True, methods=["get", "delete"], url_path=r"os-extra_specs/(?P<key>[^/]+)")
    def extra_spec(self, request, pk=None, key=None):
        flavor = self.get_object()
        if request.method == "DELETE":
            self.action = "extra_spec_delete"
            self.check_permissions(request)
            services.flavor_unset_extra_spec(flavor=flavor, key=key)
            return Response(status=200)
        if key not in flavor.extra_specs:
            raise NotFound(f"Flavor {flavor.pk} has no extra spec with key {key}.")
        return Response({key: flavor.extra_specs[key]})


@docs.server_schema
class ServerViewSet(NovaViewSet):
    resource = "server"
    collection = "servers"
    serializer_class = s.ServerSerializer
    filterset_class = ServerFilter
    admin_actions = ("diagnostics",)

    queryset = Instance.objects.none()

    def visible(self, context):
        params = self.request.query_params
        flag = params.get("all_tenants", params.get("all_projects"))
        everything = flag is not None and flag.lower() in ("", "1", "true", "yes")
        # all_tenants only widens lists: an admin names any project's server
        # by its id, as in Nova (the selector ignores the flag for others).
        everything = everything or bool(self.detail)
        return selectors.server_list(context=context, all_projects=everything)

    def get_serializer_class(self):
        return s.ServerBriefSerializer if self.action == "list" else s.ServerSerializer

    def not_found(self, pk) -> NotFound:
        return NotFound(f"Instance {pk} could not be found.")

    @action(detail=False, url_path="detail")
    def list_detail(self, request):
        return super().list(request)

    def create(self, request):
        body = self.body()
        fields = self.validated(s.ServerCreateSerializer, body)
        flavor = selectors.flavor_list(context=self.context).filter(pk=fields["flavorRef"]).first()
        if flavor is None or flavor.disabled:
            raise Invalid(f"Flavor {fields['flavorRef']} could not be found.")
        # Nova reads both names; openstacksdk sends the older one.
        hints = next(
            (
                found
                for key in ("os:scheduler_hints", "OS-SCH-HNT:scheduler_hints")
                for found in (request.data.get(key), body.get(key))
                if found
            ),
            {},
        )
        instances = services.server_create(
            context=self.context,
            name=fields["name"],
            flavor=flavor,
            nics=selectors.nic_requests(context=self.context, requested=fields.get("networks")),
            image_ref=selectors.image_ref_checked(
                context=self.context, image_ref=fields.get("imageRef", "")
            ),
            metadata=fields.get("metadata"),
            reservation_id=str(hints.get("reservation", "")) if isinstance(hints, dict) else "",
            min_count=fields["min_count"],
            max_count=fields["max_count"],
        )
        first = instances[0]
        return Response(
            {
                "server": {
                    "id": str(first.id),
                    "links": s.links(request, "servers", first.id),
                    "OS-DCF:diskConfig": "MANUAL",
                    "security_groups": [{"name": "default"}],
                    "adminPass": uuid.uuid4().hex[:12],
                }
            },
            status=202,
        )

    def destroy(self, request, pk=None):
        services.server_delete(context=self.context, instance=self.get_owned_object())
        return Response(status=204)

    @action(detail=True, methods=["post"], url_path="action")
    def server_action(self, request, pk=None):
        """Nova's server actions that berth runs: os-stop, os-start, reboot
        (SOFT or HARD); accepted with 202, run by the server's host."""
        power = s.power_action(request.data)
        services.server_power(context=self.context, instance=self.get_owned_object(), action=power)
        return Response(status=202)

    @action(detail=True, url_path="diagnostics")
    def diagnostics(self, request, pk=None):
        """Nova's server diagnostics (admin only): what the host runs, with
        the domain the virt driver made (libvirt: its XML)."""
        instance = self.get_object()
        return Response(s.diagnostics(instance))

    @action(detail=True, url_path="os-interface")
    def interfaces(self, request, pk=None):
        instance = self.get_object()
        ports = [nic.port for nic in instance.nics.all() if nic.port is not None]
        return Response({"interfaceAttachments": s.InterfaceSerializer(ports, many=True).data})

    @action(detail=True, url_path=r"os-interface/(?P<port_id>[^/]+)")
    def interface(self, request, pk=None, port_id=None):
        instance = self.get_object()
        for nic in instance.nics.all():
            if nic.port is not None and str(nic.port.pk) == port_id:
                return Response({"interfaceAttachment": s.InterfaceSerializer(nic.port).data})
        raise NotFound(f"Port {port_id} is not attached to instance {instance.pk}.")

    @action(detail=True, url_path="os-instance-actions")
    def instance_actions(self, request, pk=None):
        instance = self.get_object()
        return Response(
            {
                "instanceActions": [
                    s.instance_action(a, with_events=False, is_admin=self.context.is_admin)
                    for a in instance.actions.all().order_by("-start_time")
                ]
            }
        )

    @action(detail=True, url_path=r"os-instance-actions/(?P<request_id>[^/]+)")
    def instance_action(self, request, pk=None, request_id=None):
        instance = self.get_object()
        found = instance.actions.filter(request_id=request_id).prefetch_related("events").first()
        if found is None:
            raise NotFound(f"Action {request_id} on instance {instance.pk} could not be found.")
        data = s.instance_action(found, with_events=True, is_admin=self.context.is_admin)
        return Response({"instanceAction": data})


@docs.hypervisor_schema
class HypervisorViewSet(NovaViewSet):
    resource = "hypervisor"
    collection = "hypervisors"
    paged = False
    filterset_class = HostFilter
    admin_actions = ("list", "retrieve", "list_detail")
    queryset = Host.objects.none()

    def visible(self, context):
        return selectors.host_list()

    def list(self, request):
        hosts = self.filter_queryset(self.get_queryset())
        return Response({"hypervisors": [s.hypervisor(h, detail=False) for h in hosts]})

    @action(detail=False, url_path="detail")
    def list_detail(self, request):
        hosts = self.filter_queryset(self.get_queryset())
        return Response({"hypervisors": [s.hypervisor(h, detail=True) for h in hosts]})

    def retrieve(self, request, pk=None):
        return Response({"hypervisor": s.hypervisor(self.get_object(), detail=True)})


@docs.service_schema
class ServiceViewSet(NovaMixin, OpenStackGenericViewSet):
    """os-services: one nova-compute service per host; disabling a host
    takes it out of scheduling."""

    resource = "service"
    collection = "services"
    paged = False
    filterset_class = HostFilter
    admin_actions = ("list", "disable", "enable", "disable_log_reason", "update")
    queryset = Host.objects.none()

    def visible(self, context):
        return selectors.host_list()

    def list(self, request):
        hosts = self.filter_queryset(self.get_queryset())
        return Response({"services": [s.service(h) for h in hosts]})

    def _named_host(self) -> Host:
        body = self.request.data if isinstance(self.request.data, dict) else {}
        name = body.get("host")
        host = Host.objects.filter(name=name).first() if name else None
        if host is None:
            raise NotFound(f"Host {name} could not be found.")
        return host

    def _set(self, enabled: bool, reason: str = "") -> Response:
        host = services.host_set_enabled(host=self._named_host(), enabled=enabled, reason=reason)
        status = "enabled" if host.enabled else "disabled"
        body = {"host": host.name, "binary": "nova-compute", "status": status}
        if reason:
            body["disabled_reason"] = reason
        return Response({"service": body})

    @action(detail=False, methods=["put"])
    def disable(self, request):
        return self._set(False)

    @action(detail=False, methods=["put"])
    def enable(self, request):
        return self._set(True)

    @action(detail=False, methods=["put"], url_path="disable-log-reason")
    def disable_log_reason(self, request):
        reason = request.data.get("disabled_reason", "") if isinstance(request.data, dict) else ""
        return self._set(False, str(reason)[:255])

    def update(self, request, pk=None):
        """The 2.53 form: PUT os-services/{id} {"status": "disabled"}."""
        host = self.get_object()
        status = request.data.get("status") if isinstance(request.data, dict) else None
        if status not in ("enabled", "disabled"):
            raise Invalid("status must be 'enabled' or 'disabled'.")
        reason = str(request.data.get("disabled_reason") or "")[:255]
        host = services.host_set_enabled(host=host, enabled=status == "enabled", reason=reason)
        return Response({"service": s.service(host)})


@docs.host_report_schema
class HostReportViewSet(NovaMixin, OpenStackGenericViewSet):
    """berth's host reporting (not in Nova): a host upserts itself; a
    repeated report is a heartbeat. Admin only."""

    resource = "host_report"
    collection = "host_reports"
    admin_actions = ("create",)
    queryset = Host.objects.none()

    def visible(self, context):
        return selectors.host_list()

    def create(self, request):
        fields = dict(self.validated(s.HostReportSerializer, self.body()))
        network_keys = (
            "physnets",
            "vnic_types",
            "datapath_type",
            "interface_types",
            "ovs_hybrid_plug",
            "tunnel_types",
            "baremetal_nics",
        )
        network = {k: fields.pop(k) for k in network_keys if k in fields}
        report = services.HostReport(
            **fields, network=HostNetworkReport(host=fields["name"], **network)
        )
        host = services.host_report(report=report)
        return Response({"hypervisor": s.hypervisor(host, detail=True)})
