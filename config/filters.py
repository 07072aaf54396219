"""Filter pieces for OpenStack list queries."""

import django_filters
from django import forms


class _RepeatedValueField(forms.Field):
    # MultipleHiddenInput reads every value of a repeated query key.
    widget = forms.MultipleHiddenInput

    def to_python(self, value):
        return [item for item in (value or []) if item != ""]


class AnyOf(django_filters.Filter):
    """``?key=a&key=b`` matches either value, as Neutron's filters do."""

    field_class = _RepeatedValueField

    def filter(self, qs, value):
        if not value:
            return qs
        return qs.filter(**{f"{self.field_name}__in": value})


class OpenStackBoolean(django_filters.BooleanFilter):
    """Accepts True/true/1 and False/false/0, as the clients send them."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", django_filters.widgets.BooleanWidget)
        super().__init__(*args, **kwargs)
