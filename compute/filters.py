"""Nova list filters."""

import re

import django_filters

from compute.models import Flavor, Host, Instance
from config.errors import Invalid
from config.filters import AnyOf, UtcDateTime


class NameRegex(django_filters.CharFilter):
    """Nova's ``name`` filter is a regular expression (search, not match)."""

    def filter(self, qs, value):
        if not value:
            return qs
        try:
            re.compile(value)
        except re.error:
            raise Invalid(f"Invalid regular expression for name: {value!r}.") from None
        return qs.filter(name__regex=value)


class StatusFilter(django_filters.CharFilter):
    def filter(self, qs, value):
        return qs.filter(status=value.upper()) if value else qs


class ServerFilter(django_filters.FilterSet):
    name = NameRegex()
    status = StatusFilter()
    host = AnyOf(field_name="host__name")
    flavor = AnyOf(field_name="flavor_id")
    image = AnyOf(field_name="image_ref")
    reservation_id = AnyOf(field_name="reservation_id")
    changes_since = UtcDateTime(field_name="updated_at", lookup_expr="gte")

    class Meta:
        model = Instance
        fields = []


ServerFilter.base_filters["changes-since"] = ServerFilter.base_filters.pop("changes_since")


class FlavorFilter(django_filters.FilterSet):
    minRam = django_filters.NumberFilter(field_name="ram", lookup_expr="gte")
    minDisk = django_filters.NumberFilter(field_name="disk", lookup_expr="gte")

    class Meta:
        model = Flavor
        fields = []


class HostFilter(django_filters.FilterSet):
    host = AnyOf(field_name="name")
    hypervisor_hostname_pattern = django_filters.CharFilter(
        field_name="name", lookup_expr="icontains"
    )

    class Meta:
        model = Host
        fields = []
