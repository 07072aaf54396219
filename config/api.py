"""What every OpenStack-compatible resource API shares: the body envelope,
limit/marker pagination with ``<collection>_links``, ids that are UUIDs
(anything else is a 404, so find-by-name falls through to a list), and
tolerance of ``fields``.

Request bodies are checked before any service sees them: too large is 413
before a byte is read; JSON must parse, nest at most ``MAX_JSON_DEPTH``
deep, and carry no text PostgreSQL or the UTF-8 codec would refuse later.
"""

import codecs
import json
import uuid
from urllib.parse import urlencode

from django.conf import settings
from rest_framework import viewsets
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import Forbidden, Invalid, NotFound, TooLarge
from config.schema import OpenStackAutoSchema
from identity.auth import Authenticated, RequestContext
from identity.models import Project

# Query parameters that are never filters.
PAGING_PARAMS = {"limit", "marker", "fields", "page_reverse", "sort_key", "sort_dir"}
# No OpenStack body nests deeper than a handful of levels (binding:profile,
# capabilities); a deeper one is an attack on the recursive code that
# validates and renders it.
MAX_JSON_DEPTH = 32
# Larger pages than this are not served at once: a limit is a slice bound
# in SQL, and a number past 64 bits breaks the query instead of the caller.
MAX_LIMIT = 10_000
# What an integer column holds on PostgreSQL (IntegerField and
# PositiveIntegerField): a larger number is invalid input, refused by the
# serializer, not a value that fails the INSERT (500).
MAX_DB_INT = 2**31 - 1


def parse_limit(raw: str | None) -> int | None:
    if raw in (None, ""):
        return None
    try:
        limit = int(raw)
    except ValueError:
        raise Invalid(f"limit must be a non-negative integer, not {raw!r}.") from None
    if limit < 0:
        raise Invalid(f"limit must be a non-negative integer, not {raw!r}.")
    return min(limit, MAX_LIMIT) or None


def check_body_size(request) -> None:
    """413 for a body above DATA_UPLOAD_MAX_MEMORY_SIZE, judged by its
    Content-Length before it is read (Django reads no body without one)."""
    raw = request.META.get("CONTENT_LENGTH") or "0"
    try:
        length = int(raw)
    except ValueError:
        raise Invalid(f"Content-Length {raw!r} is not a number.") from None
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is not None and length > limit:
        raise TooLarge(f"Request is too large: {length} bytes, at most {limit} are accepted.")


def bad_text(value: str) -> bool:
    """NUL (PostgreSQL text refuses it) or a lone surrogate (no UTF-8 codec
    encodes it): JSON can spell both as escapes."""
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_json_document(data) -> None:
    """Depth and text of a parsed body, walked without recursion."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ParseError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels.")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and bad_text(key):
                    raise ParseError("JSON text contains a NUL character or a lone surrogate.")
                stack.append((item, depth + 1))
        elif isinstance(value, str) and bad_text(value):
            raise ParseError("JSON text contains a NUL character or a lone surrogate.")


def _refuse_constant(constant: str):
    raise ValueError(f"{constant} is not a JSON number")


class OpenStackJSONParser(JSONParser):
    """DRF's JSON parser with the checks above. NaN and Infinity are refused
    (not JSON; a float field would store them)."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        if "request" in parser_context:
            check_body_size(parser_context["request"])
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
            data = json.loads(text, parse_constant=_refuse_constant)
        except RecursionError:
            raise ParseError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels.") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        check_json_document(data)
        return data


def check_text_params(request, kwargs: dict) -> None:
    """NUL in a query or path value would reach the database as text."""
    values = [str(v) for v in kwargs.values()]
    values += [v for key in request.query_params for v in [key, *request.query_params.getlist(key)]]
    if any("\x00" in v for v in values):
        raise Invalid("Query and path values must not contain NUL characters.")


def paginate(request, queryset, collection: str):
    """One page of ``queryset`` ordered by id, and the links for the next.

    The marker is the last id of the previous page, as the SDK sends it.
    """
    queryset = queryset.order_by("pk")
    marker = request.query_params.get("marker")
    if marker:
        try:
            queryset = queryset.filter(pk__gt=uuid.UUID(marker))
        except ValueError:
            raise Invalid(f"marker {marker!r} is not a valid id.") from None
    limit = parse_limit(request.query_params.get("limit"))
    if limit is None:
        return list(queryset), {}
    rows = list(queryset[: limit + 1])
    if len(rows) <= limit:
        return rows, {}
    rows = rows[:limit]
    params = request.query_params.copy()
    params["limit"] = str(limit)
    params["marker"] = str(rows[-1].pk)
    href = request.build_absolute_uri(request.path) + "?" + urlencode(params, doseq=True)
    return rows, {f"{collection}_links": [{"rel": "next", "href": href}]}


class OpenStackGenericViewSet(viewsets.GenericViewSet):
    """What resource viewsets share, without any action: subclasses name
    ``resource`` (singular envelope key) and ``collection`` (plural key),
    define ``visible(context)`` (the rows a caller may see, from a selector;
    the ``queryset`` attribute only tells schema generation the model), and
    implement writes by calling services with ``self.body()``. Actions come
    from the mixins below, so a route exists only where it works."""

    resource: str
    collection: str
    # How a missing row is named in the 404, e.g. NetworkNotFound.
    not_found_type: str = "NotFound"
    lookup_value_regex = "[^/]+"
    parser_classes = [OpenStackJSONParser]
    schema = OpenStackAutoSchema()
    # OPTIONS is no OpenStack call; DRF's answer to it describes the view's
    # serializer, which the body-building views here do not have (500).
    metadata_class = None

    def initial(self, request, *args, **kwargs):
        # Before authentication, as the size-limit middleware sits in front
        # of keystonemiddleware in OpenStack's pipelines.
        check_body_size(request)
        super().initial(request, *args, **kwargs)
        check_text_params(request, kwargs)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return self.queryset
        return self.visible(self.context)

    @property
    def context(self) -> RequestContext:
        return self.request.auth

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "context": self.request.auth}

    def not_found(self, pk) -> NotFound:
        label = self.resource.replace("_", " ").capitalize()
        return NotFound(f"{label} {pk} could not be found.", type=self.not_found_type)

    def get_object(self):
        pk = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        try:
            uuid.UUID(str(pk))
        except ValueError:
            raise self.not_found(pk) from None
        obj = self.get_queryset().filter(pk=pk).first()
        if obj is None:
            raise self.not_found(pk)
        self.check_object_permissions(self.request, obj)
        return obj

    def get_owned_object(self):
        """The object, if the caller may change it: resources another
        project shares are visible but read-only to everyone but admins."""
        obj = self.get_object()
        owner = getattr(obj, "project_id", None)
        if not self.context.is_admin and owner != self.context.project_id:
            label = self.resource.replace("_", " ").capitalize()
            raise Forbidden(f"{label} {obj.pk} belongs to another project.")
        return obj

    def target_project(self, fields: dict) -> Project:
        """The project a new resource belongs to: the caller's own, or for an
        admin the one named by ``project_id``/``tenant_id`` (popped from
        ``fields``)."""
        project_id = fields.pop("project_id", None)
        tenant_id = fields.pop("tenant_id", None)
        wanted = project_id or tenant_id
        if wanted is None or wanted == self.context.project_id:
            return self.context.project
        if not self.context.is_admin:
            raise Forbidden("Only an admin can create resources in another project.")
        project = Project.objects.filter(pk=wanted).first()
        if project is None:
            raise Invalid(f"Project {wanted} does not exist.")
        return project

    def body(self) -> dict:
        """The object inside the request envelope, e.g. ``{"network": {...}}``."""
        data = self.request.data
        if not isinstance(data, dict) or not isinstance(data.get(self.resource), dict):
            raise Invalid(f"Request body must be a JSON object with a '{self.resource}' object.")
        return data[self.resource]

    def validated(self, serializer_class, data: dict, **kwargs) -> dict:
        serializer = serializer_class(data=data, context=self.get_serializer_context(), **kwargs)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def respond(self, obj, status: int = 200) -> Response:
        return Response({self.resource: self.get_serializer(obj).data}, status=status)


class ListMixin:
    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        rows, links = paginate(request, queryset, self.collection)
        data = self.get_serializer(rows, many=True).data
        return Response({self.collection: data, **links})


class RetrieveMixin:
    def retrieve(self, request, *args, **kwargs):
        return self.respond(self.get_object())


class DestroyMixin:
    """DELETE for resources whose viewset implements ``perform_destroy``."""

    def destroy(self, request, *args, **kwargs):
        self.perform_destroy(self.get_owned_object())
        return Response(status=204)


class OpenStackViewSet(ListMixin, RetrieveMixin, OpenStackGenericViewSet):
    """A readable collection: list and show."""


class UnknownResourceView(APIView):
    """Unknown URLs under an API prefix: 401 without a valid token (as behind
    keystonemiddleware, which authenticates before routing), else 404 in
    that API's shape."""

    permission_classes = [Authenticated]
    schema = None

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        raise NotFound("The resource could not be found.")
