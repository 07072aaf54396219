"""One error type for the domain, and one place that renders it in the shape
of the API that was called (NeutronError, Nova fault, Blazar error).

Services raise ``BerthError`` subclasses; they know nothing of HTTP beyond a
status a caller may use. Views never build error bodies themselves.
"""

import json
import logging
import re
from http import HTTPStatus

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, DataError, InterfaceError, OperationalError
from django.db.models.deletion import ProtectedError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf
from rest_framework import serializers
from rest_framework.response import Response

log = logging.getLogger(__name__)


class BerthError(Exception):
    status = 400
    type = "BadRequest"

    def __init__(self, message: str, *, type: str | None = None):
        super().__init__(message)
        self.message = message
        # berth's extension to the reservation API's error body: keys added
        # beside Blazar's three (clients read those three and ignore more).
        self.details: dict = {}
        if type:
            self.type = type


class Invalid(BerthError):
    status = 400
    type = "InvalidInput"


class Forbidden(BerthError):
    status = 403
    type = "PolicyNotAuthorized"


class NotFound(BerthError):
    status = 404
    type = "NotFound"


class Conflict(BerthError):
    status = 409
    type = "Conflict"


class OverQuota(Conflict):
    # Neutron answers 409 OverQuota; Nova answers 403 forbidden.
    type = "OverQuota"


class TooLarge(BerthError):
    status = 413
    type = "RequestEntityTooLarge"


def in_use_by(error: ProtectedError) -> str:
    """What a refused delete's row is still used by, for the Conflict that
    says so: each protecting row by its own name, once."""
    return ", ".join(sorted({str(row) for row in error.protected_objects}))


# --- words in messages -------------------------------------------------------------
# A message names things as the client writes them: wire values, not Python
# enum members, model reprs or Python literals (None, True, {'a': 1}).


def shown(value) -> str:
    """A value from a request as JSON, the client's own notation."""
    return json.dumps(value, ensure_ascii=False, default=str)


def one_of(values) -> str:
    """'one of: a, b, c' for the wire values a field accepts (enum members
    and choice keys alike render as their values)."""
    return "one of: " + ", ".join(str(getattr(v, "value", v)) for v in values)


class WireChoiceField(serializers.ChoiceField):
    """A choice field whose refusal lists the accepted values and shows the
    value as sent: DRF's own says only '"True" is not a valid choice.'"""

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except drf.ValidationError:
            raise drf.ValidationError(f"{shown(data)} is not {one_of(self.choices)}.") from None


# --- rendering ----------------------------------------------------------------

NOVA_FAULTS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "HTTPMethodNotAllowed",
    406: "HTTPNotAcceptable",
    409: "conflictingRequest",
    413: "overLimit",
    415: "HTTPUnsupportedMediaType",
    503: "serviceUnavailable",
}


def api_of_path(path: str) -> str | None:
    """Which OpenStack API a URL path belongs to, by its mount prefix."""
    first = path.lstrip("/").split("/", 1)[0]
    return {
        settings.BERTH_NETWORKING_PREFIX: "networking",
        settings.BERTH_COMPUTE_PREFIX: "compute",
        settings.BERTH_RESERVATION_PREFIX: "reservation",
        "identity": "identity",
        "image": "identity",  # Glance's error body is Keystone's shape
    }.get(first)


def error_body(api: str | None, status: int, type_: str, message: str) -> dict:
    if status == 401:
        # What keystonemiddleware answers in front of every OpenStack API.
        return {"error": {"code": 401, "title": "Unauthorized", "message": message}}
    if api == "networking":
        return {"NeutronError": {"type": type_, "message": message, "detail": ""}}
    if api == "compute":
        return {NOVA_FAULTS.get(status, "computeFault"): {"code": status, "message": message}}
    if api == "reservation":
        return {"error_code": status, "error_message": message, "error_name": status}
    if api == "identity":
        # Keystone's title is the status's reason phrase.
        return {"error": {"code": status, "title": HTTPStatus(status).phrase, "message": message}}
    return {"error": {"code": status, "title": type_, "message": message}}


# DRF's own messages name the Python type a value arrived as ('got type
# "dict"'); the client wrote JSON.
JSON_TYPES = {
    "dict": "an object",
    "list": "an array",
    "str": "a string",
    "int": "a number",
    "float": "a number",
    "bool": "a boolean",
    "NoneType": "null",
}
DRF_TYPE_MESSAGE = re.compile(
    r'Expected a (?P<wanted>list|dictionary) of items but got type "(?P<got>\w+)"\.'
    r"|Invalid data\. Expected a dictionary, but got (?P<got_object>\w+)\."
)


def _json_words(text: str) -> str:
    found = DRF_TYPE_MESSAGE.fullmatch(text)
    if found is None:
        return text
    wanted = "an array" if found["wanted"] == "list" else "an object"
    got = found["got"] or found["got_object"]
    return f"Expected {wanted}, not {JSON_TYPES.get(got, got)}."


def _flatten(detail) -> str:
    """One readable sentence from DRF's nested validation detail."""
    if isinstance(detail, dict):
        parts = []
        for field, value in detail.items():
            text = _flatten(value)
            parts.append(text if field == "non_field_errors" else f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(detail, list):
        return " ".join(_flatten(item) for item in detail)
    return _json_words(str(detail))


DRF_TYPES = {
    drf.ValidationError: (400, "InvalidInput"),
    drf.ParseError: (400, "MalformedRequestBody"),
    drf.NotAuthenticated: (401, "Unauthorized"),
    drf.AuthenticationFailed: (401, "Unauthorized"),
    drf.PermissionDenied: (403, "PolicyNotAuthorized"),
    drf.NotFound: (404, "NotFound"),
    drf.MethodNotAllowed: (405, "HTTPMethodNotAllowed"),
    drf.NotAcceptable: (406, "HTTPNotAcceptable"),
    drf.UnsupportedMediaType: (415, "HTTPUnsupportedMediaType"),
    drf.Throttled: (429, "OverLimit"),
}


def classify(exc: Exception, api: str | None) -> tuple[int, str, str] | None:
    """(status, type, message) for an exception, or None if it is a bug."""
    if isinstance(exc, BerthError):
        status = exc.status
        if api == "compute" and isinstance(exc, OverQuota):
            status = 403
        return status, exc.type, exc.message
    if isinstance(exc, Http404):
        return 404, "NotFound", "The resource could not be found."
    if isinstance(exc, PermissionDenied):
        return 403, "PolicyNotAuthorized", "Policy does not allow this operation."
    if isinstance(exc, drf.APIException):
        for cls, (status, type_) in DRF_TYPES.items():
            if isinstance(exc, cls):
                message = _flatten(exc.detail)
                if isinstance(exc, drf.PermissionDenied):
                    message = "Policy does not allow this operation."
                return status, type_, message
        return exc.status_code, "BadRequest", _flatten(exc.detail)
    if isinstance(exc, DjangoValidationError):
        # A model field refused a value that reached the ORM unchecked (a
        # filter or lookup): the caller's input, not the service, is wrong.
        return 400, "InvalidInput", " ".join(exc.messages)
    if isinstance(exc, DataError):
        # PostgreSQL's "data exception" class (out of range, too long, NUL
        # in text): a value the API let through. Still the caller's input;
        # logged so the missing check at the edge gets added.
        log.warning("database refused a value: %s", exc)
        return 400, "InvalidInput", "A value is out of range or malformed."
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is down or dropped the connection: nothing was
        # committed, so the caller may simply retry.
        return 503, "ServiceUnavailable", "The service is temporarily unavailable; retry later."
    return None


def api_exception_handler(exc, context):
    request = context.get("request")
    api = api_of_path(request.path if request else "")
    classified = classify(exc, api)
    if classified is None:
        log.exception("unexpected error", exc_info=exc)
        if isinstance(exc, DatabaseError):
            classified = 500, "InternalError", "The database refused the operation."
        else:
            classified = 500, "InternalError", "An unexpected error occurred; see the service log."
    status, type_, message = classified
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Token"
    body = error_body(api, status, type_, message)
    if api == "reservation" and isinstance(exc, BerthError):
        body.update(exc.details)
    return Response(body, status=status, headers=headers)


def json_error(request, status: int, type_: str, message: str) -> JsonResponse:
    return JsonResponse(
        error_body(api_of_path(request.path), status, type_, message), status=status
    )


def not_found_view(request, *args, **kwargs):
    """Unknown URLs outside the APIs (Django's handler404)."""
    return json_error(request, 404, "NotFound", "The resource could not be found.")


def bad_request_view(request, *args, **kwargs):
    """Requests Django refuses before any view (a malformed Host header, a
    suspicious operation): the API's error body, not an HTML page."""
    return json_error(request, 400, "BadRequest", "The request is malformed.")


def server_error_view(request, *args, **kwargs):
    return json_error(request, 500, "InternalError", "An unexpected error occurred.")
