from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from compute import images
from config import discovery
from config.api import UnknownResourceView
from identity import keystone


def api(prefix: str, root_view, version: str, version_view, resources: str) -> list:
    """One OpenStack API: discovery at its root and version URL (with and
    without the slash), its resources, and the API's own 401/404 for the rest."""
    return [
        re_path(rf"^{prefix}/?$", root_view),
        re_path(rf"^{prefix}/{version}/?$", version_view),
        re_path(rf"^{prefix}/{version}/", include(resources)),
        re_path(rf"^{prefix}/", UnknownResourceView.as_view()),
    ]


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    *api(
        settings.BERTH_NETWORKING_PREFIX,
        discovery.networking_versions,
        r"v2\.0",
        discovery.networking_v2,
        "networking.api.urls",
    ),
    *api(
        settings.BERTH_COMPUTE_PREFIX,
        discovery.compute_versions,
        r"v2\.1",
        discovery.compute_v21,
        "compute.api.urls",
    ),
    *api(keystone.IDENTITY_PREFIX, keystone.versions, "v3", keystone.v3, "identity.keystone"),
    *api(images.IMAGE_PREFIX, images.versions, "v2", images.v2, "compute.images"),
    *api(
        settings.BERTH_RESERVATION_PREFIX,
        discovery.reservation_versions,
        "v1",
        discovery.reservation_v1,
        "reservations.api.urls",
    ),
]

handler400 = "config.errors.bad_request_view"
handler404 = "config.errors.not_found_view"
handler500 = "config.errors.server_error_view"
