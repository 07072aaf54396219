"""Neutron v2.0 endpoints: thin views over networking's services and selectors."""

import uuid

from rest_framework import views
from rest_framework.response import Response

from config.api import DestroyMixin, OpenStackAutoSchema, OpenStackViewSet
from config.errors import Forbidden, Invalid, NotFound
from identity.auth import RequestContext
from networking import selectors, services
from networking.api import schema as docs
from networking.api import serializers as s
from networking.filters import (
    AgentFilter,
    NetworkFilter,
    PortFilter,
    SegmentFilter,
    SubnetFilter,
)
from networking.models import HostAgent, Network, Port, Segment, Subnet


def visible_network(context: RequestContext, network_id, *, to_change: bool = False) -> Network:
    """The network the caller names in a body; 404 if it cannot see it, 403
    if it must own it (add subnets, set MACs) and does not."""
    network = selectors.network_list(context=context).filter(pk=network_id).first()
    if network is None:
        raise NotFound(f"Network {network_id} could not be found.", type="NetworkNotFound")
    if to_change and not context.is_admin and network.project_id != context.project_id:
        raise Forbidden(f"Network {network_id} belongs to another project.")
    return network


@docs.network_schema
class NetworkViewSet(DestroyMixin, OpenStackViewSet):
    queryset = Network.objects.none()
    resource = "network"
    collection = "networks"
    not_found_type = "NetworkNotFound"
    serializer_class = s.NetworkSerializer
    filterset_class = NetworkFilter

    def visible(self, context):
        return selectors.network_list(context=context)

    def create(self, request):
        fields = self.validated(s.NetworkCreateSerializer, self.body())
        project = self.target_project(fields)
        network = services.network_create(context=self.context, project=project, **fields)
        return self.respond(network, status=201)

    def update(self, request, pk=None):
        fields = self.validated(s.NetworkWriteSerializer, self.body())
        network = services.network_update(
            context=self.context, network=self.get_owned_object(), **fields
        )
        return self.respond(network)

    def perform_destroy(self, network):
        services.network_delete(network=network)


@docs.segment_schema
class SegmentViewSet(DestroyMixin, OpenStackViewSet):
    queryset = Segment.objects.none()
    resource = "segment"
    collection = "segments"
    not_found_type = "SegmentNotFound"
    serializer_class = s.SegmentSerializer
    filterset_class = SegmentFilter
    # Segments are provider configuration: only admins change them.
    admin_actions = ("create", "update", "partial_update", "destroy")

    def visible(self, context):
        # Neutron's policy: only admins read segments either (they name the
        # physical networks, VLANs and VNIs of the cloud). As Neutron drops
        # what policy hides, a member's list is empty and a segment is not
        # found: a 403 would confirm that the id exists.
        if not context.is_admin:
            return Segment.objects.none()
        return selectors.segment_list(context=context)

    def create(self, request):
        fields = self.validated(s.SegmentCreateSerializer, self.body())
        network = visible_network(self.context, fields.pop("network_id"))
        fields["name"] = fields.get("name") or ""
        fields["physical_network"] = fields.get("physical_network") or ""
        return self.respond(services.segment_create(network=network, **fields), status=201)

    def update(self, request, pk=None):
        fields = self.validated(s.SegmentUpdateSerializer, self.body())
        return self.respond(services.segment_update(segment=self.get_object(), **fields))

    def perform_destroy(self, segment):
        services.segment_delete(segment=segment)


@docs.subnet_schema
class SubnetViewSet(DestroyMixin, OpenStackViewSet):
    queryset = Subnet.objects.none()
    resource = "subnet"
    collection = "subnets"
    not_found_type = "SubnetNotFound"
    serializer_class = s.SubnetSerializer
    filterset_class = SubnetFilter

    def visible(self, context):
        return selectors.subnet_list(context=context)

    def create(self, request):
        fields = self.validated(s.SubnetCreateSerializer, self.body())
        network = visible_network(self.context, fields.pop("network_id"), to_change=True)
        segment_id = fields.pop("segment_id", None)
        segment = None
        if segment_id is not None:
            # Only segments the caller can see: another project's segment is
            # "not found", not "not a segment of this network", which would
            # confirm that it exists.
            segment = selectors.segment_list(context=self.context).filter(pk=segment_id).first()
            if segment is None:
                raise NotFound(f"Segment {segment_id} could not be found.", type="SegmentNotFound")
        project = self.target_project(fields)
        subnet = services.subnet_create(project=project, network=network, segment=segment, **fields)
        return self.respond(subnet, status=201)

    def update(self, request, pk=None):
        fields = self.validated(s.SubnetUpdateSerializer, self.body())
        return self.respond(services.subnet_update(subnet=self.get_owned_object(), **fields))

    def perform_destroy(self, subnet):
        services.subnet_delete(subnet=subnet)


ADMIN_ONLY_PORT_INPUT = {"binding_host": "binding:host_id", "binding_profile": "binding:profile"}


@docs.port_schema
class PortViewSet(DestroyMixin, OpenStackViewSet):
    queryset = Port.objects.none()
    resource = "port"
    collection = "ports"
    not_found_type = "PortNotFound"
    serializer_class = s.PortSerializer
    filterset_class = PortFilter

    def visible(self, context):
        return selectors.port_list(context=context)

    def check_port_policy(self, fields: dict, network: Network) -> None:
        """Neutron's policy: binding attributes are the admin's, a MAC and a
        chosen fixed IP are the admin's or the network owner's."""
        services.port_fixed_ips_authorize(
            context=self.context, network=network, fixed_ips=fields.get("fixed_ips")
        )
        if self.context.is_admin:
            return
        for name, wire in ADMIN_ONLY_PORT_INPUT.items():
            if name in fields:
                raise Forbidden(f"Only an admin can set {wire}.")
        if "mac_address" in fields and network.project_id != self.context.project_id:
            raise Forbidden("Only an admin or the network's owner can set mac_address.")

    def create(self, request):
        fields = self.validated(s.PortCreateSerializer, self.body())
        network = visible_network(self.context, fields.pop("network_id"))
        self.check_port_policy(fields, network)
        project = self.target_project(fields)
        port = services.port_create(project=project, network=network, **fields)
        return self.respond(port, status=201)

    def update(self, request, pk=None):
        port = self.get_owned_object()
        fields = self.validated(s.PortUpdateSerializer, self.body())
        self.check_port_policy(fields, port.network)
        return self.respond(services.port_update(port=port, **fields))

    def perform_destroy(self, port):
        services.port_delete(port=port)


@docs.ip_availability_schema
class IpAvailabilityViewSet(OpenStackViewSet):
    queryset = Network.objects.none()
    resource = "network_ip_availability"
    collection = "network_ip_availabilities"
    paged = False
    not_found_type = "NetworkNotFound"
    serializer_class = s.NetworkSerializer
    filterset_class = NetworkFilter
    admin_actions = ("list", "retrieve")

    def visible(self, context):
        return selectors.network_list(context=context)

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        params = self.request.query_params
        if params.getlist("network_id"):
            ids = []
            for value in params.getlist("network_id"):
                try:
                    ids.append(uuid.UUID(value))
                except ValueError:
                    raise Invalid(f"Invalid value for network_id: {value!r}.") from None
            queryset = queryset.filter(pk__in=ids)
        if params.getlist("network_name"):
            queryset = queryset.filter(name__in=params.getlist("network_name"))
        if params.get("ip_version"):
            if params["ip_version"] not in ("4", "6"):
                raise Invalid(f"Invalid value for ip_version: {params['ip_version']!r}.")
            queryset = queryset.filter(subnets__ip_version=params["ip_version"]).distinct()
        return queryset

    def render(self, networks: list[Network]) -> list[dict]:
        per_subnet, per_segment = selectors.ip_availability(networks=networks)
        return [s.ip_availability(n, per_subnet, per_segment) for n in networks]

    def list(self, request):
        networks = list(self.filter_queryset(self.get_queryset()))
        return Response({self.collection: self.render(networks)})

    def retrieve(self, request, pk=None):
        return Response({self.resource: self.render([self.get_object()])[0]})


@docs.agent_schema
class AgentViewSet(DestroyMixin, OpenStackViewSet):
    queryset = HostAgent.objects.none()
    resource = "agent"
    collection = "agents"
    not_found_type = "AgentNotFound"
    serializer_class = s.AgentSerializer
    filterset_class = AgentFilter
    admin_actions = ("list", "retrieve", "update", "partial_update", "destroy")

    def visible(self, context):
        return selectors.agent_list()

    def update(self, request, pk=None):
        fields = self.validated(s.AgentUpdateSerializer, self.body())
        agent = self.get_object()
        if "admin_state_up" in fields:
            agent = services.host_agent_update(agent=agent, admin_state_up=fields["admin_state_up"])
        return self.respond(agent)

    def perform_destroy(self, agent):
        services.host_agent_delete(host=agent.host)


EXTENSIONS = [
    ("agent", "agent", "The agents: what each host reports it can plug."),
    ("binding", "Port Binding", "binding:host_id, vnic_type, vif_type and vif_details on ports."),
    ("ip_allocation", "IP Allocation", "Whether a port's IP is allocated now or at binding."),
    ("multi-provider", "Multi Provider Network", "Networks with several segments."),
    ("network-ip-availability", "Network IP Availability", "Used and total IPs per subnet."),
    ("provider", "Provider Network", "provider:network_type, physical_network, segmentation_id."),
    ("segment", "Segment", "Segments of routed networks."),
    ("standard-attr-revisions", "Resource revision numbers", "revision_number on resources."),
    ("standard-attr-timestamp", "Resource timestamps", "created_at and updated_at."),
]


def extension(alias: str, name: str, description: str) -> dict:
    return {
        "alias": alias,
        "name": name,
        "description": description,
        "updated": "2026-11-21T00:00:00-00:00",
        "links": [],
    }


class ExtensionList(views.APIView):
    schema = OpenStackAutoSchema()

    @docs.extension_list_schema
    def get(self, request):
        return Response({"extensions": [extension(*e) for e in EXTENSIONS]})


class ExtensionDetail(views.APIView):
    schema = OpenStackAutoSchema()

    @docs.extension_detail_schema
    def get(self, request, alias):
        for e in EXTENSIONS:
            if e[0] == alias:
                return Response({"extension": extension(*e)})
        raise NotFound(f"Extension with alias {alias} does not exist.", type="ExtensionNotFound")
