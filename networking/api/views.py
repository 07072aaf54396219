from config.api import OpenStackViewSet
from networking import selectors, services
from networking.api.serializers import (
    NetworkCreateSerializer,
    NetworkSerializer,
    NetworkWriteSerializer,
)
from networking.filters import NetworkFilter


class NetworkViewSet(OpenStackViewSet):
    resource = "network"
    collection = "networks"
    not_found_type = "NetworkNotFound"
    serializer_class = NetworkSerializer
    filterset_class = NetworkFilter

    def visible(self, context):
        return selectors.network_list(context=context)

    def create(self, request):
        fields = self.validated(NetworkCreateSerializer, self.body())
        project = self.target_project(fields)
        network = services.network_create(context=self.context, project=project, **fields)
        return self.respond(network, status=201)

    def update(self, request, pk=None):
        fields = self.validated(NetworkWriteSerializer, self.body())
        network = services.network_update(
            context=self.context, network=self.get_owned_object(), **fields
        )
        return self.respond(network)

    def perform_destroy(self, network):
        services.network_delete(network=network)
