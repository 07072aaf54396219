"""Filter pieces for OpenStack list queries."""

from datetime import UTC

import django_filters
from django import forms
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import connection
from django.db.models.constants import LOOKUP_SEP

from config.errors import Invalid


class _RepeatedValueField(forms.Field):
    # MultipleHiddenInput reads every value of a repeated query key.
    widget = forms.MultipleHiddenInput

    def to_python(self, value):
        return [item for item in (value or []) if item != ""]


def model_field(model, path: str):
    """The model field at the end of a lookup path such as ``host__name``."""
    *relations, last = path.split(LOOKUP_SEP)
    for name in relations:
        model = model._meta.get_field(name).related_model
    return model._meta.get_field(last)


class AnyOf(django_filters.Filter):
    """``?key=a&key=b`` matches either value, as Neutron's filters do.

    Values are converted by the model field first: a query string is text,
    and one the column cannot hold (``id=abc``, ``segmentation_id=2**63``)
    would otherwise fail inside the database query as a 500."""

    field_class = _RepeatedValueField

    def filter(self, qs, value):
        if not value:
            return qs
        try:
            field = model_field(qs.model, self.field_name)
        except FieldDoesNotExist:
            field = None
        if field is not None:
            value = [self.column_value(field, item) for item in value]
        return qs.filter(**{f"{self.field_name}__in": value})

    def column_value(self, field, item):
        wire = self.field_name.split(LOOKUP_SEP)[0]
        try:
            converted = field.to_python(item)
            # Some checks live only in validators (an IP address field's
            # to_python takes any text).
            field.run_validators(converted)
        except (ValidationError, ValueError, TypeError):
            raise Invalid(f"Invalid value for {wire}: {item!r}.") from None
        if isinstance(converted, int) and not isinstance(converted, bool):
            column = field.target_field if field.is_relation else field
            try:
                low, high = connection.ops.integer_field_range(column.get_internal_type())
            except KeyError:  # not an integer column after all
                return converted
            if (low is not None and converted < low) or (high is not None and converted > high):
                raise Invalid(f"Invalid value for {wire}: {item!r} is out of range.")
        return converted


class UtcDateTime(django_filters.IsoDateTimeFilter):
    """An ISO 8601 time with any offset Python accepts (up to 24 h), sent to
    the database in UTC: PostgreSQL refuses offsets beyond 15:59."""

    def filter(self, qs, value):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return super().filter(qs, value)


class OpenStackBoolean(django_filters.BooleanFilter):
    """Accepts True/true/1 and False/false/0, as the clients send them."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", django_filters.widgets.BooleanWidget)
        super().__init__(*args, **kwargs)
