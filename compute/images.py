"""The Glance v2 subset that clients need to name an image: version
discovery, list (by name), show, and for admins create and delete the
record. `openstack server create --image NAME` looks the image up here
before it asks compute. berth keeps no image data: the host's driver is
told the image's id with the server."""

import uuid

from django.http import JsonResponse
from django.urls import re_path
from rest_framework.response import Response
from rest_framework.views import APIView

from compute import selectors, services
from compute.models import Image
from config.errors import Forbidden, Invalid, NotFound
from identity.auth import Authenticated

IMAGE_PREFIX = "image"
GLANCE_TIME = "%Y-%m-%dT%H:%M:%SZ"
DISK_FORMATS = {"qcow2", "raw", "vmdk", "vdi", "iso", "vhd", "vhdx", "ami", "ari", "aki"}
CONTAINER_FORMATS = {"bare", "ovf", "ova", "aki", "ari", "ami", "docker", "compressed"}


def _versions(request) -> dict:
    href = request.build_absolute_uri(f"/{IMAGE_PREFIX}/v2/")
    return {
        "versions": [{"id": "v2.9", "status": "CURRENT", "links": [{"rel": "self", "href": href}]}]
    }


def versions(request):
    """Glance answers its root with 300 Multiple Choices."""
    return JsonResponse(_versions(request), status=300)


def v2(request):
    return JsonResponse(_versions(request))


def image_body(image: Image) -> dict:
    return {
        "id": str(image.pk),
        "name": image.name,
        "status": "active",
        "visibility": image.visibility,
        "protected": False,
        "os_hidden": False,
        "disk_format": image.disk_format,
        "container_format": image.container_format,
        "min_disk": image.min_disk,
        "min_ram": image.min_ram,
        "size": None,
        "virtual_size": None,
        "checksum": None,
        "owner": image.project.pk.hex if image.project_id else None,
        "tags": [],
        "created_at": image.created_at.strftime(GLANCE_TIME),
        "updated_at": image.updated_at.strftime(GLANCE_TIME),
        "self": f"/v2/images/{image.pk}",
        "file": f"/v2/images/{image.pk}/file",
        "schema": "/v2/schemas/image",
    }


def _choice(fields: dict, key: str, allowed: set, default: str) -> str:
    value = fields.get(key, default)
    if value not in allowed:
        raise Invalid(f"Invalid value '{value}' for parameter '{key}'.")
    return value


def _count(fields: dict, key: str) -> int:
    value = fields.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
        raise Invalid(f"Invalid value for '{key}': a whole number from 0.")
    return value


class ImageView(APIView):
    schema = None  # Glance's API reference documents it, not berth's schema
    permission_classes = [Authenticated]

    def find(self, image_id: str) -> Image:
        try:
            found = selectors.image_list(context=self.request.auth).filter(pk=uuid.UUID(image_id))
        except ValueError:
            found = Image.objects.none()
        image = found.select_related("project").first()
        if image is None:
            raise NotFound(f"No image found with ID {image_id}")
        return image

    def admin_only(self) -> None:
        if not self.request.auth.is_admin:
            raise Forbidden("You are not authorized to complete this action.")


class Images(ImageView):
    def get(self, request):
        images = selectors.image_list(context=request.auth).select_related("project")
        if "name" in request.query_params:
            images = images.filter(name=request.query_params["name"])
        return Response(
            {
                "images": [image_body(i) for i in images],
                "first": "/v2/images",
                "schema": "/v2/schemas/images",
            }
        )

    def post(self, request):
        self.admin_only()
        fields = request.data if isinstance(request.data, dict) else None
        if fields is None:
            raise Invalid("The request body must be a JSON object.")
        name = fields.get("name")
        if not isinstance(name, str) or not name or len(name) > 255:
            raise Invalid("Invalid value for 'name': 1 to 255 characters.")
        visibility = _choice(fields, "visibility", set(Image.Visibility.values), "public")
        image = services.image_create(
            name=name,
            disk_format=_choice(fields, "disk_format", DISK_FORMATS, "qcow2"),
            container_format=_choice(fields, "container_format", CONTAINER_FORMATS, "bare"),
            min_disk=_count(fields, "min_disk"),
            min_ram=_count(fields, "min_ram"),
            visibility=visibility,
            project=request.auth.project if visibility == Image.Visibility.PRIVATE else None,
        )
        return Response(image_body(image), status=201)


class ImageDetail(ImageView):
    def get(self, request, image_id):
        return Response(image_body(self.find(image_id)))

    def delete(self, request, image_id):
        self.admin_only()
        services.image_delete(image=self.find(image_id))
        return Response(status=204)


class ImageFile(ImageView):
    """An upload of the image's data: accepted and not kept (berth keeps
    the record; the hosts hold the disks), so `openstack image create`
    completes."""

    # The data is not read, so no parser may read it either.
    parser_classes = []

    def put(self, request, image_id):
        self.admin_only()
        self.find(image_id)
        return Response(status=204)


urlpatterns = [
    re_path(r"^images/?$", Images.as_view()),
    re_path(r"^images/(?P<image_id>[^/]+)/?$", ImageDetail.as_view()),
    re_path(r"^images/(?P<image_id>[^/]+)/file/?$", ImageFile.as_view()),
]
