"""Version discovery documents, exactly as the OpenStack clients need them.

They are answered without a token: keystoneauth asks before it
authenticates, and a 404 or a non-version body stops every later call.
"""

from django.http import JsonResponse

# Compute advertises 2.1 only: later microversions change response shapes
# (e.g. the embedded flavor of 2.47) that berth does not implement.
COMPUTE_MAX_MICROVERSION = "2.1"
COMPUTE_MIN_MICROVERSION = "2.1"


def _href(request, path: str) -> str:
    return request.build_absolute_uri(path)


def _prefix(request, depth: int) -> str:
    """The API mount point of this request: the first ``depth`` segments."""
    parts = [p for p in request.path.split("/") if p]
    return "/" + "/".join(parts[:depth])


def networking_version(request, root: str) -> dict:
    return {
        "id": "v2.0",
        "status": "CURRENT",
        "links": [{"rel": "self", "href": _href(request, f"{root}/v2.0/")}],
    }


def networking_versions(request):
    return JsonResponse({"versions": [networking_version(request, _prefix(request, 1))]})


def networking_v2(request):
    return JsonResponse({"version": networking_version(request, _prefix(request, 1))})


def compute_version(request, root: str) -> dict:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": COMPUTE_MAX_MICROVERSION,
        "min_version": COMPUTE_MIN_MICROVERSION,
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": _href(request, f"{root}/v2.1/")}],
        "media-types": [
            {
                "base": "application/json",
                "type": "application/vnd.openstack.compute+json;version=2.1",
            }
        ],
    }


def compute_versions(request):
    return JsonResponse({"versions": [compute_version(request, _prefix(request, 1))]})


def compute_v21(request):
    return JsonResponse({"version": compute_version(request, _prefix(request, 1))})


def reservation_version(request, root: str) -> dict:
    return {
        "id": "v1.0",
        "status": "CURRENT",
        "links": [{"rel": "self", "href": _href(request, f"{root}/v1")}],
    }


def reservation_versions(request):
    # Blazar answers its root with 300 Multiple Choices.
    return JsonResponse(
        {"versions": [reservation_version(request, _prefix(request, 1))]}, status=300
    )


def reservation_v1(request):
    return JsonResponse({"version": reservation_version(request, _prefix(request, 1))})
