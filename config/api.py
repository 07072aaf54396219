"""What every OpenStack-compatible resource API shares: the body envelope,
limit/marker pagination with ``<collection>_links``, ids that are UUIDs
(anything else is a 404, so find-by-name falls through to a list), and
tolerance of ``fields``."""

import uuid
from urllib.parse import urlencode

from rest_framework import viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from config.auth import Authenticated, RequestContext
from config.errors import Forbidden, Invalid, NotFound
from config.models import Project

# Query parameters that are never filters.
PAGING_PARAMS = {"limit", "marker", "fields", "page_reverse", "sort_key", "sort_dir"}


def parse_limit(raw: str | None) -> int | None:
    if raw in (None, ""):
        return None
    try:
        limit = int(raw)
    except ValueError:
        raise Invalid(f"limit must be a non-negative integer, not {raw!r}.") from None
    if limit < 0:
        raise Invalid(f"limit must be a non-negative integer, not {raw!r}.")
    return limit or None


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


class OpenStackViewSet(viewsets.GenericViewSet):
    """Base for resource viewsets. Subclasses name ``resource`` (singular
    envelope key) and ``collection`` (plural key), define
    ``visible(context)`` (the rows a caller may see, from a selector; the
    ``queryset`` attribute only tells schema generation the model), and
    implement writes by calling services with ``self.body()``."""

    resource: str
    collection: str
    # How a missing row is named in the 404, e.g. NetworkNotFound.
    not_found_type: str = "NotFound"
    lookup_value_regex = "[^/]+"

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

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        rows, links = paginate(request, queryset, self.collection)
        data = self.get_serializer(rows, many=True).data
        return Response({self.collection: data, **links})

    def retrieve(self, request, *args, **kwargs):
        return self.respond(self.get_object())

    def destroy(self, request, *args, **kwargs):
        self.perform_destroy(self.get_owned_object())
        return Response(status=204)


class UnknownResourceView(APIView):
    """Unknown URLs under an API prefix: 401 without a valid token (as behind
    keystonemiddleware, which authenticates before routing), else 404 in
    that API's shape."""

    permission_classes = [Authenticated]
    schema = None

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        raise NotFound("The resource could not be found.")
