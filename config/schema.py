"""OpenAPI description of berth's three APIs (for drf-spectacular).

The wire bodies are OpenStack's, not DRF's: every object sits in an
envelope (``{"network": {...}}``), lists are ``{"networks": [...]}`` with
``networks_links`` when paged, and errors come in each API's own shape
(NeutronError, a Nova fault, a Blazar error). The output serializers build
their bodies in ``to_representation``, so each app's ``api/schema.py``
describes the bodies with the ``shape`` helpers below, and
``OpenStackAutoSchema`` adds what every operation shares: the error
answers, the paging parameters and the Nova microversion headers.
"""

from functools import cache

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, extend_schema_field
from rest_framework import serializers

from config.errors import NOVA_FAULTS, WireChoiceField, api_of_path


class KeystoneTokenScheme(OpenApiAuthenticationExtension):
    target_class = "identity.auth.KeystoneTokenAuthentication"
    name = "XAuthToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}


# --- describing bodies -----------------------------------------------------------


def shape(name: str, fields: dict) -> type[serializers.Serializer]:
    """A serializer class that only describes a body, named ``name`` in the
    schema. Field names may be anything the wire uses (``binding:host_id``),
    which class attributes cannot spell."""
    return type(name, (serializers.Serializer,), {"__module__": __name__, **fields})


@cache
def envelope(name: str, key: str, inner: type[serializers.Serializer]):
    """``{key: inner}``: one object in its envelope. One class per name, so
    show, create and update share their schema component."""
    return shape(name, {key: inner()})


@cache
def collection(name: str, key: str, inner: type[serializers.Serializer], *, paged: bool = True):
    """``{key: [inner]}``, with ``<key>_links`` when the list takes limit/marker."""
    fields = {key: inner(many=True)}
    if paged:
        fields[f"{key}_links"] = Link(many=True, required=False)
    return shape(name, fields)


def typed(schema: dict, **kwargs) -> serializers.JSONField:
    """A JSON value the schema describes as ``schema``: a union DRF fields
    cannot spell (swap is 0 or "", image is "" or an object). A class per
    use, as DRF rebuilds fields from their class and loses instance marks."""
    field_class = extend_schema_field(schema)(type("TypedField", (serializers.JSONField,), {}))
    return field_class(**kwargs)


def text(**kwargs) -> serializers.CharField:
    return serializers.CharField(allow_blank=True, **kwargs)


def nullable_text(**kwargs) -> serializers.CharField:
    return serializers.CharField(allow_blank=True, allow_null=True, **kwargs)


def hex_id(**kwargs) -> serializers.RegexField:
    """A project or user id as Keystone writes it: 32 hex digits, no dashes."""
    return serializers.RegexField(r"^[0-9a-f]{32}$", **kwargs)


def strings(**kwargs) -> serializers.ListField:
    return serializers.ListField(child=serializers.CharField(allow_blank=True), **kwargs)


def anything(**kwargs) -> serializers.JSONField:
    """Any JSON value (free-form dicts such as binding:profile)."""
    return serializers.JSONField(**kwargs)


def mapping(**kwargs) -> serializers.DictField:
    """A JSON object with free-form keys."""
    return serializers.DictField(child=serializers.JSONField(), **kwargs)


class InlineChoiceField(WireChoiceField):
    """A ChoiceField whose choices the schema lists where the field is.
    drf-spectacular hoists every ``enum`` property into a component named
    after the field, and warns when one name (``status``) means several
    choice sets; the bodies here reuse such names freely. Wrapped in a
    one-element oneOf (a one-element allOf is unwrapped again), the enum
    keeps its meaning and is left where it is."""


class InlineChoiceExtension(OpenApiSerializerFieldExtension):
    target_class = InlineChoiceField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        values = list(self.target.choices)
        schema = {"type": "integer" if all(isinstance(v, int) for v in values) else "string"}
        if self.target.allow_null:
            values.append(None)
            schema["nullable"] = True
        return {"oneOf": [{**schema, "enum": values}]}


Link = shape("Link", {"rel": serializers.CharField(), "href": serializers.CharField()})


# --- errors -------------------------------------------------------------------------

KeystoneErrorDetail = shape(
    "KeystoneErrorDetail",
    {
        "code": serializers.IntegerField(),
        "title": serializers.CharField(),
        "message": serializers.CharField(),
    },
)
# What keystonemiddleware answers before any API sees the request.
KeystoneError = envelope("KeystoneError", "error", KeystoneErrorDetail)

NeutronErrorDetail = shape(
    "NeutronErrorDetail",
    {
        "type": serializers.CharField(),
        "message": serializers.CharField(allow_blank=True),
        "detail": text(),
    },
)
NeutronError = envelope("NeutronError", "NeutronError", NeutronErrorDetail)

NovaFaultDetail = shape(
    "NovaFaultDetail",
    {"code": serializers.IntegerField(), "message": serializers.CharField(allow_blank=True)},
)
# Nova names the body's one key after the status: 404 is {"itemNotFound": ...}.
NOVA_FAULT_BODIES = {
    status: envelope(f"Nova{key[0].upper()}{key[1:]}", key, NovaFaultDetail)
    for status, key in NOVA_FAULTS.items()
}

BlazarError = shape(
    "BlazarError",
    {
        "error_code": serializers.IntegerField(),
        "error_message": serializers.CharField(allow_blank=True),
        "error_name": serializers.IntegerField(),
    },
)

ERROR_TEXT = {
    400: "Invalid input",
    401: "No valid X-Auth-Token",
    403: "Not allowed to the caller",
    404: "No such object",
    406: "Unsupported microversion",
    409: "Conflicts with the current state",
    413: "Request body too large",
    415: "Request body not JSON",
}


def error_body(api: str | None, status: int):
    if status == 401:
        return KeystoneError
    if api == "networking":
        return NeutronError
    if api == "compute":
        return NOVA_FAULT_BODIES[status]
    return BlazarError


# --- the operations --------------------------------------------------------------

# berth implements microversion 2.1 only; any other version asked for is 406.
NOVA_MICROVERSION_HEADERS = [
    OpenApiParameter(
        "OpenStack-API-Version",
        {"type": "string", "pattern": r"^compute (2\.1|latest)$"},
        OpenApiParameter.HEADER,
        description="compute <version>: 2.1 or latest.",
    ),
    OpenApiParameter(
        "X-OpenStack-Nova-API-Version",
        {"type": "string", "enum": ["2.1", "latest"]},
        OpenApiParameter.HEADER,
        description="The older spelling of the microversion header.",
    ),
]
PAGING_PARAMETERS = [
    OpenApiParameter("limit", int, description="At most this many rows (0: all)."),
    OpenApiParameter("marker", str, description="The id of the last row of the previous page."),
]
# Viewset actions that answer a collection (filters apply to them).
COLLECTION_ACTIONS = {"list", "list_detail"}


class OpenStackAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema for OpenStack-shaped viewsets. Success
    bodies come from each action's ``extend_schema``; this adds the rest."""

    @property
    def api(self) -> str | None:
        return api_of_path(self.path)

    @property
    def action(self) -> str:
        return getattr(self.view, "action", None) or self.method.lower()

    def _is_list_view(self, serializer=None) -> bool:
        # Lists are wrapped in their envelope, which is one object: nothing
        # for drf-spectacular to turn into an array.
        return False

    def get_filter_backends(self):
        if self.method == "GET" and self.action in COLLECTION_ACTIONS:
            return getattr(self.view, "filter_backends", [])
        return []

    def get_override_parameters(self):
        parameters = list(super().get_override_parameters())
        if self.api == "compute":
            parameters += NOVA_MICROVERSION_HEADERS
        paged = getattr(self.view, "paged", True)
        if self.method == "GET" and self.action in COLLECTION_ACTIONS and paged:
            parameters += PAGING_PARAMETERS
        return parameters

    def get_operation_id(self) -> str:
        """``<api>_<resource>_<action>``, plus the method when one action
        answers several (os-extra_specs GET and POST)."""
        basename = getattr(self.view, "basename", None) or type(self.view).__name__
        parts = [self.api or "berth", basename.replace("-", "_"), self.action]
        methods = getattr(getattr(self.view, self.action, None), "mapping", {})
        if len(methods) > 1:
            parts.append(self.method.lower())
        return "_".join(parts)

    def get_description(self) -> str:
        # The action's own docstring, or the view's own: not a docstring the
        # class inherited (NovaViewSet's would describe every compute call).
        action = getattr(self.view, self.action, None)
        doc = getattr(action, "__doc__", None) or type(self.view).__dict__.get("__doc__")
        return (doc or "").strip()

    def error_statuses(self) -> list[int]:
        statuses = [400, 401, 403]
        has_path_params = "{" in self.path
        if has_path_params or self.method != "GET":
            statuses.append(404)
        if self.api == "compute":
            statuses.append(406)
        if self.method != "GET":
            statuses.append(409)
        if self.method in ("POST", "PUT"):
            statuses += [413, 415]
        return statuses

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status in self.error_statuses():
            if str(status) not in responses:
                body = error_body(self.api, status)
                response = self._get_response_for_code(body, str(status), direction=direction)
                response["description"] = ERROR_TEXT[status]
                responses[str(status)] = response
        return responses
