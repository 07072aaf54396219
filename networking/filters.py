import django_filters

from config.filters import AnyOf, OpenStackBoolean
from networking.models import Network


class NetworkFilter(django_filters.FilterSet):
    id = AnyOf(field_name="id")
    name = AnyOf(field_name="name")
    project_id = AnyOf(field_name="project_id")
    tenant_id = AnyOf(field_name="project_id")
    shared = OpenStackBoolean(field_name="shared")
    admin_state_up = OpenStackBoolean(field_name="admin_state_up")

    class Meta:
        model = Network
        fields = []
